#!/usr/bin/env bash
# make test: pytest against Messy's own Redis servers (deploy/redis.conf: append-only file on,
# noeviction), started fresh for this run in var/redis-test-<port> and stopped afterwards, so the
# run leaves nothing behind. Arguments go to pytest (scripts/test.sh tests/messages -x).
set -euo pipefail
export MESSY_NO_LOCAL_SH=1  # the tests bring their own settings (project/settings_test.py)
export DJANGO_SETTINGS_MODULE=project.settings_test
# The tests' own Redis servers (scripts/redis.sh) keep their data in temporary folders that a
# service user could not enter: they run as this user (tests/system/test_data_tier_access.py
# runs make run's shape, as messy-redis).
export REDIS_USER="${REDIS_USER:-root}"
. "$(dirname "$0")/common.sh"
. "$MESSY_ROOT/scripts/redis-pair.sh"

export MESSY_TEST_REDIS_STAGING="${MESSY_TEST_REDIS_STAGING:-redis://127.0.0.1:6390}"
export MESSY_TEST_REDIS_BROKER="${MESSY_TEST_REDIS_BROKER:-redis://127.0.0.1:6391}"
# A folder per port pair: two runs at once (on other ports) never wipe each other's data.
redis_pair_start "$MESSY_ROOT/var/redis-test-${MESSY_TEST_REDIS_STAGING##*:}" \
    "$MESSY_TEST_REDIS_STAGING" "$MESSY_TEST_REDIS_BROKER"

# The front door serves the collected static files (the admin's, the API docs'); its tests look.
python manage.py collectstatic --noinput -v 0

pytest "$@"
