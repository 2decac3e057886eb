#!/usr/bin/env bash
# The whole test suite: lint, types, unit tests and the integration tests against the real
# toolchain (kube-apiserver, etcd, kwok, pulumi, the Kubernetes provider). Called by
# `make test`, which first makes sure the virtualenv and the toolchain are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The HTML report test drives headless Chromium (Debian's package; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian package) for the report screenshot test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The secrets audit records the argv of every process rebuild starts with strace (Debian's
# package); without a working strace it fails rather than check argv only by sampling /proc.
if ! command -v strace >/dev/null 2>&1; then
  echo "installing strace (Debian package) for the secrets audit" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
fi
.venv/bin/ruff check rebuild stacks tests bench
.venv/bin/mypy
# The layers of docs/architecture.md (pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports --no-cache
# Two pytest-xdist workers by default (work stealing): most integration tests wait on clusters,
# reconcilers and Pulumi, and the suite has outgrown one worker: serially it took over 30 min on
# the 2-core machine (and was still running), two workers 31 min under load
# (docs/measurements.md); with CI's cold toolchain build (about 40 min) serial comes too close to
# CI's 90-minute limit. REBUILD_TEST_WORKERS=0 runs serially.
workers="${REBUILD_TEST_WORKERS:-2}"
if [[ "$workers" != "0" ]]; then
    exec .venv/bin/pytest -p no:cacheprovider -n "$workers" --dist worksteal "$@"
fi
exec .venv/bin/pytest -p no:cacheprovider "$@"
