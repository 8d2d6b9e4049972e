"""GET /: the tenant's branded home page, with sign-in (or the signed-in user) on it.

It depends on the session, so it is `Cache-Control: private, no-store` and never put in a
shared cache; the one public part, the tenant's branding, is cached per isolate by tenant id
(tenant_worker.auth.tenant_branding). Its CSP allows no script and exactly its own <style>.
"""
from __future__ import annotations

import html

from shared.error_pages import safe_color
from shared.security_headers import page_csp
from tenant_worker.auth import tenant_branding
from tenant_worker.inbound_http import Call, Reply, Route, html_reply
from tenant_worker.principal import PRINCIPAL, Principal


async def home(call: Call) -> Reply:
    brand = await tenant_branding(call)
    name = html.escape(brand.brand_name)
    color = safe_color(brand.primary_color)
    who = call.state.get(PRINCIPAL)
    if isinstance(who, Principal):
        label = html.escape(who.display_name or who.email or "you")
        body = (f"<p>Signed in as <strong>{label}</strong> ({html.escape(who.role.value)}).</p>"
                "<form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Sign out</button></form>")
    else:
        body = ("<p><a class=\"btn\" href=\"/auth/login/github\">Sign in with GitHub</a> "
                "<a class=\"btn\" href=\"/auth/login/google\">Sign in with Google</a></p>")
    style = ("body{font-family:system-ui,sans-serif;margin:0;background:#f9fafb;color:#111827}"
             f"header{{background:{color};color:#fff;padding:1rem 2rem;font-weight:600}}"
             "main{max-width:40rem;margin:4rem auto;padding:0 2rem}.btn{display:inline-block;padding:.6rem 1rem;"
             f"margin-right:.5rem;border-radius:.4rem;background:{color};color:#fff;text-decoration:none}}")
    page = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{name}</title>"
        f"<style>{style}</style>"
        f"</head><body><header>{name}</header><main><h1>Welcome to {name}</h1>{body}</main></body></html>"
    )
    reply = html_reply(page)
    reply.headers["cache-control"] = "private, no-store"
    reply.headers["content-security-policy"] = page_csp(style)
    return reply


ROUTES = [Route("GET", "/", home, "home")]
