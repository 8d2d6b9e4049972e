-- 0002_platform_domains.sql
--
-- A tenant admin may add custom domains, but never the platform's own domain or a name
-- under it: `evil.cozyartzmedia.com` would otherwise let one partner claim a subdomain the
-- platform hands out to another (partner subdomains come from the control plane only).
-- The check needs the primary tenant's domain, which RLS hides from other tenants' users,
-- hence a SECURITY DEFINER helper (search_path '', not executable by anon or public).
--
-- Idempotent: function replaced, policy dropped and re-created.

create or replace function private.is_platform_domain(p_domain text) returns boolean
language sql stable
security definer
set search_path = ''
as $$
  select exists (
    select 1 from public.tenants t
    where t.type = 'primary'
      and (lower(p_domain) = t.domain or right(lower(p_domain), char_length(t.domain) + 1) = '.' || t.domain)
  )
$$;
revoke execute on function private.is_platform_domain(text) from public, anon;
grant execute on function private.is_platform_domain(text) to authenticated, service_role;

drop policy if exists tenant_domains_insert on public.tenant_domains;
create policy tenant_domains_insert on public.tenant_domains for insert to authenticated
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (select auth.jwt() ->> 'tenant_role') = 'admin'
               and domain_type = 'custom'
               and not private.is_platform_domain(domain))
              or (select private.is_super_admin()));
