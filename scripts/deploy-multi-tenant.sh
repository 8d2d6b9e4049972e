#!/usr/bin/env bash
# Deploy the whole platform to Cloudflare, idempotently (safe to re-run after any failure):
#   1. D1 migrations (wrangler d1 migrations apply cmgsite --remote)
#   2. the dispatch namespace cmgsite-tenants (created when missing) and the dispatcher,
#      with its CONTEXT_SIGNING_SECRET
#   3. every tenant Worker in the registry that is not removed, each with its TENANT_CONTEXT_KEY
#   4. verify --repair: D1 and KV made to match Supabase, then checked
#
# Needs CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_ZONE_ID, SUPABASE_URL,
# SUPABASE_SERVICE_ROLE_KEY, SUPABASE_ANON_KEY, SUPABASE_JWT_SECRET (every tenant Worker needs
# them to start) and CONTEXT_SIGNING_SECRET in the environment.
# Usage: scripts/deploy-multi-tenant.sh [--dry-run]
#   --dry-run prints every write it would make ("[dry-run] …: would …") and ends "dry run: nothing
#   changed"; offline or with made-up credentials it still prints the whole plan: a Cloudflare read
#   it cannot make is warned about once and planned as if the account were empty.
# A tenant that fails to deploy does not stop the others (`deploy --all` exits 1 after all of
# them); the script then stops before step 4: re-run it once the cause is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
DRY_RUN=()
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=(--dry-run); elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--dry-run]" >&2; exit 2
fi

missing=()
for name in CLOUDFLARE_API_TOKEN CLOUDFLARE_ACCOUNT_ID CLOUDFLARE_ZONE_ID SUPABASE_URL SUPABASE_SERVICE_ROLE_KEY \
            SUPABASE_ANON_KEY SUPABASE_JWT_SECRET CONTEXT_SIGNING_SECRET; do
  [[ -n "${!name:-}" ]] || missing+=("$name")
done
if (( ${#missing[@]} )); then
  echo "error: set ${missing[*]} in the environment" >&2; exit 4
fi
export CI=true WRANGLER_SEND_METRICS=false
# The repo's pinned wrangler on the repo's Node 22 (package.json; scripts/bootstrap.sh installs
# both), never a global npx. $CMGSITE_WRANGLER replaces it when running (a test's stand-in).
WRANGLER=(node_modules/.bin/node node_modules/wrangler/bin/wrangler.js)
if [[ -z "${CMGSITE_WRANGLER:-}" && ! ( -x node_modules/.bin/node && -f node_modules/wrangler/bin/wrangler.js ) ]]; then
  echo "error: node_modules/.bin/node or node_modules/wrangler missing: run scripts/bootstrap.sh" >&2; exit 4
fi

echo "==> 1/4 D1 migrations" >&2
migrate=(d1 migrations apply cmgsite --remote -c wrangler.dispatcher.toml)
if (( ${#DRY_RUN[@]} )); then
  echo "[dry-run] wrangler: would ${WRANGLER[*]} ${migrate[*]}"
elif [[ -n "${CMGSITE_WRANGLER:-}" ]]; then
  read -r -a override <<< "$CMGSITE_WRANGLER"; "${override[@]}" "${migrate[@]}"
else
  "${WRANGLER[@]}" "${migrate[@]}"
fi

echo "==> 2/4 + 3/4 namespace, dispatcher, tenant Workers" >&2
"$PYTHON" scripts/tenants.py deploy --all --dispatcher --remote "${DRY_RUN[@]}"

echo "==> 4/4 verify --repair" >&2
if (( ${#DRY_RUN[@]} )); then
  # A dry run repairs nothing, so drift (exit 3) is expected here: the plan above is the point.
  "$PYTHON" scripts/tenants.py verify --repair --remote --dry-run || [[ $? -eq 3 ]]
else
  "$PYTHON" scripts/tenants.py verify --repair --remote
fi
