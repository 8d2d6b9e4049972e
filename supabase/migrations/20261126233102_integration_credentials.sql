-- 0007_integration_credentials.sql
--
-- Integration credentials (a partner's API keys for their SEO or analytics tools), stored
-- encrypted: envelope encryption with AES-256-GCM, format v1 (docs/encryption.md).
--   tenant_data_keys         one row per data key of a tenant: the key wrapped by a platform
--                            key (a Worker secret), and that platform key's id
--   integration_credentials  one row per named secret: the value sealed by the tenant's data
--                            key, and that data key's id
-- The database never sees a key or a plaintext. Tenant ids and names are bound into each
-- ciphertext's associated data, so a value moved to another tenant or row does not open.
--
-- Who may do what (T = the JWT's tenant_id; admin of T = tenant_role 'admin', or the super
-- admin acting on the primary tenant itself; never another tenant's rows, super admin included):
--   tenant_data_keys         select, insert: admin of T    update, delete: service role only
--                            (the control plane re-wraps data keys when a platform key rotates)
--   integration_credentials  select, insert, update (value, key id), delete: admin of T
--   service role             everything;  anon: nothing
--
-- Idempotent: tables `if not exists`, functions `create or replace`, policies and triggers
-- dropped and re-created, grants re-stated.

create table if not exists public.tenant_data_keys (
  tenant_id       text not null references public.tenants (tenant_id) on delete cascade,
  key_id          text not null check (key_id ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
  wrapped_key     text not null check (wrapped_key ~ '^v1\.[a-z0-9][a-z0-9-]{0,31}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,128}$'),
  platform_key_id text not null check (platform_key_id ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
  created_at      timestamptz not null default now(),
  rewrapped_at    timestamptz,
  primary key (tenant_id, key_id),
  -- the id beside the value is the one inside it
  check (split_part(wrapped_key, '.', 2) = platform_key_id)
);

create table if not exists public.integration_credentials (
  tenant_id  text not null,
  name       text not null check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  key_id     text not null,
  ciphertext text not null check (char_length(ciphertext) <= 8192
                                  and ciphertext ~ '^v1\.[a-z0-9][a-z0-9-]{0,31}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  updated_by uuid,
  primary key (tenant_id, name),
  foreign key (tenant_id, key_id) references public.tenant_data_keys (tenant_id, key_id) on delete cascade,
  check (split_part(ciphertext, '.', 2) = key_id)
);

drop trigger if exists integration_credentials_touch_updated_at on public.integration_credentials;
create trigger integration_credentials_touch_updated_at before update on public.integration_credentials
  for each row execute function private.touch_updated_at();

-- The caller administers the JWT's own tenant: an admin, or the super admin (whose tenant is the
-- primary one). A client whose token claims super_admin outside the primary tenant does not
-- (private.is_super_admin() checks the tenant). Policies pair it with tenant_id = the JWT's.
create or replace function private.is_tenant_admin() returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select coalesce((auth.jwt() ->> 'tenant_role') = 'admin', false) or private.is_super_admin()
$$;
revoke execute on function private.is_tenant_admin() from public, anon;
grant execute on function private.is_tenant_admin() to authenticated, service_role;

-- Grants (re-stated in full)
revoke all on table public.tenant_data_keys, public.integration_credentials
  from public, anon, authenticated, service_role;
grant select on table public.tenant_data_keys, public.integration_credentials to authenticated;
grant insert (tenant_id, key_id, wrapped_key, platform_key_id) on table public.tenant_data_keys to authenticated;
grant insert (tenant_id, name, key_id, ciphertext, updated_by),
      update (key_id, ciphertext, updated_by),
      delete
  on table public.integration_credentials to authenticated;
grant select, insert, update, delete on table public.tenant_data_keys, public.integration_credentials
  to service_role;

-- Row Level Security
alter table public.tenant_data_keys        enable row level security;
alter table public.tenant_data_keys        force row level security;
alter table public.integration_credentials enable row level security;
alter table public.integration_credentials force row level security;

drop policy if exists tenant_data_keys_select on public.tenant_data_keys;
create policy tenant_data_keys_select on public.tenant_data_keys for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));

drop policy if exists tenant_data_keys_insert on public.tenant_data_keys;
create policy tenant_data_keys_insert on public.tenant_data_keys for insert to authenticated
  with check (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));

drop policy if exists integration_credentials_select on public.integration_credentials;
create policy integration_credentials_select on public.integration_credentials for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));

drop policy if exists integration_credentials_insert on public.integration_credentials;
create policy integration_credentials_insert on public.integration_credentials for insert to authenticated
  with check (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));

drop policy if exists integration_credentials_update on public.integration_credentials;
create policy integration_credentials_update on public.integration_credentials for update to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()))
  with check (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));

drop policy if exists integration_credentials_delete on public.integration_credentials;
create policy integration_credentials_delete on public.integration_credentials for delete to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id') and (select private.is_tenant_admin()));
