"""Integration credentials over HTTP on workerd: AES-256-GCM envelope encryption end to end.

Each test gets a throwaway tenant (tests/usage_support.py) on the shared platform, with the
platform's PLATFORM_DATA_KEYS. The Worker encrypts with WebCrypto; these tests open what it
stored with `cryptography` (and store values it must open), so both implementations are held
to the one format (shared/envelope.py, docs/encryption.md). Attacks move ciphertexts between
tenants and rows, and put a data key under a platform key the Worker does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Iterator

import httpx
import pytest

from controlplane.aead import CryptographyAead
from localrt.devvars import read_dev_vars
from shared.envelope import decrypt_secret, encrypt_secret, new_data_key, unwrap_data_key, wrap_data_key
from shared.keys import Key, Keyring, new_secret
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

AEAD = CryptographyAead()
SECRET = "sk_live_51HxYzPartnerSeoToolKey-✓"


def platform_keys(platform: Platform) -> str:
    return read_dev_vars(platform.paths.platform_secrets)["PLATFORM_DATA_KEYS"]


@contextlib.contextmanager
def vault_tenant(platform: Platform, pg: Any, keys: str | None = None) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg, secrets_={"PLATFORM_DATA_KEYS": keys or platform_keys(platform)}) as t:
        yield t


def put(t: UsageTenant, name: str, body: Any, role: str = "admin", **kw: Any) -> httpx.Response:
    return httpx.put(
        f"{t.platform.url}/api/integrations/{name}",
        json=body,
        timeout=60,
        headers={"Host": t.host, **t.session(role), **kw.pop("headers", {})},
        **kw,
    )


def delete(t: UsageTenant, name: str, role: str = "admin") -> httpx.Response:
    return httpx.delete(
        f"{t.platform.url}/api/integrations/{name}", timeout=60, headers={"Host": t.host, **t.session(role)}
    )


def rows(pg: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with pg.connect() as conn:
        return conn.execute(sql, args).fetchall()


def stored(pg: Any, tenant_id: str, name: str) -> tuple[str, str, str]:
    """(wrapped data key, credential key id, ciphertext) as the database holds them."""
    found = rows(
        pg,
        "select d.wrapped_key, c.key_id, c.ciphertext from public.integration_credentials c"
        " join public.tenant_data_keys d using (tenant_id, key_id)"
        " where c.tenant_id = %s and c.name = %s",
        tenant_id,
        name,
    )
    assert len(found) == 1, found
    return found[0]


def open_with_cryptography(keys: str, tenant_id: str, name: str, pg: Any) -> str:
    wrapped, key_id, ciphertext = stored(pg, tenant_id, name)

    async def go() -> str:
        dek = await unwrap_data_key(AEAD, Keyring.parse(keys), tenant_id, key_id, wrapped)
        return await decrypt_secret(AEAD, dek, key_id, tenant_id, name, ciphertext)

    return asyncio.run(go())


def test_admin_stores_lists_checks_and_deletes_a_secret_never_seeing_it_again(
    platform: Platform, pg_cluster: Any
) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        r = put(t, "seo-tool", {"secret": SECRET})
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == {"name", "key_id", "created_at", "updated_at"} and created["key_id"] == "dk1"
        assert "no-store" in r.headers["cache-control"].split(", ")
        r = put(t, "seo-tool", {"secret": SECRET + "-v2"})
        assert r.status_code == 200 and r.json()["created_at"] == created["created_at"]
        listed = t.get("/api/integrations", role="admin")
        assert listed.status_code == 200
        assert listed.json() == {"integrations": [{**r.json()}]}
        one = t.get("/api/integrations/seo-tool", role="admin")
        assert one.status_code == 200 and one.json()["readable"] is True
        for resp in (created, listed.json(), one.json()):
            assert "sk_live" not in json.dumps(resp) and "secret" not in json.dumps(resp)
        # Stored encrypted: the database holds neither the value nor the data key in clear.
        wrapped, key_id, ciphertext = stored(pg_cluster, t.tenant_id, "seo-tool")
        assert "sk_live" not in ciphertext and ciphertext.startswith("v1.dk1.") and wrapped.startswith("v1.p")
        assert delete(t, "seo-tool").status_code == 200
        assert delete(t, "seo-tool").status_code == 404
        assert t.get("/api/integrations/seo-tool", role="admin").status_code == 404
        audit = rows(
            pg_cluster,
            "select action, target, details::text from public.audit_log where tenant_id = %s"
            " and action like 'integration.%%' order by id",
            t.tenant_id,
        )
        assert [(a, tg) for a, tg, _ in audit] == [
            ("integration.secret_set", "seo-tool"),
            ("integration.secret_set", "seo-tool"),
            ("integration.secret_deleted", "seo-tool"),
        ]
        assert all("sk_live" not in d for _, _, d in audit)
        assert json.loads(audit[0][2])["created"] is True and json.loads(audit[1][2])["created"] is False


def test_worker_encrypts_cryptography_decrypts_and_back(platform: Platform, pg_cluster: Any) -> None:
    keys = platform_keys(platform)
    with vault_tenant(platform, pg_cluster, keys) as t:
        assert put(t, "analytics", {"secret": SECRET}).status_code == 201  # sealed by WebCrypto in workerd
        assert open_with_cryptography(keys, t.tenant_id, "analytics", pg_cluster) == SECRET
        # The other way: cryptography seals a value under the Worker's data key; the Worker opens it.
        wrapped, key_id, _ = stored(pg_cluster, t.tenant_id, "analytics")

        async def seal() -> str:
            dek = await unwrap_data_key(AEAD, Keyring.parse(keys), t.tenant_id, key_id, wrapped)
            return await encrypt_secret(AEAD, dek, key_id, t.tenant_id, "crm", "crm-token-42")

        with pg_cluster.connect() as conn:
            conn.execute(
                "insert into public.integration_credentials (tenant_id, name, key_id, ciphertext)"
                " values (%s, 'crm', %s, %s)",
                (t.tenant_id, key_id, asyncio.run(seal())),
            )
        r = t.get("/api/integrations/crm", role="admin")
        assert r.status_code == 200 and r.json()["readable"] is True, r.text


def test_only_admins_of_this_tenant_reach_its_secrets(platform: Platform, pg_cluster: Any) -> None:
    with vault_tenant(platform, pg_cluster) as a, vault_tenant(platform, pg_cluster) as b:
        assert put(a, "seo-tool", {"secret": SECRET}).status_code == 201
        assert put(a, "seo-tool", {"secret": "x"}, role="client").status_code == 403
        assert a.get("/api/integrations", role="client").status_code == 403
        r = httpx.get(f"{platform.url}/api/integrations", headers={"Host": a.host}, timeout=30)
        assert r.status_code == 401
        # B's admin sees nothing of A's, by name or by list; A's session is refused at B.
        assert b.get("/api/integrations", role="admin").json() == {"integrations": []}
        assert b.get("/api/integrations/seo-tool", role="admin").status_code == 404
        r = httpx.get(f"{platform.url}/api/integrations", headers={"Host": b.host, **a.session("admin")}, timeout=30)
        assert r.status_code == 401


@pytest.mark.parametrize(
    "name,body,status,code",
    [
        ("Bad-Name", {"secret": "x"}, 422, "invalid_name"),
        ("-x", {"secret": "x"}, 422, "invalid_name"),
        ("seo", {"secret": ""}, 422, "invalid_body"),
        ("seo", {"secret": 5}, 422, "invalid_body"),
        ("seo", {"secret": "x", "extra": 1}, 422, "invalid_body"),
        ("seo", {"secret": "x" * 4097}, 422, "invalid_body"),
        ("seo", {"secret": "é" * 2049}, 422, "invalid_body"),  # 4098 bytes in UTF-8
        ("seo", ["x"], 422, "invalid_body"),
    ],
)
def test_bad_input_is_a_clear_json_error(
    platform: Platform, pg_cluster: Any, name: str, body: Any, status: int, code: str
) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        r = put(t, name, body)
        assert r.status_code == status and r.json()["error"]["code"] == code, r.text


def test_ciphertexts_moved_between_rows_or_tenants_do_not_open(platform: Platform, pg_cluster: Any) -> None:
    with vault_tenant(platform, pg_cluster) as a, vault_tenant(platform, pg_cluster) as b:
        assert put(a, "seo-tool", {"secret": "A-seo"}).status_code == 201
        assert put(a, "analytics", {"secret": "A-analytics"}).status_code == 201
        assert put(b, "seo-tool", {"secret": "B-seo"}).status_code == 201
        with pg_cluster.connect() as conn:
            # Swap A's two values: same tenant, same data key, wrong row.
            conn.execute(
                "update public.integration_credentials c set ciphertext = o.ciphertext"
                " from public.integration_credentials o where c.tenant_id = %s and o.tenant_id = %s"
                " and c.name = 'seo-tool' and o.name = 'analytics'",
                (a.tenant_id, a.tenant_id),
            )
            # Give B A's data key and A's value: the same bytes, another tenant.
            conn.execute(
                "update public.tenant_data_keys d set wrapped_key = o.wrapped_key,"
                " platform_key_id = o.platform_key_id from public.tenant_data_keys o"
                " where d.tenant_id = %s and o.tenant_id = %s",
                (b.tenant_id, a.tenant_id),
            )
        r = a.get("/api/integrations/seo-tool", role="admin")
        assert r.status_code == 500 and r.json()["error"]["code"] == "secret_unreadable", r.text
        assert a.get("/api/integrations/analytics", role="admin").status_code == 200
        r = b.get("/api/integrations/seo-tool", role="admin")
        assert r.status_code == 500 and r.json()["error"]["code"] == "secret_unreadable", r.text
        assert "A-seo" not in r.text and "B-seo" not in r.text


def test_a_data_key_under_an_unknown_platform_key_is_a_clear_error(platform: Platform, pg_cluster: Any) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        assert put(t, "seo-tool", {"secret": SECRET}).status_code == 201
        foreign = Keyring((Key("p99", new_secret()),))
        wrapped = asyncio.run(wrap_data_key(AEAD, foreign, t.tenant_id, "dk1", new_data_key()))
        with pg_cluster.connect() as conn:
            conn.execute(
                "update public.tenant_data_keys set wrapped_key = %s, platform_key_id = 'p99' where tenant_id = %s",
                (wrapped.wrapped, t.tenant_id),
            )
        for r in (t.get("/api/integrations/seo-tool", role="admin"), put(t, "other", {"secret": "x"})):
            assert r.status_code == 500, r.text
            err = r.json()["error"]
            assert err["code"] == "encryption_key_unknown" and err["key_id"] == "p99" and "p99" in err["message"]
        assert t.get("/api/integrations", role="admin").status_code == 200  # listing needs no key


def test_no_platform_key_means_secret_storage_is_not_set_up(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:  # a Worker deployed without PLATFORM_DATA_KEYS
        r = put(t, "seo-tool", {"secret": SECRET})
        assert r.status_code == 503 and r.json()["error"]["code"] == "encryption_unavailable", r.text


def test_a_secret_is_set_only_by_a_same_origin_json_request(platform: Platform, pg_cluster: Any) -> None:
    with vault_tenant(platform, pg_cluster) as t:
        headers = {"Host": t.host, **t.session("admin")}
        url = f"{platform.url}/api/integrations/seo-tool"
        r = httpx.put(url, content=b'{"secret": "x"}', headers={**headers, "content-type": "text/plain"}, timeout=30)
        assert r.status_code == 415, r.text
        r = httpx.put(url, json={"secret": "x"}, headers={**headers, "origin": "https://evil.example"}, timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request", r.text
        r = httpx.delete(url, headers={**headers, "origin": "https://evil.example"}, timeout=30)
        assert r.status_code == 403
        assert t.get("/api/integrations", role="admin").json() == {"integrations": []}
