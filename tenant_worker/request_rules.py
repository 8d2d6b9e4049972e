"""Rules every state-changing request meets before anything else runs (the first middleware).

CSRF. The session cookie is SameSite=Lax, but partner subdomains (`*.cozyartzmedia.com`) are
the same *site* as the primary tenant, so Lax alone lets one tenant's pages post to another.
A state change (any method but GET, HEAD, OPTIONS) is therefore refused with 403
`cross_site_request` unless the browser's own headers say it came from this tenant's origin:

  * `Origin`, when sent, must be this tenant's host (the host the dispatcher verified; port
    ignored) over https or the request's own scheme. `Origin: null` is refused.
  * `Sec-Fetch-Site`, when sent, must be `same-origin` or `none` (user-initiated).
  * A request with neither header comes from no browser (curl, a server), which carries no
    ambient cookies of a victim: there is no CSRF to stop, so it passes.

Bodies. Under /api/*, a state change with a body must be `Content-Type: application/json`
(parameters allowed; a charset other than UTF-8 is not): 415 `unsupported_media_type`. This
also keeps out the bodies an HTML form or `fetch(..., {mode: "no-cors"})` can send cross-site
without a preflight (text/plain, form-encoded, multipart).

Uploads (routes with `body="raw"`, e.g. POST /api/files) carry the file itself, not JSON. The
Origin/Sec-Fetch-Site check above still applies; in place of the JSON rule, a request a page
on another site could send without a CORS preflight is refused (415 `unsupported_media_type`):
one with no Content-Type or a CORS-safelisted one (text/plain, application/x-www-form-urlencoded,
multipart/form-data) must carry the custom header `X-File-Upload` (any value), which no form
can send and a cross-site `fetch` can send only after a preflight this Worker never answers.
The body is not read here: the handler streams it.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from shared.error_pages import wants_json
from shared.hosts import InvalidHost, normalize_host
from tenant_worker.inbound_http import ApiError, Call

log = logging.getLogger("cmgsite.tenant.rules")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
# Content types a cross-site page may send without a preflight (Fetch standard, CORS-safelisted).
CORS_SAFELISTED_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
UPLOAD_HEADER = "x-file-upload"


def same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether an `Origin` header names `host` (normalised, port ignored) over https or `scheme`."""
    value = origin.strip()
    if not value or value == "null":
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a junk port)
    except ValueError:
        return False
    if parts.scheme.lower() not in {"https", scheme.lower()}:
        return False
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return False  # an origin is scheme://host[:port], nothing more
    try:
        return normalize_host(parts.netloc) == host
    except InvalidHost:
        return False


def cross_site_reason(call: Call) -> str | None:
    """Why this state change looks cross-site, or None when it may proceed."""
    origin = call.headers.get("origin")
    if origin is not None and not same_origin(origin, call.tenant.host, call.scheme):
        return "origin"
    site = call.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ALLOWED_FETCH_SITES:
        return "sec-fetch-site"
    return None


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media, *params = (p.strip().lower() for p in content_type.split(";"))
    if media != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def needs_preflight(content_type: str | None) -> bool:
    """Whether a cross-site browser request with this Content-Type needs a CORS preflight."""
    if content_type is None:
        return False
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence not in CORS_SAFELISTED_TYPES


def upload_refusal(call: Call) -> str | None:
    """Why a raw-body upload could have been sent by another site's page, or None."""
    if needs_preflight(call.headers.get("content-type")) or call.headers.get(UPLOAD_HEADER, "").strip():
        return None
    return "simple_request"


async def request_rules(call: Call) -> None:
    """Middleware: refuse cross-site state changes (403) and non-JSON API bodies (415)."""
    if call.method in SAFE_METHODS:
        return
    reason = cross_site_reason(call)
    if reason is not None:
        log.info(
            json.dumps(
                {
                    "event": "cross_site_refused",
                    "reason": reason,
                    "method": call.method,
                    "path": call.path[:200],
                    "request_id": call.request_id,
                }
            )
        )
        raise ApiError(403, "cross_site_request", "This request did not come from this site's own pages.")
    if call.body_kind == "raw":
        if upload_refusal(call) is not None:
            raise ApiError(
                415,
                "unsupported_media_type",
                "Send the file with its own Content-Type (not text/plain, a form or multipart), "
                "or add the header X-File-Upload: 1.",
            )
        return
    if wants_json(call.path) and await call.body() and not is_json_media_type(call.headers.get("content-type")):
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
