"""Error bodies: JSON for /api/*, a branded HTML page elsewhere.

Pages say nothing about other tenants: the same words for every unknown host. The brand is
shared.branding.Brand, the one type the home page and the dashboards draw as well.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from shared.branding import DEFAULT_SECONDARY, Brand, logo_origin, safe_color
from shared.security_headers import page_csp, with_security_headers


@dataclass(frozen=True)
class ErrorReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def wants_json(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def error_reply(
    path: str,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    branding: Brand | None = None,
    way_back: bool = False,
    extra: dict[str, object] | None = None,
    headers: dict[str, str] | None = None,
) -> ErrorReply:
    """The error for `path`: `{"error": {code, message, request_id}}` or a branded page, with
    the security headers every answer carries (shared.security_headers). `way_back`: a tenant's
    page, which links home and to sign in again."""
    out = {"x-request-id": request_id, "cache-control": "private, no-store", **(headers or {})}
    if wants_json(path):
        payload: dict[str, object] = {"code": code, "message": message, **(extra or {}), "request_id": request_id}
        out["content-type"] = "application/json"
        return ErrorReply(status, json.dumps({"error": payload}).encode(), with_security_headers(out))
    brand = branding or Brand()
    out["content-type"] = "text/html; charset=utf-8"
    logo = logo_origin(brand.logo_url)
    out["content-security-policy"] = page_csp(
        page_style(brand.primary_color, brand.secondary_color), img_origins=(logo,) if logo else ()
    )
    page = branded_page(status, message, request_id, brand, way_back=way_back)
    return ErrorReply(status, page.encode(), with_security_headers(out))


def page_style(primary_color: str, secondary_color: str = DEFAULT_SECONDARY) -> str:
    """The one <style> block of a branded page (its CSP allows exactly this text, by hash)."""
    color, accent = safe_color(primary_color), safe_color(secondary_color, DEFAULT_SECONDARY)
    return (
        "body{font-family:system-ui,sans-serif;margin:0;background:#f9fafb;color:#111827}"
        f"header{{background:{color};color:#fff;padding:1rem 2rem;font-weight:600;display:flex;gap:.8rem;"
        f"align-items:center;border-bottom:4px solid {accent}}}.logo{{border-radius:.3rem}}"
        "main{max-width:40rem;margin:4rem auto;padding:0 2rem;overflow-wrap:anywhere}small{color:#6b7280}"
        f".btn{{display:inline-block;padding:.6rem 1rem;margin:0 .5rem .5rem 0;border-radius:.4rem;background:{color};"
        f"color:#fff;text-decoration:none;border:0;font:inherit;cursor:pointer}}a{{color:{color}}}"
    )


def page_header(brand: Brand) -> str:
    """The header of a branded page: the logo (https only, escaped) and the name (escaped)."""
    logo = ""
    if brand.logo_url and logo_origin(brand.logo_url):
        logo = f'<img class="logo" src="{html.escape(brand.logo_url, quote=True)}" alt="" width="32" height="32">'
    return f'<header>{logo}<span class="brand">{html.escape(brand.name)}</span></header>'


def _way_back(brand: Brand, way_back: bool) -> str:
    parts = []
    if way_back:
        parts.append('<p><a href="/">Back to the home page</a> · <a href="/auth/login/github">Sign in again</a></p>')
    if brand.support_email:
        email = html.escape(brand.support_email, quote=True)
        parts.append(f'<p>Need help? Write to <a href="mailto:{email}">{email}</a>.</p>')
    return "".join(parts)


def branded_page(status: int, message: str, request_id: str, brand: Brand, *, way_back: bool = False) -> str:
    name = html.escape(brand.name)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{status} · {name}</title>'
        f"<style>{page_style(brand.primary_color, brand.secondary_color)}</style></head>"
        f"<body>{page_header(brand)}<main><h1>{status}</h1><p>{html.escape(message)}</p>"
        f"{_way_back(brand, way_back)}"
        f"<p><small>Request ID: {html.escape(request_id)}</small></p></main></body></html>"
    )
