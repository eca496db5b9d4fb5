#!/usr/bin/env bash
# make test: pytest against Messy's own Redis servers (deploy/redis.conf: append-only file on,
# noeviction), started fresh for this run in var/redis-test and stopped afterwards, so the
# run leaves nothing behind. Arguments go to pytest (scripts/test.sh tests/messages -x).
set -euo pipefail
export MESSY_NO_LOCAL_SH=1  # the tests bring their own settings (project/settings_test.py)
export DJANGO_SETTINGS_MODULE=project.settings_test
. "$(dirname "$0")/common.sh"

export MESSY_TEST_REDIS_STAGING="${MESSY_TEST_REDIS_STAGING:-redis://127.0.0.1:6390}"
export MESSY_TEST_REDIS_BROKER="${MESSY_TEST_REDIS_BROKER:-redis://127.0.0.1:6391}"
data="$MESSY_ROOT/var/redis-test"
port_of() { python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port)' "$1"; }
staging_port="$(port_of "$MESSY_TEST_REDIS_STAGING")"
broker_port="$(port_of "$MESSY_TEST_REDIS_BROKER")"

stop_redis() {
    for port in "$staging_port" "$broker_port"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}
trap stop_redis EXIT
stop_redis
rm -rf "$data"
REDIS_URL="$MESSY_TEST_REDIS_STAGING/0" REDIS_DATA_DIR="$data/staging" \
    ./scripts/redis.sh staging --daemonize yes --pidfile "$data/staging.pid" --logfile "$data/staging.log"
CELERY_BROKER_URL="$MESSY_TEST_REDIS_BROKER/0" REDIS_DATA_DIR="$data/broker" \
    ./scripts/redis.sh broker --daemonize yes --pidfile "$data/broker.pid" --logfile "$data/broker.log"
for _ in $(seq 50); do
    redis-cli -p "$staging_port" ping >/dev/null 2>&1 && redis-cli -p "$broker_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

# The front door serves the collected static files (the admin's, the API docs'); its tests look.
python manage.py collectstatic --noinput -v 0

set +e
pytest "$@"
status=$?
set -e
# pytest's "no tests ran" is a failure here: a test command that tests nothing must not pass.
exit "$status"
