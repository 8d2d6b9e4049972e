-- seed.sql: demo tenants and users for local development and tests (never for production).
--
-- Idempotent: upserts keyed on natural keys; re-running restores the demo values of
-- tenants, domains and profiles (touching only rows that differ, so timestamps stay) and
-- leaves usage counters and the audit trail alone.
-- Applied as the database owner (bypasses RLS), after all migrations.
--
-- Fixed user ids (profiles.id = the Supabase Auth user id they stand for):
--   cozyartz     super_admin  00000000-0000-4000-8000-000000000001  root@cozyartzmedia.com
--   cozyartz     admin        00000000-0000-4000-8000-000000000002  admin@cozyartzmedia.com
--   cozyartz     client       00000000-0000-4000-8000-000000000003  client@cozyartzmedia.com
--   partner1     admin        00000000-0000-4000-8000-000000000011  admin@partner1.example
--   partner1     client       00000000-0000-4000-8000-000000000012  client@partner1.example
--   partner-seo  admin        00000000-0000-4000-8000-000000000021  admin@partner-seo.example
--   partner-seo  client       00000000-0000-4000-8000-000000000022  client@partner-seo.example

insert into public.tenants
  (tenant_id, name, domain, type, subscription_tier, status, script_name, whitelabel_config)
values
  ('cozyartz', 'Cozyartz Media Group', 'cozyartzmedia.com', 'primary', 'enterprise', 'active',
   'cmgsite-primary-tenant',
   '{"brand_name": "Cozyartz Media Group", "primary_color": "#1f2937", "secondary_color": "#f59e0b",
     "logo_url": null, "support_email": "support@cozyartzmedia.com", "hide_platform_branding": false}'),
  ('partner1', 'Partner One', 'partner1.cozyartzmedia.com', 'partner-subdomain', 'growth', 'active',
   'cmgsite-partner-tenant',
   '{"brand_name": "Partner One", "primary_color": "#0f766e", "secondary_color": "#e11d48",
     "logo_url": null, "support_email": "help@partner1.example", "hide_platform_branding": false}'),
  ('partner-seo', 'Partner SEO', 'partner-seo.com', 'custom-domain', 'starter', 'active',
   'cmgsite-custom-tenant',
   '{"brand_name": "Partner SEO", "primary_color": "#4338ca", "secondary_color": "#facc15",
     "logo_url": null, "support_email": "hello@partner-seo.example", "hide_platform_branding": true}')
on conflict (tenant_id) do update set
  name = excluded.name,
  domain = excluded.domain,
  type = excluded.type,
  subscription_tier = excluded.subscription_tier,
  status = excluded.status,
  script_name = excluded.script_name,
  whitelabel_config = excluded.whitelabel_config
where (tenants.name, tenants.domain, tenants.type, tenants.subscription_tier, tenants.status,
       tenants.script_name, tenants.whitelabel_config)
  is distinct from (excluded.name, excluded.domain, excluded.type, excluded.subscription_tier,
                    excluded.status, excluded.script_name, excluded.whitelabel_config);

insert into public.tenant_domains (tenant_id, domain, domain_type, ssl_status, dns_configured)
values
  ('cozyartz', 'cozyartzmedia.com', 'primary', 'active', true),
  ('partner1', 'partner1.cozyartzmedia.com', 'subdomain', 'active', true),
  ('partner-seo', 'partner-seo.com', 'custom', 'active', true)
on conflict (domain) do update set
  tenant_id = excluded.tenant_id,
  domain_type = excluded.domain_type,
  ssl_status = excluded.ssl_status,
  dns_configured = excluded.dns_configured
where (tenant_domains.tenant_id, tenant_domains.domain_type, tenant_domains.ssl_status,
       tenant_domains.dns_configured)
  is distinct from (excluded.tenant_id, excluded.domain_type, excluded.ssl_status, excluded.dns_configured);

insert into public.profiles (id, tenant_id, tenant_role, tenant_permissions, email, display_name)
values
  ('00000000-0000-4000-8000-000000000001', 'cozyartz', 'super_admin', '{}', 'root@cozyartzmedia.com', 'Platform Root'),
  ('00000000-0000-4000-8000-000000000002', 'cozyartz', 'admin', '{}', 'admin@cozyartzmedia.com', 'Cozyartz Admin'),
  ('00000000-0000-4000-8000-000000000003', 'cozyartz', 'client', '{}', 'client@cozyartzmedia.com', 'Cozyartz Client'),
  ('00000000-0000-4000-8000-000000000011', 'partner1', 'admin', '{}', 'admin@partner1.example', 'Partner One Admin'),
  ('00000000-0000-4000-8000-000000000012', 'partner1', 'client', '{}', 'client@partner1.example', 'Partner One Client'),
  ('00000000-0000-4000-8000-000000000021', 'partner-seo', 'admin', '{}', 'admin@partner-seo.example', 'Partner SEO Admin'),
  ('00000000-0000-4000-8000-000000000022', 'partner-seo', 'client', '{}', 'client@partner-seo.example', 'Partner SEO Client')
on conflict (id) do update set
  tenant_id = excluded.tenant_id,
  tenant_role = excluded.tenant_role,
  tenant_permissions = excluded.tenant_permissions,
  email = excluded.email,
  display_name = excluded.display_name
where (profiles.tenant_id, profiles.tenant_role, profiles.tenant_permissions, profiles.email,
       profiles.display_name)
  is distinct from (excluded.tenant_id, excluded.tenant_role, excluded.tenant_permissions,
                    excluded.email, excluded.display_name);

-- Limits follow the tier table (starter 100 AI calls / 1 domain, growth 250 / 5,
-- enterprise 500 / 25) for the current month; counters are never reset by re-seeding.
insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)
select t.tenant_id, u.usage_type, to_char(now() at time zone 'utc', 'YYYY-MM'), u.usage_count, u.usage_limit
from (values
  ('cozyartz', 'ai_calls', 12, 500), ('cozyartz', 'domains', 1, 25),
  ('partner1', 'ai_calls', 7, 250),  ('partner1', 'domains', 1, 5),
  ('partner-seo', 'ai_calls', 3, 100), ('partner-seo', 'domains', 1, 1)
) as u (tenant_id, usage_type, usage_count, usage_limit)
join public.tenants t on t.tenant_id = u.tenant_id
on conflict (tenant_id, usage_type, period) do nothing;

insert into public.audit_log (tenant_id, actor, action, target, details)
select s.tenant_id, 'system', 'tenant.seeded', s.tenant_id, '{"source": "seed.sql"}'::jsonb
from (values ('cozyartz'), ('partner1'), ('partner-seo')) as s (tenant_id)
where not exists (
  select 1 from public.audit_log a where a.tenant_id = s.tenant_id and a.action = 'tenant.seeded'
);
