#!/usr/bin/env python3
"""What to register with GitHub and Google for each tenant, and which secrets go where.

    .venv/bin/python scripts/oauth_setup.py                    # the demo tenants
    .venv/bin/python scripts/oauth_setup.py --d1 PATH.sqlite   # every tenant in a D1 replica file
    .venv/bin/python scripts/oauth_setup.py --tenant partner1 --json

Each tenant has its own OAuth apps, with the callback on its own host, because the session
cookie is host-only and the state is bound to that host. Nothing is sent anywhere: this
prints the URLs to paste into the providers' consoles and the secrets to set afterwards.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GITHUB_CONSOLE = (
    "https://github.com/settings/applications/new (or your organisation's Settings > Developer settings > OAuth Apps)"
)
GOOGLE_CONSOLE = (
    "https://console.cloud.google.com/apis/credentials (Create credentials > OAuth client ID > Web application)"
)
SECRETS = ("GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "SESSION_SECRET")


@dataclass(frozen=True)
class TenantOAuth:
    tenant_id: str
    script_name: str
    host: str
    homepage_url: str
    callback_url: str
    javascript_origin: str
    secrets: tuple[str, ...]
    secrets_command: str


def plan(tenant_id: str, script_name: str, host: str) -> TenantOAuth:
    return TenantOAuth(
        tenant_id=tenant_id,
        script_name=script_name,
        host=host,
        homepage_url=f"https://{host}/",
        callback_url=f"https://{host}/auth/callback",
        javascript_origin=f"https://{host}",
        secrets=SECRETS,
        secrets_command=f".venv/bin/python scripts/tenants.py secrets {tenant_id} --remote --file .local/oauth-{tenant_id}.env",
    )


def from_demo() -> list[TenantOAuth]:
    from localrt.demo import DEMO_TENANTS

    return [plan(t.tenant_id, t.script_name, t.domain) for t in DEMO_TENANTS]


def from_d1(path: Path) -> list[TenantOAuth]:
    """Tenants and their main host from the routing replica (primary > subdomain > custom)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT t.tenant_id AS id, t.script_name, d.domain FROM tenants t JOIN tenant_domains d ON d.tenant_id = t.tenant_id"
            " WHERE t.status != 'inactive' ORDER BY t.tenant_id,"
            " CASE d.domain_type WHEN 'primary' THEN 0 WHEN 'subdomain' THEN 1 ELSE 2 END, d.domain"
        ).fetchall()
    finally:
        conn.close()
    seen: dict[str, TenantOAuth] = {}
    for tenant_id, script, domain in rows:
        seen.setdefault(tenant_id, plan(tenant_id, script, domain))
    return list(seen.values())


def render(items: list[TenantOAuth]) -> str:
    out = ["OAuth apps to register: one GitHub OAuth App and one Google OAuth client per tenant.", ""]
    for t in items:
        out += [
            f"== {t.tenant_id}  (tenant Worker script: {t.script_name})",
            f"  GitHub  {GITHUB_CONSOLE}",
            "          Application name:            <tenant brand>",
            f"          Homepage URL:                {t.homepage_url}",
            f"          Authorization callback URL:  {t.callback_url}",
            f"  Google  {GOOGLE_CONSOLE}",
            f"          Authorized JavaScript origin: {t.javascript_origin}",
            f"          Authorized redirect URI:      {t.callback_url}",
            "          Scopes (consent screen):      openid, email, profile",
            f"  Then set these secrets on {t.script_name}: {', '.join(t.secrets)}",
            "          (SESSION_SECRET: a fresh random value per tenant, e.g.",
            "           python3 -c 'import secrets; print(secrets.token_urlsafe(48))')",
            f"          put them in a git-ignored file and run: {t.secrets_command}",
            "",
        ]
    out.append(
        "Provider URLs default to the real GitHub and Google endpoints; OAUTH_<PROVIDER>_<AUTHORIZE|TOKEN|API|JWKS>_URL"
    )
    out.append("vars override them per tenant (the tests point them at a local fake).")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d1", type=Path, help="a D1 routing replica SQLite file (default: the demo tenants)")
    parser.add_argument("--tenant", action="append", help="only this tenant id (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.d1 is not None and not args.d1.exists():
        print(f"error: no D1 file at {args.d1}", file=sys.stderr)
        return 2
    items = from_d1(args.d1) if args.d1 else from_demo()
    if args.tenant:
        unknown = set(args.tenant) - {t.tenant_id for t in items}
        if unknown:
            print(f"error: unknown tenant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        items = [t for t in items if t.tenant_id in args.tenant]
    print(json.dumps([asdict(t) for t in items], indent=2) if args.json else render(items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
