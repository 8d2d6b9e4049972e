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
-- The figures per tenant are public.platform_overview()'s (the same joins, inline, so the planner
-- sees through them: a function scan there cost three times the joins). Security invoker: the
-- caller's RLS applies (the primary tenant's super admin sees every tenant, anyone else their
-- own). An unknown sort, a limit outside 1..200, a negative offset or a period not YYYY-MM fails
-- with SQLSTATE 22023.
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
  this_start timestamptz;
  next_start timestamptz;
begin
  if p_sort is null or p_sort not in ('risk', 'revenue', 'name', 'tenant') then
    raise exception 'unknown sort' using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 200 or p_offset is null or p_offset < 0 then
    raise exception 'limit must be 1..200 and offset 0 or more' using errcode = '22023';
  end if;
  if p_this is null or p_this !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' or p_last is null
     or p_last !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
    raise exception 'periods are YYYY-MM' using errcode = '22023';
  end if;
  this_start := (p_this || '-01')::timestamp at time zone 'UTC';
  next_start := ((p_this || '-01')::timestamp + interval '1 month') at time zone 'UTC';

  with prices as (
    select x.tier, private.tier_monthly_price(x.tier) as price
      from (select distinct y.subscription_tier as tier from public.tenants y) x
  ), o as (
    -- the joins of public.platform_overview(), inline: the planner sees through them
    select t.tenant_id, t.name, t.type, t.subscription_tier as tier, t.status,
           coalesce(u.ai_this, 0) as ai_calls, coalesce(u.ai_last, 0) as ai_calls_last,
           coalesce(u.storage, 0) as storage_bytes, coalesce(d.custom, 0) as custom_domains,
           coalesce(k.open_n, 0) as open_tickets, coalesce(k.new_n, 0) as tickets_this_period,
           coalesce(k.breached_n, 0) as breached_open, coalesce(a.n, 0) as open_alerts,
           coalesce(h.checks_n, 0) as checks, coalesce(h.ok_n, 0) as ok_checks
      from public.tenants t
      left join (select x.tenant_id,
                        sum(x.usage_count) filter (where x.usage_type = 'ai_calls' and x.period = p_this) as ai_this,
                        sum(x.usage_count) filter (where x.usage_type = 'ai_calls' and x.period = p_last) as ai_last,
                        sum(x.usage_count) filter (where x.usage_type = 'storage' and x.period = p_this) as storage
                   from public.tenant_usage x where x.period in (p_this, p_last) group by x.tenant_id) u
        on u.tenant_id = t.tenant_id
      left join (select x.tenant_id, count(*) filter (where x.domain_type = 'custom') as custom
                   from public.tenant_domains x group by x.tenant_id) d on d.tenant_id = t.tenant_id
      left join (select x.tenant_id,
                        count(*) filter (where x.status <> 'closed') as open_n,
                        count(*) filter (where x.created_at >= this_start and x.created_at < next_start) as new_n,
                        count(*) filter (where x.status <> 'closed'
                                         and ((x.first_response_at is null and x.first_response_due_at < now())
                                              or x.first_response_at > x.first_response_due_at)) as breached_n
                   from public.support_tickets x group by x.tenant_id) k on k.tenant_id = t.tenant_id
      left join (select x.tenant_id, count(*) as n from public.health_alerts x where x.status = 'open'
                  group by x.tenant_id) a on a.tenant_id = t.tenant_id
      left join (select x.tenant_id, count(*) as checks_n, count(*) filter (where x.ok) as ok_n
                   from public.health_checks x where x.checked_at >= this_start
                  group by x.tenant_id) h on h.tenant_id = t.tenant_id
  ), priced as (
    select o.*,
           (o.type <> 'primary' and o.status = 'active') as paying,
           case when o.type <> 'primary' and o.status = 'active' then coalesce(pr.price, 0) else 0 end as price,
           case when o.checks > 0 then round(100.0 * o.ok_checks / o.checks, 3) end as uptime
      from o left join prices pr on pr.tier = o.tier
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
