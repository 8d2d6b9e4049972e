-- 0006_domain_rules.sql
--
-- The database is the one authority on a tenant's domains, whichever path writes them (the
-- tenant API with a tenant JWT, the control plane with the service role):
--
--   * Quota. A tier allows private.tier_domain_limit(tier) domains (shared/tiers.py holds the
--     same table; a test compares them). The insert that would pass it fails with SQLSTATE
--     CMQ01 and DETAIL {"limit": n, "used": n}. The check holds the tenant's row lock
--     (`select ... for no key update` on tenants), so concurrent adds cannot pass the limit, and a
--     tier change (UPDATE of subscription_tier) below the current count fails the same way.
--   * No overlap across tenants. A name equal to, under, or a parent of another tenant's
--     domain (its tenants.domain or any tenant_domains row, pending or verified) fails with
--     SQLSTATE CMD01 and the one message "domain not available": nothing tells a caller which
--     tenant holds what. The platform zone is the exception: partner subdomains sit under the
--     primary tenant's apex. Adds take a transaction-level advisory lock first, so two
--     overlapping names added at the same moment by two tenants cannot both pass.
--   * Ownership. A custom domain a tenant adds (role `authenticated`) is stored `pending` with
--     a fresh random verification token; the tenant cannot set the status, the token or the
--     timestamps (no column grant, and the trigger overrides whatever arrives). Only the
--     service role marks a domain `verified` (after the Worker or the operator's CLI has seen
--     the token in DNS or over HTTP). Platform-assigned names (domain_type primary/subdomain)
--     and a tenant's own primary domain (tenants.domain) are verified by assignment.
--   * Type. A partner-subdomain tenant's users cannot add custom domains.
--   * Primary domain. API users (tenant admins and the super admin alike) cannot delete a
--     tenant's primary domain (tenants.domain, for partners their platform subdomain): it
--     goes only with the tenant, through the control plane.
--   * tenant_usage's `domains` row for the current month is kept equal to the real count
--     (whatever writes it: the metering flush can no longer publish a stale level).
--
-- Who is checked: every statement run as `authenticated`, `anon` or `service_role` (what
-- PostgREST switches to, read from the `role` setting because these trigger functions are
-- SECURITY DEFINER). Direct SQL as the database owner (migrations, seed.sql, a DBA's
-- restore) is not checked (nor is the usage row synced for it), exactly as it is not subject
-- to RLS; the ownership state is still filled in for it (a primary or platform name verified).
-- The quota check counts with a fresh snapshot after the lock, which READ COMMITTED (what
-- PostgREST and the control plane use) and SERIALIZABLE make safe.
--
-- Idempotent: columns `add ... if not exists`, functions `create or replace`, triggers dropped
-- and re-created, index `if not exists`.

-- ---------------------------------------------------------------------------------------
-- Columns: the ownership proof of a domain
-- ---------------------------------------------------------------------------------------

-- Rows that exist when this migration first runs were routed already: they stay verified.
alter table public.tenant_domains
  add column if not exists verification_status text not null default 'verified'
      check (verification_status in ('pending', 'verified'));
alter table public.tenant_domains alter column verification_status set default 'pending';
alter table public.tenant_domains
  add column if not exists verification_token text
      check (verification_token is null or verification_token ~ '^[0-9a-f]{32,128}$');
alter table public.tenant_domains add column if not exists verified_at timestamptz;
alter table public.tenant_domains add column if not exists verification_checked_at timestamptz;
alter table public.tenant_domains
  add column if not exists verification_detail text
      check (verification_detail is null or char_length(verification_detail) <= 300);

-- Descendants of a name (`x.<name>`) by index: reversed, a descendant starts with the reversed name + '.'.
create index if not exists tenant_domains_reverse_domain
  on public.tenant_domains (reverse(domain) text_pattern_ops);

-- ---------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------

-- The domain quota of a tier (shared/tiers.py TIERS[...].domains; tests/test_domain_rules.py compares).
create or replace function private.tier_domain_limit(p_tier text) returns integer
language sql immutable
set search_path = ''
as $$
  select case p_tier when 'starter' then 1 when 'growth' then 5 when 'enterprise' then 25 end
$$;
revoke execute on function private.tier_domain_limit(text) from public, anon;
grant execute on function private.tier_domain_limit(text) to authenticated, service_role;

-- Who is calling, as PostgREST set it: 'app' (anon, authenticated), 'control' (service_role)
-- or 'owner' (no role set: migrations, seed, a DBA). Read from the `role` setting, which a
-- SECURITY DEFINER function does not change (current_user there is the owner).
create or replace function private.domain_caller() returns text
language sql stable
set search_path = ''
as $$
  select case
    when current_setting('role', true) in ('authenticated', 'anon') then 'app'
    when current_setting('role', true) = 'service_role' then 'control'
    when current_user in ('authenticated', 'anon') then 'app'
    when current_user = 'service_role' then 'control'
    else 'owner' end
$$;
revoke execute on function private.domain_caller() from public, anon;
grant execute on function private.domain_caller() to authenticated, service_role;

-- True when `p_domain` is equal to, under, or a parent of a name another tenant holds.
-- Not granted to API roles: called only from the SECURITY DEFINER triggers below, so it is
-- not an oracle for other tenants' names.
create or replace function private.domain_conflict(p_domain text, p_tenant_id text) returns boolean
language plpgsql stable
security definer
set search_path = ''
as $$
declare
  apex text := (select t.domain from public.tenants t where t.type = 'primary' limit 1);
  labels text[] := string_to_array(p_domain, '.');
  ancestors text[] := '{}';
  i integer;
begin
  for i in 1 .. coalesce(array_length(labels, 1), 0) loop  -- p_domain itself and every parent
    ancestors := ancestors || array_to_string(labels[i:], '.');
  end loop;
  -- Partner subdomains live under the platform apex: that one relation is not an overlap.
  if apex is not null and right(p_domain, char_length(apex) + 1) = '.' || apex then
    ancestors := array_remove(ancestors, apex);
  end if;
  if exists (select 1 from public.tenant_domains d
             where d.domain = any (ancestors) and d.tenant_id <> p_tenant_id)
     or exists (select 1 from public.tenants t
                where t.domain = any (ancestors) and t.tenant_id <> p_tenant_id) then
    return true;
  end if;
  if p_domain = apex then
    return false;  -- the primary tenant's apex: the names under it are the platform's
  end if;
  return exists (select 1 from public.tenant_domains d
                 where reverse(d.domain) like reverse(p_domain) || '.%' and d.tenant_id <> p_tenant_id)
      or exists (select 1 from public.tenants t
                 where right(t.domain, char_length(p_domain) + 1) = '.' || p_domain and t.tenant_id <> p_tenant_id);
end
$$;
revoke execute on function private.domain_conflict(text, text) from public, anon, authenticated;

-- tenant_usage's `domains` row of the current month: the real count and the tier's limit.
create or replace function private.sync_domain_usage(p_tenant_id text) returns void
language sql
security definer
set search_path = ''
as $$
  insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)
  select t.tenant_id, 'domains', to_char(now() at time zone 'utc', 'YYYY-MM'),
         (select count(*) from public.tenant_domains d where d.tenant_id = t.tenant_id),
         private.tier_domain_limit(t.subscription_tier)
  from public.tenants t where t.tenant_id = p_tenant_id  -- nothing when the tenant is being deleted
  on conflict (tenant_id, usage_type, period) do update
    set usage_count = excluded.usage_count, usage_limit = excluded.usage_limit
    where (tenant_usage.usage_count, tenant_usage.usage_limit)
          is distinct from (excluded.usage_count, excluded.usage_limit)
$$;
revoke execute on function private.sync_domain_usage(text) from public, anon, authenticated;

-- ---------------------------------------------------------------------------------------
-- tenant_domains: before (ownership state, protected columns, the primary domain)
-- ---------------------------------------------------------------------------------------

create or replace function private.tenant_domains_before() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  caller text := private.domain_caller();
  primary_domain text;
begin
  if tg_op = 'DELETE' then
    if caller = 'app' then
      select t.domain into primary_domain from public.tenants t where t.tenant_id = old.tenant_id;
      if old.domain = primary_domain then
        raise exception 'a tenant''s primary domain is removed only with the tenant'
          using errcode = '42501', hint = 'primary_domain';
      end if;
    end if;
    return old;
  end if;

  if tg_op = 'UPDATE' then
    if caller = 'app' and (new.tenant_id, new.domain, new.verification_status, new.verification_token,
                           new.verified_at, new.verification_checked_at, new.verification_detail)
       is distinct from (old.tenant_id, old.domain, old.verification_status, old.verification_token,
                         old.verified_at, old.verification_checked_at, old.verification_detail) then
      raise exception 'only the platform changes a domain''s name, tenant or verification'
        using errcode = '42501';
    end if;
    if new.verification_status = 'verified' and old.verification_status = 'pending' then
      new.verified_at := coalesce(new.verified_at, now());
    end if;
    return new;
  end if;

  -- INSERT
  if caller = 'app' and new.domain_type = 'custom' then
    -- A tenant's claim: unproven until the platform sees the token. Nothing it sent counts.
    new.verification_status := 'pending';
    new.verification_token := replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
    new.verified_at := null;
    new.verification_checked_at := null;
    new.verification_detail := null;
    return new;
  end if;
  if new.domain_type <> 'custom'
     or exists (select 1 from public.tenants t where t.tenant_id = new.tenant_id and t.domain = new.domain) then
    new.verification_status := 'verified';  -- assigned by the platform, or the tenant's own primary domain
  end if;
  if new.verification_status = 'verified' then
    new.verified_at := coalesce(new.verified_at, now());
  elsif new.verification_token is null then
    new.verification_token := replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');
  end if;
  return new;
end
$$;
revoke execute on function private.tenant_domains_before() from public, anon, authenticated;

-- ---------------------------------------------------------------------------------------
-- tenant_domains: after (type, overlap, quota; usage in step)
-- An AFTER trigger, so rows RLS refuses never reach these checks: a refused insert into
-- another tenant's domains says "row-level security", never something about that tenant.
-- ---------------------------------------------------------------------------------------

create or replace function private.tenant_domains_after() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  caller text := private.domain_caller();
  tenant record;
  used integer;
  cap integer;
begin
  if caller = 'owner' then
    return null;  -- migrations, seed.sql, a DBA: unchecked, as RLS does not apply to them either
  end if;
  if tg_op = 'DELETE' then
    perform private.sync_domain_usage(old.tenant_id);
    return null;
  end if;
  if tg_op = 'UPDATE' and (new.tenant_id, new.domain) is not distinct from (old.tenant_id, old.domain) then
    return null;
  end if;

  -- One add at a time platform-wide (overlap across tenants), then this tenant's row (quota).
  -- FOR NO KEY UPDATE, not FOR UPDATE: every insert already holds FOR KEY SHARE on the tenant
  -- row (its foreign key), which FOR UPDATE would wait for: two concurrent adds would deadlock.
  -- NO KEY UPDATE serialises the adds and a tier change alike, and waits for no foreign key.
  perform pg_advisory_xact_lock(hashtext('cmgsite.tenant_domains'));
  select t.type, t.subscription_tier into tenant
    from public.tenants t where t.tenant_id = new.tenant_id for no key update;

  if caller = 'app' and new.domain_type = 'custom' and tenant.type = 'partner-subdomain' then
    raise exception 'a partner-subdomain tenant''s domains are assigned by the platform'
      using errcode = '42501', hint = 'custom_domains_not_allowed';
  end if;
  if private.domain_conflict(new.domain, new.tenant_id) then
    raise exception 'domain not available' using errcode = 'CMD01';
  end if;
  used := (select count(*) from public.tenant_domains d where d.tenant_id = new.tenant_id);
  cap := coalesce(private.tier_domain_limit(tenant.subscription_tier), 0);
  if used > cap then
    raise exception 'domain quota exceeded: tier % allows % domain(s)', tenant.subscription_tier, cap
      using errcode = 'CMQ01', detail = json_build_object('limit', cap, 'used', used - 1)::text;
  end if;

  perform private.sync_domain_usage(new.tenant_id);
  if tg_op = 'UPDATE' and new.tenant_id <> old.tenant_id then
    perform private.sync_domain_usage(old.tenant_id);
  end if;
  return null;
end
$$;
revoke execute on function private.tenant_domains_after() from public, anon, authenticated;

drop trigger if exists tenant_domains_before on public.tenant_domains;
create trigger tenant_domains_before before insert or update or delete on public.tenant_domains
  for each row execute function private.tenant_domains_before();

drop trigger if exists tenant_domains_after on public.tenant_domains;
create trigger tenant_domains_after after insert or update or delete on public.tenant_domains
  for each row execute function private.tenant_domains_after();

-- ---------------------------------------------------------------------------------------
-- tenants: a tier below the current domain count is refused; the usage row follows the tier
-- ---------------------------------------------------------------------------------------

create or replace function private.tenant_tier_domains() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  used integer;
  cap integer;
begin
  if new.subscription_tier is not distinct from old.subscription_tier then
    return new;
  end if;
  if private.domain_caller() <> 'owner' then
    used := (select count(*) from public.tenant_domains d where d.tenant_id = new.tenant_id);
    cap := coalesce(private.tier_domain_limit(new.subscription_tier), 0);
    if used > cap then
      raise exception 'domain quota exceeded: tier % allows % domain(s)', new.subscription_tier, cap
        using errcode = 'CMQ01', detail = json_build_object('limit', cap, 'used', used)::text;
    end if;
  end if;
  return new;
end
$$;
revoke execute on function private.tenant_tier_domains() from public, anon, authenticated;

create or replace function private.tenant_tier_usage() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.subscription_tier is distinct from old.subscription_tier then
    perform private.sync_domain_usage(new.tenant_id);
  end if;
  return null;
end
$$;
revoke execute on function private.tenant_tier_usage() from public, anon, authenticated;

drop trigger if exists tenants_tier_domains on public.tenants;
create trigger tenants_tier_domains before update of subscription_tier on public.tenants
  for each row execute function private.tenant_tier_domains();

drop trigger if exists tenants_tier_usage on public.tenants;
create trigger tenants_tier_usage after update of subscription_tier on public.tenants
  for each row execute function private.tenant_tier_usage();

-- ---------------------------------------------------------------------------------------
-- tenant_usage: the current month's `domains` row is derived, whoever writes it
-- ---------------------------------------------------------------------------------------

create or replace function private.tenant_usage_domains() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.usage_type = 'domains' and new.period = to_char(now() at time zone 'utc', 'YYYY-MM') then
    new.usage_count := (select count(*) from public.tenant_domains d where d.tenant_id = new.tenant_id);
    new.usage_limit := (select private.tier_domain_limit(t.subscription_tier)
                        from public.tenants t where t.tenant_id = new.tenant_id);
  end if;
  return new;
end
$$;
revoke execute on function private.tenant_usage_domains() from public, anon, authenticated;

drop trigger if exists tenant_usage_domains on public.tenant_usage;
create trigger tenant_usage_domains before insert or update on public.tenant_usage
  for each row execute function private.tenant_usage_domains();
