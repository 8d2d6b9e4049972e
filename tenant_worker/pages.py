"""GET /: the tenant's branded home page, with sign-in (or the signed-in user) on it.

It depends on the session, so it is `Cache-Control: private, no-store` and never put in a
shared cache; the one public part, the tenant's branding, is cached per isolate by tenant id
(tenant_worker.branding.tenant_branding). It draws like the tenant's error pages
(shared.error_pages.page_style / page_header): name, logo (https only, escaped), primary and
secondary colours, support contact. Its CSP allows no script, exactly its own <style>, and
images from the site and the logo's host only.
"""

from __future__ import annotations

import html

from shared.branding import logo_origin
from shared.error_pages import page_header, page_style
from shared.security_headers import page_csp
from tenant_worker.branding import tenant_branding
from tenant_worker.inbound_http import Call, Reply, Route, html_reply
from tenant_worker.principal import PRINCIPAL, Principal


async def home(call: Call) -> Reply:
    brand = await tenant_branding(call)
    name = html.escape(brand.name)
    who = call.state.get(PRINCIPAL)
    if isinstance(who, Principal):
        label = html.escape(who.display_name or who.email or "you")
        body = (
            f"<p>Signed in as <strong>{label}</strong> ({html.escape(who.role.value)}).</p>"
            '<form method="post" action="/auth/logout"><button class="btn" type="submit">Sign out</button></form>'
        )
    else:
        body = (
            '<p><a class="btn" href="/auth/login/github">Sign in with GitHub</a> '
            '<a class="btn" href="/auth/login/google">Sign in with Google</a></p>'
        )
    if brand.support_email:
        email = html.escape(brand.support_email, quote=True)
        body += f'<p>Questions? Write to <a href="mailto:{email}">{email}</a>.</p>'
    style = page_style(brand.primary_color, brand.secondary_color)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{name}</title>'
        f"<style>{style}</style>"
        f"</head><body>{page_header(brand)}<main><h1>Welcome to {name}</h1>{body}</main></body></html>"
    )
    reply = html_reply(page)
    reply.headers["cache-control"] = "private, no-store"
    logo = logo_origin(brand.logo_url)
    reply.headers["content-security-policy"] = page_csp(style, img_origins=(logo,) if logo else ())
    return reply


ROUTES = [Route("GET", "/", home, "home")]
