# Two commands a new user runs on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv from nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-postgres jepsen typecheck bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The story through agent hosts (two MCP clients in two worktrees), then the chaos table.
demo: $(STAMP)
	$(BIN)/python examples/migration_race.py
	$(BIN)/python examples/chaos_story.py

test: $(STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The PostgreSQL cases alone.  They need a PostgreSQL server (12 or later) and a database
# in which the URL's user may create and drop schemas: each test makes a fresh schema and
# drops it.  Debian: apt-get install postgresql, then as the postgres user
# `createdb test`, and trust (or a password in the URL) for 127.0.0.1 in pg_hba.conf.
# `make test` runs them too whenever COMITY_TEST_POSTGRES_URL is set.
PG_URL ?= $(or $(COMITY_TEST_POSTGRES_URL),postgresql://postgres@127.0.0.1:5432/test)
test-postgres: $(STAMP)
	@$(BIN)/python -c "import psycopg, sys; psycopg.connect(sys.argv[1], connect_timeout=5).close()" "$(PG_URL)" 2>/dev/null || \
	  { echo "test-postgres: cannot connect to $(PG_URL)"; \
	    echo "  start a PostgreSQL server and create the database, or set PG_URL=postgresql://USER@HOST:PORT/DB"; exit 2; }
	COMITY_TEST_POSTGRES_URL="$(PG_URL)" $(BIN)/python -m pytest -q -n 2 --dist loadfile -k postgres

# The long Jepsen-style runs (make test runs 2-second ones): every workload with 8 worker
# processes for 30 s under SIGKILL, SIGSTOP past a lease and, on PostgreSQL,
# pg_terminate_backend; on SQLite, then on PostgreSQL when COMITY_TEST_POSTGRES_URL is set.
JEPSEN_ARGS ?= --processes 8 --seconds 30
jepsen: $(STAMP)
	$(BIN)/python -m comity.jepsen $(JEPSEN_ARGS)
	@if [ -n "$$COMITY_TEST_POSTGRES_URL" ]; then \
	  $(BIN)/python -m comity.jepsen --store "$$COMITY_TEST_POSTGRES_URL" $(JEPSEN_ARGS); \
	else echo "jepsen: PostgreSQL skipped: set COMITY_TEST_POSTGRES_URL"; fi

# Mutation testing of the core (causal, crdt, coord, work, store) with mutmut: each package
# in .mutation/<package>/ against its own fast tests, niced, resumable (a second run redoes
# only what changed); then the score and the survivors (explained in docs/mutation.md).
# Hours on a shared 2-core machine: MUTATION_PACKAGES="causal" runs one package.
MUTATION_PACKAGES ?= causal crdt coord work store
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	$(BIN)/python tools/mutation.py run $(MUTATION_PACKAGES)
	$(BIN)/python tools/mutation.py report $(MUTATION_PACKAGES)

# Clients nobody here wrote (tests/test_interop.py): the official TypeScript SDK, MCP
# Inspector with the Node 22 it needs (from npm), and two Python agent frameworks in a
# virtual environment of their own, all under build/interop.  `make test` runs their tests
# when they are installed (`.ci/run` installs them) and skips them, saying why, when not.
INTEROP := build/interop
interop-deps: $(INTEROP)/.installed
$(INTEROP)/.installed: tests/interop/package.json tests/interop/requirements.txt tests/interop/install.sh
	bash tests/interop/install.sh $(INTEROP)

interop: $(STAMP) interop-deps
	$(BIN)/python -m pytest -q tests/test_interop.py

typecheck: $(STAMP)
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/comity bench store --json

# The README's dashboard screenshots (needs Debian's chromium: apt-get install -y chromium).
screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
