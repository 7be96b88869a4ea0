# wsbroadcast: `make run` serves on 127.0.0.1:8000 (embedded broker); `make test` runs every test.
# Each target installs what it needs first, so both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install install-web install-browser install-postgres install-nginx fmt lint typecheck test test-py test-lowest test-web e2e chaos soak run up down bench all

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its test tools

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

install-web: web/node_modules/.installed ## install the web client's packages (npm ci)

install-browser: ## install Debian's Chromium for the browser test (apt-get, as root)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

install-postgres: ## install Debian's PostgreSQL for the outbox tests (apt-get, as root)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi; }

NGINX := $(VENV)/nginx/usr/sbin/nginx
$(NGINX):
	@# Debian's package unpacked into .venv: no service installed, started or touched.
	mkdir -p $(VENV)/nginx
	cd $(VENV)/nginx && { apt-get download nginx 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi; \
	  apt-get download nginx; }; }
	cd $(VENV)/nginx && dpkg-deb -x nginx_*.deb . && rm nginx_*.deb

install-nginx: $(NGINX) ## unpack Debian's nginx into .venv for the proxy scenario (apt-get download)

fmt: install ## format the Python code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: install ## ruff on the Python code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict on the package
	$(BIN)/mypy

test-py: install install-postgres install-nginx ## the Python tests (real servers, real sockets, real redis-server and PostgreSQL; chaos scenarios bounded)
	$(BIN)/pytest

LOWEST := .venv-lowest
test-lowest: install install-postgres install-nginx ## the Python tests again, on the lowest versions pyproject.toml allows
	rm -rf $(LOWEST)
	$(BIN)/uv venv -q -p $(PYTHON) $(LOWEST)
	VIRTUAL_ENV=$(LOWEST) $(BIN)/uv pip install -q --resolution lowest-direct -e '.[redis,postgres]'
	VIRTUAL_ENV=$(LOWEST) $(BIN)/uv pip freeze | grep -v -e '^-e ' -e 'file://' > $(LOWEST)/lowest.txt
	VIRTUAL_ENV=$(LOWEST) $(BIN)/uv pip install -q -e '.[dev]' -c $(LOWEST)/lowest.txt
	@echo "lowest versions:" $$(grep -iE '^(anyio|orjson|starlette|uvicorn|websockets|redis)=' $(LOWEST)/lowest.txt)
	$(LOWEST)/bin/pytest -m "not soak"  # the soak looks for leaks, not for version drift

test-web: install install-web ## the web client's type check, Jest tests, generated types up to date
	cd web && npm run typecheck && npm run lint && npm test && npm run check:types

e2e: install install-web install-browser ## the browser test: Chromium, next start and wsbroadcast
	cd web && npm run e2e

test: lint typecheck test-py test-lowest test-web e2e ## everything: lint, types, Python (latest and lowest versions), web and browser tests

SOAK_SECONDS ?= 1200
chaos: install install-nginx ## the fault scenarios at full size (tests/chaos, docs/reliability.md); the soak apart
	WSB_CHAOS=full $(BIN)/pytest tests/chaos -m "not soak" --timeout=1800 -s

soak: install ## the long run: 20 minutes (SOAK_SECONDS=1200) of churn, flat memory, fds and tasks
	WSB_CHAOS=full WSB_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest tests/chaos/test_soak.py --timeout=0 -s

run: install ## serve on http://127.0.0.1:8000 with the embedded broker
	$(BIN)/wsbroadcast

up: ## docker compose: redis, two instances and the web app
	docker compose up --build

down: ## stop the compose stack
	docker compose down

BENCH_FLAGS ?=
bench: install ## the benchmark against the seed design (see bench/README.md); BENCH_FLAGS=--long for all
	$(BIN)/pip install --quiet -e '.[bench]'
	-$(BIN)/python -m bench.validation  # past 1.2x it exits 1; a noisy neighbour can do that
	$(BIN)/python -m bench $(BENCH_FLAGS)

all: test ## the same as make test
