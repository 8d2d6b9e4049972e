"""The control plane: tenant lifecycle and deployment (operator tooling, never in a Worker bundle).

scripts/tenants.py is its command line. Each operator action writes the master registry
(Supabase), then the routing replica (D1), then purges the route cache (KV), through small
backends (controlplane.backends) that have a local and a Cloudflare implementation, so the
same lifecycle code runs against the local platform, against Cloudflare, and in dry-run.
"""
