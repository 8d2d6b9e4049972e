-- 0001_tenancy_schema.sql
--
-- The multi-tenant core: tenants, profiles, tenant_usage, tenant_domains, audit_log.
-- Every table has Row Level Security enabled AND forced, one policy per operation
-- `to authenticated`, and explicit grants (Supabase's default privileges hand every new
-- table to anon and authenticated; here they are taken back and granted column by column).
--
-- Who may do what (T = the JWT's tenant_id, R = the JWT's tenant_role, SA = super admin):
--   tenants         select: own tenant | SA       update (name, whitelabel_config): admin of T | SA
--                   insert/delete: service role only (control plane)
--   profiles        select: own row, or every row of T for an admin | SA
--                   insert/delete: admin of T (not self for delete) | SA
--                   update: own row (email, display_name) or admin of T | SA;
--                   id and tenant_id never change; nobody changes their own role/permissions
--                   (except SA); only SA grants super_admin, and only in the primary tenant
--   tenant_usage    select: T | SA                 writes: service role only
--   tenant_domains  select: T | SA                 insert/delete: admin of T (custom domains) | SA
--                   update: SA
--   audit_log       select: admin of T | SA        insert: service role only; append-only
--   anon            nothing, anywhere
--
-- SA = JWT tenant_role 'super_admin' AND the JWT's tenant is the primary tenant, decided
-- by private.is_super_admin() (SECURITY DEFINER, search_path '', not executable by anon or
-- public, in a schema PostgREST does not expose). No policy on profiles queries profiles:
-- that is what made the product document's policy fail with "infinite recursion detected".
--
-- The SECURITY DEFINER helpers read public.tenants as their owner, which must bypass RLS:
-- locally the owner is the superuser `postgres`; on Supabase the `postgres` role has
-- BYPASSRLS. Otherwise the helper would be subject to the tenants policy that calls it.
--
-- Idempotent: tables/indexes `if not exists`, functions `create or replace`, policies and
-- triggers dropped and re-created, grants re-stated. Applying it twice changes nothing.

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------

create table if not exists public.tenants (
  tenant_id         text primary key
                    check (tenant_id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name              text not null check (char_length(name) between 1 and 200),
  domain            text not null unique
                    check (char_length(domain) <= 253
                           and domain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'),
  type              text not null
                    check (type in ('primary', 'partner-subdomain', 'custom-domain')),
  whitelabel_config jsonb not null default '{}'::jsonb
                    check (jsonb_typeof(whitelabel_config) = 'object'
                           and pg_column_size(whitelabel_config) <= 16384),
  subscription_tier text not null default 'starter'
                    check (subscription_tier in ('starter', 'growth', 'enterprise')),
  status            text not null default 'active'
                    check (status in ('active', 'suspended', 'inactive')),
  script_name       text not null check (script_name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now()
);
-- Exactly one primary tenant: super-admin rights hang on it.
create unique index if not exists tenants_one_primary on public.tenants ((true)) where type = 'primary';

create table if not exists public.profiles (
  -- The Supabase Auth user id (auth.users.id); no FK because GoTrue's schema is not local.
  id                 uuid primary key,
  tenant_id          text not null references public.tenants (tenant_id) on delete cascade,
  tenant_role        text not null default 'client'
                     check (tenant_role in ('client', 'admin', 'super_admin')),
  tenant_permissions jsonb not null default '{}'::jsonb
                     check (jsonb_typeof(tenant_permissions) = 'object'),
  email              text check (email is null or (char_length(email) <= 320 and email like '%_@_%')),
  display_name       text check (display_name is null or char_length(display_name) <= 200),
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now()
);
create index if not exists profiles_tenant_id_id on public.profiles (tenant_id, id);

create table if not exists public.tenant_usage (
  id          bigint generated always as identity primary key,
  tenant_id   text not null references public.tenants (tenant_id) on delete cascade,
  usage_type  text not null check (usage_type in ('ai_calls', 'domains', 'storage')),
  period      text not null check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),  -- 'YYYY-MM'
  usage_count bigint not null default 0 check (usage_count >= 0),
  usage_limit bigint check (usage_limit is null or usage_limit >= 0),
  updated_at  timestamptz not null default now(),
  -- Led by tenant_id: the tenant index, and the upsert target of the usage flush.
  unique (tenant_id, usage_type, period)
);

create table if not exists public.tenant_domains (
  id             bigint generated always as identity primary key,
  tenant_id      text not null references public.tenants (tenant_id) on delete cascade,
  domain         text not null unique
                 check (char_length(domain) <= 253
                        and domain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'),
  domain_type    text not null check (domain_type in ('primary', 'custom', 'subdomain')),
  ssl_status     text not null default 'pending'
                 check (ssl_status in ('pending', 'active', 'failed')),
  dns_configured boolean not null default false,
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now()
);
create index if not exists tenant_domains_tenant_id on public.tenant_domains (tenant_id, domain);

create table if not exists public.audit_log (
  id        bigint generated always as identity primary key,
  tenant_id text not null references public.tenants (tenant_id) on delete cascade,
  actor     text not null check (char_length(actor) between 1 and 200),  -- user uuid or 'system'
  action    text not null check (action ~ '^[a-z][a-z0-9_.:-]{0,63}$'),
  target    text check (target is null or char_length(target) <= 500),
  at        timestamptz not null default now(),
  details   jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object')
);
create index if not exists audit_log_tenant_id_at on public.audit_log (tenant_id, at desc);

-- ---------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------

-- The caller's tenant from the JWT, as the product document names it (for app code and RPC).
create or replace function public.get_current_tenant_id() returns text
language sql stable
set search_path = ''
as $$
  select nullif((select auth.jwt()) ->> 'tenant_id', '')
$$;
revoke execute on function public.get_current_tenant_id() from public, anon;
grant execute on function public.get_current_tenant_id() to authenticated, service_role;

-- True when the JWT claims super_admin AND its tenant is the primary tenant.
create or replace function private.is_super_admin() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select coalesce(
    (auth.jwt() ->> 'tenant_role') = 'super_admin'
    and exists (
      select 1 from public.tenants t
      where t.tenant_id = (auth.jwt() ->> 'tenant_id')
        and t.type = 'primary'
        and t.status = 'active'
    ),
    false)
$$;
revoke execute on function private.is_super_admin() from public, anon;
grant execute on function private.is_super_admin() to authenticated, service_role;

-- True when the tenant is the primary one (used by the profile guard, whatever the caller sees).
create or replace function private.is_primary_tenant(p_tenant_id text) returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.tenants t where t.tenant_id = p_tenant_id and t.type = 'primary'
  )
$$;
revoke execute on function private.is_primary_tenant(text) from public, anon;
grant execute on function private.is_primary_tenant(text) to authenticated, service_role;

create or replace function private.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
revoke execute on function private.touch_updated_at() from public, anon;

-- Column grants already keep id/tenant_id out of reach; this trigger also holds if a
-- grant is ever widened, and covers what grants cannot express (whose role may change).
create or replace function private.guard_profile_write() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  caller_is_super_admin boolean;
begin
  -- The service role and the owner are the control plane; these rules are for API users.
  if current_user in ('authenticated', 'anon') then
    caller_is_super_admin := private.is_super_admin();

    if tg_op = 'UPDATE' then
      if new.id is distinct from old.id or new.tenant_id is distinct from old.tenant_id then
        raise exception 'profiles.id and profiles.tenant_id cannot be changed' using errcode = '42501';
      end if;
      if not caller_is_super_admin
         and (new.tenant_role, new.tenant_permissions) is distinct from (old.tenant_role, old.tenant_permissions) then
        if old.id = auth.uid() then
          raise exception 'a user cannot change their own role or permissions' using errcode = '42501';
        end if;
        if coalesce(auth.jwt() ->> 'tenant_role', '') <> 'admin' then
          raise exception 'only a tenant admin changes roles or permissions' using errcode = '42501';
        end if;
        if old.tenant_role = 'super_admin' then
          raise exception 'only a super_admin changes a super_admin' using errcode = '42501';
        end if;
      end if;
    end if;

    if new.tenant_role = 'super_admin' and not caller_is_super_admin then
      raise exception 'only a super_admin grants super_admin' using errcode = '42501';
    end if;
  end if;

  -- Whoever writes: super-admin rights hang on the primary tenant, so the role lives only there.
  if new.tenant_role = 'super_admin' and not private.is_primary_tenant(new.tenant_id) then
    raise exception 'super_admin exists only in the primary tenant' using errcode = '23514';
  end if;
  return new;
end
$$;
revoke execute on function private.guard_profile_write() from public, anon;

-- ---------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------

drop trigger if exists tenants_touch_updated_at on public.tenants;
create trigger tenants_touch_updated_at before update on public.tenants
  for each row execute function private.touch_updated_at();

drop trigger if exists profiles_touch_updated_at on public.profiles;
create trigger profiles_touch_updated_at before update on public.profiles
  for each row execute function private.touch_updated_at();

drop trigger if exists profiles_guard_write on public.profiles;
create trigger profiles_guard_write before insert or update on public.profiles
  for each row execute function private.guard_profile_write();

drop trigger if exists tenant_usage_touch_updated_at on public.tenant_usage;
create trigger tenant_usage_touch_updated_at before update on public.tenant_usage
  for each row execute function private.touch_updated_at();

drop trigger if exists tenant_domains_touch_updated_at on public.tenant_domains;
create trigger tenant_domains_touch_updated_at before update on public.tenant_domains
  for each row execute function private.touch_updated_at();

-- ---------------------------------------------------------------------------------------
-- Grants (re-stated in full, so re-applying converges to the same state)
-- ---------------------------------------------------------------------------------------

revoke all on table public.tenants, public.profiles, public.tenant_usage,
                    public.tenant_domains, public.audit_log
  from public, anon, authenticated, service_role;

grant select on table public.tenants, public.profiles, public.tenant_usage,
                      public.tenant_domains, public.audit_log
  to authenticated;
grant update (name, whitelabel_config) on table public.tenants to authenticated;
grant insert (id, tenant_id, tenant_role, tenant_permissions, email, display_name),
      update (tenant_role, tenant_permissions, email, display_name),
      delete
  on table public.profiles to authenticated;
grant insert (tenant_id, domain, domain_type),
      update (domain_type, ssl_status, dns_configured),
      delete
  on table public.tenant_domains to authenticated;

grant select, insert, update, delete on table public.tenants, public.profiles,
      public.tenant_usage, public.tenant_domains
  to service_role;
-- The audit log is append-only, even for the service role.
grant select, insert on table public.audit_log to service_role;

revoke all on sequence public.tenant_usage_id_seq, public.tenant_domains_id_seq,
                       public.audit_log_id_seq
  from anon;

-- ---------------------------------------------------------------------------------------
-- Row Level Security
-- ---------------------------------------------------------------------------------------

alter table public.tenants        enable row level security;
alter table public.tenants        force row level security;
alter table public.profiles       enable row level security;
alter table public.profiles       force row level security;
alter table public.tenant_usage   enable row level security;
alter table public.tenant_usage   force row level security;
alter table public.tenant_domains enable row level security;
alter table public.tenant_domains force row level security;
alter table public.audit_log      enable row level security;
alter table public.audit_log      force row level security;

-- tenants
drop policy if exists tenants_select on public.tenants;
create policy tenants_select on public.tenants for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id')
         or (select private.is_super_admin()));

drop policy if exists tenants_update on public.tenants;
create policy tenants_update on public.tenants for update to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin')
         or (select private.is_super_admin()))
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (select auth.jwt() ->> 'tenant_role') = 'admin')
              or (select private.is_super_admin()));

-- profiles (no policy here reads profiles: that is the recursion the product doc had)
drop policy if exists profiles_select on public.profiles;
create policy profiles_select on public.profiles for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (id = (select auth.uid())
               or (select auth.jwt() ->> 'tenant_role') = 'admin'))
         or (select private.is_super_admin()));

drop policy if exists profiles_insert on public.profiles;
create policy profiles_insert on public.profiles for insert to authenticated
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (select auth.jwt() ->> 'tenant_role') = 'admin')
              or (select private.is_super_admin()));

drop policy if exists profiles_update on public.profiles;
create policy profiles_update on public.profiles for update to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (id = (select auth.uid())
               or (select auth.jwt() ->> 'tenant_role') = 'admin'))
         or (select private.is_super_admin()))
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (id = (select auth.uid())
                    or (select auth.jwt() ->> 'tenant_role') = 'admin'))
              or (select private.is_super_admin()));

drop policy if exists profiles_delete on public.profiles;
create policy profiles_delete on public.profiles for delete to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin'
          and id <> (select auth.uid()))
         or (select private.is_super_admin()));

-- tenant_usage: read by the tenant; written by the service role only (no write policies)
drop policy if exists tenant_usage_select on public.tenant_usage;
create policy tenant_usage_select on public.tenant_usage for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id')
         or (select private.is_super_admin()));

-- tenant_domains
drop policy if exists tenant_domains_select on public.tenant_domains;
create policy tenant_domains_select on public.tenant_domains for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id')
         or (select private.is_super_admin()));

drop policy if exists tenant_domains_insert on public.tenant_domains;
create policy tenant_domains_insert on public.tenant_domains for insert to authenticated
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (select auth.jwt() ->> 'tenant_role') = 'admin'
               and domain_type = 'custom')
              or (select private.is_super_admin()));

drop policy if exists tenant_domains_update on public.tenant_domains;
create policy tenant_domains_update on public.tenant_domains for update to authenticated
  using ((select private.is_super_admin()))
  with check ((select private.is_super_admin()));

drop policy if exists tenant_domains_delete on public.tenant_domains;
create policy tenant_domains_delete on public.tenant_domains for delete to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin'
          and domain_type = 'custom')
         or (select private.is_super_admin()));

-- audit_log: tenant admins read their tenant's trail; written by the service role only
drop policy if exists audit_log_select on public.audit_log;
create policy audit_log_select on public.audit_log for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin')
         or (select private.is_super_admin()));
