# Two commands: `make run` serves the bridge beside the NMS simulator; `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run BRIDGE_PORT=8100 NMSIM_PORT=8125` (or the same exported in the environment, which
# the `bridge` command then follows too). The config is found as by every other entry point:
# $BRIDGE_CONFIG, else config.yaml, else config.example.yaml, whose mail server is the
# simulator on NMSIM_PORT.
BRIDGE_PORT ?= 8000
NMSIM_PORT ?= 8025
export BRIDGE_PORT NMSIM_PORT

.PHONY: install install-dev run reload test bench lint clean

install: $(VENV)/.runtime  ## create .venv with the runtime dependencies and the bridge command

$(VENV)/.runtime: requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install-dev: $(VENV)/.dev  ## the above plus the test tools

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: export BRIDGE_ALLOW_EXAMPLE_SECRET = true
run: install  ## migrate the database, start the NMS simulator and a worker, serve the bridge on :8000
	@$(BIN)/bridge check-ports BRIDGE_PORT=$(BRIDGE_PORT) NMSIM_PORT=$(NMSIM_PORT)
	mkdir -p instance
	$(BIN)/bridge db upgrade
	@$(BIN)/python -m nmsim --port $(NMSIM_PORT) --state-file instance/nmsim-state.json & sim=$$!; \
	$(BIN)/bridge worker & worker=$$!; echo $$worker > instance/worker.pid; \
	trap 'kill $$worker $$sim 2>/dev/null; wait; rm -f instance/worker.pid' EXIT INT TERM; \
	$(BIN)/gunicorn --config gunicorn.conf.py --bind 127.0.0.1:$(BRIDGE_PORT) \
		--pid instance/gunicorn.pid wsgi:app

reload:  ## after a config change: check it, then make the running `make run` re-read it
	@test -f instance/gunicorn.pid -a -f instance/worker.pid || \
		{ echo "no make run is running from this folder: start one first"; exit 1; }
	$(BIN)/bridge mappings check > /dev/null
	kill -HUP $$(cat instance/gunicorn.pid) $$(cat instance/worker.pid)
	@echo "reload sent: the console's Mappings page shows when the config was loaded"

# Two test processes (pytest-xdist): most tests wait on real servers, not on the processor.
TEST_WORKERS ?= 2

test: install-dev  ## run the whole suite (SQLite; PostgreSQL when BRIDGE_TEST_DATABASE_URL is set)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: install-dev  ## measure intake, calls per action, drain time and memory (minutes; not in `make test`)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install-dev  ## ruff, mypy over bridge/, and the import-linter layer contracts
	$(BIN)/ruff check bridge nmsim tests bench
	$(BIN)/ruff format --check bridge nmsim tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) instance .pytest_cache
