# streamapp: the two commands a newcomer needs are `make run` and `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STACK  := $(PY) scripts/stack.py

.PHONY: run test chaos bench soak audit venv browser services-up services-down services-status services-wipe worker simulate clean

## run: install, bring the stack up, start a worker and the simulator, print the URLs
run: venv services-up
	@$(PY) scripts/run.py

## test: install, bring the stack up, run the unit, integration and security tests
test: venv browser services-up
	$(PY) -m pytest tests/unit tests/integration tests/security -m "not slow"

## chaos: the long fault-injection scenarios (kill -9, store outages, broker restart)
chaos: venv services-up
	$(PY) -m tests.system.chaos

## soak: 10 minutes of steady traffic; is the worker's memory flat?
soak: venv services-up
	$(PY) -m tests.system.soak

## bench: ceiling vs pass-through vs full pipeline vs per-event baseline
bench: venv services-up
	$(PY) -m tests.system.bench

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

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

## services-wipe: stop everything and delete all data (downloads and builds stay cached)
services-wipe:
	$(STACK) wipe

worker: venv
	$(VENV)/bin/faust -A streamapp worker -l info

audit: venv
	$(PY) -m streamapp.audit

simulate: venv
	$(PY) -m streamapp.simulator --count 0

clean:
	rm -rf build *.egg-info .pytest_cache .hypothesis
