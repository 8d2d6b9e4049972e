"""UsageMeter on the local Durable Object runtime: atomic limits, periods, tiers, persistence."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import localrt  # noqa: F401  (the workers/js/pyodide stand-ins)
from localrt.dispatch import Env
from localrt.durable_objects import DurableObjects
from pyodide.ffi import JsException
from shared.http import HttpResponse
from shared.usage import UsageDecision, UsageSnapshot
from tenant_worker.usage_meter import UsageMeter
from workers import DurableObject, Response

SCRIPT = "cmgsite-custom-tenant"


class FakeClock:
    def __init__(self, when: str) -> None:
        self.t = datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.t


class Recorder:
    """An HttpClient standing in for PostgREST: records upserts, can be told to be down."""

    def __init__(self) -> None:
        self.bodies: list[list[dict[str, Any]]] = []
        self.down = False

    async def request(self, method: str, url: str, *, headers: Any = None, body: bytes | None = None,
                      timeout: float = 10.0) -> HttpResponse:
        if self.down:
            return HttpResponse(503, {"content-type": "application/json"}, b'{"message":"down"}')
        self.bodies.append(json.loads(body or b"[]"))
        return HttpResponse(201, {"content-type": "application/json"}, b"[]")


CLOCK = FakeClock("2026-11-26T12:00:00")
RECORDER = Recorder()


class ClockedMeter(UsageMeter):
    """The real meter with an injected clock and HTTP edge."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.clock = CLOCK
        self.http = RECORDER


def runtime(root: Path, clock: Any = None, **vars_: str) -> DurableObjects:
    """A DO runtime for one tenant script; pass the meters' clock when they use CLOCK."""
    env = Env({"TENANT_ID": "partner-seo", "SUPABASE_URL": "http://supabase.invalid",
               "SUPABASE_SERVICE_ROLE_KEY": "service-key", **vars_})
    return DurableObjects(root, lambda name: env if name == SCRIPT else None, clock=clock or time.time)


def usage_ns(rt: DurableObjects, cls: str = "UsageMeter", module: str = "tenant_worker.usage_meter") -> Any:
    return rt.namespace(SCRIPT, cls, module)


async def consume(stub: Any, tier: str = "starter", amount: int = 1, kind: str = "ai_calls",
                  tenant: str = "partner-seo") -> UsageDecision:
    return UsageDecision.model_validate(await stub.consume(kind, amount, tenant, tier))


async def test_500_concurrent_consumes_with_100_remaining_allow_exactly_100(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    results = await asyncio.gather(*(consume(stub) for _ in range(500)))
    allowed = [d for d in results if d.allowed]
    assert len(allowed) == 100
    assert sorted(d.used for d in allowed) == list(range(1, 101))  # each one its own slot
    assert all(d.used == 100 and d.remaining == 0 for d in results if not d.allowed)
    snap = UsageSnapshot.model_validate(await stub.snapshot("partner-seo", "starter"))
    assert snap.item("ai_calls").used == 100
    rt.close()


async def test_the_counting_step_itself_is_atomic_without_the_gate(tmp_path: Path) -> None:
    """Cloudflare lets events interleave at awaits: the meter must not need the local gate."""
    rt = runtime(tmp_path)
    ns = usage_ns(rt)
    object_id = ns.idFromName("partner1")
    await ns.getByName("partner1").consume("ai_calls", 150, "partner1", "growth")  # growth: 100 left
    meter = ns._instance(object_id).obj  # call the object directly, past the input gate
    results = await asyncio.gather(*(meter.consume("ai_calls", 1, "partner1", "growth") for _ in range(500)))
    assert sum(r["allowed"] for r in results) == 100
    assert (await meter.snapshot("partner1", "growth"))["items"][0]["used"] == 250
    rt.close()


async def test_a_request_larger_than_what_is_left_is_refused_whole(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    assert (await consume(stub, amount=99)).allowed
    refused = await consume(stub, amount=2)
    assert (refused.allowed, refused.used, refused.remaining) == (False, 99, 1)
    assert (await consume(stub, amount=1)).used == 100
    assert not (await consume(stub, amount=101, tenant="partner-seo")).allowed
    rt.close()


async def test_counters_survive_a_restart(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    for _ in range(7):
        await consume(stub)
    await consume(stub, kind="storage", amount=5000)
    rt.close()

    again = runtime(tmp_path)
    snap = UsageSnapshot.model_validate(await usage_ns(again).getByName("partner-seo").snapshot("partner-seo", "starter"))
    assert snap.item("ai_calls").used == 7 and snap.item("storage").used == 5000
    again.close()


async def test_month_rollover_resets_ai_calls_but_not_levels(tmp_path: Path) -> None:
    CLOCK.t = datetime(2026, 11, 30, 23, 59, 58, tzinfo=timezone.utc).timestamp()
    rt = runtime(tmp_path, CLOCK)
    stub = usage_ns(rt, "ClockedMeter", __name__).getByName("partner-seo")
    await stub.seed_level("domains", 1, "partner-seo", "growth")
    assert (await consume(stub, "starter", amount=100)).allowed
    last = await consume(stub, "starter")
    assert not last.allowed
    assert last.resets_at == datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert last.retry_after_seconds(CLOCK.t) == 2

    CLOCK.t += 2  # 2026-12-01T00:00:00Z
    first = await consume(stub, "starter")
    assert (first.allowed, first.used, first.period) == (True, 1, "2026-12")
    assert first.resets_at == datetime(2027, 1, 1, tzinfo=timezone.utc)
    snap = UsageSnapshot.model_validate(await stub.snapshot("partner-seo", "starter"))
    assert snap.item("domains").used == 1 and snap.item("domains").resets_at is None

    # A refund for a call counted in November lands in November, not in December.
    await stub.release("ai_calls", 1, "partner-seo", "starter", "2026-11")
    assert UsageSnapshot.model_validate(await stub.snapshot("partner-seo", "starter")).item("ai_calls").used == 1
    with pytest.raises(JsException, match="period"):
        await stub.release("ai_calls", 1, "partner-seo", "starter", "2027-01")
    rt.close()


async def test_december_rolls_into_january(tmp_path: Path) -> None:
    CLOCK.t = datetime(2026, 12, 31, 23, 0, tzinfo=timezone.utc).timestamp()
    rt = runtime(tmp_path, CLOCK)
    d = await consume(usage_ns(rt, "ClockedMeter", __name__).getByName("partner-seo"))
    assert (d.period, d.resets_at) == ("2026-12", datetime(2027, 1, 1, tzinfo=timezone.utc))
    rt.close()


async def test_tier_upgrade_raises_the_limit_at_once(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    assert (await consume(stub, "starter", amount=100)).allowed
    refused = await consume(stub, "starter")
    assert (refused.allowed, refused.limit) == (False, 100)
    upgraded = await consume(stub, "growth")
    assert (upgraded.allowed, upgraded.used, upgraded.limit, upgraded.remaining) == (True, 101, 250, 149)
    down = await consume(stub, "starter")  # a downgrade refuses from the next consume too
    assert (down.allowed, down.used, down.limit, down.remaining) == (False, 101, 100, 0)
    rt.close()


async def test_levels_go_up_and_down_within_the_tier(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner1")
    await stub.seed_level("domains", 1, "partner1", "growth")
    await stub.seed_level("domains", 4, "partner1", "growth")  # only the first seed counts
    got = [await consume(stub, "growth", kind="domains", tenant="partner1") for _ in range(5)]
    assert [d.allowed for d in got] == [True, True, True, True, False]
    assert got[-1].resets_at is None and got[-1].used == 5
    released = UsageDecision.model_validate(await stub.release("domains", 1, "partner1", "growth"))
    assert released.used == 4
    assert (await consume(stub, "growth", kind="domains", tenant="partner1")).allowed
    gib = 1024**3
    assert (await consume(stub, "growth", kind="storage", amount=10 * gib, tenant="partner1")).allowed
    assert not (await consume(stub, "growth", kind="storage", amount=1, tenant="partner1")).allowed
    rt.close()


async def test_one_object_per_tenant_and_a_meter_refuses_another_tenant(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    ns = usage_ns(rt)
    a, b = ns.getByName("partner1"), ns.getByName("partner-seo")
    assert not a.id.equals(b.id) and a.id.equals(ns.idFromName("partner1"))
    assert ns.get(ns.idFromString(a.id.toString())).id.equals(a.id)
    for _ in range(3):
        await consume(a, "growth", tenant="partner1")
    assert UsageSnapshot.model_validate(await b.snapshot("partner-seo", "starter")).item("ai_calls").used == 0
    # A bug (or attacker) that reaches tenant A's object with tenant B's id gets nothing.
    with pytest.raises(JsException, match="another tenant"):
        await a.consume("ai_calls", 1, "partner-seo", "enterprise")
    assert len(list((tmp_path / SCRIPT / "UsageMeter").glob("*.sqlite"))) == 2
    rt.close()


@pytest.mark.parametrize("args", [
    ("gpu_hours", 1, "partner-seo", "starter"),
    ("ai_calls", 0, "partner-seo", "starter"),
    ("ai_calls", -5, "partner-seo", "starter"),
    ("ai_calls", 1.5, "partner-seo", "starter"),
    ("ai_calls", True, "partner-seo", "starter"),
    ("ai_calls", "1", "partner-seo", "starter"),
    ("ai_calls", 1, "partner-seo", "platinum"),
    ("ai_calls", 1, "../etc", "starter"),
])
async def test_nonsense_is_refused_and_counts_nothing(tmp_path: Path, args: tuple[Any, ...]) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    with pytest.raises(JsException):
        await stub.consume(*args)
    assert UsageSnapshot.model_validate(await stub.snapshot("partner-seo", "starter")).item("ai_calls").used == 0
    rt.close()


async def test_rpc_shapes_follow_the_sdk(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    stub = usage_ns(rt).getByName("partner-seo")
    with pytest.raises(TypeError):  # the SDK refuses tuples in python_to_rpc
        await stub.consume(("ai_calls",), 1, "partner-seo", "starter")
    with pytest.raises(JsException, match="does not implement"):
        await stub.no_such_method()
    with pytest.raises(AttributeError):
        stub._bind
    result = await stub.consume("ai_calls", 1, "partner-seo", "starter")
    assert isinstance(result, dict) and isinstance(result["resets_at"], str)  # plain JSON values cross RPC
    rt.close()


async def test_alarm_flushes_absolute_counts_and_backs_off_while_supabase_is_down(tmp_path: Path) -> None:
    CLOCK.t = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc).timestamp()
    RECORDER.bodies.clear()
    RECORDER.down = True
    rt = runtime(tmp_path, CLOCK, USAGE_FLUSH_DELAY_MS="20", USAGE_FLUSH_RETRY_BASE_MS="30")
    stub = usage_ns(rt, "ClockedMeter", __name__).getByName("partner-seo")
    for _ in range(3):
        await consume(stub)
    await asyncio.sleep(0.3)  # several failed attempts, each re-armed with backoff
    assert RECORDER.bodies == []
    assert rt.alarms.get(usage_ns(rt, "ClockedMeter", __name__).key(stub.id)) is not None
    RECORDER.down = False
    await consume(stub)
    for _ in range(100):
        if RECORDER.bodies:
            break
        await asyncio.sleep(0.05)
    assert RECORDER.bodies[-1] == [{"tenant_id": "partner-seo", "usage_type": "ai_calls", "period": "2026-11",
                                    "usage_count": 4, "usage_limit": 100}]
    await asyncio.sleep(0.1)
    assert len(RECORDER.bodies) == 1  # clean counters are not sent again
    rt.close()


async def test_persisted_alarm_fires_after_a_restart(tmp_path: Path) -> None:
    RECORDER.bodies.clear()
    RECORDER.down = False
    rt = runtime(tmp_path, CLOCK, USAGE_FLUSH_DELAY_MS="150")
    stub = usage_ns(rt, "ClockedMeter", __name__).getByName("partner-seo")
    await consume(stub, amount=9)
    rt.close()  # the process goes away before the alarm fires
    await asyncio.sleep(0.2)
    assert RECORDER.bodies == []

    again = runtime(tmp_path, CLOCK, USAGE_FLUSH_DELAY_MS="150")
    again.ensure_started()  # what the platform does on its first request
    for _ in range(100):
        if RECORDER.bodies:
            break
        await asyncio.sleep(0.02)
    assert RECORDER.bodies and RECORDER.bodies[0][0]["usage_count"] == 9
    again.close()


async def test_abort_resets_the_object_and_keeps_its_storage(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    ns = usage_ns(rt)
    stub = ns.getByName("partner-seo")
    await consume(stub, amount=3)
    first = ns._instance(stub.id).obj
    with pytest.raises(JsException, match="aborted"):
        await _abort(ns, stub)
    assert ns._instance(stub.id).obj is not first
    assert (await consume(stub)).used == 4
    rt.close()


async def _abort(ns: Any, stub: Any) -> None:
    inst = ns._instance(stub.id)
    inst.obj.abort_now = lambda: inst.obj.ctx.abort("test")  # an RPC method that aborts
    await stub.abort_now()


def test_namespace_and_context_shapes_match_the_real_sdk() -> None:
    """What the SDK's wrappers call on the runtime's objects exists on ours."""
    import ast

    sdk = Path(__file__).resolve().parent.parent / ".local" / "sdk" / "workers"
    if not (sdk / "rpc.py").exists():
        pytest.fail("real SDK source missing: run scripts/bootstrap.sh")
    classes = {n.name: n for p in sdk.glob("*.py") for n in ast.walk(ast.parse(p.read_text()))
               if isinstance(n, ast.ClassDef)}
    wrapped = {f.name for f in classes["_DurableObjectNamespaceWrapper"].body if isinstance(f, ast.FunctionDef)}
    from localrt.durable_objects import DurableObjectNamespace, DurableObjectState, DurableObjectStub

    assert wrapped - {"__init__", "__getattr__"} <= set(dir(DurableObjectNamespace))
    context = {f.name for f in classes["DurableObjectContext"].body if isinstance(f, ast.FunctionDef)}
    assert context - {"__init__", "__getattr__"} <= set(dir(DurableObjectState))
    assert "fetch" in {f.name for f in classes["_FetcherWrapper"].body if isinstance(f, ast.FunctionDef)}
    assert callable(DurableObjectStub.fetch)


class GateProbe(DurableObject):
    """Records when each event starts and ends, awaiting in between."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.log: list[str] = []

    async def work(self, tag: str) -> list[str]:
        self.log.append(f"start {tag}")
        await asyncio.sleep(0.01)
        self.log.append(f"end {tag}")
        return list(self.log)

    async def fetch(self, request: Any) -> Response:
        return Response(f"{request.method} {request.url} {len(self.log)}", headers={"x-object": "probe"})


async def test_events_reach_one_object_one_at_a_time_and_objects_run_side_by_side(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    ns = rt.namespace(SCRIPT, "GateProbe", __name__)
    a, b = ns.getByName("a"), ns.getByName("b")
    started = time.perf_counter()
    logs = await asyncio.gather(a.work("1"), a.work("2"), a.work("3"), b.work("x"))
    assert logs[2] == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]  # never interleaved
    assert logs[3] == ["start x", "end x"]  # another object did not wait for a's queue
    assert time.perf_counter() - started < 0.2
    resp = await a.fetch("https://object/x", method="POST")
    assert (resp.status, await resp.text(), resp.headers["x-object"]) == (200, "POST https://object/x 6", "probe")
    rt.close()
