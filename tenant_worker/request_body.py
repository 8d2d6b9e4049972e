"""The one way a tenant API handler reads its JSON request body.

    body = await read_body(call, TicketCreate)                  # a strict RequestBody model
    body = await read_body(call, ReconcileRequest, optional=True)  # no body reads as {}

The convention, for every handler (README "Request rules"):
- not `Content-Type: application/json` (UTF-8)                  -> 415 unsupported_media_type
- not JSON (syntax, bad UTF-8, duplicate keys, NaN, nesting > 32, no body where one is needed)
                                                                -> 400 invalid_json
- JSON, but not what the endpoint takes (not an object, an unknown, missing or mistyped field,
  a value out of range, nothing to change)                      -> 422 invalid_body, with `fields`
A value that is well-formed but unusable for a reason of its own keeps its own 422 code
(`invalid_domain`, `invalid_name`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from tenant_worker.inbound_http import ApiError, Call, RequestBody, parse_json
from tenant_worker.request_rules import is_json_media_type

M = TypeVar("M", bound=RequestBody)


def invalid_body(message: str, fields: list[str]) -> ApiError:
    return ApiError(422, "invalid_body", message, extra={"fields": fields})


def body_model(model: type[M], data: Any) -> M:
    """`data` (already parsed JSON) as `model`: 422 invalid_body naming the fields otherwise."""
    if not isinstance(data, dict):
        raise invalid_body("The body must be a JSON object.", ["body"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise invalid_body(f"Invalid field(s): {', '.join(fields)}.", fields) from None


async def read_body(call: Call, model: type[M], *, optional: bool = False) -> M:
    """This request's body as `model` (see the module docstring for the answers to a bad one)."""
    raw = await call.body()
    if not raw:
        if not optional:
            raise ApiError(400, "invalid_json", "A JSON body is required.")
        return body_model(model, {})
    if not is_json_media_type(call.headers.get("content-type")):
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
    return body_model(model, parse_json(raw))


def nothing_to_change() -> ApiError:
    return invalid_body("Nothing to change.", ["body"])
