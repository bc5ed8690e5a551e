# The two commands: `make run` (everything up locally) and `make test` (the whole gate).
# Both install what they need: a venv with the locked dependencies and the package, the pinned
# Supabase CLI, PostgreSQL 15 + pg_cron + plpgsql_check (apt-get when root), the embedded database,
# migrations and seed; `make test` also Debian's Chromium for the browser tests (apt-get when root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
# Every Python dependency (dev tools included) at the version CI tested, with its hashes. Built by
# `make lock` from pyproject.toml; the venv is made again from it whenever it changes.
LOCK := requirements.lock
UV_VERSION := 0.13.8
TOOLS := .local/tools

# `make bench` runs on a cluster of its own, never on the one `make run` uses (54322).
BENCH_DB_DIR := $(CURDIR)/.local/bench
BENCH_DB_PORT ?= 54399
BENCH_URL := postgresql://postgres:postgres@127.0.0.1:$(BENCH_DB_PORT)/postgres
BENCH_DB := INSTAGRAM_DM_DB_DIR=$(BENCH_DB_DIR) INSTAGRAM_DM_DB_PORT=$(BENCH_DB_PORT)
# `make faults` too, on yet another one: it restarts its cluster (bench/faults.py, pg-restart).
FAULTS_DB_DIR := $(CURDIR)/.local/faults
FAULTS_DB_PORT ?= 54398
FAULTS_URL := postgresql://postgres:postgres@127.0.0.1:$(FAULTS_DB_PORT)/postgres
FAULTS_DB := INSTAGRAM_DM_DB_DIR=$(FAULTS_DB_DIR) INSTAGRAM_DM_DB_PORT=$(FAULTS_DB_PORT)

.PHONY: run test install browser lock db db-stop dbcheck rpc-docs lint typecheck pytest bench bench-stop faults faults-stop clean

run: install
	@scripts/run.sh

test: install browser db dbcheck lint typecheck pytest

install: $(VENV)/.installed node_modules/.installed

# A new venv whenever the lock changes, so nothing a previous lock brought stays behind. pip refuses
# any file whose hash is not in the lock, and any dependency the lock does not pin.
$(VENV)/.locked: $(LOCK)
	@rm -rf $(VENV)
	@$(PYTHON) -m venv $(VENV)
	@echo "install: the dependencies pinned in $(LOCK)"
	@$(PIP) install --require-hashes -r $(LOCK)
	@touch $@

# The package itself, editable, with nothing more: its dependencies are the locked ones (setuptools,
# the build backend, is in the lock too, hence no build isolation). Then a check that the lock still
# satisfies pyproject.toml, extras included.
$(VENV)/.installed: $(VENV)/.locked pyproject.toml
	@$(PIP) install --no-deps --no-build-isolation -e .
	@$(BIN)/python scripts/check_lock.py
	@touch $@

node_modules/.installed: package.json package-lock.json
	@npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

# Re-resolve the lock after changing dependencies in pyproject.toml. Versions already locked are kept
# where they still fit; `make lock LOCK_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them. Only
# releases at least a week old are taken (a cooldown against a bad or hijacked release). The lock is
# universal (markers for other platforms) and carries the hashes of every file of each version.
# The lock is rewritten only when its content changes (a new one rebuilds the venv).
lock: $(TOOLS)/bin/uv
	@cp $(LOCK) $(LOCK).new 2>/dev/null || true
	@echo 'setuptools>=68' | $(TOOLS)/bin/uv pip compile pyproject.toml - --extra dev \
	    --universal --python-version 3.11 --generate-hashes --exclude-newer '1 week' \
	    --custom-compile-command 'make lock' --quiet --output-file $(LOCK).new $(LOCK_ARGS) \
	  || { rm -f $(LOCK).new; exit 1; }
	@if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; echo "lock: $(LOCK) is up to date"; \
	else mv $(LOCK).new $(LOCK); echo "lock: wrote $(LOCK); commit it with pyproject.toml"; fi

$(TOOLS)/bin/uv:
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/python -m pip --disable-pip-version-check -q install 'uv==$(UV_VERSION)'

# Debian's Chromium for the Messages page's browser tests (apt-get when root; Playwright uses it as is).
browser:
	@scripts/chromium.sh

db:
	@scripts/db.sh up

db-stop:
	@scripts/db.sh stop

# Supabase's own checks on the migrated database: `supabase db lint` and `supabase db advisors`.
dbcheck: install db
	@$(BIN)/python scripts/dbcheck.py

# docs/rpc.md, the catalogue of the app-facing RPCs, from the migrated database (function comments and
# pg_catalog). Run it after changing an app-facing function or its comment; tests/test_rpc_docs.py fails
# while the file is stale.
rpc-docs: install db
	@DATABASE_URL="$$(scripts/db.sh url)" $(BIN)/instagram-dm --env-file /dev/null rpc-docs

lint:
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck:
	@$(BIN)/mypy

pytest:
	@$(BIN)/pytest -q

# Each benchmark runs even when one before it failed; the cluster is stopped at the end and the
# target fails if any of them did.
bench: install
	@$(BENCH_DB) scripts/db.sh up
	@failed=""; \
	for name in sandbox oauth refresh webhooks send scheduled; do \
	  DATABASE_URL=$(BENCH_URL) $(BIN)/python bench/$$name.py || failed="$$failed bench/$$name.py"; \
	done; \
	$(BENCH_DB) scripts/db.sh stop; \
	if [ -n "$$failed" ]; then echo "bench: FAILED:$$failed" >&2; exit 1; fi

bench-stop:
	@$(BENCH_DB) scripts/db.sh stop

# The fault harness (not part of `make bench` or `make test`): one table, exit 1 when a scenario could not
# run, 2 when a goal was missed. FAULTS_ARGS passes options (`make faults FAULTS_ARGS=--quick`). The
# cluster is stopped at the end whatever the harness said.
faults: install
	@$(FAULTS_DB) scripts/db.sh up
	@$(FAULTS_DB) DATABASE_URL=$(FAULTS_URL) $(BIN)/python bench/faults.py $(FAULTS_ARGS); status=$$?; \
	$(FAULTS_DB) scripts/db.sh stop; exit $$status

faults-stop:
	@$(FAULTS_DB) scripts/db.sh stop

clean: db-stop bench-stop faults-stop
	rm -rf .local $(VENV) node_modules
