# The two commands (see README): `make demo` runs a DR drill of the bundled example on a
# local cluster; `make test` runs the whole test suite. Both set up what they need
# (virtualenv, built toolchain) and are fast when it is already there.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
REBUILD := $(VENV)/bin/rebuild

.PHONY: venv toolchain test demo lint clean-state bench

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

toolchain: venv
	@$(REBUILD) toolchain install

test: toolchain
	@bash scripts/test.sh

# Only the tools the demo uses (`demo = true` in rebuild/versions.toml; docs/toolchain.md):
# no Gitea, no Argo CD manifests.
demo: venv
	@$(REBUILD) toolchain install --only demo
	@bash scripts/demo.sh

# Benchmarks through the rebuild CLI against floors measured in the same run; asserts the
# targets (exit 1 naming each missed one) and rewrites the tables of docs/measurements.md.
# Not part of `make test`: it takes most of an hour at full size (bench/all.py).
bench: toolchain
	@$(VENV)/bin/python -c 'import pyinstrument' 2>/dev/null || \
		$(VENV)/bin/python -m pip install -q --disable-pip-version-check pyinstrument
	@$(VENV)/bin/python -m bench.all

lint: venv
	@$(VENV)/bin/ruff check rebuild stacks tests bench
	@$(VENV)/bin/mypy
