-- Routing replica for the dispatcher (D1). Written by the control plane only.
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 63),
    name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('primary', 'partner-subdomain', 'custom-domain')),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'inactive')),
    tier TEXT NOT NULL CHECK (tier IN ('starter', 'growth', 'enterprise')),
    script_name TEXT NOT NULL UNIQUE,
    whitelabel_config TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(whitelabel_config)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tenant_domains (
    domain TEXT PRIMARY KEY CHECK (length(domain) BETWEEN 1 AND 253 AND domain = lower(domain)),
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    domain_type TEXT NOT NULL CHECK (domain_type IN ('primary', 'custom', 'subdomain')),
    ssl_status TEXT NOT NULL DEFAULT 'pending',
    dns_configured INTEGER NOT NULL DEFAULT 0 CHECK (dns_configured IN (0, 1)),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) WITHOUT ROWID;

-- The dispatcher looks up by domain (the primary key); the control plane lists by tenant.
CREATE INDEX IF NOT EXISTS tenant_domains_tenant_idx ON tenant_domains (tenant_id);
CREATE INDEX IF NOT EXISTS tenants_status_idx ON tenants (status);
