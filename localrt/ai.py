"""The Workers AI binding on the local runtime: a deterministic local model.

`await env.AI.run(model, inputs)` → `{"response": str, "usage": {...}}`, as a text
generation model answers on Cloudflare. The reply is a pure function of (model, prompt,
max_tokens), so tests can assert on it. Tests tell it to fail (`fail_next(n)` or
`failing = True`): it then raises JsException("AiError: 3040: …"), the shape the
runtime's errors take in Python.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

from pyodide.ffi import JsException

DEFAULT_FAILURE = "3040: Capacity temporarily exceeded, please try again."
_MODEL = re.compile(r"^@cf/[a-z0-9._-]+/[a-z0-9._-]+$")
_WORDS = ("studio", "brand", "launch", "story", "signal", "craft", "audience", "bright", "steady",
          "growth", "local", "search", "design", "clear", "market", "voice")


class LocalAI:
    """One binding object for the whole local platform (every tenant script gets it as AI)."""

    def __init__(self) -> None:
        self.failing = False
        self._fail_next = 0
        self.failure = DEFAULT_FAILURE
        self.calls = 0  # runs attempted, failures included (tests count what reached the model)

    def fail_next(self, count: int = 1, message: str = DEFAULT_FAILURE) -> None:
        self._fail_next, self.failure = count, message

    async def run(self, model: str, inputs: dict[str, Any], options: Any = None) -> dict[str, Any]:
        self.calls += 1
        if not isinstance(model, str) or not _MODEL.match(model):
            raise JsException(f"AiError: 5007: No such model {model!r} or task", "Error")
        if self.failing or self._fail_next > 0:
            self._fail_next = max(0, self._fail_next - 1)
            raise JsException(f"AiError: {self.failure}", "Error")
        prompt = _prompt_of(inputs)
        max_tokens = int(inputs.get("max_tokens", 256))
        if not 1 <= max_tokens <= 4096:
            raise JsException("AiError: 5006: max_tokens out of range", "Error")
        words = _reply_words(model, prompt, min(max_tokens, 48))
        prompt_tokens = len(prompt.split())
        return {
            "response": " ".join(words),
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                      "total_tokens": prompt_tokens + len(words)},
        }


def _prompt_of(inputs: Any) -> str:
    if not isinstance(inputs, dict):
        raise JsException("AiError: 5006: inputs must be an object", "Error")
    if isinstance(inputs.get("prompt"), str):
        return inputs["prompt"]
    messages = inputs.get("messages")
    if isinstance(messages, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return "\n".join(m["content"] for m in messages)
    raise JsException("AiError: 5006: Error: required properties at '/' are 'prompt' or 'messages'", "Error")


def _reply_words(model: str, prompt: str, count: int) -> list[str]:
    seed = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    return [_WORDS[seed[i % len(seed)] % len(_WORDS)] for i in range(count)]


def ai_binding(ai: LocalAI) -> Any:
    """A binding provider giving every script the same AI binding."""
    return lambda spec: {"AI": ai}
