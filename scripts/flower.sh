#!/usr/bin/env bash
# Flower, Celery's own monitor: workers, queues, task rates and task details. For staff only,
# through the front door at /flower/ (deploy/nginx.conf.template asks the web tier whether the
# request carries a staff session, so Flower needs no password of its own). That is also why
# Flower listens on 127.0.0.1 only: never expose FLOWER_PORT, it has no authentication.
# Run it on the host of the front door (make run does), one per deployment; workers on other
# hosts show up through the broker.
#   FLOWER_PORT   where Flower listens on 127.0.0.1 (default 5555)
set -euo pipefail
. "$(dirname "$0")/common.sh"
export MESSY_REDIS_ROLE="${MESSY_REDIS_ROLE:-worker}"  # Redis as the workers' user
run_as_service_user "$@"

exec celery -A project flower \
    --address=127.0.0.1 \
    --port="${FLOWER_PORT:-5555}" \
    --url_prefix=flower \
    --purge_offline_workers=300 \
    "$@"
