"""Pure units for the request rules (CPython): the Supabase failure mapping, strict JSON bodies,
the same-origin test, the JSON media type, strict request models. The same rules end to end on
workerd: tests/test_request_rules.py and tests/test_data_outage.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from shared.json_depth import exceeds_depth
from shared.jwt import JwtError, verify_hs256
from shared.outbound_http import HttpError, HttpResponse
from shared.session import SessionClaims
from shared.supabase import SupabaseClient, SupabaseError
from tenant_worker.inbound_http import ApiError, RequestBody, parse_json
from tenant_worker.request_rules import is_json_media_type, same_origin
from tenant_worker.supabase_access import supabase_failure


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (HttpError("connection refused"), 503, "data_unavailable"),
        (HttpError("TimeoutError"), 503, "data_unavailable"),
        (SupabaseError(503, "PGRST000", "Database connection error"), 503, "data_unavailable"),
        (SupabaseError(503, "PGRST001", "Database client error"), 503, "data_unavailable"),
        (SupabaseError(503, "PGRST002", "Could not query the database for the schema cache"), 503, "data_unavailable"),
        (SupabaseError(400, "", ""), 503, "data_unavailable"),  # PostgREST 12: connection dropped mid-query
        (SupabaseError(504, None, "gateway timeout"), 503, "data_unavailable"),
        (
            SupabaseError(502, None, "An invalid response was received from the upstream server"),
            503,
            "data_unavailable",
        ),
        (SupabaseError(503, None, "<html>Service Unavailable</html>"), 503, "data_unavailable"),
        (SupabaseError(409, "23505", "duplicate key value violates unique constraint"), 409, "conflict"),
        (SupabaseError(403, "42501", "permission denied"), 403, "forbidden"),
        (SupabaseError(401, "42501", "permission denied for anon"), 403, "forbidden"),
        (SupabaseError(400, "23514", "check constraint"), 400, "rejected"),
        (SupabaseError(409, "23503", "foreign key violation"), 400, "rejected"),
        (SupabaseError(400, "22P02", "invalid input syntax for type uuid"), 400, "rejected"),
        (SupabaseError(401, "PGRST301", "JWT invalid"), 502, "upstream_error"),
        (SupabaseError(401, None, "Invalid API key"), 502, "upstream_error"),
        (SupabaseError(404, "PGRST205", "no such table"), 502, "upstream_error"),
        (SupabaseError(500, "XX000", "internal error"), 502, "upstream_error"),
        (SupabaseError(200, None, "unreadable answer from the data API"), 502, "upstream_error"),
        (ValueError("a bug, not an answer"), 500, "internal_error"),
    ],
)
def test_supabase_failures_map_to_one_answer_each(exc: Exception, status: int, code: str) -> None:
    err = supabase_failure(exc)
    assert (err.status, err.code) == (status, code)
    assert ("retry-after" in err.headers) == (status == 503)
    assert "PGRST" not in err.message and "constraint" not in err.message  # nothing of the database leaks


def test_supabase_failure_passes_api_errors_and_names_conflicts() -> None:
    own = ApiError(503, "data_unavailable", "not configured")
    assert supabase_failure(own) is own
    err = supabase_failure(
        SupabaseError(409, "23505", "dup"),
        conflict_code="domain_taken",
        conflict_message="That domain is already registered.",
    )
    assert (err.status, err.code, err.message) == (409, "domain_taken", "That domain is already registered.")


class _Answers:
    def __init__(self, resp: HttpResponse) -> None:
        self.resp = resp

    async def request(self, method: str, url: str, **kw: object) -> HttpResponse:
        return self.resp


@pytest.mark.parametrize("body", [b"<html>ok</html>", b"\xff\xfe", b"[" * 100_000])
def test_an_unreadable_success_answer_is_an_upstream_error(body: bytes) -> None:
    db = SupabaseClient(_Answers(HttpResponse(200, {}, body)), url="http://x", api_key="k", access_token="t")
    with pytest.raises(SupabaseError) as caught:
        asyncio.run(db.select("profiles"))
    assert supabase_failure(caught.value).status == 502


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested deeper than 32"),
        (b'{"prompt": "\xff\xfe"}', ""),
        (b'{"prompt": "a", "prompt": "b"}', "duplicate key"),
        (b'{"max_tokens": 1e999999}', "out of range"),
        (b'{"max_tokens": -1e400}', "out of range"),
        (b'{"max_tokens": ' + b"9" * 100_000 + b"}", ""),
        (b'{"max_tokens": NaN}', "NaN"),
        (b'{"max_tokens": Infinity}', "Infinity"),
        (b'{"prompt": "\\ud800"}', "not Unicode"),
        (b"\xef\xbb\xbf{}", ""),
        (b"\xff\xfe{\x00}\x00", ""),  # UTF-16: json.loads(bytes) would take it
        (b"{nope", ""),
    ],
)
def test_malformed_json_is_a_400(raw: bytes, why: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert why in caught.value.message


def test_well_formed_json_still_parses() -> None:
    assert parse_json('{"prompt": "h\\u00e9 😀", "n": [1, 2.5, null, true]}'.encode()) == {
        "prompt": "hé 😀",
        "n": [1, 2.5, None, True],
    }
    assert parse_json(b'{"a": {"b": [[[1]]]}}') == {"a": {"b": [[[1]]]}}


@pytest.mark.parametrize(
    "text, deep",
    [
        ("[" * 33 + "]" * 33, True),
        ("[" * 32 + "]" * 32, False),
        ('{"a":' * 33 + "1" + "}" * 33, True),
        ("[" * 100_000, True),  # unterminated: the parser would still recurse all the way
        ('{"prompt": "' + "[" * 1000 + '"}', False),  # brackets inside strings are text
        (r'{"prompt": "\\"' + "[" * 40 + "]" * 40 + "}", True),  # an escaped backslash ends the string
        (r'{"prompt": "\\\"' + "[" * 40 + '"}', False),  # an escaped quote does not
        ('"' + r"\"" * 300_000, False),  # an unterminated string of escaped quotes: linear, not quadratic
        ("]" * 50 + "[" * 50, False),  # the parser stops at the first "]"
        (("[" * 32 + "]" * 32) * 1000, False),
        ("[[]" * 1000 + "]" * 1000, True),
    ],
)
def test_json_depth_is_measured_before_parsing(text: str, deep: bool) -> None:
    assert exceeds_depth(text, 32) is deep


def test_a_deeply_nested_token_header_is_refused_before_parsing() -> None:
    """The OAuth state's header is read before its signature is checked: it comes from the URL."""
    import base64

    header = base64.urlsafe_b64encode(b"[" * 12_000).rstrip(b"=").decode()
    with pytest.raises(JwtError):
        verify_hs256(f"{header}.e30.sig", "k" * 32, now=time.time())


HOST = "cozyartzmedia.com"


@pytest.mark.parametrize(
    "origin, scheme, ok",
    [
        ("https://cozyartzmedia.com", "https", True),
        ("https://CozyArtzMedia.com.", "https", True),
        ("https://cozyartzmedia.com:8443", "https", True),  # port ignored
        ("http://cozyartzmedia.com:8787", "http", True),  # the local platform speaks plain HTTP
        ("https://cozyartzmedia.com", "http", True),
        ("http://cozyartzmedia.com", "https", False),  # a plain-HTTP page cannot act on the https site
        ("https://partner1.cozyartzmedia.com", "https", False),  # same site, another tenant
        ("http://partner1.cozyartzmedia.com", "http", False),
        ("https://evil.example", "https", False),
        ("https://cozyartzmedia.com.evil.example", "https", False),
        ("https://evil.example@cozyartzmedia.com", "https", False),
        ("https://cozyartzmedia.com/path", "https", False),
        ("https://cozyartzmedia.com:junk", "https", False),
        ("null", "https", False),
        ("", "https", False),
        ("file://", "https", False),
        ("chrome-extension://cozyartzmedia.com", "https", False),
    ],
)
def test_same_origin(origin: str, scheme: str, ok: bool) -> None:
    assert same_origin(origin, HOST, scheme) is ok


@pytest.mark.parametrize(
    "value, ok",
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ('Application/JSON;charset="UTF-8"', True),
        ("application/json; charset=utf-16", False),
        ("text/plain", False),
        ("text/plain; charset=utf-8", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonp", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_type(value: str | None, ok: bool) -> None:
    assert is_json_media_type(value) is ok


class _Numbered(RequestBody):
    count: int = 1


@pytest.mark.parametrize("value", [True, False, "5", 5.0, None])
def test_request_models_refuse_what_is_not_an_int(value: object) -> None:
    with pytest.raises(ValidationError):
        _Numbered.model_validate({"count": value})
    assert _Numbered.model_validate({"count": 5}).count == 5


def test_session_claims_times_are_ints_not_booleans() -> None:
    claims = {
        "tid": "partner1",
        "sub": "00000000-0000-4000-8000-000000000011",
        "role": "admin",
        "sid": "s" * 20,
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    SessionClaims.model_validate(claims)
    for field in ("iat", "exp"):
        with pytest.raises(ValidationError):
            SessionClaims.model_validate({**claims, field: True})
