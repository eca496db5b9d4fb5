#!/usr/bin/env bash
# make bench: the benchmarks against Messy's own Redis servers (deploy/redis.conf, as make run
# configures them: append-only file with an fsync every second), started fresh for this run
# in var/redis-bench and stopped afterwards. Arguments go to python -m bench.
set -euo pipefail
export MESSY_NO_LOCAL_SH=1  # the benchmark brings its own settings (tests/harness.py BENCH)
. "$(dirname "$0")/common.sh"
. "$MESSY_ROOT/scripts/redis-pair.sh"
export REDIS_USER="${REDIS_USER:-root}"  # its servers' data in the checkout, as the tests'

export MESSY_TEST_REDIS_STAGING="${MESSY_BENCH_REDIS_STAGING:-redis://127.0.0.1:6394}"
export MESSY_TEST_REDIS_BROKER="${MESSY_BENCH_REDIS_BROKER:-redis://127.0.0.1:6395}"
# Room for everything the benchmark stages with no worker running (the web tier is measured alone).
export REDIS_MAXMEMORY="${REDIS_MAXMEMORY:-4gb}"
redis_pair_start "$MESSY_ROOT/var/redis-bench" "$MESSY_TEST_REDIS_STAGING" "$MESSY_TEST_REDIS_BROKER"
# BENCH_MODULE=bench.gunicorn_versions: only the gunicorn releases bisect (docs/dependencies.md).
python -m "${BENCH_MODULE:-bench}" "$@"
