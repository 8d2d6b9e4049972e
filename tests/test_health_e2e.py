"""Health checks on workerd: the dispatcher's cron handler (fired by Miniflare's scheduled trigger)
probes every active tenant through the dispatcher, records the results in Supabase, opens an
alert after HEALTH_ALERT_AFTER (3) failures in a row and resolves it on recovery; alerts reach a
loopback webhook receiver, and a failing receiver never holds up the checks. `tenants.py check`
runs the same checks on demand."""

from __future__ import annotations

import io
import json
import time
from typing import Any, Callable, Iterator

import pytest

from scripts.tenants import main
from tests.alert_receiver import AlertReceiver
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

DEMO = ("cozyartz", "partner1", "partner-seo")


@pytest.fixture
def tenant(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


@pytest.fixture
def receiver(alert_receiver: tuple[AlertReceiver, str]) -> Iterator[AlertReceiver]:
    alert_receiver[0].mode = "ok"
    yield alert_receiver[0]
    alert_receiver[0].mode = "ok"


def q(pg: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with pg.connect() as conn:
        return conn.execute(sql, args).fetchall()


def cron(platform: Platform) -> None:
    assert platform.host.trigger_scheduled() == "ok"


def eventually(probe: Callable[[], Any], ready: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    """Alert deliveries run in waitUntil after the cron handler returns: wait for them to land."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not ready(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = probe()
    return value


def test_a_cron_run_checks_every_active_tenant_through_the_dispatcher(
    platform: Platform, pg_cluster: Any, tenant: UsageTenant
) -> None:
    last = q(pg_cluster, "select coalesce(max(id), 0) from public.health_checks")[0][0]
    cron(platform)
    rows = {
        r[0]: r[1:]
        for r in q(
            pg_cluster,
            "select tenant_id, ok, source, health_status, page_status, detail from public.health_checks where id > %s",
            last,
        )
    }
    for tid in (*DEMO, tenant.tenant_id):
        assert rows[tid] == (True, "cron", 200, 200, ""), (tid, rows.get(tid))
    # The probes went through the dispatcher, recorded as probes: they are not the tenant's traffic.
    from tests.test_metrics_e2e import rows as metric_rows

    sources = eventually(
        lambda: metric_rows(
            platform,
            "SELECT blob1 AS source, COUNT(*) AS n FROM cmgsite_metrics"
            f" WHERE index1 = '{tenant.tenant_id}' GROUP BY source",
        ),
        lambda r: any(x["source"] == "probe" for x in r),
    )
    by = {r["source"]: r["n"] for r in sources}
    assert by.get("probe") == 2 and "dispatcher" not in by, by


def test_failures_open_one_alert_the_webhook_hears_it_and_recovery_resolves_it(
    platform: Platform, pg_cluster: Any, tenant: UsageTenant, receiver: AlertReceiver
) -> None:
    tid = tenant.tenant_id

    def alerts() -> list[tuple[Any, ...]]:
        return q(pg_cluster, "select id, status, failures from public.health_alerts where tenant_id = %s", tid)

    with platform.fault(tenant.script, "crash"):
        cron(platform)
        cron(platform)
        assert alerts() == []  # two failures: not yet
        cron(platform)
        ((alert_id, status, failures),) = alerts()
        assert (status, failures) == ("open", 3)
        cron(platform)
        assert alerts() == [(alert_id, "open", 4)]  # still one alert
    detail = q(
        pg_cluster, "select detail from public.health_checks where tenant_id = %s order by id desc limit 1", tid
    )[0][0]
    assert "health: HTTP 502" in detail
    opened = eventually(lambda: receiver.events(tid), lambda e: len(e) >= 1)
    assert [(e["type"], e["alert_id"], e["consecutive_failures"]) for e in opened] == [("alert.opened", alert_id, 3)]
    delivery = receiver.attempts(tid)[0]
    assert delivery["signed"] and delivery["headers"]["x-cmgsite-delivery"] == f"{alert_id}:alert.opened"

    cron(platform)
    assert alerts() == [(alert_id, "resolved", 4)]
    events = eventually(lambda: receiver.events(tid), lambda e: len(e) >= 2)
    assert [e["type"] for e in events] == ["alert.opened", "alert.resolved"]
    uptime = q(pg_cluster, "select checks, ok_checks from public.tenant_uptime() where tenant_id = %s", tid)
    assert uptime == [(5, 1)]


def test_a_failing_webhook_never_blocks_the_checks_and_is_delivered_on_a_later_run(
    platform: Platform, pg_cluster: Any, tenant: UsageTenant, receiver: AlertReceiver
) -> None:
    tid = tenant.tenant_id
    receiver.mode = "fail"
    with platform.fault(tenant.script, "crash"):
        for _ in range(3):
            cron(platform)
    # The run recorded its checks and opened the alert whatever the receiver does.
    ((alert_id, status),) = q(pg_cluster, "select id, status from public.health_alerts where tenant_id = %s", tid)
    assert status == "open"
    tried = eventually(
        lambda: q(
            pg_cluster,
            "select notify_attempts, last_notify_error, opened_notified_at from public.health_alerts where id = %s",
            alert_id,
        ),
        lambda r: r[0][0] >= 1,
    )
    assert tried[0][0] >= 1 and tried[0][1] == "HTTP 500" and tried[0][2] is None
    attempts = receiver.attempts(tid)
    assert len(attempts) >= 3 and {a["headers"]["x-cmgsite-delivery"] for a in attempts} == {f"{alert_id}:alert.opened"}

    receiver.mode = "ok"
    cron(platform)  # recovered: resolves, and the outbox sends both events, in order
    events = eventually(lambda: receiver.events(tid), lambda e: len(e) >= 2)
    assert [(e["type"], e["alert_id"]) for e in events] == [("alert.opened", alert_id), ("alert.resolved", alert_id)]
    notified = eventually(
        lambda: q(
            pg_cluster,
            "select opened_notified_at is not null, resolved_notified_at is not null"
            " from public.health_alerts where id = %s",
            alert_id,
        ),
        lambda r: r[0] == (True, True),
    )
    assert notified[0] == (True, True)


def run_cli(platform: Platform, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [*argv, "--state-dir", str(platform.paths.root), "--wrangler-state", str(platform.wrangler_state)],
        env=env,
        stdin=io.StringIO(""),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_tenants_check_runs_the_same_checks_on_demand(
    platform: Platform,
    pg_cluster: Any,
    supabase_stack: Any,
    tenant: UsageTenant,
    alert_receiver: tuple[AlertReceiver, str],
) -> None:
    env = {
        "SUPABASE_URL": supabase_stack.url,
        "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
        "ALERT_WEBHOOK_URL": alert_receiver[1],
        "ALERT_WEBHOOK_SECRET": alert_receiver[0].secret,
        "HEALTH_ALERT_AFTER": "1",
    }
    code, out, err = run_cli(platform, env, "check", "--tenant", tenant.tenant_id, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [(c["tenant_id"], c["ok"], c["source"]) for c in report["checks"]] == [(tenant.tenant_id, True, "cli")]
    assert q(pg_cluster, "select ok, source from public.health_checks where tenant_id = %s", tenant.tenant_id) == [
        (True, "cli")
    ]

    with platform.fault(tenant.script, "subrequests"):
        code, out, err = run_cli(platform, env, "check", "--tenant", tenant.tenant_id, "--json")
    assert code == 3, err  # failing tenants: exit 3
    report = json.loads(out)
    assert report["failing"] == [tenant.tenant_id] and "health: HTTP 429" in report["checks"][0]["detail"]
    assert [t["event"] for t in report["transitions"]] == ["alert.opened"]  # HEALTH_ALERT_AFTER=1 here
    assert any(d["tenant_id"] == tenant.tenant_id and d["delivered"] for d in report["deliveries"])

    code, out, err = run_cli(platform, env, "check", "--tenant", tenant.tenant_id)
    assert code == 0 and f"alert.resolved: {tenant.tenant_id}" in out, out  # the table and the transition

    code, out, err = run_cli(platform, env, "check", "--cron", "--json")
    assert code == 0 and json.loads(out) == {"cron": "ok"}, err
    code, _, err = run_cli(platform, env, "check", "--tenant", "no-such-tenant")
    assert code == 2 and "no-such-tenant" in err
    code, _, err = run_cli(platform, env, "check", "--cron", "--tenant", tenant.tenant_id)
    assert code == 2
