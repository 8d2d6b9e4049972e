"""Key rotation under live traffic on the local platform: `tenants.py keys rotate KIND`.

Each rotation runs as an operator runs it (the CLI, --local, on the shared platform's state)
while 200 requests are kept in flight through the dispatcher on loopback (20 for the data key,
where each read is two Supabase calls through the local single-process gateway); every one must
succeed, and the traffic spans the whole command (bounded: each client stops after one more
request once the command has returned, or at MAX_SECONDS). The Workers the command
redeploys are replaced by the platform host without a gap, as a Cloudflare deploy is. The
tests put the platform's keys back afterwards.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from typing import Any, Awaitable, Callable, Iterator

import httpx
import pytest

from controlplane.aead import CryptographyAead
from localrt.devvars import read_dev_vars, write_dev_vars
from localrt.namespace import ScriptSpec
from localrt.supabase_stack import JwtKeyFollower
from scripts.tenants import main
from shared.context import context_headers, derive_tenant_key, derive_tenant_keyring
from shared.jwt import HS256Signer
from shared.keys import Key, Keyring, new_secret
from shared.models import TenantContext, TenantType
from shared.session import issue_session
from shared.tiers import Tier
from tenant_worker.sessions import SESSION_COOKIE
from tests.support import Platform
from tests.test_integrations_http import SECRET, open_with_cryptography, put, vault_tenant
from tests.usage_support import UsageTenant

CONCURRENCY = 200
MAX_SECONDS = 300.0
AEAD = CryptographyAead()


def cli(platform: Platform, stack: Any, *argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"SUPABASE_URL": stack.url, "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key}
    code = main(
        [*argv, "--json", "--state-dir", str(platform.paths.root), "--wrangler-state", str(platform.wrangler_state)],
        env=env,
        stdout=out,
        stderr=err,
    )
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None), err.getvalue()


def under_load(
    platform: Platform,
    action: Callable[[], Any],
    request: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    concurrency: int = CONCURRENCY,
    retried: list[str] | None = None,
) -> tuple[Any, list[Any], list[tuple[float, float]]]:
    """Run `action` in a thread while `concurrency` requests are kept in flight (each client starts
    its next request as its last one answers); (its result, failures, each request's (start, end)
    wall-clock times). Bounded: the clients stop once the action has returned and each has made
    one more request, or at MAX_SECONDS.

    With `retried` (a list), a GET whose kept-alive connection the server closed before any answer
    (httpx ReadError / RemoteProtocolError) is sent once more, as HTTP clients do for idempotent
    requests (RFC 9112 9.3.1), and noted there; it fails only if that retry fails too. A refused
    connection (ConnectError) or any non-200 answer is never retried."""
    result: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc
        finally:
            done.set()

    async def clients() -> tuple[list[Any], list[tuple[float, float]]]:
        failures: list[Any] = []
        spans: list[tuple[float, float]] = []
        deadline = time.monotonic() + MAX_SECONDS
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:

            async def one_client(i: int) -> None:
                last = False
                while not last and time.monotonic() < deadline:
                    last = done.is_set()  # one more request after the action returned
                    started = time.time()
                    try:
                        try:
                            resp = await request(client, i)
                        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                            if retried is None:
                                raise
                            retried.append(repr(exc))
                            resp = await request(client, i)
                        if resp.status_code != 200:
                            failures.append((resp.status_code, resp.text[:200]))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    spans.append((started, time.time()))

            thread = threading.Thread(target=target)
            thread.start()
            await asyncio.gather(*(one_client(i) for i in range(concurrency)))
            thread.join(timeout=MAX_SECONDS)
        return failures, spans

    failures, spans = asyncio.run(clients())
    print(
        f"[under_load] {len(spans)} requests, {concurrency} in flight, {len(failures)} failures, "
        f"{len(retried or [])} retried"
    )
    if "error" in result:
        raise result["error"]
    return result.get("value"), failures, spans


def spanned(spans: list[tuple[float, float]], platform: Platform, before: int, script: str) -> None:
    """Traffic crossed every replacement of `script`: requests in flight at the swap (served by the
    old version as it drained) and requests started after it (the new version)."""
    swaps = [
        e["at"] / 1000
        for e in platform.host.events[before:]
        if e.get("event") == "script_ready" and e.get("replaced") and e.get("script") == script
    ]
    assert swaps, f"{script} was not replaced"
    for at in swaps:
        assert any(s < at < e for s, e in spans), f"no request in flight at the swap of {script}"
        assert any(s > at for s, _ in spans), f"no request after the swap of {script}"


def replaced_since(platform: Platform, before: int) -> list[str]:
    return [
        e["script"] for e in platform.host.events[before:] if e.get("event") == "script_ready" and e.get("replaced")
    ]


# ---- data: PLATFORM_DATA_KEYS, every tenant's data key re-wrapped ------------------------------


def test_data_key_rotation_while_reads_happen(platform: Platform, pg_cluster: Any, supabase_stack: Any) -> None:
    keys_file = platform.paths.platform_secrets
    old = Keyring.parse(read_dev_vars(keys_file)["PLATFORM_DATA_KEYS"])
    with vault_tenant(platform, pg_cluster) as t:
        assert put(t, "seo-tool", {"secret": SECRET}).status_code == 201
        cookie = t.session("admin")

        async def read(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{platform.url}/api/integrations/seo-tool", headers={"Host": t.host, **cookie})

        before = len(platform.host.events)
        # Each read is two Supabase calls and an unwrap + decrypt: 20 in flight keep 2 cores busy
        # without queueing past the Worker's 10 s data timeout while 4 Workers are replaced twice
        # (at 200, some reads wait longer than that for the local single-process gateway: 503).
        (code, report, err), failures, spans = under_load(
            platform, lambda: cli(platform, supabase_stack, "keys", "rotate", "data"), read, concurrency=20
        )
        assert code == 0, err
        assert failures == [], failures[:5]
        spanned(spans, platform, before, t.script)
        new = report["active"]
        assert new != old.active.kid and report["rewrapped"] >= 1 and report["retired"] == old.kids()
        assert "PLATFORM_DATA_KEYS" not in json.dumps(report) and old.active.secret not in json.dumps(report)
        ring = Keyring.parse(read_dev_vars(keys_file)["PLATFORM_DATA_KEYS"])
        assert ring.kids() == [new]
        assert platform.registry.secrets_of(t.script)["PLATFORM_DATA_KEYS"] == ring.format()
        with pg_cluster.connect() as conn:
            left = conn.execute(
                "select count(*) from public.tenant_data_keys where platform_key_id <> %s", (new,)
            ).fetchone()
        assert left == (0,)
        assert open_with_cryptography(ring.format(), t.tenant_id, "seo-tool", pg_cluster) == SECRET
        # New data keys are wrapped under the new key too.
        with vault_tenant(platform, pg_cluster, ring.format()) as fresh:
            assert put(fresh, "crm", {"secret": "x"}).status_code == 201
            with pg_cluster.connect() as conn:
                row = conn.execute(
                    "select platform_key_id from public.tenant_data_keys where tenant_id = %s", (fresh.tenant_id,)
                ).fetchone()
            assert row == (new,)


# ---- session: SESSION_SECRET, per tenant ------------------------------------------------------


def test_session_rotation_under_load_drops_no_signed_in_request(
    platform: Platform, pg_cluster: Any, supabase_stack: Any
) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        old_cookie = t.session("client")  # signed with the tenant's original, bare SESSION_SECRET

        async def me(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{platform.url}/api/me", headers={"Host": t.host, **old_cookie})

        before = len(platform.host.events)
        (code, report, err), failures, spans = under_load(
            platform, lambda: cli(platform, supabase_stack, "keys", "rotate", "session", t.tenant_id), me
        )
        assert code == 0, err
        assert failures == [], failures[:5]
        spanned(spans, platform, before, t.script)
        assert replaced_since(platform, before) == [t.script]  # only this tenant's Worker
        ring = Keyring.parse(platform.registry.secrets_of(t.script)["SESSION_SECRET"])
        assert ring.kids() == ["s1", "k0"] and ring.keys[1].not_after == report["old_accepted_until"]
        assert report["tenants"][t.tenant_id]["active"] == "s1"
        new_token = issue_session(
            ring.format(), tenant_id=t.tenant_id, user_id=t.users["admin"], role="admin", now=time.time()
        )
        r = httpx.get(
            f"{platform.url}/api/me", headers={"Host": t.host, "cookie": f"{SESSION_COOKIE}={new_token}"}, timeout=30
        )
        assert r.status_code == 200 and r.json()["role"] == "admin", r.text
        assert t.get("/api/me").status_code == 200  # the old key still works inside its window
        stranger = issue_session(
            f"s9:{new_secret(48)}", tenant_id=t.tenant_id, user_id=t.users["admin"], role="admin", now=time.time()
        )
        r = httpx.get(
            f"{platform.url}/api/me", headers={"Host": t.host, "cookie": f"{SESSION_COOKIE}={stranger}"}, timeout=30
        )
        assert r.status_code == 401


# ---- jwt: the Supabase JWT key (PostgREST JWKS + the tenants' signing key) ---------------------


@pytest.fixture
def follower(platform: Platform, supabase_stack: Any) -> Iterator[JwtKeyFollower]:
    """What the run command does: PostgREST follows SUPABASE_JWT_KEYS in the platform file."""
    f = JwtKeyFollower(supabase_stack, platform.paths.platform_secrets)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            f.tick()
            stop.wait(0.2)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f
    finally:
        stop.set()
        thread.join(timeout=5)
        _restore_jwt(platform, supabase_stack)


def _restore_jwt(platform: Platform, stack: Any) -> None:
    """Back to the project secret everywhere: tenants first (it stays accepted), then PostgREST."""
    values = read_dev_vars(platform.paths.platform_secrets)
    values.pop("SUPABASE_JWT_KEYS", None)
    write_dev_vars(platform.paths.platform_secrets, values)
    for name in platform.registry.names():
        secrets = platform.registry.secrets_of(name)
        spec = platform.registry.get(name)
        if spec is not None and secrets.get("SUPABASE_JWT_SECRET", stack.jwt_secret) != stack.jwt_secret:
            platform.registry.deploy(spec, {**secrets, "SUPABASE_JWT_SECRET": stack.jwt_secret})
    platform.host.sync()
    stack.set_jwt_keys(None)


def test_jwt_key_rotation_under_load_drops_no_data_request(
    platform: Platform, pg_cluster: Any, supabase_stack: Any, follower: JwtKeyFollower
) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        cookie = t.session("client")

        async def tenant_record(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{platform.url}/api/tenant", headers={"Host": t.host, **cookie})

        before = len(platform.host.events)
        (code, report, err), failures, spans = under_load(
            platform, lambda: cli(platform, supabase_stack, "keys", "rotate", "jwt"), tenant_record
        )
        assert code == 0, err
        assert failures == [], failures[:5]
        spanned(spans, platform, before, t.script)
        ring = Keyring.parse(read_dev_vars(platform.paths.platform_secrets)["SUPABASE_JWT_KEYS"])
        assert ring.active.kid == report["active"] == "j1"
        assert platform.registry.secrets_of(t.script)["SUPABASE_JWT_SECRET"] == ring.active_only().format()
        assert t.get("/api/tenant").status_code == 200  # now signed with j1 and accepted
        # PostgREST accepts j1 and the project secret (the API keys), nothing else.
        assert supabase_stack.accepted_jwt_keys().kids() == ["k0", "j1"]


# ---- context: CONTEXT_SIGNING_SECRET -> TENANT_CONTEXT_KEY ------------------------------------


def _direct(platform: Platform, t: UsageTenant, key: Key) -> httpx.Response:
    """A request straight to the tenant's workerd with a context signed by `key` (as a dispatcher)."""
    port = platform.host.status()["scripts"][t.script]["port"]
    ctx = TenantContext(t.tenant_id, TenantType.CUSTOM_DOMAIN, Tier(t.tier), t.host, "d" * 32, int(time.time()))
    return httpx.get(
        f"http://127.0.0.1:{port}/api/health", headers={"Host": t.host, **context_headers(ctx, key)}, timeout=30
    )


def _signed_kid(resp: httpx.Response) -> str:
    """The context key id the dispatcher signed this request with, as the echo Worker saw it."""
    sig = resp.json()["headers"].get("x-tenant-signature", "")
    return sig.split("=", 1)[0].removeprefix("v1.") if sig.startswith("v1.") else "k0"


def test_context_key_rotation_under_load_drops_no_request(
    platform: Platform, pg_cluster: Any, supabase_stack: Any
) -> None:
    """The running dispatcher is replaced by one on the new key during the command (the host starts
    it on the same public socket and drains the old one): no request refused, none signed with the
    old key after the command, and the old key accepted only until its expiry (or retirement)."""
    dispatcher_file = platform.paths.dispatcher_secrets
    original = read_dev_vars(dispatcher_file)["CONTEXT_SIGNING_SECRET"]
    with vault_tenant(platform, pg_cluster) as t:
        hosts = [t.host, "partner1.cozyartzmedia.com", "partner-seo.com", "cozyartzmedia.com"]

        async def health(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.get(f"{platform.url}/api/health", headers={"Host": hosts[i % len(hosts)]})

        try:
            generation = platform.host.status()["dispatcher_generation"]
            before = len(platform.host.events)
            started = time.time()
            retried: list[str] = []
            (code, report, err), failures, spans = under_load(
                platform, lambda: cli(platform, supabase_stack, "keys", "rotate", "context"), health, retried=retried
            )
            assert code == 0, err
            assert failures == [], failures[:5]
            # The old dispatcher closes its idle kept-alive connections as it drains; a request sent
            # on one at that instant is retried by the client (at most a handful of the ~1000).
            assert len(retried) <= 10, retried[:5]
            spanned(spans, platform, before, t.script)
            assert replaced_since(platform, before).count(t.script) == 2  # accept new, then the expiry
            # The dispatcher was replaced inside the command, with requests in flight across the swap.
            swaps = [e for e in platform.host.events[before:] if e.get("event") == "dispatcher_ready"]
            assert [e["context_kid"] for e in swaps] == [report["active"]] and report["dispatcher"] == "restarted"
            at = swaps[0]["at"] / 1000
            assert any(s < at < e for s, e in spans) and any(s > at for s, _ in spans)
            drained = [e for e in platform.host.events[before:] if e.get("event") == "dispatcher_drained"]
            assert [e["generation"] for e in drained] == [generation]
            status = platform.host.status()
            assert status["dispatcher_context_kid"] == report["active"] != "k0"
            assert status["dispatcher_generation"] != generation
            master = Keyring.parse(read_dev_vars(dispatcher_file)["CONTEXT_SIGNING_SECRET"])
            assert master.kids() == [report["active"], "k0"]
            old_until = master.keys[1].not_after
            assert (
                old_until == report["old_accepted_until"] and int(started) + 95 <= (old_until or 0) <= time.time() + 96
            )
            tenant_ring = Keyring.parse(platform.registry.secrets_of(t.script)["TENANT_CONTEXT_KEY"])
            assert tenant_ring == derive_tenant_keyring(master, t.tenant_id)
            # What the public port signs with now, as a tenant script sees it (the echo Worker).
            echo = ScriptSpec("cmgsite-partner-tenant", vars={"TENANT_ID": "partner1"}, bundle="echo")
            with platform.script_replaced("cmgsite-partner-tenant", echo, {}):
                echoed = httpx.get(
                    f"{platform.url}/api/health", headers={"Host": "partner1.cozyartzmedia.com"}, timeout=30
                )
                assert echoed.status_code == 200, echoed.text
                assert _signed_kid(echoed) == report["active"]
            new = Key(master.active.kid, derive_tenant_key(master.active.secret, t.tenant_id))
            old = Key("k0", derive_tenant_key(original, t.tenant_id))
            assert _direct(platform, t, new).status_code == 200
            # The old key still opens inside its overlap window, a stranger never.
            assert _direct(platform, t, old).status_code == 200
            assert (
                _direct(platform, t, Key("c9", derive_tenant_key(master.active.secret, t.tenant_id))).status_code == 403
            )
            # Retiring is allowed now (the running dispatcher signs with the new key): the old key is refused.
            code, retired, err = cli(platform, supabase_stack, "keys", "retire", "context")
            assert code == 0, err
            assert retired["retired"] == ["k0"] and retired["active"] == report["active"]
            assert _direct(platform, t, old).status_code == 403
            assert _direct(platform, t, new).status_code == 200
            assert httpx.get(f"{platform.url}/api/health", headers={"Host": t.host}, timeout=30).status_code == 200
        finally:
            write_dev_vars(dispatcher_file, {**read_dev_vars(dispatcher_file), "CONTEXT_SIGNING_SECRET": original})
            for name in platform.registry.names():
                spec = platform.registry.get(name)
                if spec is None or "TENANT_ID" not in spec.vars:
                    continue
                secrets = platform.registry.secrets_of(name)
                legacy = derive_tenant_keyring(original, spec.vars["TENANT_ID"]).format()
                if secrets.get("TENANT_CONTEXT_KEY") != legacy:
                    platform.registry.deploy(spec, {**secrets, "TENANT_CONTEXT_KEY": legacy})
            platform.host.sync()
            platform.host.restart_dispatcher()


def test_retire_context_refuses_while_the_running_dispatcher_signs_with_an_older_key(
    platform: Platform, supabase_stack: Any
) -> None:
    """The keyring file says c-new is active but the running dispatcher was not switched (the file
    edited by hand): retiring would strand every request it signs, so it is refused."""
    dispatcher_file = platform.paths.dispatcher_secrets
    original = read_dev_vars(dispatcher_file)["CONTEXT_SIGNING_SECRET"]
    current = Keyring.parse(original)
    staged = Keyring((Key("c7", new_secret(48)), *current.keys))
    try:
        write_dev_vars(dispatcher_file, {**read_dev_vars(dispatcher_file), "CONTEXT_SIGNING_SECRET": staged.format()})
        code, _, err = cli(platform, supabase_stack, "keys", "retire", "context")
        assert code == 2 and f"signs with {current.active.kid}, not c7" in err
        assert read_dev_vars(dispatcher_file)["CONTEXT_SIGNING_SECRET"] == staged.format()
    finally:
        write_dev_vars(dispatcher_file, {**read_dev_vars(dispatcher_file), "CONTEXT_SIGNING_SECRET": original})


def test_keys_status_shows_key_ids_only(platform: Platform, supabase_stack: Any) -> None:
    code, status, err = cli(platform, supabase_stack, "keys", "status")
    assert code == 0, err
    assert status["context"]["active"] == "k0" and status["data"]["active"].startswith("p")
    shown = json.dumps(status)
    for path in (platform.paths.dispatcher_secrets, platform.paths.platform_secrets):
        for name, value in read_dev_vars(path).items():
            if name not in ("CONTEXT_SIGNING_SECRET", "PLATFORM_DATA_KEYS"):  # the keyrings (beside e.g. SUPABASE_URL)
                continue
            for key in Keyring.parse(value).keys:
                assert key.secret not in shown


def _accepted(stack: Any, key: Key) -> bool:
    now = int(time.time())
    token = HS256Signer(key.secret, kid=key.kid).sign({"role": "anon", "iat": now, "exp": now + 60})
    r = httpx.get(
        f"{stack.rest_url}/", headers={"apikey": stack.anon_key, "authorization": f"Bearer {token}"}, timeout=10
    )
    return r.status_code == 200


def _eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(100):  # PostgREST reloads its config in-process: well under a second here
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(what)


def test_postgrest_accepts_the_previous_jwt_key_until_it_expires(supabase_stack: Any, tmp_path: Any) -> None:
    path = tmp_path / "platform.dev.vars"
    j1, j2 = Key("j1", new_secret(48)), Key("j2", new_secret(48))
    now = time.time()
    write_dev_vars(path, {"SUPABASE_JWT_KEYS": Keyring((j2, Key("j1", j1.secret, int(now) + 60))).format()})
    follower = JwtKeyFollower(supabase_stack, path)
    try:
        assert follower.tick(now)
        _eventually(lambda: _accepted(supabase_stack, j1) and _accepted(supabase_stack, j2), "both keys accepted")
        assert not follower.tick(now + 30)  # nothing changed
        assert follower.tick(now + 61)  # j1 past its not_after: dropped
        _eventually(lambda: not _accepted(supabase_stack, j1), "the expired key refused")
        assert _accepted(supabase_stack, j2)
        assert _accepted(supabase_stack, Key("k0", supabase_stack.jwt_secret))  # the project secret stays
    finally:
        supabase_stack.set_jwt_keys(None)
