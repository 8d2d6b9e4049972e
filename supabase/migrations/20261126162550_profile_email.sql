-- 0003_profile_email.sql
--
-- Sign-in maps a provider-verified email to the tenant's profile with that email, so an
-- email is an identity key, not a free-text field:
--   * API users can no longer change `email` (only the service role can, when the sign-in
--     flow follows a provider account's new verified email). Without this, a client could
--     set their own email to someone else's address and receive that person's sign-in.
--   * At most one profile per tenant has a given email (compared case-insensitively).
-- Admins still pre-provision profiles with an email (insert), within their own tenant.
--
-- Idempotent: revoke and `create unique index if not exists`.

revoke update (email) on table public.profiles from authenticated;

create unique index if not exists profiles_tenant_id_email
  on public.profiles (tenant_id, lower(email)) where email is not null;
