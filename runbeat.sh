#!/usr/bin/env bash
# Celery beat with django-celery-beat's DatabaseScheduler: schedules live in PostgreSQL and
# are edited in the admin. Safe if two run: every scheduled task is idempotent (the stats
# publish runs at most once per minute whoever sends it; the sweep is harmless twice).
set -euo pipefail
. "$(dirname "$0")/scripts/common.sh"
export MESSY_REDIS_ROLE="${MESSY_REDIS_ROLE:-worker}"  # Redis as the workers' user
run_as_service_user "$@"

exec celery -A project beat --loglevel "${LOG_LEVEL:-INFO}" \
    --scheduler django_celery_beat.schedulers:DatabaseScheduler \
    --pidfile= "$@"
