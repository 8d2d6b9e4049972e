-- 20261127013708_rls_helpers.sql
--
-- Two helpers name what the policies asked of the JWT again and again, and every policy that
-- spelt it out is recreated with them. Nothing a principal may see or change is different: the
-- isolation matrix, the attacks and the property test run unchanged on top of this file.
--
--   private.member_tenant_id()  the tenant the caller belongs to: the JWT's tenant_id
--   private.admin_tenant_id()   the tenant the caller administers: the JWT's tenant_id when its
--                               role is admin, or when the caller is the super admin (whose
--                               own tenant is the primary one); null otherwise
--
-- so "a member of T" reads `tenant_id = (select private.member_tenant_id())` and "an admin of T"
-- reads `tenant_id = (select private.admin_tenant_id())`.
--
-- Why they take no tenant argument (`is_tenant_admin(tenant_id)`): PostgreSQL evaluates a
-- function of the row once per row. It inlines only a plain SQL function without SECURITY
-- DEFINER, without SET search_path and without a sub-select in its body, and inlined it would
-- read the JWT once per row as well. Called as `(select private.admin_tenant_id())` the helper is
-- an InitPlan: evaluated once per statement, and `tenant_id = $0` stays a plain comparison the
-- tenant_id indexes serve, as before (tests/test_rls_sql.py checks the plans).
--
-- Idempotent: create or replace, drop policy if exists / create policy.

create or replace function private.member_tenant_id() returns text
language sql stable
set search_path = ''
as $$
  select nullif(auth.jwt() ->> 'tenant_id', '')
$$;
revoke execute on function private.member_tenant_id() from public, anon;
grant execute on function private.member_tenant_id() to authenticated, service_role;

-- private.is_super_admin() is SECURITY DEFINER (it reads public.tenants); this one needs no
-- privilege of its own, so it runs as the caller.
create or replace function private.admin_tenant_id() returns text
language sql stable
set search_path = ''
as $$
  select case
           when coalesce(auth.jwt() ->> 'tenant_role' = 'admin', false) or private.is_super_admin()
           then nullif(auth.jwt() ->> 'tenant_id', '')
         end
$$;
revoke execute on function private.admin_tenant_id() from public, anon;
grant execute on function private.admin_tenant_id() to authenticated, service_role;

-- ---- tenancy schema ------------------------------------------------------------------------

drop policy if exists tenants_select on public.tenants;
create policy tenants_select on public.tenants for select to authenticated
  using (tenant_id = (select private.member_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists tenants_update on public.tenants;
create policy tenants_update on public.tenants for update to authenticated
  using (tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()))
  with check (tenant_id = (select private.admin_tenant_id())
              or (select private.is_super_admin()));

-- A member sees and edits their own profile, an admin every profile of the tenant.
drop policy if exists profiles_select on public.profiles;
create policy profiles_select on public.profiles for select to authenticated
  using ((tenant_id = (select private.member_tenant_id()) and id = (select auth.uid()))
         or tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists profiles_insert on public.profiles;
create policy profiles_insert on public.profiles for insert to authenticated
  with check (tenant_id = (select private.admin_tenant_id())
              or (select private.is_super_admin()));

drop policy if exists profiles_update on public.profiles;
create policy profiles_update on public.profiles for update to authenticated
  using ((tenant_id = (select private.member_tenant_id()) and id = (select auth.uid()))
         or tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()))
  with check ((tenant_id = (select private.member_tenant_id()) and id = (select auth.uid()))
              or tenant_id = (select private.admin_tenant_id())
              or (select private.is_super_admin()));

-- An admin never deletes their own profile.
drop policy if exists profiles_delete on public.profiles;
create policy profiles_delete on public.profiles for delete to authenticated
  using ((tenant_id = (select private.admin_tenant_id()) and id <> (select auth.uid()))
         or (select private.is_super_admin()));

drop policy if exists tenant_usage_select on public.tenant_usage;
create policy tenant_usage_select on public.tenant_usage for select to authenticated
  using (tenant_id = (select private.member_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists tenant_domains_select on public.tenant_domains;
create policy tenant_domains_select on public.tenant_domains for select to authenticated
  using (tenant_id = (select private.member_tenant_id())
         or (select private.is_super_admin()));

-- An admin adds and removes custom domains only, never the platform's (0002).
drop policy if exists tenant_domains_insert on public.tenant_domains;
create policy tenant_domains_insert on public.tenant_domains for insert to authenticated
  with check ((tenant_id = (select private.admin_tenant_id())
               and domain_type = 'custom'
               and not private.is_platform_domain(domain))
              or (select private.is_super_admin()));

drop policy if exists tenant_domains_delete on public.tenant_domains;
create policy tenant_domains_delete on public.tenant_domains for delete to authenticated
  using ((tenant_id = (select private.admin_tenant_id())
          and domain_type = 'custom')
         or (select private.is_super_admin()));

drop policy if exists audit_log_select on public.audit_log;
create policy audit_log_select on public.audit_log for select to authenticated
  using (tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

-- ---- integration credentials: an admin of T only (the super admin on the primary's own rows) --

drop policy if exists tenant_data_keys_select on public.tenant_data_keys;
create policy tenant_data_keys_select on public.tenant_data_keys for select to authenticated
  using (tenant_id = (select private.admin_tenant_id()));

drop policy if exists tenant_data_keys_insert on public.tenant_data_keys;
create policy tenant_data_keys_insert on public.tenant_data_keys for insert to authenticated
  with check (tenant_id = (select private.admin_tenant_id()));

drop policy if exists integration_credentials_select on public.integration_credentials;
create policy integration_credentials_select on public.integration_credentials for select to authenticated
  using (tenant_id = (select private.admin_tenant_id()));

drop policy if exists integration_credentials_insert on public.integration_credentials;
create policy integration_credentials_insert on public.integration_credentials for insert to authenticated
  with check (tenant_id = (select private.admin_tenant_id()));

drop policy if exists integration_credentials_update on public.integration_credentials;
create policy integration_credentials_update on public.integration_credentials for update to authenticated
  using (tenant_id = (select private.admin_tenant_id()))
  with check (tenant_id = (select private.admin_tenant_id()));

drop policy if exists integration_credentials_delete on public.integration_credentials;
create policy integration_credentials_delete on public.integration_credentials for delete to authenticated
  using (tenant_id = (select private.admin_tenant_id()));

-- ---- operations ----------------------------------------------------------------------------

drop policy if exists health_checks_select on public.health_checks;
create policy health_checks_select on public.health_checks for select to authenticated
  using (tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists health_alerts_select on public.health_alerts;
create policy health_alerts_select on public.health_alerts for select to authenticated
  using (tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

-- A member sees the tickets they opened, an admin every ticket of the tenant.
drop policy if exists support_tickets_select on public.support_tickets;
create policy support_tickets_select on public.support_tickets for select to authenticated
  using ((tenant_id = (select private.member_tenant_id()) and opened_by = (select auth.uid()))
         or tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists support_tickets_insert on public.support_tickets;
create policy support_tickets_insert on public.support_tickets for insert to authenticated
  with check (tenant_id = (select private.member_tenant_id())
              and opened_by = (select auth.uid()));

drop policy if exists support_tickets_update on public.support_tickets;
create policy support_tickets_update on public.support_tickets for update to authenticated
  using (tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()))
  with check (tenant_id = (select private.admin_tenant_id())
              or (select private.is_super_admin()));

-- support_messages may read support_tickets (never the other way round: no recursion).
drop policy if exists support_messages_select on public.support_messages;
create policy support_messages_select on public.support_messages for select to authenticated
  using ((tenant_id = (select private.member_tenant_id())
          and exists (select 1 from public.support_tickets t
                      where t.id = ticket_id and t.opened_by = (select auth.uid())))
         or tenant_id = (select private.admin_tenant_id())
         or (select private.is_super_admin()));

drop policy if exists support_messages_insert on public.support_messages;
create policy support_messages_insert on public.support_messages for insert to authenticated
  with check (author_id = (select auth.uid())
              and ((tenant_id = (select private.member_tenant_id())
                    and exists (select 1 from public.support_tickets t
                                where t.id = ticket_id and t.opened_by = (select auth.uid())))
                   or tenant_id = (select private.admin_tenant_id())
                   or (select private.is_super_admin())));

notify pgrst, 'reload schema';
