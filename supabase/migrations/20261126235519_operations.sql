-- 0009_operations.sql
--
-- Operating the platform: health checks with alerts, and the support desk.
--
--   health_checks     one row per probe run per tenant (the dispatcher's cron, or `tenants.py check`):
--                     ok, the /api/health and sign-in page statuses, latency, a short detail
--   health_alerts     opened after N consecutive failed checks, resolved by the next good one;
--                     at most one open alert per tenant; webhook delivery state (an outbox: a
--                     delivery that failed is tried again on the next run, up to 10 attempts)
--   platform_overview()  one row per tenant for the platform dashboard (usage this and last month,
--                     domains, tickets, breaches, alerts, checks), one query, under the caller's RLS
--   tenant_uptime()   checks, good checks and uptime % per tenant per month (UTC), as the caller may
--                     see them (a function, not a view: the control plane's export and erasure find
--                     a tenant's data as the relations with a tenant_id column)
--   support_tickets   opened by a signed-in user of a tenant (subject, body, priority); the
--                     first-response SLA due time comes from the tenant's tier at opening
--                     (private.first_response_hours, equal to shared/support.py, tested)
--   support_messages  the conversation; the first answer by an admin or platform staff who is not
--                     the opener sets the ticket's first_response_at (the SLA state, met / pending /
--                     breached, follows from the two times: shared/support.py)
--
-- Who may do what (T = the JWT's tenant, SA = super admin of the primary tenant):
--   health_checks, health_alerts  select: admin of T | SA     writes: service role only
--   support_tickets   select: the opener, every ticket of T for an admin | SA
--                     insert: any member of T, for T, as themselves (opened_by = auth.uid())
--                     update (status; escalated by SA only): admin of T | SA     delete: service role
--   support_messages  select: on tickets the caller may see (the opener's own, T's for an admin) | SA
--                     insert: the opener or an admin of T, as themselves | SA (staff, any tenant)
--                     update/delete: nobody but the service role
-- A message's tenant is its ticket's, set by a trigger that looks the ticket up as the caller:
-- a ticket the caller cannot see is refused with the same 42501 as any RLS refusal, so a
-- ticket id of another tenant reveals nothing.
--
-- Idempotent: tables/indexes `if not exists`, functions `create or replace`,
-- policies and triggers dropped and re-created, grants re-stated.

-- ---------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------

create table if not exists public.health_checks (
  id            bigint generated always as identity primary key,
  tenant_id     text not null references public.tenants (tenant_id) on delete cascade,
  checked_at    timestamptz not null default now(),
  ok            boolean not null,
  source        text not null default 'cron' check (source in ('cron', 'cli')),
  health_status integer check (health_status is null or health_status between 100 and 599),
  page_status   integer check (page_status is null or page_status between 100 and 599),
  latency_ms    integer check (latency_ms is null or latency_ms >= 0),
  detail        text check (detail is null or char_length(detail) <= 500)
);
create index if not exists health_checks_tenant_id_checked_at on public.health_checks (tenant_id, checked_at desc, id desc);

create table if not exists public.health_alerts (
  id                   bigint generated always as identity primary key,
  tenant_id            text not null references public.tenants (tenant_id) on delete cascade,
  status               text not null default 'open' check (status in ('open', 'resolved')),
  opened_at            timestamptz not null default now(),
  resolved_at          timestamptz,
  failures             integer not null default 1 check (failures >= 1),
  detail               text check (detail is null or char_length(detail) <= 500),
  opened_notified_at   timestamptz,
  resolved_notified_at timestamptz,
  notify_attempts      integer not null default 0 check (notify_attempts >= 0),
  last_notify_error    text check (last_notify_error is null or char_length(last_notify_error) <= 300),
  check ((status = 'resolved') = (resolved_at is not null))
);
create index if not exists health_alerts_tenant_id_opened_at on public.health_alerts (tenant_id, opened_at desc);
-- One open alert per tenant, whoever runs the checks and however often.
create unique index if not exists health_alerts_one_open on public.health_alerts (tenant_id) where status = 'open';

create table if not exists public.support_tickets (
  id                    uuid primary key default gen_random_uuid(),
  tenant_id             text not null references public.tenants (tenant_id) on delete cascade,
  opened_by             uuid not null,
  subject               text not null check (char_length(subject) between 1 and 200),
  body                  text not null check (char_length(body) between 1 and 10000),
  priority              text not null default 'normal' check (priority in ('low', 'normal', 'high', 'urgent')),
  status                text not null default 'open' check (status in ('open', 'answered', 'closed')),
  tier                  text not null check (tier in ('starter', 'growth', 'enterprise')),
  first_response_due_at timestamptz not null,
  first_response_at     timestamptz,
  escalated             boolean not null default false,
  escalated_at          timestamptz,
  escalated_by          uuid,
  created_at            timestamptz not null default now(),
  updated_at            timestamptz not null default now()
);
create index if not exists support_tickets_tenant_id_created_at on public.support_tickets (tenant_id, created_at desc);
create index if not exists support_tickets_awaiting_response on public.support_tickets (first_response_due_at)
  where first_response_at is null;

create table if not exists public.support_messages (
  id          bigint generated always as identity primary key,
  ticket_id   uuid not null references public.support_tickets (id) on delete cascade,
  tenant_id   text not null references public.tenants (tenant_id) on delete cascade,
  author_id   uuid not null,
  author_role text not null default 'staff' check (author_role in ('client', 'admin', 'staff')),
  body        text not null check (char_length(body) between 1 and 10000),
  created_at  timestamptz not null default now()
);
create index if not exists support_messages_tenant_id_ticket on public.support_messages (tenant_id, ticket_id, created_at);

-- ---------------------------------------------------------------------------------------
-- Helpers and triggers
-- ---------------------------------------------------------------------------------------

-- The first-response SLA per tier, in hours (shared/support.py holds the same table).
create or replace function private.first_response_hours(p_tier text) returns integer
language sql immutable
set search_path = ''
as $$
  select case p_tier when 'enterprise' then 4 when 'growth' then 24 else 48 end
$$;
revoke execute on function private.first_response_hours(text) from public, anon;
grant execute on function private.first_response_hours(text) to authenticated, service_role;

-- A new ticket: its SLA clock starts now, from the tenant's tier (read as the caller: a member
-- sees their own tenant's row; a row for another tenant fails RLS's check before anything else).
create or replace function private.support_ticket_before_insert() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    new.opened_by := auth.uid();
    new.status := 'open';
    new.escalated := false;
    new.escalated_at := null;
    new.escalated_by := null;
    new.first_response_at := null;
    new.created_at := now();
  end if;
  select t.subscription_tier into new.tier from public.tenants t where t.tenant_id = new.tenant_id;
  new.first_response_due_at := new.created_at + make_interval(hours => private.first_response_hours(new.tier));
  return new;
end
$$;
revoke execute on function private.support_ticket_before_insert() from public, anon;

-- API users change a ticket's status; only the platform's super admin escalates.
create or replace function private.support_ticket_before_update() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    if new.escalated is distinct from old.escalated then
      if not private.is_super_admin() then
        raise exception 'only platform staff escalate a ticket' using errcode = '42501';
      end if;
      new.escalated_at := case when new.escalated then now() end;
      new.escalated_by := case when new.escalated then auth.uid() end;
    end if;
  end if;
  new.updated_at := now();
  return new;
end
$$;
revoke execute on function private.support_ticket_before_update() from public, anon;

-- A message belongs to its ticket's tenant; who wrote it comes from the JWT, never the body.
-- The ticket is looked up as the caller, so a ticket they cannot see is refused like RLS does.
create or replace function private.support_message_before_insert() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  ticket_tenant text;
begin
  select t.tenant_id into ticket_tenant from public.support_tickets t where t.id = new.ticket_id;
  if ticket_tenant is null then
    raise exception 'new row violates row-level security policy for table "support_messages"'
      using errcode = '42501';
  end if;
  new.tenant_id := ticket_tenant;
  if current_user in ('authenticated', 'anon') then
    new.author_id := auth.uid();
    new.author_role := case when private.is_super_admin() then 'staff'
                            when (auth.jwt() ->> 'tenant_role') = 'admin' then 'admin'
                            else 'client' end;
    new.created_at := now();
  end if;
  return new;
end
$$;
revoke execute on function private.support_message_before_insert() from public, anon;

-- The first answer by someone other than the opener (an admin or staff) stops the SLA clock;
-- the opener writing again reopens the ticket. SECURITY DEFINER: a client may not update
-- tickets, but their reply must still reopen theirs. It touches only the message's own ticket,
-- which the insert's RLS check has already let the caller see.
create or replace function private.support_message_after_insert() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.support_tickets t
     set first_response_at = coalesce(t.first_response_at,
                                      case when new.author_role in ('admin', 'staff') and new.author_id <> t.opened_by
                                           then new.created_at end),
         status = case when new.author_id = t.opened_by then 'open'
                       when new.author_role in ('admin', 'staff') then 'answered'
                       else t.status end
   where t.id = new.ticket_id;
  return null;
end
$$;
revoke execute on function private.support_message_after_insert() from public, anon;

drop trigger if exists support_tickets_before_insert on public.support_tickets;
create trigger support_tickets_before_insert before insert on public.support_tickets
  for each row execute function private.support_ticket_before_insert();
drop trigger if exists support_tickets_before_update on public.support_tickets;
create trigger support_tickets_before_update before update on public.support_tickets
  for each row execute function private.support_ticket_before_update();
drop trigger if exists support_messages_before_insert on public.support_messages;
create trigger support_messages_before_insert before insert on public.support_messages
  for each row execute function private.support_message_before_insert();
drop trigger if exists support_messages_after_insert on public.support_messages;
create trigger support_messages_after_insert after insert on public.support_messages
  for each row execute function private.support_message_after_insert();

-- ---------------------------------------------------------------------------------------
-- Health: recording a run, alert transitions, the webhook outbox
-- ---------------------------------------------------------------------------------------

-- One run's results (a JSON array of {tenant_id, ok, source, health_status, page_status,
-- latency_ms, detail}); opens an alert once the last `alert_after` checks of a tenant all
-- failed, resolves it on the next good check. Per tenant under an advisory lock, so two
-- overlapping runs cannot both open one. Unknown tenants are skipped (removed meanwhile).
-- Returns the transitions: [{event: 'alert.opened'|'alert.resolved', alert_id, tenant_id}].
create or replace function public.record_health_checks(checks jsonb, alert_after integer default 3) returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
  c record;
  n integer := greatest(coalesce(alert_after, 3), 1);
  failing integer;
  recent integer;
  alert_id bigint;
  transitions jsonb := '[]'::jsonb;
begin
  if checks is null or jsonb_typeof(checks) <> 'array' then
    raise exception 'checks must be a JSON array' using errcode = '22023';
  end if;
  for c in
    select * from jsonb_to_recordset(checks) as r(tenant_id text, ok boolean, source text, health_status integer,
                                                   page_status integer, latency_ms integer, detail text)
    order by r.tenant_id
  loop
    if c.ok is null then
      raise exception 'every check needs ok' using errcode = '22023';
    end if;
    continue when not exists (select 1 from public.tenants t where t.tenant_id = c.tenant_id);
    perform pg_advisory_xact_lock(hashtextextended('cmgsite.health:' || c.tenant_id, 0));
    insert into public.health_checks (tenant_id, ok, source, health_status, page_status, latency_ms, detail)
    values (c.tenant_id, c.ok, coalesce(c.source, 'cron'), c.health_status, c.page_status, c.latency_ms,
            left(c.detail, 500));
    alert_id := null;
    if c.ok then
      update public.health_alerts a set status = 'resolved', resolved_at = now()
       where a.tenant_id = c.tenant_id and a.status = 'open'
      returning a.id into alert_id;
      if alert_id is not null then
        transitions := transitions || jsonb_build_object('event', 'alert.resolved', 'alert_id', alert_id,
                                                         'tenant_id', c.tenant_id);
      end if;
    else
      select count(*) filter (where not s.ok), count(*) into failing, recent
        from (select h.ok from public.health_checks h where h.tenant_id = c.tenant_id
              order by h.checked_at desc, h.id desc limit n) s;
      if failing = n and recent = n then
        insert into public.health_alerts (tenant_id, status, failures, detail)
        values (c.tenant_id, 'open', n, left(c.detail, 500))
        on conflict (tenant_id) where status = 'open' do nothing
        returning id into alert_id;
        if alert_id is not null then
          transitions := transitions || jsonb_build_object('event', 'alert.opened', 'alert_id', alert_id,
                                                           'tenant_id', c.tenant_id);
        else
          update public.health_alerts a set failures = a.failures + 1, detail = left(c.detail, 500)
           where a.tenant_id = c.tenant_id and a.status = 'open';
        end if;
      end if;
    end if;
  end loop;
  return transitions;
end
$$;
revoke all on function public.record_health_checks(jsonb, integer) from public, anon, authenticated;
grant execute on function public.record_health_checks(jsonb, integer) to service_role;

-- The webhook outbox: alert events not delivered yet (opened before resolved), oldest first.
create or replace function public.alert_notifications_due(max_attempts integer default 10, max_rows integer default 100)
returns jsonb
language sql stable
security invoker
set search_path = ''
as $$
  select coalesce(jsonb_agg(e order by (e ->> 'alert_id')::bigint, e ->> 'event'), '[]'::jsonb)
  from (
    select jsonb_build_object('event', ev.event, 'alert_id', a.id, 'tenant_id', a.tenant_id,
                              'opened_at', a.opened_at, 'resolved_at', a.resolved_at, 'failures', a.failures,
                              'detail', a.detail, 'attempts', a.notify_attempts) as e
    from public.health_alerts a
    cross join lateral (values ('alert.opened', a.opened_notified_at is null),
                               ('alert.resolved', a.status = 'resolved' and a.resolved_notified_at is null)) as ev(event, due)
    where ev.due and a.notify_attempts < max_attempts
    order by a.id
    limit max_rows
  ) due
$$;
revoke all on function public.alert_notifications_due(integer, integer) from public, anon, authenticated;
grant execute on function public.alert_notifications_due(integer, integer) to service_role;

-- Record one delivery: done (stamped) or failed (attempt counted, error kept).
create or replace function public.mark_alert_notified(alert_id bigint, event text, delivered boolean,
                                                      error text default null) returns void
language plpgsql
security invoker
set search_path = ''
as $$
begin
  if event not in ('alert.opened', 'alert.resolved') then
    raise exception 'unknown alert event' using errcode = '22023';
  end if;
  if delivered then
    update public.health_alerts a
       set opened_notified_at = case when event = 'alert.opened' then coalesce(a.opened_notified_at, now())
                                     else a.opened_notified_at end,
           resolved_notified_at = case when event = 'alert.resolved' then coalesce(a.resolved_notified_at, now())
                                       else a.resolved_notified_at end
     where a.id = alert_id;
  else
    update public.health_alerts a set notify_attempts = a.notify_attempts + 1, last_notify_error = left(error, 300)
     where a.id = alert_id;
  end if;
end
$$;
revoke all on function public.mark_alert_notified(bigint, text, boolean, text) from public, anon, authenticated;
grant execute on function public.mark_alert_notified(bigint, text, boolean, text) to service_role;

-- ---------------------------------------------------------------------------------------
-- Uptime (security invoker: the caller's RLS on health_checks applies)
-- ---------------------------------------------------------------------------------------

create or replace function public.tenant_uptime(from_period text default null, to_period text default null,
                                                only_tenant text default null)
returns table (tenant_id text, period text, checks bigint, ok_checks bigint, uptime_percent numeric)
language sql stable
security invoker
set search_path = ''
as $$
  select h.tenant_id,
         to_char(h.checked_at at time zone 'UTC', 'YYYY-MM') as period,
         count(*) as checks,
         count(*) filter (where h.ok) as ok_checks,
         round(100.0 * count(*) filter (where h.ok) / count(*), 3) as uptime_percent
    from public.health_checks h
   where (only_tenant is null or h.tenant_id = only_tenant)
     and (from_period is null or h.checked_at >= ((from_period || '-01')::timestamp at time zone 'UTC'))
     and (to_period is null
          or h.checked_at < (((to_period || '-01')::timestamp + interval '1 month') at time zone 'UTC'))
   group by h.tenant_id, to_char(h.checked_at at time zone 'UTC', 'YYYY-MM')
   order by 1, 2
$$;
revoke all on function public.tenant_uptime(text, text, text) from public, anon;
grant execute on function public.tenant_uptime(text, text, text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- The platform dashboard: one row per tenant the caller may see, in one query (RLS applies:
-- the primary tenant's super admin sees every tenant, anyone else their own)
-- ---------------------------------------------------------------------------------------

create or replace function public.platform_overview(p_this text, p_last text)
returns table (tenant_id text, name text, type text, tier text, status text, created_at timestamptz,
               whitelabel_config jsonb, ai_calls bigint, ai_calls_last bigint, storage_bytes bigint, domains bigint,
               custom_domains bigint, open_tickets bigint, tickets_this_period bigint, breached_open bigint,
               escalated_open bigint, open_alerts bigint, checks bigint, ok_checks bigint)
language sql stable
security invoker
set search_path = ''
as $$
  select t.tenant_id, t.name, t.type, t.subscription_tier, t.status, t.created_at, t.whitelabel_config,
         coalesce(u.ai_this, 0), coalesce(u.ai_last, 0), coalesce(u.storage, 0),
         coalesce(d.n, 0), coalesce(d.custom, 0),
         coalesce(k.open_n, 0), coalesce(k.new_n, 0), coalesce(k.breached_n, 0), coalesce(k.escalated_n, 0),
         coalesce(a.n, 0), coalesce(h.checks_n, 0), coalesce(h.ok_n, 0)
    from public.tenants t
    left join (select x.tenant_id,
                      sum(x.usage_count) filter (where x.usage_type = 'ai_calls' and x.period = p_this) as ai_this,
                      sum(x.usage_count) filter (where x.usage_type = 'ai_calls' and x.period = p_last) as ai_last,
                      sum(x.usage_count) filter (where x.usage_type = 'storage' and x.period = p_this) as storage
                 from public.tenant_usage x where x.period in (p_this, p_last) group by x.tenant_id) u
      on u.tenant_id = t.tenant_id
    left join (select x.tenant_id, count(*) as n, count(*) filter (where x.domain_type = 'custom') as custom
                 from public.tenant_domains x group by x.tenant_id) d on d.tenant_id = t.tenant_id
    left join (select x.tenant_id,
                      count(*) filter (where x.status <> 'closed') as open_n,
                      count(*) filter (where to_char(x.created_at at time zone 'UTC', 'YYYY-MM') = p_this) as new_n,
                      count(*) filter (where x.status <> 'closed'
                                       and ((x.first_response_at is null and x.first_response_due_at < now())
                                            or x.first_response_at > x.first_response_due_at)) as breached_n,
                      count(*) filter (where x.status <> 'closed' and x.escalated) as escalated_n
                 from public.support_tickets x group by x.tenant_id) k on k.tenant_id = t.tenant_id
    left join (select x.tenant_id, count(*) as n from public.health_alerts x where x.status = 'open'
                group by x.tenant_id) a on a.tenant_id = t.tenant_id
    left join (select x.tenant_id, count(*) as checks_n, count(*) filter (where x.ok) as ok_n
                 from public.health_checks x
                where x.checked_at >= ((p_this || '-01')::timestamp at time zone 'UTC')
                group by x.tenant_id) h on h.tenant_id = t.tenant_id
   order by t.tenant_id
$$;
revoke all on function public.platform_overview(text, text) from public, anon;
grant execute on function public.platform_overview(text, text) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- Grants (re-stated in full)
-- ---------------------------------------------------------------------------------------

revoke all on table public.health_checks, public.health_alerts, public.support_tickets, public.support_messages
  from public, anon, authenticated, service_role;

grant select on table public.health_checks, public.health_alerts, public.support_tickets, public.support_messages
  to authenticated;
grant insert (tenant_id, opened_by, subject, body, priority),
      update (status, escalated)
  on table public.support_tickets to authenticated;
grant insert (ticket_id, author_id, body) on table public.support_messages to authenticated;

grant select, insert, update, delete on table public.health_checks, public.health_alerts,
      public.support_tickets, public.support_messages
  to service_role;

revoke all on sequence public.health_checks_id_seq, public.health_alerts_id_seq, public.support_messages_id_seq
  from anon;

-- ---------------------------------------------------------------------------------------
-- Row Level Security
-- ---------------------------------------------------------------------------------------

alter table public.health_checks    enable row level security;
alter table public.health_checks    force row level security;
alter table public.health_alerts    enable row level security;
alter table public.health_alerts    force row level security;
alter table public.support_tickets  enable row level security;
alter table public.support_tickets  force row level security;
alter table public.support_messages enable row level security;
alter table public.support_messages force row level security;

drop policy if exists health_checks_select on public.health_checks;
create policy health_checks_select on public.health_checks for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin')
         or (select private.is_super_admin()));

drop policy if exists health_alerts_select on public.health_alerts;
create policy health_alerts_select on public.health_alerts for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin')
         or (select private.is_super_admin()));

drop policy if exists support_tickets_select on public.support_tickets;
create policy support_tickets_select on public.support_tickets for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (opened_by = (select auth.uid())
               or (select auth.jwt() ->> 'tenant_role') = 'admin'))
         or (select private.is_super_admin()));

drop policy if exists support_tickets_insert on public.support_tickets;
create policy support_tickets_insert on public.support_tickets for insert to authenticated
  with check (tenant_id = (select auth.jwt() ->> 'tenant_id')
              and opened_by = (select auth.uid()));

drop policy if exists support_tickets_update on public.support_tickets;
create policy support_tickets_update on public.support_tickets for update to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and (select auth.jwt() ->> 'tenant_role') = 'admin')
         or (select private.is_super_admin()))
  with check ((tenant_id = (select auth.jwt() ->> 'tenant_id')
               and (select auth.jwt() ->> 'tenant_role') = 'admin')
              or (select private.is_super_admin()));

-- support_messages may read support_tickets (never the other way round: no recursion).
drop policy if exists support_messages_select on public.support_messages;
create policy support_messages_select on public.support_messages for select to authenticated
  using ((tenant_id = (select auth.jwt() ->> 'tenant_id')
          and ((select auth.jwt() ->> 'tenant_role') = 'admin'
               or exists (select 1 from public.support_tickets t
                          where t.id = ticket_id and t.opened_by = (select auth.uid()))))
         or (select private.is_super_admin()));

drop policy if exists support_messages_insert on public.support_messages;
create policy support_messages_insert on public.support_messages for insert to authenticated
  with check (author_id = (select auth.uid())
              and ((tenant_id = (select auth.jwt() ->> 'tenant_id')
                    and ((select auth.jwt() ->> 'tenant_role') = 'admin'
                         or exists (select 1 from public.support_tickets t
                                    where t.id = ticket_id and t.opened_by = (select auth.uid()))))
                   or (select private.is_super_admin())));

notify pgrst, 'reload schema';
