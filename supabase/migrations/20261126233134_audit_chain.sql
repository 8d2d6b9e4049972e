-- 0008_audit_chain.sql
--
-- The audit trail is append-only for everyone and tamper-evident.
--
--   * Every row records tenant, actor, action, target, request id, time and outcome
--     (`success`, `failure` or `denied`), plus `details`.
--   * Each row carries `seq` (1, 2, 3 ... per tenant), `prev_hash` (the previous row's
--     `row_hash` in the same tenant, 64 zeros for the first) and `row_hash`, the SHA-256 of
--     the canonical text below. The database computes all three in a BEFORE INSERT trigger,
--     whatever the client sends, under a per-tenant transaction advisory lock: concurrent
--     writers queue per tenant and cannot fork the chain (a unique (tenant_id, seq) index is
--     the backstop: a writer in a stale snapshot fails with 23505 instead of forking).
--   * Canonical text (version 1), fields joined with '|', each field `<char length>:<text>`
--     or `-` for NULL:
--       'cmgsite-audit/1' | prev_hash | tenant_id | seq | at (UTC, YYYY-MM-DDTHH24:MI:SS.USZ)
--       | actor | action | target | request_id | outcome | details::text (jsonb's own text)
--     controlplane/audit_chain.py computes the same and is what `tenants.py audit verify`
--     runs, outside the database (tests compare the two).
--   * API writers (anon, authenticated, service_role) cannot choose the time: `at` is
--     now(). Only the owner (and public.audit_restore below, which runs as the owner) keeps a
--     given `at`, so a restored row hashes to the value it had.
--   * Append-only: no UPDATE, DELETE or TRUNCATE grant to any API role, and triggers that
--     refuse them for everyone else too, the owner included (short of disabling triggers,
--     which the chain then exposes). The one exception is erasure: an audit row may be
--     deleted only when its tenant no longer exists, i.e. by the cascade of deleting the
--     tenant's `tenants` row (GDPR erasure through `tenants.py delete`, which leaves a
--     `tenant.erased` record in the primary tenant's chain). A tenant's chain therefore goes
--     only whole, and only with the tenant.
--   * public.audit_chain_rows(): the chain in seq order with the exact text that was hashed
--     (service role: verify, export, backup). public.audit_restore(): puts an archived chain
--     back (service role: `tenants.py restore`); rows the tenant already has must match
--     the archive's hashes, missing ones are appended and must hash to the archived value.
--   * public.audit_trail() / public.audit_trail_all(): the listing the tenant API pages
--     through (SECURITY INVOKER: RLS decides what a caller sees).
--
-- Rows that exist when this migration first runs are chained in (at, id) order per tenant.
-- Idempotent: columns `add ... if not exists`, backfill only rows without a hash,
-- functions `create or replace`, triggers dropped and re-created, grants re-stated.

-- ---------------------------------------------------------------------------------------
-- Columns
-- ---------------------------------------------------------------------------------------

alter table public.audit_log add column if not exists request_id text
  check (request_id is null or request_id ~ '^[A-Za-z0-9_.:-]{1,128}$');
alter table public.audit_log add column if not exists outcome text not null default 'success'
  check (outcome in ('success', 'failure', 'denied'));
alter table public.audit_log add column if not exists seq bigint check (seq is null or seq >= 1);
alter table public.audit_log add column if not exists prev_hash text
  check (prev_hash is null or prev_hash ~ '^[0-9a-f]{64}$');
alter table public.audit_log add column if not exists row_hash text
  check (row_hash is null or row_hash ~ '^[0-9a-f]{64}$');

-- ---------------------------------------------------------------------------------------
-- The hash
-- ---------------------------------------------------------------------------------------

create or replace function private.audit_field(p_value text) returns text
language sql immutable
set search_path = ''
as $$
  select case when p_value is null then '-' else char_length(p_value)::text || ':' || p_value end
$$;
revoke execute on function private.audit_field(text) from public, anon;
grant execute on function private.audit_field(text) to authenticated, service_role;

create or replace function private.audit_at_text(p_at timestamptz) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;
revoke execute on function private.audit_at_text(timestamptz) from public, anon;
grant execute on function private.audit_at_text(timestamptz) to authenticated, service_role;

create or replace function private.audit_row_hash(
  p_prev_hash text, p_tenant_id text, p_seq bigint, p_at timestamptz, p_actor text, p_action text,
  p_target text, p_request_id text, p_outcome text, p_details jsonb) returns text
language sql stable
set search_path = ''
as $$
  select encode(sha256(convert_to(
    'cmgsite-audit/1'
    || '|' || private.audit_field(p_prev_hash)
    || '|' || private.audit_field(p_tenant_id)
    || '|' || private.audit_field(p_seq::text)
    || '|' || private.audit_field(private.audit_at_text(p_at))
    || '|' || private.audit_field(p_actor)
    || '|' || private.audit_field(p_action)
    || '|' || private.audit_field(p_target)
    || '|' || private.audit_field(p_request_id)
    || '|' || private.audit_field(p_outcome)
    || '|' || private.audit_field(p_details::text), 'UTF8')), 'hex')
$$;
revoke execute on function private.audit_row_hash(text, text, bigint, timestamptz, text, text, text, text, text, jsonb)
  from public, anon;
grant execute on function private.audit_row_hash(text, text, bigint, timestamptz, text, text, text, text, text, jsonb)
  to authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- Backfill: rows written before this migration are chained in (at, id) order per tenant
-- ---------------------------------------------------------------------------------------

drop trigger if exists audit_log_append_only on public.audit_log;
drop trigger if exists audit_log_erasure_only on public.audit_log;

do $backfill$
declare
  r record;
  cur_tenant text := null;
  cur_seq bigint := 0;
  cur_hash text;
  new_hash text;
  req text;
  outc text;
begin
  if not exists (select 1 from public.audit_log where row_hash is null) then
    return;
  end if;
  for r in select * from public.audit_log order by tenant_id, at, id loop
    if cur_tenant is distinct from r.tenant_id then
      cur_tenant := r.tenant_id;
      cur_seq := 0;
      cur_hash := repeat('0', 64);
    end if;
    cur_seq := cur_seq + 1;
    req := r.request_id;
    if req is null and (r.details ->> 'request_id') ~ '^[A-Za-z0-9_.:-]{1,128}$' then
      req := r.details ->> 'request_id';
    end if;
    outc := case when r.action like '%.failure' then 'failure' else r.outcome end;
    new_hash := private.audit_row_hash(cur_hash, r.tenant_id, cur_seq, r.at, r.actor, r.action, r.target,
                                       req, outc, r.details);
    update public.audit_log
       set seq = cur_seq, prev_hash = cur_hash, row_hash = new_hash, request_id = req, outcome = outc
     where id = r.id;
    cur_hash := new_hash;
  end loop;
end
$backfill$;

alter table public.audit_log alter column seq set not null;
alter table public.audit_log alter column prev_hash set not null;
alter table public.audit_log alter column row_hash set not null;
create unique index if not exists audit_log_tenant_seq on public.audit_log (tenant_id, seq);

-- ---------------------------------------------------------------------------------------
-- The chain trigger
-- ---------------------------------------------------------------------------------------

-- The newest row of a tenant's chain, whoever asks (the chain trigger runs as the writer).
create or replace function private.audit_head(p_tenant_id text, out seq bigint, out row_hash text)
language sql stable
security definer
set search_path = ''
as $$
  select a.seq, a.row_hash from public.audit_log a
  where a.tenant_id = p_tenant_id order by a.seq desc limit 1
$$;
revoke execute on function private.audit_head(text) from public, anon, authenticated;
grant execute on function private.audit_head(text) to service_role;

-- One writer at a time per tenant chain (the second key: the tenant id's hash).
create or replace function private.audit_lock(p_tenant_id text) returns void
language sql volatile
set search_path = ''
as $$
  select pg_advisory_xact_lock(73010008, hashtext(p_tenant_id))
$$;
revoke execute on function private.audit_lock(text) from public, anon, authenticated;
grant execute on function private.audit_lock(text) to service_role;

create or replace function private.audit_chain_link() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  head record;
begin
  if current_user in ('anon', 'authenticated', 'service_role', 'authenticator') or new.at is null then
    new.at := now();  -- API writers cannot backdate (or postdate) a row
  end if;
  new.outcome := coalesce(new.outcome, 'success');
  perform private.audit_lock(new.tenant_id);
  -- A new statement: a fresh snapshot taken after the lock, so it sees the last committed link.
  select h.seq, h.row_hash into head from private.audit_head(new.tenant_id) h;
  new.seq := coalesce(head.seq, 0) + 1;
  new.prev_hash := coalesce(head.row_hash, repeat('0', 64));
  new.row_hash := private.audit_row_hash(new.prev_hash, new.tenant_id, new.seq, new.at, new.actor, new.action,
                                         new.target, new.request_id, new.outcome, new.details);
  return new;
end
$$;
revoke execute on function private.audit_chain_link() from public, anon, authenticated;

drop trigger if exists audit_log_chain on public.audit_log;
create trigger audit_log_chain before insert on public.audit_log
  for each row execute function private.audit_chain_link();

-- ---------------------------------------------------------------------------------------
-- Append-only, erasure excepted
-- ---------------------------------------------------------------------------------------

create or replace function private.tenant_exists(p_tenant_id text) returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (select 1 from public.tenants t where t.tenant_id = p_tenant_id)
$$;
revoke execute on function private.tenant_exists(text) from public, anon, authenticated;
grant execute on function private.tenant_exists(text) to service_role;

create or replace function private.audit_append_only() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    -- Erasure: the tenants row is gone (this is its ON DELETE CASCADE): the whole chain goes.
    if not private.tenant_exists(old.tenant_id) then
      return old;
    end if;
    raise exception 'audit_log is append-only: rows go only with their tenant (erasure)'
      using errcode = '42501';
  end if;
  if tg_op = 'TRUNCATE' then
    raise exception 'audit_log is append-only: it cannot be truncated' using errcode = '42501';
  end if;
  raise exception 'audit_log is append-only: rows cannot be changed' using errcode = '42501';
end
$$;
revoke execute on function private.audit_append_only() from public, anon, authenticated;

create trigger audit_log_append_only before update or delete on public.audit_log
  for each row execute function private.audit_append_only();
create trigger audit_log_erasure_only before truncate on public.audit_log
  for each statement execute function private.audit_append_only();

-- ---------------------------------------------------------------------------------------
-- Grants: read for the policies to filter, insert of the content columns for the service
-- role; nothing else for anyone (the chain columns, the time and the id are the database's)
-- ---------------------------------------------------------------------------------------

revoke all on table public.audit_log from public, anon, authenticated, service_role;
grant select on table public.audit_log to authenticated;
grant select on table public.audit_log to service_role;
grant insert (tenant_id, actor, action, target, details, request_id, outcome)
  on table public.audit_log to service_role;
revoke all on sequence public.audit_log_id_seq from public, anon, authenticated;

create index if not exists audit_log_tenant_action_seq on public.audit_log (tenant_id, action, seq);

-- ---------------------------------------------------------------------------------------
-- Reading the chain (verify, export, backup) and putting it back (restore)
-- ---------------------------------------------------------------------------------------

create or replace function public.audit_chain_rows(p_tenant_id text, p_after_seq bigint default 0,
                                                   p_limit integer default 1000)
returns table (id bigint, tenant_id text, seq bigint, at_text text, actor text, action text, target text,
               request_id text, outcome text, details_text text, prev_hash text, row_hash text)
language sql stable
security invoker
set search_path = ''
as $$
  select a.id, a.tenant_id, a.seq, private.audit_at_text(a.at), a.actor, a.action, a.target, a.request_id,
         a.outcome, a.details::text, a.prev_hash, a.row_hash
  from public.audit_log a
  where a.tenant_id = p_tenant_id and a.seq > coalesce(p_after_seq, 0)
  order by a.seq
  limit least(greatest(coalesce(p_limit, 1000), 1), 5000)
$$;
revoke all on function public.audit_chain_rows(text, bigint, integer) from public, anon, authenticated;
grant execute on function public.audit_chain_rows(text, bigint, integer) to service_role;

-- Puts an archived chain back. The archive's chain must hold on its own (links and hashes,
-- from seq 1); rows the tenant already holds (same seq) must carry the archive's row_hash;
-- the others are appended in seq order, keep their time, and must come out with the archived
-- hash. Anything else refuses the whole call (SQLSTATE CMA01), nothing written.
create or replace function public.audit_restore(p_tenant_id text, p_rows jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  r jsonb;
  expected bigint := 0;
  prev text := repeat('0', 64);
  existing text;
  got record;
  inserted integer := 0;
  matched integer := 0;
begin
  if p_rows is null or jsonb_typeof(p_rows) <> 'array' then
    raise exception 'p_rows must be a JSON array of audit rows' using errcode = '22023';
  end if;
  if not private.tenant_exists(p_tenant_id) then
    raise exception 'no tenant % to restore an audit trail into', p_tenant_id using errcode = 'CMA01';
  end if;
  perform private.audit_lock(p_tenant_id);
  for r in select value from jsonb_array_elements(p_rows) order by (value ->> 'seq')::bigint loop
    expected := expected + 1;
    if r ->> 'tenant_id' is distinct from p_tenant_id then
      raise exception 'archived audit row % belongs to another tenant', expected using errcode = 'CMA01';
    end if;
    if (r ->> 'seq')::bigint is distinct from expected then
      raise exception 'archived audit chain has a gap at seq %', expected using errcode = 'CMA01';
    end if;
    -- The archive's own chain must hold: each row links to the one before and hashes to its value.
    if r ->> 'prev_hash' is distinct from prev
       or private.audit_row_hash(prev, p_tenant_id, expected, (r ->> 'at_text')::timestamptz, r ->> 'actor',
                                 r ->> 'action', r ->> 'target', r ->> 'request_id', r ->> 'outcome',
                                 (r ->> 'details_text')::jsonb) is distinct from r ->> 'row_hash' then
      raise exception 'archived audit row % does not verify', expected using errcode = 'CMA01';
    end if;
    prev := r ->> 'row_hash';
    select a.row_hash into existing from public.audit_log a where a.tenant_id = p_tenant_id and a.seq = expected;
    if found then
      if existing is distinct from r ->> 'row_hash' then
        raise exception 'the tenant''s audit trail differs from the archive at seq %', expected using errcode = 'CMA01';
      end if;
      matched := matched + 1;
      continue;
    end if;
    insert into public.audit_log (tenant_id, actor, action, target, request_id, outcome, at, details)
    values (p_tenant_id, r ->> 'actor', r ->> 'action', r ->> 'target', r ->> 'request_id', r ->> 'outcome',
            (r ->> 'at_text')::timestamptz, (r ->> 'details_text')::jsonb)
    returning seq, prev_hash, row_hash into got;
    if got.seq <> expected or got.prev_hash is distinct from r ->> 'prev_hash'
       or got.row_hash is distinct from r ->> 'row_hash' then
      raise exception 'archived audit row % does not verify', expected using errcode = 'CMA01';
    end if;
    inserted := inserted + 1;
  end loop;
  return jsonb_build_object('inserted', inserted, 'matched', matched);
end
$$;
revoke all on function public.audit_restore(text, jsonb) from public, anon, authenticated;
grant execute on function public.audit_restore(text, jsonb) to service_role;

-- ---------------------------------------------------------------------------------------
-- The listing the API pages through (RLS decides: admins their tenant, SA every tenant)
-- ---------------------------------------------------------------------------------------

-- One tenant's trail, newest first, by seq; p_before_seq is the cursor (exclusive).
create or replace function public.audit_trail(p_tenant_id text, p_before_seq bigint default null,
                                              p_action text default null, p_action_prefix text default null,
                                              p_actor text default null, p_since timestamptz default null,
                                              p_until timestamptz default null, p_limit integer default 50)
returns setof public.audit_log
language sql stable
security invoker
set search_path = ''
as $$
  select a.* from public.audit_log a
  where a.tenant_id = p_tenant_id
    and (p_before_seq is null or a.seq < p_before_seq)
    and (p_action is null or a.action = p_action)
    and (p_action_prefix is null or left(a.action, char_length(p_action_prefix)) = p_action_prefix)
    and (p_actor is null or a.actor = p_actor)
    and (p_since is null or a.at >= p_since)
    and (p_until is null or a.at < p_until)
  order by a.seq desc
  limit least(greatest(coalesce(p_limit, 50), 1), 1000)
$$;
revoke all on function public.audit_trail(text, bigint, text, text, text, timestamptz, timestamptz, integer)
  from public, anon;
grant execute on function public.audit_trail(text, bigint, text, text, text, timestamptz, timestamptz, integer)
  to authenticated, service_role;

-- Every trail the caller may read (a super admin: all tenants), newest first, by id.
create or replace function public.audit_trail_all(p_tenant_id text default null, p_before_id bigint default null,
                                                  p_action text default null, p_action_prefix text default null,
                                                  p_actor text default null, p_since timestamptz default null,
                                                  p_until timestamptz default null, p_limit integer default 50)
returns setof public.audit_log
language sql stable
security invoker
set search_path = ''
as $$
  select a.* from public.audit_log a
  where (p_tenant_id is null or a.tenant_id = p_tenant_id)
    and (p_before_id is null or a.id < p_before_id)
    and (p_action is null or a.action = p_action)
    and (p_action_prefix is null or left(a.action, char_length(p_action_prefix)) = p_action_prefix)
    and (p_actor is null or a.actor = p_actor)
    and (p_since is null or a.at >= p_since)
    and (p_until is null or a.at < p_until)
  order by a.id desc
  limit least(greatest(coalesce(p_limit, 50), 1), 1000)
$$;
revoke all on function public.audit_trail_all(text, bigint, text, text, text, timestamptz, timestamptz, integer)
  from public, anon;
grant execute on function public.audit_trail_all(text, bigint, text, text, text, timestamptz, timestamptz, integer)
  to authenticated, service_role;

notify pgrst, 'reload schema';
