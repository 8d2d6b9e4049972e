-- 20261127021542_platform_dashboard_paged.sql
--
-- The platform dashboard in one query whose answer does not grow with the number of tenants:
--
--   private.tier_monthly_price(tier)   what a tier costs a month in USD (shared/tiers.py holds the
--                                      same table; a test compares them)
--   public.platform_dashboard(this, last, sort, limit, offset) -> jsonb
--       {"total": n,                       tenants the caller may see
--        "totals": {...},                  over ALL of them: tenant counts, counts by status and
--                                          by tier, MRR, what partners' customers pay, open alerts,
--                                          open tickets, tickets this month, open SLA breaches,
--                                          tenants at risk
--        "adoption": {"ai", "custom_domains", "files"}   shares of the paying tenants
--        "tenants": [...]}                 one page of rows, sorted by `sort`
--
-- Revenue and churn risk are decided here, so the sort and the totals see every tenant:
--   * a tenant pays when it is active and not the primary tenant (the platform itself); its
--     price is its tier's; a partner (partner-subdomain, custom-domain: white-label) has a
--     customer price, the tier price plus the 20% partner markup.
--   * churn-risk flags: `usage_falling` (AI calls this month under half of last month's, when
--     last month had some), `failing_health` (an open alert, or uptime this month under 99%),
--     `sla_breaches` (an open ticket past its first-response due time). Two or more: high.
--   * sorts: `risk` (flags, then revenue, both descending), `revenue` (descending), `name`,
--     `tenant` (the id); the tenant id breaks every tie, so pages never overlap.
--
-- Security invoker over public.platform_overview(): the caller's RLS applies (the primary
-- tenant's super admin sees every tenant, anyone else their own). An unknown sort, a limit
-- outside 1..200 or a negative offset fails with SQLSTATE 22023.
--
-- Idempotent: create or replace.

create or replace function private.tier_monthly_price(p_tier text) returns numeric
language sql immutable
set search_path = ''
as $$
  select case p_tier when 'starter' then 1000 when 'growth' then 1500 when 'enterprise' then 2500 end::numeric
$$;
revoke execute on function private.tier_monthly_price(text) from public, anon;
grant execute on function private.tier_monthly_price(text) to authenticated, service_role;

create or replace function public.platform_dashboard(p_this text, p_last text, p_sort text default 'risk',
                                                     p_limit integer default 50, p_offset integer default 0)
returns jsonb
language plpgsql stable
security invoker
set search_path = ''
as $$
declare
  answer jsonb;
begin
  if p_sort is null or p_sort not in ('risk', 'revenue', 'name', 'tenant') then
    raise exception 'unknown sort' using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 200 or p_offset is null or p_offset < 0 then
    raise exception 'limit must be 1..200 and offset 0 or more' using errcode = '22023';
  end if;

  with o as (
    select * from public.platform_overview(p_this, p_last)
  ), priced as (
    select o.*,
           (o.type <> 'primary' and o.status = 'active') as paying,
           case when o.type <> 'primary' and o.status = 'active'
                then coalesce(private.tier_monthly_price(o.tier), 0) else 0 end as price,
           case when o.checks > 0 then round(100.0 * o.ok_checks / o.checks, 3) end as uptime
      from o
  ), t as (
    select p.*,
           case when p.paying and p.type in ('partner-subdomain', 'custom-domain')
                then p.price * 1.20 end as customer_price,
           array_remove(array[
             case when p.ai_calls_last > 0 and p.ai_calls * 2 < p.ai_calls_last then 'usage_falling' end,
             case when p.open_alerts > 0 or p.uptime < 99 then 'failing_health' end,
             case when p.breached_open > 0 then 'sla_breaches' end], null) as risk
      from priced p
  ), ranked as (
    select t.*,
           row_number() over (
             order by case when p_sort = 'risk' then cardinality(t.risk) end desc nulls last,
                      case when p_sort in ('risk', 'revenue') then t.price end desc nulls last,
                      case when p_sort = 'name' then lower(t.name) end asc nulls last,
                      t.tenant_id) as rn
      from t
  ), page as (
    select r.* from ranked r where r.rn > p_offset and r.rn <= p_offset::bigint + p_limit
  )
  select jsonb_build_object(
    'total', (select count(*) from t),
    'totals', (select jsonb_build_object(
                 'tenants', count(*),
                 'active_customers', count(*) filter (where t.paying),
                 'mrr', round(coalesce(sum(t.price), 0), 2)::text,
                 'customer_mrr', round(coalesce(sum(coalesce(t.customer_price, t.price)) filter (where t.paying), 0), 2)::text,
                 'open_alerts', coalesce(sum(t.open_alerts), 0),
                 'open_tickets', coalesce(sum(t.open_tickets), 0),
                 'tickets_this_month', coalesce(sum(t.tickets_this_period), 0),
                 'sla_breaches', coalesce(sum(t.breached_open), 0),
                 'at_risk', count(*) filter (where t.paying and cardinality(t.risk) > 0))
                 from t),
    'by_status', (select coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
                    from (select t.status, count(*) as n from t group by t.status) s),
    'by_tier', (select coalesce(jsonb_object_agg(s.tier, s.n), '{}'::jsonb)
                  from (select t.tier, count(*) as n from t group by t.tier) s),
    'adoption', (select jsonb_build_object(
                   'ai', round(count(*) filter (where t.ai_calls > 0)::numeric / nullif(count(*), 0), 4),
                   'custom_domains', round(count(*) filter (where t.custom_domains > 0)::numeric / nullif(count(*), 0), 4),
                   'files', round(count(*) filter (where t.storage_bytes > 0)::numeric / nullif(count(*), 0), 4))
                   from t where t.paying),
    'tenants', (select coalesce(jsonb_agg(jsonb_build_object(
                   'tenant_id', page.tenant_id, 'name', page.name, 'type', page.type, 'tier', page.tier,
                   'status', page.status, 'monthly_price', round(page.price, 2)::text,
                   'customer_price', round(page.customer_price, 2)::text, 'uptime_percent', page.uptime,
                   'open_alerts', page.open_alerts, 'open_tickets', page.open_tickets,
                   'tickets_this_month', page.tickets_this_period, 'sla_breaches', page.breached_open,
                   'ai_calls', page.ai_calls, 'custom_domains', page.custom_domains,
                   'storage_bytes', page.storage_bytes, 'risk', to_jsonb(page.risk))
                 order by page.rn), '[]'::jsonb)
                  from page)
  ) into answer;
  return answer;
end
$$;
revoke all on function public.platform_dashboard(text, text, text, integer, integer) from public, anon;
grant execute on function public.platform_dashboard(text, text, text, integer, integer) to authenticated, service_role;
