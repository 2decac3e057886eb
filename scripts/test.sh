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
# REBUILD_TEST_WORKERS=N runs the tests in N pytest-xdist workers (work stealing). Serial by
# default: on the 2-core machine two workers took 30 min, serial runs about 18 to 21 (earlier CI), measured
# while other work shared the cores (docs/measurements.md), so no gain is shown yet, and
# timing-sensitive fault tests see more load.
if [[ -n "${REBUILD_TEST_WORKERS:-}" && "${REBUILD_TEST_WORKERS}" != "0" ]]; then
    exec .venv/bin/pytest -p no:cacheprovider -n "${REBUILD_TEST_WORKERS}" --dist worksteal "$@"
fi
exec .venv/bin/pytest -p no:cacheprovider "$@"
