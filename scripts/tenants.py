#!/usr/bin/env python3
"""The tenant CLI: one command per operator action, on the local platform or on Cloudflare.

    .venv/bin/python scripts/tenants.py add acme --name "Acme" --type custom-domain --domain shop.acme.com --tier starter
    .venv/bin/python scripts/tenants.py suspend acme          # its hosts answer 403
    .venv/bin/python scripts/tenants.py verify --repair --json
    .venv/bin/python scripts/tenants.py deploy --all --remote --dry-run

Every command takes --local (default) / --remote, --dry-run and, where a script would read
the output, --json. Writes go Supabase -> D1 -> KV purge and are safe to re-run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controlplane.audit import verify_audit  # noqa: E402
from controlplane.backup import backup_tenant, restore_tenant  # noqa: E402
from controlplane.errors import EXIT_DRIFT, EXIT_FAILED, EXIT_OK, ConfigError, ControlPlaneError, Refused  # noqa: E402
from controlplane.lifecycle import CHANGE_BOUND_SECONDS, ControlPlane  # noqa: E402
from controlplane.output import Reporter  # noqa: E402
from controlplane.tenant_data import delete_tenant, export_counts, export_tenant, fingerprint_key  # noqa: E402
from controlplane.verify import verify  # noqa: E402
from controlplane.wiring import REMOTE_ENV, Settings, build  # noqa: E402
from shared.models import TenantStatus, TenantType  # noqa: E402
from shared.tiers import Tier  # noqa: E402

EPILOG = f"""\
exit codes: 0 done; 1 a backend failed part-way (re-run the same command to complete it);
2 refused or invalid input (nothing written); 3 verify found drift, audit verify a broken
audit chain, or check found failing tenants; 4 configuration missing.

--remote reads {", ".join(REMOTE_ENV)} (and CONTEXT_SIGNING_SECRET to deploy) from the environment.
Locally a change takes effect at once; on Cloudflare within ~{CHANGE_BOUND_SECONDS} s (KV propagation
plus the dispatcher's in-isolate route cache).
"""
SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
RESERVED_SECRETS = {"TENANT_CONTEXT_KEY", "TENANT_ID"}


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--local", dest="remote", action="store_false", default=False, help="act on the local platform (default)"
    )
    where.add_argument(
        "--remote",
        dest="remote",
        action="store_true",
        help="act on Cloudflare and the real Supabase (credentials from the environment)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the exact wrangler commands, API calls and SQL instead of running writes",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--state-dir", type=Path, default=None, help="local platform state (default: $CMGSITE_STATE_DIR, else .local/)"
    )
    p.add_argument(
        "--wrangler-state",
        type=Path,
        default=None,
        help="wrangler's local state holding the D1 file (default: $CMGSITE_WRANGLER_STATE, else .wrangler/state)",
    )
    p.add_argument("--d1-file", type=Path, default=None, help="the local D1 SQLite file (overrides --wrangler-state)")
    return p


def parser() -> argparse.ArgumentParser:
    common = _common()
    top = argparse.ArgumentParser(
        prog="tenants.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_,
            description=help_,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = cmd("add", "register a tenant, deploy its Worker and route its domain")
    p.add_argument("tenant_id", help="lower-case id, e.g. acme (its script becomes cmgsite-<id>)")
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--type", required=True, help="|".join(t.value for t in TenantType))
    p.add_argument("--domain", required=True, help="the tenant's primary host name")
    p.add_argument("--tier", required=True, help="|".join(t.value for t in Tier))
    p.add_argument("--brand", help="white-label brand name (default: the name)")
    p.add_argument(
        "--no-deploy",
        action="store_true",
        help="register without deploying the Worker (its hosts are routed once `deploy` has run)",
    )
    cmd("list", "every tenant with its domains: routed or not, its Worker present or not, drift flagged")
    for name, text in (
        ("show", "show one tenant: registry, routing, domains, Worker"),
        ("suspend", "suspend a tenant: its hosts answer 403"),
        ("resume", "resume a suspended or removed tenant"),
        ("remove", "take a tenant off the platform (data kept): its hosts answer 404"),
    ):
        cmd(name, text).add_argument("tenant_id")
    p = cmd("rename", "change a tenant's display name")
    p.add_argument("tenant_id")
    p.add_argument("name")
    p = cmd("set-tier", "change a tenant's pricing tier (domain quota checked)")
    p.add_argument("tenant_id")
    p.add_argument("tier", help="|".join(t.value for t in Tier))
    for name, text in (
        ("add-domain", "add a domain (custom domains get a Cloudflare for SaaS custom hostname)"),
        ("remove-domain", "remove one of a tenant's extra domains"),
    ):
        p = cmd(name, text)
        p.add_argument("tenant_id")
        p.add_argument("domain")
    p = sub.add_parser(
        "domains",
        help="domain ownership, certificate and routing state",
        description="domain ownership, certificate and routing state",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Sub-commands, so options and the tenant id can come in any order (`status --json acme`).
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        parents=[common],
        help="each domain's state (read only unless --refresh)",
        description="each domain's state (read only unless --refresh)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("tenant_id", nargs="?", help="one tenant (default: all)")
    status.add_argument(
        "--refresh",
        action="store_true",
        help="re-check pending domains' tokens, write SSL/DNS state from Cloudflare back and "
        "route what changed (writes)",
    )
    check = actions.add_parser(
        "verify",
        parents=[common],
        help="check a pending domain's token (DNS TXT or HTTP) and route it if proven",
        description="check a pending domain's token (DNS TXT or HTTP) and route it if proven",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("tenant_id")
    check.add_argument("domain")
    check.set_defaults(refresh=False)
    p = cmd("deploy", "deploy tenant Workers (and optionally the dispatcher)")
    p.add_argument("tenant_id", nargs="?")
    p.add_argument("--all", action="store_true", help="every tenant that is not removed")
    p.add_argument("--dispatcher", action="store_true", help="also deploy the dispatch Worker")
    p = cmd("secrets", "set a tenant Worker's secrets from a git-ignored .env or JSON file")
    p.add_argument("tenant_id")
    p.add_argument("--file", required=True, type=Path, help="KEY=VALUE lines or a JSON object; never committed")
    p = cmd("verify", "check Supabase, D1, KV and the namespace agree")
    p.add_argument("--repair", action="store_true", help="make D1, KV and the namespace match Supabase")
    p = cmd("export", "write a tenant's data as JSON (GDPR access, backup)")
    p.add_argument("tenant_id")
    p.add_argument(
        "--output", type=Path, help="file to write (mode 0600; outside the repo, or git-ignored); default stdout"
    )
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    p = cmd("audit", "the tamper-evident audit trail")
    p.add_argument(
        "action", choices=["verify"], help="verify: check each tenant's hash chain, report the first broken link"
    )
    p.add_argument("tenant_id", nargs="?", help="one tenant (default: every tenant)")
    p = cmd("backup", "write one tenant's rows, UsageMeter and R2 objects to a checksummed archive")
    p.add_argument("tenant_id")
    p.add_argument("--output", required=True, type=Path, help="the archive to write (tar.gz, mode 0600)")
    p = cmd("restore", "bring a tenant back from its archive (into an empty or the same platform; re-runnable)")
    p.add_argument("archive", type=Path)
    p.add_argument("--tenant", dest="tenant_id", help="refuse unless the archive is this tenant's")
    p = cmd("branding", "set a tenant's white-label branding (the rules of PATCH /api/tenant/branding)")
    p.add_argument("tenant_id")
    p.add_argument("--brand-name")
    p.add_argument("--logo-url", help="an https URL")
    p.add_argument("--primary-color", help="#rrggbb")
    p.add_argument("--secondary-color", help="#rrggbb")
    p.add_argument("--support-email")
    p.add_argument(
        "--clear",
        action="append",
        default=[],
        metavar="FIELD",
        help="remove a field (brand_name, logo_url, primary_color, secondary_color, support_email)",
    )
    p = cmd(
        "check",
        "run the health checks now (/api/health and the sign-in page of every active tenant), "
        "record them and send due alerts",
    )
    p.add_argument("--tenant", dest="check_tenant", metavar="TENANT_ID", help="check one tenant only")
    p.add_argument(
        "--cron",
        action="store_true",
        help="fire the running local platform's own cron handler (Miniflare's scheduled trigger) instead",
    )
    p = cmd("keys", "rotate the platform's keys with an overlap window (only key ids are ever printed)")
    p.add_argument(
        "action",
        choices=["status", "rotate", "retire"],
        help="status: key ids in use; rotate KIND: a new key, the old one still accepted; "
        "retire context: drop the old context key once the dispatcher signs with the new one",
    )
    p.add_argument(
        "kind",
        nargs="?",
        choices=["data", "context", "session", "jwt"],
        help="data: PLATFORM_DATA_KEYS (re-wraps every tenant's data key); context: "
        "CONTEXT_SIGNING_SECRET; session: a tenant's SESSION_SECRET; jwt: the Supabase JWT key",
    )
    p.add_argument("tenant_id", nargs="?", help="session: one tenant (default: every tenant)")
    p.add_argument(
        "--keep-old", action="store_true", help="data: leave the old platform keys in the Workers after re-wrapping"
    )
    p.add_argument(
        "--keyring-file",
        type=Path,
        help="--remote: where the new keyrings are written (0600, git-ignored) for your secret store "
        "(default: <state dir>/secrets/remote-keyrings.dev.vars); the current ones are read from "
        "the environment, else from that default file (session: SESSION_SECRET_<TENANT>, which "
        "`add --remote` keeps there)",
    )
    p.add_argument(
        "--sign-out",
        action="store_true",
        help="session: the new key alone, the old one dropped at once (every session ends); with "
        "--remote, what a tenant whose current session keyring is not known needs",
    )
    p = cmd(
        "delete",
        "erase a tenant everywhere (asks for the tenant id unless --yes); `export` it first to keep "
        "a copy; --dry-run counts what it would erase",
    )
    p.add_argument("tenant_id")
    p.add_argument("--yes", action="store_true", help="skip the typed confirmation")
    return top


def read_secrets_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise Refused(f"no secrets file at {path}")
    resolved = path.resolve()
    if resolved.is_relative_to(ROOT):  # inside the repo it must be git-ignored, never committable
        res = subprocess.run(["git", "check-ignore", "-q", str(resolved)], cwd=ROOT, capture_output=True)
        if res.returncode == 1:
            raise Refused(f"{path} is not git-ignored: secrets files must never be committable")
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise Refused(f"{path} is not valid JSON") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise Refused(f"{path}: expected a JSON object of string values")
        values = dict(data)
    else:
        from localrt.devvars import read_dev_vars

        values = read_dev_vars(path)
    bad = [k for k in values if not SECRET_NAME.match(k) or k in RESERVED_SECRETS]
    if bad:
        raise Refused(
            f"refusing secret name(s) {', '.join(sorted(bad))}: upper-case names only, and "
            f"{', '.join(sorted(RESERVED_SECRETS))} are set by deploy itself"
        )
    if not values:
        raise Refused(f"{path} holds no secrets")
    from tenant_worker.config import SESSION_SECRET_MIN_LENGTH

    if "SESSION_SECRET" in values and len(values["SESSION_SECRET"]) < SESSION_SECRET_MIN_LENGTH:
        raise Refused(
            f"SESSION_SECRET is too short: the Worker refuses to start with fewer than "
            f"{SESSION_SECRET_MIN_LENGTH} characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    return values


def _confirm(tenant_id: str, yes: bool, stdin: TextIO, err: TextIO) -> None:
    if yes:
        return
    if not stdin.isatty():
        raise Refused(f"delete erases every row of {tenant_id!r}: confirm with --yes (no terminal to ask on)")
    print(
        f"This erases every row of tenant {tenant_id!r} everywhere. Type the tenant id to confirm: ",
        end="",
        file=err,
        flush=True,
    )
    if stdin.readline().strip() != tenant_id:
        raise Refused("confirmation did not match: nothing was deleted")


def _table(rows: list[dict[str, Any]], cols: list[str], out: TextIO) -> None:
    widths = [max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(), file=out)
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(), file=out)


async def _show(cp: ControlPlane, tenant_id: str) -> dict[str, Any]:
    tenant = await cp.require(tenant_id)
    return {
        "tenant": tenant.row(),
        "domains": [d.view() for d in await cp.registry.domains(tenant.tenant_id)],
        "d1_route": await cp.replica.tenant(tenant.tenant_id),
        "d1_domains": await cp.replica.domains(tenant.tenant_id),
        "worker_deployed": await cp.scripts.exists(tenant.script_name),
    }


def _print_show(shown: dict[str, Any], out: TextIO) -> None:
    """`show` for a person: the registry row, the Worker, the route, each domain's state."""
    t, route = shown["tenant"], shown["d1_route"]
    routed = {d["domain"] for d in shown["d1_domains"]}
    brand = t.get("whitelabel_config") or {}
    for label, value in (
        ("tenant", t["tenant_id"]),
        ("name", t["name"]),
        ("type", t["type"]),
        ("tier", t["subscription_tier"]),
        ("status", t["status"]),
        ("primary domain", t["domain"]),
        ("worker", f"{t['script_name']} ({'deployed' if shown['worker_deployed'] else 'MISSING'})"),
        (
            "d1 route",
            f"{route['status']}, {route['subscription_tier']}, {route['script_name']}"
            if route
            else "none (not routed)",
        ),
        ("branding", ", ".join(f"{k}={v}" for k, v in sorted(brand.items()) if v) or "-"),
    ):
        print(f"{label + ':':<16}{value}", file=out)
    rows = [
        {
            "domain": d["domain"],
            "type": d["domain_type"],
            "verification": d["verification_status"],
            "ssl": d["ssl_status"],
            "dns": "yes" if d["dns_configured"] else "no",
            "routed": "yes" if d["domain"] in routed else "no",
        }
        for d in shown["domains"]
    ]
    rows += [
        {
            "domain": d,
            "type": "?",
            "verification": "-",
            "ssl": "-",
            "dns": "-",
            "routed": "yes (not in Supabase: drift)",
        }
        for d in sorted(routed - {r["domain"] for r in rows})
    ]
    print(file=out)
    _table(rows, ["domain", "type", "verification", "ssl", "dns", "routed"], out)


async def _list(cp: ControlPlane) -> list[dict[str, Any]]:
    """Every tenant (Supabase, and any D1 still routes), each domain with whether D1 routes it, whether
    the tenant's Worker is in the namespace, and what disagrees (`verify` says the same in full)."""
    tenants = {t.tenant_id: t for t in await cp.registry.tenants()}
    domains = await cp.registry.all_domains()
    d1_tenants, d1_domains = await cp.replica.snapshot()
    rows: list[dict[str, Any]] = []
    for tid in sorted(set(tenants) | set(d1_tenants) | set(d1_domains)):
        tenant, routed = tenants.get(tid), {d["domain"] for d in d1_domains.get(tid, [])}
        if tenant is None:
            rows.append(
                {
                    "tenant_id": tid,
                    "type": "?",
                    "tier": "?",
                    "status": "not in Supabase",
                    "worker": None,
                    "routed": bool(routed),
                    "domains": [{"domain": d, "verification_status": None, "routed": True} for d in sorted(routed)],
                    "drift": ["D1 routes a tenant Supabase does not have"],
                }
            )
            continue
        worker = await cp.scripts.exists(tenant.script_name)
        mine = domains.get(tid, [])
        live = tenant.status is not TenantStatus.INACTIVE
        expected = {d.domain for d in mine if d.routable(tenant)} if (live and worker) else set()
        drift: list[str] = []
        if live and not worker:
            drift.append(f"Worker {tenant.script_name} missing")
        if not live and worker:
            drift.append(f"removed, but Worker {tenant.script_name} still deployed")
        if live and worker and tid not in d1_tenants:
            drift.append("not in D1")
        drift += [f"{d} not routed" for d in sorted(expected - routed)]
        drift += [f"{d} routed, should not be" for d in sorted(routed - expected)]
        rows.append(
            {
                "tenant_id": tid,
                "type": tenant.type.value,
                "tier": tenant.subscription_tier.value,
                "status": tenant.status.value,
                "worker": worker,
                "routed": bool(routed),
                "domains": [
                    {"domain": d.domain, "verification_status": d.verification_status, "routed": d.domain in routed}
                    for d in mine
                ]
                + [
                    {"domain": d, "verification_status": None, "routed": True}
                    for d in sorted(routed - {d.domain for d in mine})
                ],
                "drift": drift,
            }
        )
    return rows


def _print_list(rows: list[dict[str, Any]], out: TextIO) -> None:
    def domain_cell(d: dict[str, Any]) -> str:
        state = "routed" if d["routed"] else "not routed"
        if d["verification_status"] == "pending":
            state += ", pending"
        return f"{d['domain']} ({state})"

    table = [
        {
            "tenant_id": r["tenant_id"],
            "type": r["type"],
            "tier": r["tier"],
            "status": r["status"],
            "worker": "-" if r["worker"] is None else "present" if r["worker"] else "MISSING",
            "routed": "yes" if r["routed"] else "no",
            "state": f"DRIFT ({len(r['drift'])})" if r["drift"] else "ok",
            "domains": ", ".join(domain_cell(d) for d in r["domains"]) or "-",
        }
        for r in rows
    ]
    _table(table, ["tenant_id", "type", "tier", "status", "worker", "routed", "state", "domains"], out)
    drifting = [r for r in rows if r["drift"]]
    for r in drifting:
        print(f"drift: {r['tenant_id']}: {'; '.join(r['drift'])}", file=out)
    if drifting:
        print(f"{len(drifting)} tenant(s) drifting: `verify` explains, `verify --repair` converges", file=out)


def check_output_path(path: Path, *, force: bool) -> None:
    """Where `export` may write personal data: not over an existing file unless --force, and inside
    the repo only where git ignores it (never into the working tree, one `git add .` from a commit)."""
    resolved = path.expanduser().resolve()
    if resolved.exists() and not force:
        raise Refused(f"{path} exists: pass --force to overwrite it")
    if resolved.is_relative_to(ROOT):
        res = subprocess.run(["git", "check-ignore", "-q", str(resolved)], cwd=ROOT, capture_output=True)
        if res.returncode != 0:
            raise Refused(
                f"{path} is inside the repository and not git-ignored: an export holds personal data; "
                "write it outside the repository (e.g. ~/exports/) or under .local/"
            )
    if resolved.exists() and resolved.is_dir():
        raise Refused(f"{path} is a directory: name a file")
    if not resolved.parent.is_dir():
        raise Refused(f"cannot write {path}: its directory {resolved.parent} does not exist")


class PrivateFile:
    """A 0600 file written whole or not at all: a temporary file beside the target, made before the
    export runs (an unwritable place fails first, before anything is read or audited), moved into
    place at the end; without --force never over an existing file (a hard link refuses that)."""

    def __init__(self, path: Path, *, force: bool) -> None:
        self.path, self.force = path, force
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.expanduser().resolve().parent)
        except OSError as exc:
            raise Refused(f"cannot write {path}: {exc.strerror}") from None
        self._fd, self._tmp = fd, Path(tmp)

    def commit(self, text: str) -> None:
        with os.fdopen(self._fd, "w") as f:
            f.write(text)
        try:
            if self.force:
                os.replace(self._tmp, self.path)
            else:
                os.link(self._tmp, self.path)
        except FileExistsError:
            raise Refused(f"{self.path} exists: pass --force to overwrite it") from None
        finally:
            self._tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)


async def run(
    args: argparse.Namespace,
    cp: ControlPlane,
    out: TextIO,
    stdin: TextIO,
    err: TextIO,
    env: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    c = args.command
    if c == "add":
        t, changed = await cp.add(
            args.tenant_id,
            args.name,
            args.type,
            args.domain,
            args.tier,
            brand_name=args.brand,
            deploy=not args.no_deploy,
        )
        if not changed:
            return EXIT_OK, {"unchanged": t.row(), "note": "already registered, deployed and routed: nothing changed"}
        return EXIT_OK, {"added": t.row(), "note": cp.bound_note()}
    if c == "list":
        rows = await _list(cp)
        if not args.json:
            _print_list(rows, out)
            return EXIT_OK, None
        return EXIT_OK, rows
    if c == "show":
        shown = await _show(cp, args.tenant_id)
        if not args.json:
            _print_show(shown, out)
            return EXIT_OK, None
        return EXIT_OK, shown
    if c in ("suspend", "resume"):
        status = TenantStatus.SUSPENDED if c == "suspend" else TenantStatus.ACTIVE
        t = await cp.set_status(args.tenant_id, status)
        return EXIT_OK, {"tenant_id": t.tenant_id, "status": t.status.value, "note": cp.bound_note()}
    if c == "remove":
        t = await cp.remove(args.tenant_id)
        return EXIT_OK, {"tenant_id": t.tenant_id, "status": t.status.value, "note": cp.bound_note()}
    if c == "rename":
        t = await cp.rename(args.tenant_id, args.name)
        return EXIT_OK, {"tenant_id": t.tenant_id, "name": t.name}
    if c == "set-tier":
        t = await cp.set_tier(args.tenant_id, args.tier)
        return EXIT_OK, {"tenant_id": t.tenant_id, "tier": t.subscription_tier.value}
    if c == "add-domain":
        d = await cp.add_domain(args.tenant_id, args.domain)
        return EXIT_OK, {"added": d.row(), "note": cp.bound_note()}
    if c == "remove-domain":
        await cp.remove_domain(args.tenant_id, args.domain)
        return EXIT_OK, {"removed": args.domain, "note": cp.bound_note()}
    if c == "domains" and args.action == "verify":
        d = await cp.verify_domain(args.tenant_id, args.domain)
        return EXIT_OK, {"verified": d.view(), "note": cp.bound_note()}
    if c == "domains":
        rows = await cp.domains_status(args.tenant_id, refresh=args.refresh)
        if not args.json:
            _table(
                rows,
                [
                    "tenant_id",
                    "domain",
                    "domain_type",
                    "verification_status",
                    "ssl_status",
                    "dns_configured",
                    "custom_hostname",
                    "routed",
                ],
                out,
            )
            return EXIT_OK, None
        return EXIT_OK, rows
    if c == "deploy":
        if not args.tenant_id and not args.all and not args.dispatcher:
            raise Refused("name a tenant, or pass --all (and/or --dispatcher)")
        if args.tenant_id and args.all:
            raise Refused("give a tenant id or --all, not both")
        if args.dispatcher:
            cp.deploy_dispatcher()
        if args.all:
            report = await cp.deploy_all()
            return (EXIT_FAILED if report["failed"] else EXIT_OK), {**report, "dispatcher": bool(args.dispatcher)}
        scripts = await cp.deploy(args.tenant_id) if args.tenant_id else []
        return EXIT_OK, {"deployed": scripts, "failed": [], "skipped": [], "dispatcher": bool(args.dispatcher)}
    if c == "secrets":
        values = read_secrets_file(args.file)
        tenant = await cp.require(args.tenant_id)
        await cp.deploy(tenant.tenant_id, values)
        return EXIT_OK, {"tenant_id": tenant.tenant_id, "secrets_set": sorted(values)}
    if c == "verify":
        report = await verify(cp, repair=args.repair)
        if not args.json:
            for d in report["drift"]:
                for problem in d["problems"]:
                    print(f"drift: {d['tenant_id']}: {problem}", file=out)
            if report.get("repaired"):
                print(f"repaired: {', '.join(report['repaired'])}", file=out)
        healthy = report["consistent"] or (args.repair and not cp.dry_run and not report.get("still_drifting"))
        if not args.json:
            for d in report.get("still_drifting", []):
                print(f"still drifting: {d['tenant_id']}: {'; '.join(d['problems'])}", file=out)
            state = (
                "consistent"
                if report["consistent"]
                else "drift found and repaired: now consistent"
                if healthy
                else "drift found: a real run would repair it (above: what it would write)"
                if args.repair and cp.dry_run
                else "drift found"
            )
            print(f"checked {report['tenants_checked']} tenant(s): {state}", file=out)
        return (EXIT_OK if healthy else EXIT_DRIFT), (report if args.json else None)
    if c == "export":
        target: PrivateFile | None = None
        if args.output:
            check_output_path(args.output, force=args.force)
            target = None if cp.dry_run else PrivateFile(args.output, force=args.force)
        try:
            data = await export_tenant(cp, args.tenant_id)
        except BaseException:
            if target is not None:
                target.discard()
            raise
        counts = export_counts(data)
        if args.output and cp.dry_run:
            cp.reporter.plan("local file", f"write {args.output} (0600): {json.dumps(counts)}")
            return EXIT_OK, {"tenant_id": args.tenant_id, "output": str(args.output), "rows": counts}
        if target is not None:
            target.commit(json.dumps(data, indent=2, default=str) + "\n")
            return EXIT_OK, {"tenant_id": args.tenant_id, "exported": str(args.output.resolve()), "rows": counts}
        json.dump(data, out, indent=2, default=str)
        print(file=out)
        return EXIT_OK, None
    if c == "audit":
        report = await verify_audit(cp, args.tenant_id)
        if not args.json:
            for chain in report["chains"]:
                broken = chain["first_broken"]
                state = (
                    f"BROKEN at seq {broken['seq']} ({broken['reason']}): {broken['message']}"
                    if broken
                    else f"intact, {chain['rows']} row(s), head seq {chain['head_seq']} {chain['head_hash']}"
                )
                print(f"{chain['tenant_id']}: {state}", file=out)
        return (EXIT_OK if report["intact"] else EXIT_DRIFT), (report if args.json else None)
    if c == "backup":
        return EXIT_OK, await backup_tenant(cp, args.tenant_id, args.output)
    if c == "restore":
        return EXIT_OK, await restore_tenant(cp, args.archive, args.tenant_id)
    if c == "branding":
        from controlplane.branding import set_branding

        branding: dict[str, Any] = {
            k: getattr(args, k)
            for k in ("brand_name", "logo_url", "primary_color", "secondary_color", "support_email")
            if getattr(args, k) is not None
        }
        branding.update({k: None for k in args.clear})
        return EXIT_OK, await set_branding(cp, args.tenant_id, branding)
    if c == "check":
        from controlplane.health import check
        from localrt.http_client import HttpxClient

        http = HttpxClient()
        try:
            report = await check(cp, args.settings, http, tenant_id=args.check_tenant, cron=args.cron)
        finally:
            await http.aclose()
        if not args.json:
            if "checks" in report:
                _table(
                    [{**r, "ok": "ok" if r["ok"] else "FAIL"} for r in report["checks"]],
                    ["tenant_id", "ok", "health_status", "page_status", "latency_ms", "detail"],
                    out,
                )
            for t in report.get("transitions", []):
                print(f"{t['event']}: {t['tenant_id']} (alert {t['alert_id']})", file=out)
            for d in report.get("deliveries", []):
                state = "delivered" if d["delivered"] else f"not delivered ({d['error']})"
                print(f"webhook {d['event']} {d['tenant_id']}: {state}", file=out)
            if "cron" in report:
                print(f"cron handler: {report['cron']}", file=out)
        return (EXIT_DRIFT if report.get("failing") else EXIT_OK), (report if args.json else None)
    if c == "keys":
        return EXIT_OK, await _keys(args, cp, env or {})
    if c == "delete":
        try:
            key = fingerprint_key(env or {}, args.state_dir, remote=args.remote, create=not cp.dry_run)
        except ConfigError:
            if not cp.dry_run:
                raise
            key = secrets.token_bytes(32)  # a dry run writes no record: any key shows the plan
        if not cp.dry_run:
            print(
                f"note: delete cannot be undone; to keep a copy first: tenants.py export {args.tenant_id} "
                f"--output <file outside the repo> (or `backup`); `delete --dry-run` counts what goes",
                file=err,
            )
            _confirm(args.tenant_id, args.yes, stdin, err)
        return EXIT_OK, await delete_tenant(cp, args.tenant_id, key)
    raise Refused(f"unknown command {c}")


async def _keys(args: argparse.Namespace, cp: ControlPlane, env: Mapping[str, str]) -> Any:
    from controlplane.aead import CryptographyAead
    from controlplane.keys import (
        KeyRotation,
        KeyStore,
        LocalKeyFiles,
        RemoteKeyFile,
        RunningLocalDispatcher,
        check_keyring_file,
        remote_keyring_path,
    )

    store: KeyStore
    if args.remote:
        kept = remote_keyring_path(args.state_dir)  # what `add --remote` kept, read when not in the env
        path = args.keyring_file or kept
        check_keyring_file(path, ROOT)
        store = RemoteKeyFile(env, path, kept=kept)
    else:
        store = LocalKeyFiles(args.state_dir / "secrets")
    settle = env.get("CMGSITE_KEYS_SETTLE_SECONDS")  # tests against fakes, where no old version runs
    extra: dict[str, Any] = {"settle_seconds": float(settle)} if settle else {}
    rotation = KeyRotation(
        cp,
        store,
        cp.reporter,
        CryptographyAead(),
        local_dispatcher=RunningLocalDispatcher(args.state_dir),
        signing_keys=_supabase_signing_keys(env),
        **extra,
    )
    if args.action == "status":
        return rotation.status()
    if args.tenant_id and args.kind != "session":
        raise Refused("only `keys rotate session` takes a tenant id")
    if args.action == "retire":
        if args.kind != "context":
            raise Refused(
                "only the context key is retired by hand: data keys are retired by `rotate data`, "
                "session and jwt keys run out by themselves"
            )
        return await rotation.retire_context()
    if args.kind == "data":
        return await rotation.rotate_data(retire=not args.keep_old)
    if args.kind == "context":
        return await rotation.rotate_context()
    if args.sign_out and args.kind != "session":
        raise Refused("--sign-out is for `keys rotate session`")
    if args.kind == "session":
        return await rotation.rotate_session(args.tenant_id, sign_out=args.sign_out)
    if args.kind == "jwt":
        return await rotation.rotate_jwt()
    raise Refused("keys rotate needs a kind: data, context, session or jwt")


def _supabase_signing_keys(env: Mapping[str, str]) -> Callable[[], Any] | None:
    """`keys rotate jwt --remote`: the project's signing keys through Supabase's Management API
    (SUPABASE_ACCESS_TOKEN; the project from SUPABASE_PROJECT_REF or a hosted SUPABASE_URL;
    SUPABASE_MANAGEMENT_API_URL only to point it elsewhere, e.g. a test's fake)."""
    from controlplane.supabase_keys import API_BASE, SigningKeys, project_ref

    token = env.get("SUPABASE_ACCESS_TOKEN", "")
    ref = env.get("SUPABASE_PROJECT_REF") or project_ref(env.get("SUPABASE_URL", ""))
    if not token or not ref:
        return None
    base = env.get("SUPABASE_MANAGEMENT_API_URL") or API_BASE
    return lambda: SigningKeys(ref, token, base_url=base)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM while a command runs."""


def _on_signal(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(
    argv: list[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    build_control_plane: Callable[..., ControlPlane] | None = None,
) -> int:
    out, err, inp = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    environ = dict(env if env is not None else os.environ)
    state_dir = args.state_dir or Path(environ.get("CMGSITE_STATE_DIR") or ROOT / ".local")
    wrangler_state = args.wrangler_state or Path(environ.get("CMGSITE_WRANGLER_STATE") or ROOT / ".wrangler" / "state")
    args.state_dir, args.wrangler_state = state_dir, wrangler_state  # what every command reads
    settings = Settings(
        remote=args.remote,
        dry_run=args.dry_run,
        state_dir=state_dir,
        wrangler_state=wrangler_state,
        d1_file=args.d1_file,
        env=environ,
    )
    args.settings = settings  # what the control plane was built with (check reads it)
    reporter = Reporter(out=out, err=err, quiet=args.quiet, dry_run=args.dry_run)
    if args.json:
        reporter.plan_out = err  # stdout is the JSON document alone; the result lists the plan too
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():  # Ctrl-C and SIGTERM: one line, no traceback
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        code = asyncio.run(_main(args, settings, reporter, inp, build_control_plane or build))
        out.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt as exc:
        name = str(exc) if isinstance(exc, Interrupted) else "SIGINT"
        print(interrupted_line(name, reporter), file=err, flush=True)
        return 143 if name == "SIGTERM" else 130
    except BrokenPipeError:  # `tenants.py list | head`: the reader has gone, which is not an error
        _silence_stdout()
        return 141
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted_line(signame: str, reporter: Reporter) -> str:
    """The one line an interrupted command ends with: where it stopped, and that a re-run completes it."""
    if reporter.dry_run:
        return f"interrupted ({signame}): dry run, nothing changed"
    if not reporter.writes_started:
        return f"interrupted ({signame}) before any change: nothing was changed"
    return (
        f'interrupted ({signame}): stopped in or after the step "{reporter.last_step}"; re-run the same '
        "command to complete it (every step is safe to repeat), then `verify`"
    )


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


async def _main(
    args: argparse.Namespace,
    settings: Settings,
    reporter: Reporter,
    stdin: TextIO,
    build_cp: Callable[..., ControlPlane],
) -> int:
    cp: ControlPlane | None = None
    try:
        cp = build_cp(settings, reporter)
        if settings.remote and cp.session_keys is None:
            from controlplane.keys import RemoteKeyFile, remote_keyring_path

            kept = remote_keyring_path(args.state_dir)  # new tenants' session keyrings (add --remote)
            cp.session_keys = RemoteKeyFile(settings.env, kept, kept=kept)
        code, result = await run(args, cp, reporter.out, stdin, reporter.err, settings.env)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=reporter.err)
        if exc.exit_code == EXIT_FAILED:
            if reporter.writes_started:
                print(
                    "the change is incomplete: re-run the same command to finish it, then `verify`", file=reporter.err
                )
            elif not settings.dry_run:
                print("nothing was changed: re-run the command once the cause is fixed", file=reporter.err)
        if args.json:
            print(json.dumps({"error": {"code": type(exc).__name__, "message": str(exc)}}), file=reporter.out)
        if settings.dry_run:
            print("dry run: nothing changed", file=reporter.err if args.json else reporter.out)
        return exc.exit_code
    except OSError as exc:  # a file the operator named (an output path, an archive) could not be used
        if isinstance(exc, BrokenPipeError):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=reporter.err)
        return EXIT_FAILED
    finally:
        if cp is not None:
            await cp.close()
    if settings.dry_run and result is not None:
        result = dry_result(result)
        if isinstance(result, dict):
            result["plan"] = reporter.planned
    if result is not None:
        if args.json:
            print(json.dumps(result, indent=2, default=str), file=reporter.out)
        elif args.command not in ("verify", "audit"):
            reporter.done(summary(args.command, result, dry_run=settings.dry_run))
    if settings.dry_run:
        print("dry run: nothing changed", file=reporter.err if args.json else reporter.out)
    return code


# A dry run's result says what would happen: these keys of a real run's result are renamed.
_WOULD = {
    "added": "would_add",
    "removed": "would_remove",
    "deployed": "would_deploy",
    "erased": "would_erase",
    "secrets_set": "would_set_secrets",
    "verified": "would_verify",
    "exported": "would_export",
    "repaired": "would_repair",
    "restored": "would_restore",
    "backed_up": "would_back_up",
    "rewrapped": "would_rewrap",
    "retired": "would_retire",
    "revoked": "would_revoke",
    "written": "would_write",
}


def dry_result(result: Any) -> Any:
    if not isinstance(result, dict):
        return result
    out = {_WOULD.get(k, k): v for k, v in result.items() if k != "note"}
    return {"dry_run": True, **out}


def summary(command: str, result: Any, *, dry_run: bool = False) -> str:
    """The last line of a command, in words: what it did, or in a dry run what it would do."""
    r = result if isinstance(result, dict) else {}
    note = "" if dry_run or "note" not in r else f" ({r['note']})"
    w = "would " if dry_run else ""
    if command == "add" and "unchanged" in r:
        return f"{r['unchanged']['tenant_id']} is registered, deployed and routed already: nothing changed"
    if command == "add":
        t = r.get("added") or r.get("would_add") or {}
        return (
            f"{w}add {t.get('tenant_id')} ({t.get('type')}, {t.get('subscription_tier')}) at {t.get('domain')}"
            if dry_run
            else f"added {t.get('tenant_id')} ({t.get('type')}, {t.get('subscription_tier')}) at {t.get('domain')}"
        ) + note
    if command in ("suspend", "resume", "remove"):
        return (
            f"would set {r.get('tenant_id')} to {r.get('status')}"
            if dry_run
            else f"{r.get('tenant_id')} is now {r.get('status')}"
        ) + note
    if command == "rename":
        return (
            f"{w}name {r.get('tenant_id')} {r.get('name')!r}"
            if dry_run
            else f"{r.get('tenant_id')} is now named {r.get('name')!r}"
        )
    if command == "set-tier":
        return (
            f"would set {r.get('tenant_id')} to tier {r.get('tier')}"
            if dry_run
            else f"{r.get('tenant_id')} is now on tier {r.get('tier')}"
        )
    if command == "add-domain":
        d = r.get("added") or r.get("would_add") or {}
        return (
            f"would add {d.get('domain')} to {d.get('tenant_id')}"
            if dry_run
            else f"added {d.get('domain')} to {d.get('tenant_id')}"
        ) + note
    if command == "remove-domain":
        return (f"would remove {r.get('would_remove')}" if dry_run else f"removed {r.get('removed')}") + note
    if command == "domains":
        d = r.get("verified") or r.get("would_verify") or {}
        return (
            f"{d.get('domain')} is proven: would record it verified and route it"
            if dry_run
            else f"{d.get('domain')} is verified"
        ) + note
    if command == "deploy":
        done = r.get("deployed") or r.get("would_deploy") or []
        failed = r.get("failed") or []
        what = [
            f"{len(done)} tenant Worker(s)" if dry_run else f"{len(done)} of {len(done) + len(failed)} tenant Worker(s)"
        ]
        what[0] += f" ({', '.join(done)})" if done else ""
        if r.get("dispatcher"):
            what = ["the dispatcher"] + (what if done or failed else [])
        head = ("would deploy " if dry_run else "deployed ") + " and ".join(what)
        if failed:
            head += "; FAILED: " + ", ".join(f["tenant_id"] for f in failed) + " (re-run `deploy --all` for them)"
        if r.get("skipped"):
            head += f"; skipped (removed): {', '.join(r['skipped'])}"
        return head
    if command == "secrets":
        names = r.get("secrets_set") or r.get("would_set_secrets") or []
        return (
            f"{w}set {', '.join(names)} on {r.get('tenant_id')}"
            if dry_run
            else f"set {', '.join(names)} on {r.get('tenant_id')}"
        )
    if command == "export":
        path = r.get("exported") or r.get("output")
        rows = ", ".join(f"{t} {n}" for t, n in (r.get("rows") or {}).items())
        return f"{'would write' if dry_run else 'wrote'} {path} (0600): {rows}"
    if command == "delete":
        counts: dict[str, Any] = (r.get("erased") if "erased" in r else r.get("would_erase")) or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        if r.get("note"):
            return f"{r.get('tenant')}: {r['note']}"
        return f"would erase {shown}" if dry_run else f"erased {shown} (audit record {r.get('tenant')})"
    if command == "branding":
        fields = ", ".join(k for k, v in (r.get("branding") or {}).items() if v is not None)
        return (
            f"{w}set {r.get('tenant_id')}'s branding: {fields or 'none'}"
            if dry_run
            else f"{r.get('tenant_id')}'s branding: {fields or 'none'}"
        )
    if command == "keys" and "kind" not in r:  # status: a read
        return "key ids: " + json.dumps(r, default=str)
    if command == "keys" and "kind" in r:
        kind, active = r["kind"], r.get("active")
        if "workers" not in r and "tenants" not in r:  # retire
            gone = r.get("would_retire" if dry_run else "retired") or []
            return (
                f"{w}retire the {kind} key(s) {', '.join(gone) or '(none)'}; {active} stays active"
                if dry_run
                else f"{kind}: retired {', '.join(gone) or 'nothing'}; {active} is active"
            )
        if kind == "session":
            ids = ", ".join(f"{t} {d.get('active')}" for t, d in (r.get("tenants") or {}).items())
            return (
                f"{w}rotate the session keys: {ids or 'no tenant Worker deployed'}"
                if dry_run
                else f"session keys rotated: {ids or 'no tenant Worker deployed'}"
            )
        workers = len(r.get("workers") or [])
        return (
            f"would rotate the {kind} key to {active} ({workers} tenant Worker(s))"
            if dry_run
            else f"{kind}: {active} is active ({workers} tenant Worker(s))"
        )
    if command == "check" and "checks" in r:
        n, failing = len(r.get("checks") or []), len(r.get("failing") or [])
        return (
            f"would record {n} check(s), {failing} failing" if dry_run else f"recorded {n} check(s), {failing} failing"
        )
    if command == "backup":
        rows = ", ".join(f"{t} {n}" for t, n in (r.get("rows") or {}).items())
        return (
            f"would write {r.get('archive')} (0600): {rows}"
            if dry_run
            else f"wrote {r.get('archive')} (sha256 {r.get('sha256')}): {rows}"
        )
    if command == "restore":
        rows = ", ".join(f"{t} {n}" for t, n in (r.get("would_write" if dry_run else "written") or {}).items())
        return (
            f"would restore {r.get('tenant_id')} ({r.get('status')}): {rows}, {r.get('r2_objects')} object(s)"
            if dry_run
            else f"restored {r.get('tenant_id')} ({r.get('status')}): {rows}, {r.get('r2_objects')} object(s){note}"
        )
    rest = {k: v for k, v in r.items() if k not in ("note", "dry_run")} if r else result
    return f"{w}{command}: {json.dumps(rest, default=str)}{note}"


if __name__ == "__main__":
    sys.exit(main())
