# The commands people run by hand are the ones CI runs.
#   make run    install what is missing, start services, migrate, run front door + web + worker + beat
#               + Messy's own Redis servers + local S3
#   make test   the whole test suite against real PostgreSQL, Redis, memcached and a local S3 server
#   make lint   ruff (lint + format check) and mypy
#   make bench  the benchmarks (not tests): accept rate, latency, batch rate, persist rate, publish time
#   make manage CMD="..."   a management command with the settings in local.sh

VENV := .venv
PY := $(VENV)/bin/python
TEST_PACKAGES := chromium

.PHONY: run test lint format bench install services migrate manage clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

local.sh:
	./scripts/local-sh.sh

services:
	./scripts/services.sh

migrate: install services local.sh
	bash -c '. scripts/common.sh && python manage.py migrate --noinput && python manage.py collectstatic --noinput -v 0'

run: migrate
	$(VENV)/bin/honcho start -f Procfile

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

bench: migrate
	./scripts/services.sh wrk hey
	./scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
