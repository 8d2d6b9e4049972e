"""The security headers every response carries, from either Worker (stdlib only: the
dispatcher imports it).

Every response:
    Strict-Transport-Security: max-age=31536000; includeSubDomains   (no preload: tenants' own domains)
    X-Content-Type-Options: nosniff
    Referrer-Policy: strict-origin-when-cross-origin
    X-Frame-Options: DENY                                            (for browsers without frame-ancestors)
    Content-Security-Policy: one of
      pages (text/html): no script at all (`script-src 'none'`, nothing inline or from
        anywhere), styles only the page's own <style> block, allowed by its sha256 hash (never
        'unsafe-inline'; `page_csp(style)`, set by the page itself), images from the site itself
        or data:, forms post only to the site, no <base>, no framing (`frame-ancestors 'none'`);
      everything else (JSON, file downloads, redirects): `default-src 'none'; frame-ancestors
        'none'; sandbox`, so a file that a browser would render anyway runs nothing.

A header a handler already set is kept (a download's own Content-Type stays what it is).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Mapping


def page_csp(*inline_styles: str, img_origins: tuple[str, ...] = ()) -> str:
    """The CSP of a page whose only inline content is these <style> blocks (exact text), with
    images from the site itself and `img_origins` (e.g. a tenant's logo host: shared.branding.logo_origin)."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline_styles
    )
    images = " ".join(("'self'", "data:", *img_origins))
    return (
        f"default-src 'none'; script-src 'none'; style-src {hashes or chr(39) + 'none' + chr(39)}; "
        f"img-src {images}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


PAGE_CSP = page_csp()  # an HTML answer that did not name its styles: none apply
OTHER_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

BASELINE: dict[str, str] = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "DENY",
}


def is_page(content_type: str | None) -> bool:
    return bool(content_type) and str(content_type).split(";", 1)[0].strip().lower() == "text/html"


_FOR_PAGES: dict[str, str] = {**BASELINE, "content-security-policy": PAGE_CSP}
_FOR_OTHERS: dict[str, str] = {**BASELINE, "content-security-policy": OTHER_CSP}


def security_headers(content_type: str | None) -> dict[str, str]:
    """The headers for a response of this Content-Type (names lower-case)."""
    return dict(_FOR_PAGES if is_page(content_type) else _FOR_OTHERS)


def with_security_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` (lower-case names) plus every security header it does not set itself."""
    out = {k.lower(): v for k, v in headers.items()}
    for name, value in (_FOR_PAGES if is_page(out.get("content-type")) else _FOR_OTHERS).items():
        out.setdefault(name, value)
    return out
