# The commands people run by hand are the ones CI runs.
#   make run    install what is missing, start services, migrate, run front door + web + worker + beat
#               + Messy's own Redis servers + local S3
#   make test   the whole test suite against real PostgreSQL, Redis, memcached and a local S3 server
#   make lint   ruff (lint + format check) and mypy
#   make bench  the benchmarks (not tests); appends to bench/results.jsonl, rebuilds docs/benchmarks.md
#   make test-cluster   only the multi-host test (network namespaces, root; make test runs it too)
#   make bench-hosts    persist rate with 1, 2 and 3 worker hosts on that cluster (root)
#   make loadtest  Locust against make run (LOADTEST_SECONDS, LOADTEST_USERS): rates, p50/p99, failures
#   make manage CMD="..."   a management command with the settings in local.sh
#   make lock   pin every dependency with hashes (requirements*.lock) after a change to requirements*.txt

VENV := .venv
PY := $(VENV)/bin/python
TEST_PACKAGES := chromium pgbouncer prometheus

.PHONY: run test lint format bench loadtest install lock services migrate manage clean local.sh
.PHONY: test-cluster bench-hosts

# requirements.txt (what the service runs on) and requirements-dev.txt (tests, tools) name the
# direct dependencies; `make lock` resolves them (pip-tools) into requirements.lock and
# requirements-dev.lock, every transitive dependency pinned with its hashes, and installs
# read only the locks. Change a pin, run make lock, commit all four files.
# psycopg2 is built from source (--no-binary: never a wheel with a libpq of its own), with what
# scripts/build-deps.sh installs.
$(VENV)/.installed: requirements.lock requirements-dev.lock
	./scripts/build-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes --no-binary psycopg2 -r requirements-dev.lock
	touch $@

install: $(VENV)/.installed

# LOCK_ARGS="--upgrade-package NAME" moves one package (and what it needs) to its newest release.
PIP_COMPILE = $(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(LOCK_ARGS)

lock: install
	$(PIP_COMPILE) -o requirements.lock requirements.txt
	$(PIP_COMPILE) -c requirements.lock -o requirements-dev.lock requirements-dev.txt

local.sh:
	./scripts/local-sh.sh

services:
	./scripts/services.sh

migrate: install services local.sh
	bash -c '. scripts/common.sh && python manage.py migrate --noinput && python manage.py collectstatic --noinput -v 0'

# Started by root, web, workers, beat and Flower go on as the messy account (MESSY_USER; made by
# scripts/service-users.sh, which services runs), nginx's workers as messy-front.
run: migrate
	MESSY_USER="$${MESSY_USER-messy}" $(VENV)/bin/honcho start -f Procfile

# Any management command with local.sh's settings, e.g. make manage CMD="createsuperuser".
manage: install local.sh
	bash -c '. scripts/common.sh && python manage.py $(CMD)'

test: install
	./scripts/services.sh $(TEST_PACKAGES)
	./scripts/test.sh $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-cluster: install
	./scripts/services.sh
	./scripts/test.sh tests/cluster/test_multihost.py $(PYTEST_ARGS)

# BENCH_HOSTS_ARGS="--messages 200000 --profile --py-spy PATH" (bench/hosts.py says more).
bench-hosts: install
	./scripts/services.sh
	$(PY) -m bench.hosts $(BENCH_HOSTS_ARGS)

bench: migrate
	./scripts/services.sh wrk hey
	./scripts/bench.sh $(BENCH_ARGS)
	$(PY) -m bench.report

# Locust (loadtest/locustfile.py), headless, against a running `make run` (its front door):
# LOADTEST_USERS clients of about 10 requests a second each, for LOADTEST_SECONDS, then the
# summary (requests, failures and their reasons, rates, percentiles). Exit status 1 on any failure.
LOADTEST_HOST ?= http://127.0.0.1:8000
LOADTEST_SECONDS ?= 60
LOADTEST_USERS ?= 50
loadtest: install
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless --only-summary --host $(LOADTEST_HOST) \
		--users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_USERS) --run-time $(LOADTEST_SECONDS)s --stop-timeout 5

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
