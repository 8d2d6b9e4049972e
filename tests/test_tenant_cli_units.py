"""Fast checks of the control plane's input parsing and its Cloudflare API edge: the official SDK
against the loopback fake (tests/fake_cloudflare.py), no platform needed."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import sqlite3
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.cloudflare import CloudflareApi, CloudflareError, connect, registry_ssl_status
from controlplane.dryrun import DryRunTransport
from controlplane.errors import BackendError, Refused
from controlplane.model import DOMAIN_RE, domain_type_for, new_tenant, parse_domain, script_name_for
from controlplane.output import Reporter
from controlplane.replica import ApiD1, RoutingReplica, bind_params, render
from shared.models import TenantType
from tests.fake_cloudflare import D1_DATABASE_ID, FakeCloudflare

ROOT = Path(__file__).resolve().parent.parent


@given(st.text(max_size=300))
@settings(max_examples=1500, deadline=None)
def test_any_operator_typed_domain_is_normalised_or_refused(raw: str) -> None:
    try:
        domain = parse_domain(raw)
    except Refused as exc:
        assert str(exc).startswith("invalid domain")
        return
    assert DOMAIN_RE.match(domain) and domain == domain.lower() and len(domain) <= 253


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Shop.Example.COM.", "shop.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("  a-b.example  ", "a-b.example"),
    ],
)
def test_domains_are_normalised(raw: str, expected: str) -> None:
    assert parse_domain(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "localhost",
        "example",
        "a..example",
        "-a.example",
        "a.example:443",
        "https://a.example",
        "a.example/x",
        "user@a.example",
        "192.168.0.1",
        "[::1]",
        "a_b.example",
        "x" * 64 + ".example",
        "a.example\nb.example",
        "*.example.com",
    ],
)
def test_junk_domains_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        parse_domain(raw)


def test_domain_kind_must_fit_the_tenant_type() -> None:
    assert domain_type_for(TenantType.PARTNER_SUBDOMAIN, "p.cozyartzmedia.com") == "subdomain"
    assert domain_type_for(TenantType.CUSTOM_DOMAIN, "shop.example.com") == "custom"
    with pytest.raises(Refused, match="partner-subdomain"):
        domain_type_for(TenantType.CUSTOM_DOMAIN, "evil.cozyartzmedia.com")  # a partner slot, not a custom domain
    with pytest.raises(Refused, match="primary tenant"):
        domain_type_for(TenantType.CUSTOM_DOMAIN, "cozyartzmedia.com")


def test_tenant_ids_that_would_make_bad_script_names_are_refused() -> None:
    with pytest.raises(Refused, match="too long"):
        script_name_for("a" * 60)
    with pytest.raises(Refused, match="invalid tenant id"):
        new_tenant("../etc", "X", "custom-domain", "x.example", "starter")


@given(st.text(max_size=80))
@settings(max_examples=500, deadline=None)
def test_rendered_sql_literals_cannot_break_out(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(ValueError):
            render(("SELECT ?1", (value,)))
        return
    sql = render(("SELECT ?1", (value,)))
    body = sql[len("SELECT ") :]
    assert body[0] == body[-1] == "'" and "'" not in body[1:-1].replace("''", "")


def test_ssl_states_map_to_the_registry_vocabulary() -> None:
    assert registry_ssl_status("active") == "active"
    for pending in ("initializing", "pending_validation", "pending_issuance", "pending_deployment"):
        assert registry_ssl_status(pending) == "pending"
    for failed in ("validation_timed_out", "issuance_timed_out", "expired", "deleted"):
        assert registry_ssl_status(failed) == "failed"


# ---- Cloudflare's API through the official SDK, against the loopback fake -----------------
@pytest.fixture
def cf(tmp_path: Path) -> Iterator[FakeCloudflare]:
    d1 = tmp_path / "d1.sqlite"
    with sqlite3.connect(d1) as conn:  # the routing replica's schema, as the D1 migrations make it
        for migration in sorted((ROOT / "migrations" / "d1").glob("*.sql")):
            conn.executescript(migration.read_text())
    with FakeCloudflare(token="t", account_id="acc", zone_id="zone", d1_file=d1) as fake:
        yield fake


@contextlib.asynccontextmanager
async def api_for(
    cf: FakeCloudflare,
    *,
    retries: int = 0,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[CloudflareApi]:
    api = CloudflareApi(
        connect(token="t", base_url=base_url or cf.url, max_retries=retries, transport=transport),
        account_id="acc",
        zone_id="zone",
    )
    try:
        yield api
    finally:
        await api.aclose()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/client/v4"


async def test_an_api_error_is_a_cloudflare_error_with_its_codes(cf: FakeCloudflare) -> None:
    async with api_for(cf) as api:
        await api.create_custom_hostname("shop.example.com")
        with pytest.raises(CloudflareError) as caught:
            await api.create_custom_hostname("shop.example.com")
    assert caught.value.status == 409 and caught.value.codes == {1406}
    assert "Cloudflare API error (HTTP 409): 1406: Duplicate custom hostname found." in str(caught.value)
    assert isinstance(caught.value, BackendError) and caught.value.exit_code == 1


async def test_transient_errors_are_retried_by_the_sdk_then_reported(cf: FakeCloudflare) -> None:
    cf.fail("POST custom_hostnames", 503, times=1)
    async with api_for(cf, retries=2) as api:
        assert (await api.create_custom_hostname("a.example.com")).hostname == "a.example.com"
        cf.fail("POST custom_hostnames", 500, times=3)
        with pytest.raises(CloudflareError, match=r"HTTP 500\): 1000: injected failure"):
            await api.create_custom_hostname("b.example.com")
    posts = [p for m, p, _ in cf.requests if m == "POST"]
    assert len(posts) == 2 + 3  # each failure retried twice, as the SDK does
    assert cf.by_hostname("b.example.com") is None


async def test_cloudflare_html_error_page_becomes_a_clear_error(cf: FakeCloudflare) -> None:
    cf.fail("POST custom_hostnames", 502, html="<html>502 Bad Gateway</html>")
    async with api_for(cf) as api:
        with pytest.raises(CloudflareError, match="HTTP 502.*not the API's JSON envelope"):
            await api.create_custom_hostname("shop.example.com")


async def test_cloudflare_unreachable_is_a_backend_error_not_a_traceback(cf: FakeCloudflare) -> None:
    async with api_for(cf, base_url=closed_port_url()) as api:
        with pytest.raises(BackendError, match="Cloudflare API unreachable: ConnectError") as caught:
            await api.kv_delete("ns", "host:x.example")
    assert not isinstance(caught.value, CloudflareError)
    assert caught.value.__suppress_context__  # raised `from None`: the CLI prints one line


async def test_kv_keys_follow_the_cursor_across_pages(cf: FakeCloudflare) -> None:
    for i in range(2345):
        cf.kv[("authkv", f"acme:session:{i:05}")] = "1"
    cf.kv[("authkv", "other:session:1")] = "1"
    async with api_for(cf) as api:
        keys = await api.kv_keys("authkv", "acme:")
    assert keys == [f"acme:session:{i:05}" for i in range(2345)]
    lists = [p for m, p, _ in cf.requests if m == "GET" and "/keys?" in p]
    assert len(lists) == 3 and "cursor=" not in lists[0] and "cursor=2000" in lists[2]
    assert all("prefix=acme%3A" in p and "limit=1000" in p for p in lists)


async def test_custom_hostnames_are_listed_page_by_page(cf: FakeCloudflare) -> None:
    names = [f"h{i:03}.example.com" for i in range(123)]
    for name in names:
        cf.add_hostname(name)
    async with api_for(cf) as api:
        listed = [h.hostname async for h in api.custom_hostnames()]
        found = await api.find_custom_hostname("h077.example.com")
        assert await api.find_custom_hostname("h077.example") is None  # exact, never a partial match
    assert sorted(listed) == names
    pages = [p for m, p, _ in cf.requests if m == "GET" and p.split("?")[0].endswith("/custom_hostnames")]
    assert sum("hostname.exact" not in p for p in pages) == 4  # 50 + 50 + 23, then an empty page ends it
    assert found is not None and found.hostname == "h077.example.com" and found.ssl_status == "pending"
    assert any("hostname.exact=h077.example.com" in p for p in pages)


async def test_scripts_and_kv_values_absent_are_false_and_none(cf: FakeCloudflare) -> None:
    cf.scripts[("cmgsite-tenants", "cmgsite-acme")] = {"id": "cmgsite-acme"}
    cf.kv[("kv", "host:acme.example")] = '{"tenant_id": "acme"}'
    async with api_for(cf) as api:
        assert await api.script_exists("cmgsite-tenants", "cmgsite-acme") is True
        assert await api.script_exists("cmgsite-tenants", "cmgsite-nobody") is False
        assert await api.kv_get("kv", "host:acme.example") == '{"tenant_id": "acme"}'
        assert await api.kv_get("kv", "host:nobody.example") is None
        await api.delete_script("cmgsite-tenants", "cmgsite-acme")
        await api.delete_script("cmgsite-tenants", "cmgsite-acme")  # already gone: not an error
        cf.fail("GET scripts", 403, code=10000, message="Authentication error")
        with pytest.raises(CloudflareError, match="10000"):  # a refusal is not "absent"
            await api.script_exists("cmgsite-tenants", "cmgsite-acme")
    assert (
        "DELETE",
        "/client/v4/accounts/acc/workers/dispatch/namespaces/cmgsite-tenants/scripts/cmgsite-acme?force=true",
        None,
    ) in cf.requests


async def test_the_token_is_the_only_credential_sent(cf: FakeCloudflare, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK would send CLOUDFLARE_EMAIL/CLOUDFLARE_API_KEY from the process environment instead of the token."""
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "someone@example.com")
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "global-key")
    async with api_for(cf) as api:
        assert await api.script_exists("cmgsite-tenants", "x") is False  # 404, not the fake's 403 for no token


async def test_d1_writes_bind_their_values_and_route_exactly_what_was_given(cf: FakeCloudflare) -> None:
    hostile = "O'Brien\"; DROP TABLE tenants; --"
    tenant, domain = new_tenant("acme", hostile, "custom-domain", "shop.acme.example", "growth", brand_name="It's")
    async with api_for(cf) as api:
        replica = RoutingReplica(ApiD1(api, D1_DATABASE_ID))
        await replica.replace_tenant(tenant, [domain])
        row = await replica.tenant("acme")
        routed = await replica.domains("acme")
        assert await replica.domain_holder("shop.acme.example") == "acme"
        await replica.drop_tenant("acme")
        assert await replica.tenant("acme") is None and await replica.domain_holder("shop.acme.example") is None
    assert row is not None and row["name"] == hostile and json.loads(row["whitelabel_config"]) == {"brand_name": "It's"}
    assert [(d["domain"], d["ssl_status"], d["dns_configured"]) for d in routed] == [
        ("shop.acme.example", "pending", 0)
    ]
    writes = [
        b
        for m, p, b in cf.requests
        if m == "POST" and p.endswith(f"/d1/database/{D1_DATABASE_ID}/query") and "batch" in (b or {})
    ]
    assert len(writes) == 2  # one request per batch
    upsert = writes[0]["batch"][0]
    assert upsert["sql"].startswith("INSERT INTO tenants") and hostile in upsert["params"]
    for sql, params in cf.d1_queries:
        assert all(isinstance(p, str) for p in params)
        assert "acme" not in sql and "O'Brien" not in sql  # values travel as params only


async def test_a_failing_d1_batch_changes_nothing(cf: FakeCloudflare) -> None:
    tenant, domain = new_tenant("acme", "Acme", "custom-domain", "shop.acme.example", "growth")
    bad = domain.model_copy(update={"domain_type": "not-a-type"})  # the D1 schema's CHECK refuses it
    async with api_for(cf) as api:
        replica = RoutingReplica(ApiD1(api, D1_DATABASE_ID))
        with pytest.raises(CloudflareError, match="7500") as caught:
            await replica.replace_tenant(tenant, [bad])
        assert await replica.tenant("acme") is None  # the tenant upsert before it was rolled back
    assert caught.value.status == 400


def test_d1_params_are_strings() -> None:
    assert bind_params(("a'b", 1, 0, True, False)) == ["a'b", "1", "0", "1", "0"]
    with pytest.raises(TypeError):
        bind_params((None,))


# ---- dry-run at the SDK's transport ---------------------------------------------------------
async def test_dry_run_sends_reads_and_prints_writes_as_they_would_be_sent(cf: FakeCloudflare) -> None:
    out = io.StringIO()
    reporter = Reporter(out=out, err=io.StringIO())
    cf.kv[("kv", "host:a.example")] = "cached"
    cf.scripts[("cmgsite-tenants", "cmgsite-acme")] = {"id": "cmgsite-acme"}
    async with api_for(cf, transport=DryRunTransport(httpx.AsyncHTTPTransport(), reporter)) as api:
        assert await api.kv_get("kv", "host:a.example") == "cached"  # a read: sent
        await api.kv_delete("kv", "host:a.example")
        created = await api.create_custom_hostname("shop.example.com")
        assert (created.id, created.ssl_status) == ("dry-run", "pending")
        await api.delete_script("cmgsite-tenants", "cmgsite-acme")
        d1 = ApiD1(api, D1_DATABASE_ID)
        assert await d1.query(("SELECT count(*) AS n FROM tenants WHERE tenant_id = ?1", ("acme",))) == [{"n": 0}]
        await RoutingReplica(d1).drop_tenant("acme")
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        f"[dry-run] cloudflare api: would DELETE {cf.url}/accounts/acc/storage/kv/namespaces/kv/values/host:a.example",
        f"[dry-run] cloudflare api: would POST {cf.url}/zones/zone/custom_hostnames "
        '{"hostname":"shop.example.com","ssl":{"method":"http","type":"dv","settings":{"min_tls_version":"1.2"}}}',
        f"[dry-run] cloudflare api: would DELETE {cf.url}/accounts/acc/workers/dispatch/namespaces/cmgsite-tenants/"
        "scripts/cmgsite-acme?force=true",
    ]
    assert lines[3].startswith(
        f"[dry-run] cloudflare api: would POST {cf.url}/accounts/acc/d1/database/"
        f'{D1_DATABASE_ID}/query {{"batch":[{{"sql":"DELETE FROM tenant_domains WHERE tenant_id = ?1"'
    )
    assert len(lines) == 4 and "Bearer" not in out.getvalue()
    assert cf.kv[("kv", "host:a.example")] == "cached" and ("cmgsite-tenants", "cmgsite-acme") in cf.scripts
    assert {m for m, _, _ in cf.requests} == {"GET", "POST"} and not cf.hostnames
    assert [sql for sql, _ in cf.d1_queries] == ["SELECT count(*) AS n FROM tenants WHERE tenant_id = ?1"]


async def test_dry_run_offline_warns_once_and_plans_as_if_cloudflare_were_empty(cf: FakeCloudflare) -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err)
    transport, offline = DryRunTransport(httpx.AsyncHTTPTransport(), reporter), closed_port_url()
    async with api_for(cf, base_url=offline, transport=transport) as api:
        assert await api.script_exists("cmgsite-tenants", "cmgsite-acme") is False
        assert await api.find_custom_hostname("shop.example.com") is None
        assert await api.kv_keys("authkv", "acme:") == []
        assert await api.kv_get("kv", "host:a.example") is None
        assert await RoutingReplica(ApiD1(api, D1_DATABASE_ID)).tenant("acme") is None
        await api.kv_delete("kv", "host:a.example")
    assert err.getvalue().count("warning: cannot read Cloudflare's API (ConnectError") == 1
    assert out.getvalue().splitlines() == [
        f"[dry-run] cloudflare api: would DELETE {offline}/accounts/acc/storage/kv/namespaces/kv/values/host:a.example"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["domains", "status", "--json", "partner-seo"],
        ["domains", "status", "partner-seo", "--json", "--refresh"],
        ["domains", "verify", "--json", "partner-seo", "login.partner-seo.com"],
        ["show", "--json", "partner-seo"],
        ["deploy", "--dry-run", "partner-seo"],
    ],
)
def test_a_tenant_id_after_an_option_is_understood(argv: list[str]) -> None:
    from scripts.tenants import parser

    args = parser().parse_args(argv)
    assert args.tenant_id == "partner-seo" and (args.json or args.dry_run)


# ---- what the operator reads: dry-run wording, failed reads, fingerprints, output paths ---------
def test_a_dry_run_reporter_says_would_and_counts_no_writes() -> None:
    out, err = io.StringIO(), io.StringIO()
    dry = Reporter(out=out, err=err, dry_run=True)
    dry.step("d1: route acme (active) at a.example")
    dry.step("kv: purge 2 cached route(s)")
    dry.step("namespace cmgsite-tenants exists", read=True)
    dry.plan("supabase", "PATCH http://x/rest/v1/tenants {}")
    dry.plan("cloudflare api", "would DELETE http://x/values/host:a.example")
    assert err.getvalue().splitlines() == [
        "  - d1: would route acme (active) at a.example",
        "  - kv: would purge 2 cached route(s)",
        "  - namespace cmgsite-tenants exists",
    ]
    assert out.getvalue().splitlines() == [
        "[dry-run] supabase: would PATCH http://x/rest/v1/tenants {}",
        "[dry-run] cloudflare api: would DELETE http://x/values/host:a.example",
    ]
    assert dry.writes_started == 0
    real = Reporter(out=io.StringIO(), err=io.StringIO())
    real.step("namespace cmgsite-tenants exists", read=True)
    assert real.writes_started == 0
    real.step("supabase: register acme")
    assert real.writes_started == 1 and real.last_step == "supabase: register acme"


class FakeRunner:
    def __init__(self, result: str | BackendError) -> None:
        self.result = result

    def run(self, argv: object, *, reads: bool = False, check: bool = True) -> str:
        if isinstance(self.result, BackendError):
            raise self.result
        return self.result


def test_a_namespace_read_tells_not_found_from_could_not_read() -> None:
    from controlplane.wrangler import namespace_state

    assert namespace_state(FakeRunner('{"namespace_name": "cmgsite-tenants"}'))[0] == "exists"
    assert namespace_state(
        FakeRunner(
            BackendError("`wrangler dispatch-namespace get …` exited 1:\n✘ [ERROR] namespace not found [code: 100119]")
        )
    ) == ("missing", "")
    state, detail = namespace_state(
        FakeRunner(
            BackendError(
                "`wrangler dispatch-namespace get …` exited 1:\n\n✘ [ERROR] fetch failed: getaddrinfo ENOTFOUND api.cloudflare.com"
            )
        )
    )
    assert state == "unreadable" and detail == "✘ [ERROR] fetch failed: getaddrinfo ENOTFOUND api.cloudflare.com"
    # wrangler 4.164 offline, as it prints it (colours and all): the reason, not the log file's name
    offline = (
        "`wrangler dispatch-namespace get …` exited 1:\n\x1b[31m✘ \x1b[41;31m[\x1b[41;97mERROR\x1b[41;31m]\x1b[0m "
        "\x1b[1mUnable to resolve Cloudflare's API hostname (api.cloudflare.com or dash.cloudflare.com).\x1b[0m\n"
        "  Please check your network connection and DNS settings.\n"
        '🪵  Logs were written to "/root/.config/.wrangler/logs/x.log"'
    )
    assert namespace_state(FakeRunner(BackendError(offline))) == (
        "unreadable",
        "✘ [ERROR] Unable to resolve Cloudflare's API hostname (api.cloudflare.com or dash.cloudflare.com).",
    )


def test_the_erasure_fingerprint_is_keyed(tmp_path: Path) -> None:
    from controlplane.errors import ConfigError
    from controlplane.tenant_data import erasure_fingerprint, fingerprint_key

    key = fingerprint_key({}, tmp_path, remote=False)
    made = tmp_path / "secrets" / "audit-fingerprint.key"
    assert made.stat().st_mode & 0o777 == 0o600 and fingerprint_key({}, tmp_path, remote=False) == key
    mine = erasure_fingerprint(key, "acme")
    assert mine.startswith("hmac-sha256:") and len(mine) == len("hmac-sha256:") + 32
    assert mine != erasure_fingerprint(b"someone else's key of enough length", "acme")
    assert mine != erasure_fingerprint(key, "acme2")
    with pytest.raises(ConfigError, match="AUDIT_FINGERPRINT_KEY"):
        fingerprint_key({}, tmp_path, remote=True)
    with pytest.raises(ConfigError, match="too short"):
        fingerprint_key({"AUDIT_FINGERPRINT_KEY": "short"}, tmp_path, remote=True)
    assert fingerprint_key({"AUDIT_FINGERPRINT_KEY": "k" * 40}, tmp_path, remote=True) == b"k" * 40


def test_export_paths_in_the_working_tree_must_be_git_ignored(tmp_path: Path) -> None:
    from scripts.tenants import check_output_path

    with pytest.raises(Refused, match="not git-ignored"):
        check_output_path(ROOT / "controlplane" / "acme.json", force=False)
    check_output_path(ROOT / ".local" / "acme-export.json", force=False)  # .local/ is git-ignored
    check_output_path(tmp_path / "acme.json", force=False)
    (tmp_path / "acme.json").write_text("{}")
    with pytest.raises(Refused, match="--force"):
        check_output_path(tmp_path / "acme.json", force=False)
    check_output_path(tmp_path / "acme.json", force=True)
    with pytest.raises(Refused, match="does not exist"):
        check_output_path(tmp_path / "nowhere" / "acme.json", force=False)


def test_add_differences_name_the_command_for_each() -> None:
    from controlplane.lifecycle import add_differences

    have, _ = new_tenant("acme", "Acme", "custom-domain", "shop.acme.example", "starter")
    same, _ = new_tenant("acme", "Acme", "custom-domain", "shop.acme.example", "starter")
    assert add_differences(have, same, brand_given=False) == []
    other, _ = new_tenant("acme", "Acme Ltd", "custom-domain", "www.acme.example", "growth", "Acme!")
    text = " ".join(add_differences(have, other, brand_given=True))
    for command in (
        "`set-tier acme growth`",
        "`rename acme 'Acme Ltd'`",
        "`add-domain acme www.acme.example`",
        "`branding acme --brand-name 'Acme!'`",
    ):
        assert command in text


# ---- a dry run reads as what would happen, line by line --------------------------------------
_WOULD_WORD = re.compile(r"\bwould ([A-Za-z-]+)")
_NOT_PARTICIPLES = {"need", "seed", "embed", "proceed", "exceed", "feed", "bring"}  # base forms ending -ed/-ing
_PAST = re.compile(
    r"\b(purged|deployed|rotated|re-wrapped|rewrapped|revoked|restored|retired|wrote|written|"
    r"recorded|erased|added|removed|resuming|waiting|probing|now read)\b"
)
_FACT = re.compile(r"\b(signs with|accepts)\b")  # a statement of what is, unless it is what would happen


def dry_run_wording_problems(out: str, err: str) -> list[str]:
    """The lines of a dry run (stdout and stderr) that do not read as what would happen: "would"
    followed by a participle ("would resuming", "would deployed"), a plan line without "would",
    a progress or summary line in the past tense, or an end other than "dry run: nothing changed".
    JSON inside a line (a plan's request body) is not prose and is not read."""
    problems = []
    for line in out.splitlines() + err.splitlines():
        prose = line.split("{", 1)[0]
        for m in _WOULD_WORD.finditer(prose):
            word = m.group(1).lower()
            if word not in _NOT_PARTICIPLES and (word.endswith("ing") or word.endswith("ed")):
                problems.append(f"would + participle: {line}")
        if line.startswith("[dry-run] ") and ": would " not in prose:
            problems.append(f"plan line without 'would': {line}")
        if (
            line.startswith(("  - ", "ok: "))
            and not prose.startswith("  - $ ")
            and (_PAST.search(prose) or (_FACT.search(prose) and "would" not in prose))
        ):
            problems.append(f"says it happened: {line}")
        if line.startswith("ok: ") and not line.startswith(("ok: would ", "ok: key ids")):
            problems.append(f"summary without 'would': {line}")
    ends = [text.splitlines()[-1] for text in (out, err) if text.strip()]
    if "dry run: nothing changed" not in ends:
        problems.append("does not end with 'dry run: nothing changed'")
    return problems


def test_the_dry_run_wording_check_catches_what_reads_wrong() -> None:
    good_out = "[dry-run] keys: would store PLATFORM_DATA_KEYS = keyring ['p2', 'p1']\ndry run: nothing changed\n"
    good_err = (
        "  - data: would deploy 2 Worker(s) that read ['p2', 'p1'] and wrap new data keys under p2\n"
        "  - health: probe 3 tenant(s) through http://127.0.0.1:1\n"
        "ok: would rotate the data key to p2 (2 tenant Worker(s))\n"
    )
    assert dry_run_wording_problems(good_out, good_err) == []
    for bad_err in (
        "  - data: would resuming the rotation to p2\n",  # the wording issue 13 names
        "  - data: 2 Worker(s) now read ['p2', 'p1']\n",
        "  - jwt: would revoked ['j1']\n",
        "  - context: the dispatcher signs with c2\n",
        'ok: keys: {"kind": "data"}\n',
        "ok: would keys rotated: p2\n",
    ):
        assert dry_run_wording_problems(good_out, bad_err), bad_err
    assert dry_run_wording_problems("[dry-run] supabase: PATCH x\ndry run: nothing changed\n", "")
    assert dry_run_wording_problems("[dry-run] supabase: would PATCH x\n", "")  # no end line


@pytest.mark.parametrize(
    ("command", "result", "expected"),
    [
        (
            "keys",
            {"kind": "data", "active": "p2", "rewrapped": 3, "retired": ["p1"], "workers": ["a", "b"]},
            "would rotate the data key to p2 (2 tenant Worker(s))",
        ),
        (
            "keys",
            {"kind": "context", "active": "c2", "retired": ["c1"]},
            "would retire the context key(s) c1; c2 stays active",
        ),
        (
            "keys",
            {"kind": "session", "tenants": {"acme": {"active": "s2"}}, "signed_out": False},
            "would rotate the session keys: acme s2",
        ),
        ("check", {"checks": [{}, {}], "failing": ["a"]}, "would record 2 check(s), 1 failing"),
        (
            "backup",
            {"tenant_id": "acme", "archive": "/tmp/a.tar.gz", "rows": {"tenants": 1}},
            "would write /tmp/a.tar.gz (0600): tenants 1",
        ),
        (
            "restore",
            {"tenant_id": "acme", "status": "active", "written": {"tenants": 1}, "r2_objects": 2},
            "would restore acme (active): tenants 1, 2 object(s)",
        ),
        (
            "branding",
            {"tenant_id": "acme", "branding": {"brand_name": "Acme", "logo_url": None}},
            "would set acme's branding: brand_name",
        ),
    ],
)
def test_dry_run_summaries_say_what_would_happen(command: str, result: dict[str, object], expected: str) -> None:
    from scripts.tenants import dry_result, summary

    line = summary(command, dry_result(result), dry_run=True)
    assert line == expected
    assert dry_run_wording_problems("dry run: nothing changed\n", f"ok: {line}\n") == []


def test_every_option_of_every_command_is_in_its_help_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from scripts.tenants import main, parser

    top = parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = []
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        parsers += [([name, n], q) for n, q in nested[0].choices.items()] if nested else [([name], p)]
    for argv, p in parsers:
        assert main([*argv, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # help wraps
        for action in p._actions:
            for flag in action.option_strings:
                assert flag in text, (argv, flag)
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in (action.help or ""), (argv, action.option_strings)  # a default is said
        assert "--state-dir" in text and "default: $CMGSITE_STATE_DIR" in text, argv
