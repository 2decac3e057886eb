#!/usr/bin/env bash
# The main job on the bundled example: a DR drill into a throwaway local cluster.
# Called by `make demo` after the virtualenv and toolchain are in place.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/rebuild drill "$@"
