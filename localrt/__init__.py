"""The local platform: PostgreSQL + PostgREST for Supabase, and the Workers on the real
workerd (through Miniflare, localrt/node/host.mjs) with the bundles `wrangler deploy` uploads.

Nothing here is part of an uploaded bundle (scripts/build_worker.py), and nothing here stands
in for the `workers` SDK, `js` or `pyodide`: the Workers import the real ones inside workerd.
"""
