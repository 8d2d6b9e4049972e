#!/bin/sh
# workerd for Miniflare (MINIFLARE_WORKERD_PATH): Miniflare has no option for the Pyodide
# bundle directory, so insert `--pyodide-bundle-disk-cache-dir DIR` right after `serve`.
# Env: CMGSITE_WORKERD_BIN (real binary), CMGSITE_PYODIDE_BUNDLE_DIR (holds pyodide_dev.capnp.bin,
# built by scripts/build_pyodide_bundle.py). Python memory snapshots (host.mjs sets these per
# workerd process through Miniflare's runtime env): CMGSITE_PYTHON_SNAPSHOT_DIR and
# CMGSITE_PYTHON_SNAPSHOT=save (write DIR/snapshot.bin after the Worker's top level ran) or
# load (start from DIR/snapshot.bin).
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
bin=${CMGSITE_WORKERD_BIN:-$root/node_modules/@cloudflare/workerd-linux-64/bin/workerd}
dir=${CMGSITE_PYODIDE_BUNDLE_DIR:-$root/.local/pyodide-bundle}

if [ "${1:-}" = serve ]; then
    shift
    case "${CMGSITE_PYTHON_SNAPSHOT:-}" in
        save) exec "$bin" serve --pyodide-bundle-disk-cache-dir "$dir" --experimental \
                   --python-snapshot-dir "$CMGSITE_PYTHON_SNAPSHOT_DIR" --python-save-snapshot "$@" ;;
        load) exec "$bin" serve --pyodide-bundle-disk-cache-dir "$dir" --experimental \
                   --python-snapshot-dir "$CMGSITE_PYTHON_SNAPSHOT_DIR" --python-load-snapshot snapshot.bin "$@" ;;
    esac
    exec "$bin" serve --pyodide-bundle-disk-cache-dir "$dir" "$@"
fi
exec "$bin" "$@"
