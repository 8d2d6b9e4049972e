"""Integration credentials (a partner's API keys for their SEO/analytics tools), tenant admins only.

    GET    /api/integrations            name, key id and timestamps of every stored secret
    PUT    /api/integrations/<name>     {"secret": "..."}: store or replace (201 new, 200 replaced)
    GET    /api/integrations/<name>     its metadata, after proving it still decrypts ("readable")
    DELETE /api/integrations/<name>     forget it

The API never returns a stored secret. Values are sealed with AES-256-GCM under the tenant's
data key, which is itself wrapped by the platform key (the Worker secret PLATFORM_DATA_KEYS, a
keyring: new data keys are wrapped under its active key, any key it holds opens): envelope
format v1, shared.envelope, docs/encryption.md. The tenant id and the secret's name are bound
into each ciphertext, so a value copied to another tenant or row does not open. Rows are read
and written with the admin's tenant JWT (RLS: admin of T only, supabase/migrations/20261126233102_integration_credentials.sql);
setting and deleting write an audit row, which holds the name and key id, never the value.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.envelope import (
    MAX_SECRET_BYTES,
    NAME_PATTERN,
    Aead,
    EnvelopeError,
    UnknownKey,
    decrypt_secret,
    encrypt_secret,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from shared.keys import Keyring, KeyringError
from shared.outbound_http import HttpError
from shared.supabase import SupabaseClient, SupabaseError
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Principal, Role, require
from tenant_worker.request_body import invalid_body, read_body
from tenant_worker.supabase_access import record_audit, supabase_failure, tenant_db

log = logging.getLogger("cmgsite.tenant.integrations")

DATA_KEY_ID = "dk1"  # one data key per tenant for now; the id column leaves room for more
META_COLUMNS = "name,key_id,created_at,updated_at"
_NAME = re.compile(NAME_PATTERN)


class SecretBody(RequestBody):
    secret: str = Field(min_length=1, max_length=MAX_SECRET_BYTES)


class CredentialMeta(BaseModel):
    """A credential as the API shows it: never the value."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    key_id: str
    created_at: str
    updated_at: str


class CredentialRow(CredentialMeta):
    ciphertext: str


class DataKeyRow(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    key_id: str
    wrapped_key: str


def _model(cls: type[BaseModel], data: Any) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError:
        log.warning(json.dumps({"event": "integration_row_unexpected", "model": cls.__name__}))
        raise ApiError(502, "upstream_error", "The data service returned an unexpected answer.") from None


def envelope_failure(exc: EnvelopeError, request_id: str) -> ApiError:
    """A value that does not open, as the API's answer (logged with the reason, never the value)."""
    log.error(
        json.dumps(
            {
                "event": "secret_unreadable",
                "reason": exc.code,
                "request_id": request_id,
                **({"key_id": exc.kid} if isinstance(exc, UnknownKey) else {}),
            }
        )
    )
    if isinstance(exc, UnknownKey):
        return ApiError(
            500,
            "encryption_key_unknown",
            f"This site's secrets are sealed under key {exc.kid!r}, which this site does not hold. "
            "The platform operator must finish the key rotation.",
            extra={"key_id": exc.kid},
        )
    return ApiError(
        500,
        "secret_unreadable",
        "A stored secret could not be decrypted. The platform operator has been told; store it again to replace it.",
    )


class IntegrationVault:
    """The logic, over a Supabase client (RLS decides), an Aead and the platform keyring: plain
    Python, so it runs under CPython with `cryptography` as in the Worker with WebCrypto."""

    def __init__(self, db: SupabaseClient, aead: Aead, platform: Keyring, tenant_id: str) -> None:
        self.db, self.aead, self.platform, self.tenant_id = db, aead, platform, tenant_id

    async def _data_key_row(self, key_id: str) -> DataKeyRow | None:
        rows = await self.db.select(
            "tenant_data_keys",
            columns="key_id,wrapped_key",
            eq={"tenant_id": self.tenant_id, "key_id": key_id},
            limit=1,
        )
        return _model(DataKeyRow, rows[0]) if rows else None

    async def data_key(self, key_id: str = DATA_KEY_ID, *, create: bool = False) -> bytes:
        """The tenant's data key, unwrapped; made and stored (wrapped) on first use when `create`."""
        row = await self._data_key_row(key_id)
        if row is None and create:
            fresh = new_data_key()
            wrapped = await wrap_data_key(self.aead, self.platform, self.tenant_id, key_id, fresh)
            try:
                await self.db.insert(
                    "tenant_data_keys",
                    {
                        "tenant_id": self.tenant_id,
                        "key_id": key_id,
                        "wrapped_key": wrapped.wrapped,
                        "platform_key_id": wrapped.platform_key_id,
                    },
                    columns="key_id",
                )
                return fresh
            except SupabaseError as exc:
                if exc.code != "23505":
                    raise
            row = await self._data_key_row(key_id)  # a concurrent first write won: use its key
        if row is None:
            raise UnknownKey(key_id)
        return await unwrap_data_key(self.aead, self.platform, self.tenant_id, row.key_id, row.wrapped_key)

    async def list(self) -> list[CredentialMeta]:
        rows = await self.db.select(
            "integration_credentials", columns=META_COLUMNS, eq={"tenant_id": self.tenant_id}, order="name.asc"
        )
        return [_model(CredentialMeta, r) for r in rows]

    async def get(self, name: str) -> CredentialRow | None:
        rows = await self.db.select(
            "integration_credentials",
            columns=META_COLUMNS + ",ciphertext",
            eq={"tenant_id": self.tenant_id, "name": name},
            limit=1,
        )
        return _model(CredentialRow, rows[0]) if rows else None

    async def reveal(self, row: CredentialRow) -> str:
        """The plaintext, for the Worker's own use (an integration call); never an API answer."""
        data_key = await self.data_key(row.key_id)
        return await decrypt_secret(self.aead, data_key, row.key_id, self.tenant_id, row.name, row.ciphertext)

    async def put(self, name: str, value: str, *, actor: str) -> tuple[CredentialMeta, bool]:
        """Store `value` under `name`; (metadata, created?)."""
        data_key = await self.data_key(create=True)
        sealed = await encrypt_secret(self.aead, data_key, DATA_KEY_ID, self.tenant_id, name, value)
        values = {"key_id": DATA_KEY_ID, "ciphertext": sealed, "updated_by": actor}
        where = {"tenant_id": self.tenant_id, "name": name}
        rows = await self.db.update("integration_credentials", values, eq=where, columns=META_COLUMNS)
        if rows:
            return _model(CredentialMeta, rows[0]), False
        try:
            rows = await self.db.insert("integration_credentials", {**where, **values}, columns=META_COLUMNS)
            created = True
        except SupabaseError as exc:
            if exc.code != "23505":
                raise
            rows = await self.db.update("integration_credentials", values, eq=where, columns=META_COLUMNS)
            created = False
        if not rows:
            raise ApiError(403, "forbidden", "Not allowed.")
        return _model(CredentialMeta, rows[0]), created

    async def delete(self, name: str) -> bool:
        rows = await self.db.delete(
            "integration_credentials", eq={"tenant_id": self.tenant_id, "name": name}, columns="name"
        )
        return bool(rows)


# ---- the Worker's edges ------------------------------------------------------------------------


def _aead() -> Aead:
    from tenant_worker.webcrypto import WebCryptoAead  # the JS boundary, imported inside the Worker only

    return WebCryptoAead()


def platform_keyring(value: str) -> Keyring:
    """PLATFORM_DATA_KEYS (tenant_worker.config): unset or unusable, secret storage is off (503)."""
    try:
        ring = Keyring.parse(value)
        ring.active.key_bytes()
        return ring
    except KeyringError as exc:
        if value:
            log.error(json.dumps({"event": "platform_keyring_invalid", "reason": str(exc)}))
        raise ApiError(503, "encryption_unavailable", "Secret storage is not set up for this site.") from None


def _vault(call: Call, principal: Principal) -> IntegrationVault:
    return IntegrationVault(
        tenant_db(call, principal),
        _aead(),
        platform_keyring(call.services.config.platform_data_keys),
        call.tenant.tenant_id,
    )


def _name(call: Call) -> str:
    name = call.params["name"]
    if not _NAME.match(name):
        raise ApiError(422, "invalid_name", "A name is 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit.")
    return name


async def _body(call: Call) -> SecretBody:
    body = await read_body(call, SecretBody)
    if len(body.secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise invalid_body(f"A secret holds at most {MAX_SECRET_BYTES} bytes.", ["secret"])
    return body


def _view(meta: CredentialMeta) -> dict[str, Any]:
    return {"name": meta.name, "key_id": meta.key_id, "created_at": meta.created_at, "updated_at": meta.updated_at}


async def _run(call: Call, op: Any) -> Any:
    try:
        return await op
    except EnvelopeError as exc:
        raise envelope_failure(exc, call.request_id) from None
    except (SupabaseError, HttpError) as exc:
        raise supabase_failure(exc) from None


NO_STORE = {"cache-control": "no-store"}


async def list_integrations(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    items = await _run(call, _vault(call, principal).list())
    return json_reply({"integrations": [_view(m) for m in items]}, headers=NO_STORE)


async def get_integration(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    name = _name(call)
    vault = _vault(call, principal)
    row = await _run(call, vault.get(name))
    if row is None:
        raise ApiError(404, "not_found", "No integration secret of this site has that name.")
    await _run(call, vault.reveal(row))  # proves it still opens; the value goes nowhere
    return json_reply({**_view(row), "readable": True}, headers=NO_STORE)


async def put_integration(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    name = _name(call)
    body = await _body(call)
    meta, created = await _run(call, _vault(call, principal).put(name, body.secret, actor=principal.user_id))
    await record_audit(
        call,
        actor=principal.user_id,
        action="integration.secret_set",
        target=name,
        details={"key_id": meta.key_id, "created": created},
    )
    return json_reply(_view(meta), status=201 if created else 200, headers=NO_STORE)


async def delete_integration(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    name = _name(call)
    if not await _run(call, _vault(call, principal).delete(name)):
        raise ApiError(404, "not_found", "No integration secret of this site has that name.")
    await record_audit(call, actor=principal.user_id, action="integration.secret_deleted", target=name)
    return json_reply({"deleted": name})


ROUTES = [
    Route("GET", "/api/integrations", list_integrations, "integrations_list"),
    Route("GET", "/api/integrations/<name>", get_integration, "integration_get"),
    Route("PUT", "/api/integrations/<name>", put_integration, "integration_put"),
    Route("DELETE", "/api/integrations/<name>", delete_integration, "integration_delete"),
]
