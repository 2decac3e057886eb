#!/usr/bin/env bash
# The main job on the bundled example: a full DR drill of examples/gitops-repo into a
# throwaway local cluster (real control plane, rebuild's git server, real Flux, Pulumi),
# verified object by object, timed per phase, torn down, with reports.
# Called by `make demo` after the virtualenv and the toolchain are in place.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/rebuild --config examples/gitops-repo/rebuild.yaml drill "$@"
