# The two commands: `make run` (everything up locally) and `make test` (the whole gate).
# Both install what they need: a venv with the package, the pinned Supabase CLI, PostgreSQL 15 +
# pg_cron (apt-get when root), the embedded database, migrations and seed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test install db db-stop lint typecheck pytest bench clean

run: install db
	@scripts/run.sh

test: install db lint typecheck pytest

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

node_modules/.installed: package.json package-lock.json
	@npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

db:
	@scripts/db.sh up

db-stop:
	@scripts/db.sh stop

lint:
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck:
	@$(BIN)/mypy

pytest:
	@$(BIN)/pytest -q

bench: install db
	@$(BIN)/python bench/sandbox.py
	@$(BIN)/python bench/oauth.py
	@$(BIN)/python bench/refresh.py

clean: db-stop
	rm -rf .local $(VENV) node_modules
