-- 0000_supabase_compat.sql
--
-- Makes a plain PostgreSQL look like a Supabase database to the migrations after it:
-- the API roles (anon, authenticated, service_role with BYPASSRLS, authenticator), the
-- grants Supabase gives them, and auth.uid() / auth.role() / auth.email() / auth.jwt()
-- defined exactly as Supabase defines them (they read the claims PostgREST puts into
-- `request.jwt.claims`, or the legacy per-claim `request.jwt.claim.*` settings).
--
-- Local development and CI only. On a real Supabase project every object here already
-- exists (the platform owns it), so each step is guarded and the whole file is a no-op:
-- the presence of the `supabase_admin` role marks a real Supabase database.
--
-- Idempotent: applying it twice changes nothing.
-- The authenticator's password is not set here: the local runtime sets it (never committed).

do $compat$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_admin') then
    raise notice 'supabase compat: real Supabase database detected, nothing to do';
    return;
  end if;

  -- The API roles, as Supabase creates them (nologin: only reachable through authenticator).
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticator') then
    -- PostgREST logs in as authenticator and switches to the role named in the JWT.
    create role authenticator login noinherit;
  end if;

  grant anon to authenticator;
  grant authenticated to authenticator;
  grant service_role to authenticator;

  -- Supabase's grants on the exposed schema: usage plus default privileges on new objects.
  -- (Tables then lock themselves down with RLS and explicit revokes, as on Supabase.)
  grant usage on schema public to anon, authenticated, service_role;
  alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
  alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
  alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

  create schema if not exists auth;
  grant usage on schema auth to anon, authenticated, service_role;

  -- auth.uid(), auth.role(), auth.email(), auth.jwt(): Supabase's own definitions.
  if to_regprocedure('auth.uid()') is null then
    execute $fn$
      create function auth.uid() returns uuid
      language sql stable
      as $body$
        select
        coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $body$
    $fn$;
  end if;

  if to_regprocedure('auth.role()') is null then
    execute $fn$
      create function auth.role() returns text
      language sql stable
      as $body$
        select
        coalesce(
          nullif(current_setting('request.jwt.claim.role', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
      $body$
    $fn$;
  end if;

  if to_regprocedure('auth.email()') is null then
    execute $fn$
      create function auth.email() returns text
      language sql stable
      as $body$
        select
        coalesce(
          nullif(current_setting('request.jwt.claim.email', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
        )::text
      $body$
    $fn$;
  end if;

  if to_regprocedure('auth.jwt()') is null then
    execute $fn$
      create function auth.jwt() returns jsonb
      language sql stable
      as $body$
        select
          coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
          )::jsonb
      $body$
    $fn$;
  end if;

  grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
    to anon, authenticated, service_role;
end
$compat$;
