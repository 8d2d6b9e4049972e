-- 0004_usage_history.sql
--
-- Usage history is billing history: a recorded counter never goes down.
--
-- The UsageMeter Durable Object writes its counters through public.record_usage() and no
-- longer upserts the table itself. Each row is keyed by tenant/kind/period, as before:
--   * counters (`ai_calls`, and any kind that is not a level): the stored count becomes
--     greatest(stored, sent). A meter that starts again from empty storage, a stale
--     retry, or a buggy meter can therefore never rewrite a month downwards. A refund that
--     arrives after its unit was recorded stays in the history. Only the live quota in the
--     meter gives it back.
--   * levels (`domains`, `storage`): absolute values that may go down (a domain removed,
--     bytes deleted). The sent value is stored as it is.
-- Rows whose stored values would not change are left alone, so `updated_at` moves only on a
-- real change.
--
-- The function is SECURITY INVOKER. It needs nothing the service role lacks (the service
-- role has BYPASSRLS and write grants on tenant_usage), so it adds no privilege anyone
-- could borrow. Only service_role may execute it. Supabase's default privileges hand new
-- public functions to anon and authenticated, so the grant is taken back from them.
-- Operators keep direct table access through the service role, to correct billing errors
-- by hand.
--
-- Idempotent: function replaced, grants re-stated.

create or replace function public.record_usage(usage_rows jsonb) returns integer
language plpgsql
security invoker
set search_path = ''
as $$
declare
  written integer;
begin
  if usage_rows is null or jsonb_typeof(usage_rows) <> 'array' then
    raise exception 'usage_rows must be a JSON array of tenant_usage rows' using errcode = '22023';
  end if;

  insert into public.tenant_usage as u (tenant_id, usage_type, period, usage_count, usage_limit)
  select r.tenant_id, r.usage_type, r.period, r.usage_count, r.usage_limit
  from jsonb_to_recordset(usage_rows)
       as r(tenant_id text, usage_type text, period text, usage_count bigint, usage_limit bigint)
  on conflict (tenant_id, usage_type, period) do update
    set usage_count = case when excluded.usage_type in ('domains', 'storage') then excluded.usage_count
                           else greatest(u.usage_count, excluded.usage_count) end,
        usage_limit = excluded.usage_limit
    where (u.usage_count, u.usage_limit) is distinct from
          (case when excluded.usage_type in ('domains', 'storage') then excluded.usage_count
                else greatest(u.usage_count, excluded.usage_count) end,
           excluded.usage_limit);
  get diagnostics written = row_count;
  return written;
end
$$;
revoke all on function public.record_usage(jsonb) from public, anon, authenticated;
grant execute on function public.record_usage(jsonb) to service_role;

notify pgrst, 'reload schema';
