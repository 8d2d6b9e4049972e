#!/usr/bin/env bash
# Runs the whole platform locally on 127.0.0.1:8787 in the foreground (Ctrl-C stops it and
# everything it started). Safe to run again: state in .local/ and .wrangler/ is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m localrt run "$@"
