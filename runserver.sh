#!/usr/bin/env bash
# The web process: gunicorn (pre-fork, sync workers) serving project.wsgi.
#   ./runserver.sh         production server, WEB_PROCESSES processes on MESSY_BIND
#   ./runserver.sh --dev   Django's autoreloading development server instead
set -euo pipefail
. "$(dirname "$0")/scripts/common.sh"

bind="${MESSY_BIND:-127.0.0.1:8000}"
if [ "${1:-}" = "--dev" ]; then
    exec python manage.py runserver "$bind"
fi
access_log=()
# WEB_ACCESS_LOG: a file, "-" for stdout (the default), or "off".
if [ "${WEB_ACCESS_LOG:--}" != off ]; then
    access_log=(--access-logfile "${WEB_ACCESS_LOG:--}")
fi
exec gunicorn project.wsgi:application \
    --bind "$bind" \
    --workers "${WEB_PROCESSES:-$(( $(nproc) * 2 ))}" \
    --worker-class sync \
    --timeout "${WEB_TIMEOUT:-30}" \
    --graceful-timeout 10 \
    --max-requests "${WEB_MAX_REQUESTS:-0}" \
    "${access_log[@]}" \
    --name messy-web \
    "$@"
