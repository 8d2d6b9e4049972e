-- The routing replica's columns take the names the Supabase registry gives them
-- (public.tenants.tenant_id, public.tenants.subscription_tier), so a row reads the same in
-- both stores. SQLite renames the column in tenant_domains' foreign key and in the indexes too.
-- Applied once by `wrangler d1 migrations apply` (it records what ran in d1_migrations);
-- deploy the dispatcher and the control plane that read these names together with it.
ALTER TABLE tenants RENAME COLUMN id TO tenant_id;
ALTER TABLE tenants RENAME COLUMN tier TO subscription_tier;
