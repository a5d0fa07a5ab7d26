# Two commands: `make run` serves the bridge beside the NMS simulator; `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export BRIDGE_CONFIG ?= config.example.yaml

.PHONY: install install-dev run test bench lint clean

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
	mkdir -p instance
	$(BIN)/bridge db upgrade
	@$(BIN)/python -m nmsim --port 8025 --state-file instance/nmsim-state.json & sim=$$!; \
	$(BIN)/bridge worker & worker=$$!; \
	trap 'kill $$worker $$sim 2>/dev/null; wait' EXIT INT TERM; \
	$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: install-dev  ## run the whole suite (SQLite; PostgreSQL when BRIDGE_TEST_DATABASE_URL is set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev  ## measure intake, calls per action, drain time and memory (minutes; not in `make test`)
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: install-dev  ## ruff, mypy over bridge/, and the import-linter layer contracts
	$(BIN)/ruff check bridge nmsim tests bench
	$(BIN)/ruff format --check bridge nmsim tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) instance .pytest_cache
