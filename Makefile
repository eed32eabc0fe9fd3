# Two commands for a fresh machine with Python 3.11 (README, quick start):
#   make run    install into .venv, then start `hedgeflow run` (simulator, graph, DuckDB, dashboards)
#   make test   install into .venv (Debian's chromium and the npm Hardhat node when missing),
#               then run every test
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: run test install chromium chain-node bench clean

run: $(STAMP)
	$(BIN)/hedgeflow run $(ARGS)

test: $(STAMP) chromium chain-node
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

chromium:
	@sh scripts/install-chromium.sh

# Hardhat 2: a real JSON-RPC node on 127.0.0.1 for the chain terminal's tests (npm).
chain-node: chain-node/node_modules/.bin/hardhat

chain-node/node_modules/.bin/hardhat: chain-node/package.json
	@command -v npm >/dev/null || { echo "npm is needed for the chain node tests: apt-get install nodejs npm" >&2; exit 1; }
	npm install --prefix chain-node --no-audit --no-fund --loglevel=error
	touch $@

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
