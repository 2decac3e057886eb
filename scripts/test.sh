#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests and the integration tests against the real
# toolchain (kube-apiserver, etcd, kwok, pulumi, the Kubernetes provider). Called by
# `make test`, which first makes sure the virtualenv and the toolchain are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check rebuild stacks tests bench
.venv/bin/mypy
exec .venv/bin/pytest -p no:cacheprovider "$@"
