-- 0005_api_request_guard.sql
--
-- A check PostgREST runs before every request (its `db-pre-request` hook). It covers what
-- PostgREST's own JWT validation lets through:
--   * A token with no `exp` is accepted by PostgREST, and so is a token with no `aud`
--     (`jwt-aud` rejects only a *different* audience, and hosted Supabase does not set it).
--     A signed token without an expiry would stay valid for ever. The guard therefore
--     refuses, for every role except service_role:
--       - a token without a numeric `exp`, or one that expired (30 s of skew, as PostgREST);
--     and for every role except anon and service_role (the API keys carry no `aud`):
--       - an `aud` other than 'authenticated' (the audience shared.jwt mints; a missing
--         `aud` is refused too);
--       - an `exp` more than an hour (plus skew) ahead: a far-future expiry is the same as
--         no expiry. Tenant tokens live minutes (shared.jwt.MAX_TENANT_JWT_TTL = 3600).
--     An anon token may omit `aud`; if it names one, that must be 'authenticated' too.
--   * `Prefer: count=planned` and `count=estimated` answer with the planner's row estimate,
--     which comes from table-wide statistics. That would tell a tenant roughly how many
--     rows every tenant holds. Both are refused for every role except service_role;
--     `count=exact` still works and counts only the rows RLS lets the caller see.
--     PostgREST shows the function only the last `Prefer` header of a request, but reads
--     preferences from all of them. The guard is therefore not the only defence against
--     several `Prefer` headers; docs/supabase-data-layer.md covers this.
-- The function answers 401 (`PT401`) for a token problem and 403 (`PT403`) for a refused
-- preference. PostgREST maps an SQLSTATE of PTxyz to HTTP status xyz.
--
-- Wiring: PostgREST reads `pgrst.db_pre_request` from the authenticator role (in-database
-- configuration, which overrides its config file). This file sets that value. Locally,
-- localrt/supabase_stack.py names the function in the config file as well. On a hosted
-- Supabase project the `alter role` below is the documented way to set it. If a project
-- refuses it, run the same two statements in the SQL editor (docs/supabase-data-layer.md).
--
-- Idempotent: schema `if not exists`, function replaced, grants re-stated, role setting
-- re-set to the same value.

create schema if not exists api_guard;
revoke all on schema api_guard from public;
grant usage on schema api_guard to anon, authenticated, service_role;

create or replace function api_guard.check_request() returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  -- The role PostgREST switched to for this request (this function is SECURITY INVOKER).
  caller  text := current_user;
  claims  jsonb := coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
  headers jsonb := coalesce(nullif(current_setting('request.headers', true), ''), '{}')::jsonb;
  now_s   numeric := extract(epoch from now());
  skew    constant numeric := 30;      -- PostgREST's own allowance
  max_ttl constant numeric := 3600;    -- shared.jwt.MAX_TENANT_JWT_TTL
  aud     jsonb;
  exp     numeric;
begin
  if caller = 'service_role' then
    return;
  end if;

  if jsonb_typeof(claims -> 'exp') is distinct from 'number' then
    raise sqlstate 'PT401' using message = 'JWT without an expiry (exp) is not accepted';
  end if;
  exp := (claims ->> 'exp')::numeric;
  if exp + skew <= now_s then
    raise sqlstate 'PT401' using message = 'JWT expired';
  end if;

  aud := claims -> 'aud';
  if caller <> 'anon' or aud is not null then
    if not coalesce(aud = '"authenticated"'::jsonb
                    or (jsonb_typeof(aud) = 'array' and aud @> '["authenticated"]'::jsonb), false) then
      raise sqlstate 'PT401' using message = 'JWT audience not accepted';
    end if;
  end if;
  if caller <> 'anon' and exp > now_s + max_ttl + skew then
    raise sqlstate 'PT401' using message = 'JWT lifetime too long';
  end if;

  if lower(coalesce(headers ->> 'prefer', '')) ~ 'count\s*=\s*(planned|estimated)' then
    raise sqlstate 'PT403' using
      message = 'Prefer: count=planned and count=estimated are not available',
      hint = 'Use count=exact.';
  end if;
end
$$;
revoke all on function api_guard.check_request() from public;
grant execute on function api_guard.check_request() to anon, authenticated, service_role;

do $wire$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticator') then
    alter role authenticator set pgrst.db_pre_request to 'api_guard.check_request';
  end if;
end
$wire$;

notify pgrst, 'reload config';
