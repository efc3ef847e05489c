# Two commands on a fresh machine (see README): `make demo` and `make test`; `make bench` measures,
# `make soak` runs ten minutes of mixed traffic and checks memory, descriptors and every response;
# `make bench-cluster` measures what several nodes cost and what a node's death loses.
# Everything the tests need is installed from here: Python packages into .venv, the npm
# `localtunnel` client into tests/node/node_modules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_PORT ?= 8080
DEMO_SERVICE_PORT ?= 3000

.PHONY: setup test-setup demo test bench bench-cluster soak clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

tests/node/node_modules/.bin/lt: tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --loglevel=error
	touch $@

test-setup: setup tests/node/node_modules/.bin/lt
	scripts/install-test-tools
	scripts/install-reference-server

bench: test-setup
	$(PY) bench/run.py

bench-cluster: test-setup
	$(PY) -c 'import sys; sys.path.insert(0, "bench"); import tools; tools.ensure_tools()'
	$(PY) bench/cluster.py
	$(PY) bench/cluster_failover.py

SOAK_MINUTES ?= 10
soak: test-setup
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

demo: setup
	$(PY) scripts/demo.py --port $(DEMO_PORT) --service-port $(DEMO_SERVICE_PORT)

test: test-setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) tests/node/node_modules
