# streamapp: the two commands a newcomer needs are `make run` and `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STACK  := $(PY) scripts/stack.py

# STACK_PROFILE=cluster (in the environment or as a make argument) selects
# stack.py's cluster profile: three Kafka nodes and a six-node Redis Cluster
# beside the shared PostgreSQL, MongoDB and OpenSearch (docs/stack.md).
export STACK_PROFILE
# The app's connection settings for that profile, for targets that start app processes.
APP_ENV = app_env=$$($(STACK) env --export) && eval "$$app_env" &&

.PHONY: tools tools-down run test lint typecheck test-fast chaos cluster-chaos bench bench-mongodb bench-scaling soak audit venv browser services-up services-down services-status services-wipe services-env worker simulate clean

## run: install, bring the stack up, start the workers (WORKERS=1), the audit trail and the simulator, print the URLs
WORKERS ?= 1
run: venv services-up
	@$(APP_ENV) WORKERS=$(WORKERS) $(PY) scripts/run.py

## test: in this order, stopping at the first failure: lint, types, the tests that need no
## server (unit, contract), then both stack profiles (the cluster test needs the second; Kafka
## with its SASL_SSL listener) and the tests that need them (integration, security)
test: lint typecheck test-fast browser
	KAFKA_SASL_SSL_PORT=$${KAFKA_SASL_SSL_PORT:-9094} $(STACK) --profile single up
	$(STACK) --profile cluster up
	TEST_CLUSTER=1 TEST_SECURE=1 TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:7001/0 \
		$(PY) -m pytest tests/integration tests/security

## lint: ruff, lint rules and import order (pyproject.toml [tool.ruff])
lint: venv
	$(VENV)/bin/ruff check .

## typecheck: mypy, strict on streamapp/ (pyproject.toml [tool.mypy])
typecheck: venv
	$(VENV)/bin/mypy

## test-fast: the tests that need no server: unit and contract
test-fast: venv
	$(PY) -m pytest tests/unit tests/contract

## chaos: the long fault-injection scenarios on one node (kill -9, store outages, broker restart)
chaos: venv
	$(STACK) --profile single up
	$(PY) -m tests.system.chaos

## cluster-chaos: faults with several workers on 3 brokers and a Redis Cluster (not in CI)
cluster-chaos: venv
	$(STACK) --profile cluster up
	$(PY) -m tests.system.cluster_chaos

## soak: steady traffic for MINUTES (default 10; the committed run is 60); is the worker's memory flat?
MINUTES ?= 10
soak: venv services-up
	$(PY) -m tests.system.soak --minutes $(MINUTES)

## bench: ceiling vs pass-through vs full pipeline vs per-event baseline
bench: venv services-up
	$(PY) -m tests.system.bench

## bench-mongodb: make bench, plus pass 3 and title writes on FerretDB and SecantusDB side by side
bench-mongodb: venv services-up
	$(PY) -m tests.system.bench --compare-mongodb ferretdb,secantus

## bench-scaling: 1 and 2 workers on the cluster profile, and latency through a broker kill
bench-scaling: venv
	$(STACK) --profile cluster up
	$(PY) -m tests.system.scaling

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,dev]'
	touch $(STAMP)

## tools: pgAdmin, mongo-express and redis-commander on the stack's databases (README: Database tools); Ctrl-C stops them
tools: venv
	$(STACK) up postgres mongodb redis
	@$(APP_ENV) $(PY) scripts/tools.py run

## tools-down: stop the database tools (after `scripts/tools.py up`, or a `make tools` that was killed)
tools-down:
	$(PY) scripts/tools.py down

## browser: Debian's Chromium for the dashboard test (skipped when it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped"; }

services-up: venv
	$(STACK) up

services-down:
	$(STACK) down

services-status:
	$(STACK) status

## services-env: the app's connection settings for the profile, NAME=value lines
services-env:
	@$(STACK) env

## services-wipe: stop everything and delete all data (downloads and builds stay cached)
services-wipe:
	$(STACK) wipe

# The worker runs on jemalloc where it is installed (streamapp/allocator.py).
JEMALLOC = $$($(PY) -c 'from streamapp.allocator import with_jemalloc; print(with_jemalloc({}).get("LD_PRELOAD", ""))')
worker: venv
	$(APP_ENV) LD_PRELOAD="$${LD_PRELOAD-$(JEMALLOC)}" $(VENV)/bin/faust -A streamapp worker -l info

audit: venv
	$(APP_ENV) $(PY) -m streamapp.audit

simulate: venv
	$(APP_ENV) $(PY) -m streamapp.simulator --count 0

clean:
	rm -rf build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
