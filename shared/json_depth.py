"""A nesting bound to check *before* json.loads on anything a client sent.

CPython's json decoder recurses in C once per `[` or `{`. Under CPython a deep document ends
in RecursionError, but in Pyodide (the Workers runtime) the C recursion overflows the
engine's native stack first: "RangeError: Maximum call stack size exceeded" is a fatal
Pyodide error that kills the isolate, and every request it was serving. So untrusted JSON
is measured first, in linear time, in C loops, without recursion:

    if exceeds_depth(text, 32): refuse
    data = json.loads(text)

Stdlib only: the dispatcher and the tenant Worker can both import it.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

# A JSON string, or an unterminated one running to the end of the text: possessive and
# anchored on both outcomes, so each character is scanned once (no quadratic backtracking).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 for an opener, -1 (signed) for a closer


def exceeds_depth(text: str, max_depth: int) -> bool:
    """True when json.loads(text) would nest deeper than `max_depth` arrays/objects before
    it either finishes or stops at a syntax error. Brackets inside strings do not count."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # the common case: too few brackets to be that deep
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    # The parser's depth after each bracket is the running sum of the steps (a closer of the
    # wrong kind only lowers the estimate where the parser would already have stopped).
    return max(accumulate(array("b", brackets.translate(_STEP))), default=0) > max_depth
