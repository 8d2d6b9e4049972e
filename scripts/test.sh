#!/usr/bin/env bash
# Runs the whole test suite. Installs what is missing; the tests start (and stop) their
# own PostgreSQL, PostgREST and local platform on free loopback ports.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || { echo "bootstrap failed" >&2; exit 1; }
# Lint and types first (seconds): ruff and mypy, pinned in pyproject.toml, configured there.
.venv/bin/python -m ruff check . || { echo "lint failed (ruff check .)" >&2; exit 1; }
.venv/bin/python -m ruff format --check . || { echo "format check failed (run: .venv/bin/ruff format .)" >&2; exit 1; }
.venv/bin/python -m mypy || { echo "type check failed (mypy)" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$status"
