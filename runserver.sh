#!/usr/bin/env bash
# The web process: gunicorn (pre-fork, sync workers) serving project.wsgi, behind the front
# door (scripts/front.sh, nginx), which buffers whole requests so that slow clients never hold
# a sync worker. Do not expose it directly: the front door also bounds request lines (64 KB,
# room for a GET write's query string), so gunicorn's own 4 KB limit is lifted.
# Its worker class is gunicorn's sync worker with a few changes (project.gunicorn_worker): it sends
# the memcached copies a process holds once they are due, and each response in one send.
#   ./runserver.sh         production server, WEB_PROCESSES processes on MESSY_BIND, and on the
#                          Unix socket MESSY_SOCKET, where the front door on this host reaches it
#   ./runserver.sh --dev   Django's autoreloading development server instead
set -euo pipefail
. "$(dirname "$0")/scripts/common.sh"
# Redis as the web tier's user: it may stage, read statuses and publish tasks, nothing more.
export MESSY_REDIS_ROLE="${MESSY_REDIS_ROLE:-web}"

bind="${MESSY_BIND:-127.0.0.1:8001}"
# The front door on the same host connects through a Unix socket: a sync worker answers one
# request a connection, and a new connection on a Unix socket costs far less than a TCP one
# (no handshake, no TIME_WAIT). MESSY_BIND stays for front doors on other hosts and for tools.
socket="$(web_socket)"
binds=(--bind "$bind")
if [ "$socket" != off ]; then
    mkdir -p "$(dirname "$socket")"
    binds+=(--bind "unix:$socket")
fi
if [ "${1:-}" = "--dev" ]; then
    exec python manage.py runserver "$bind"
fi
access_log=()
# WEB_ACCESS_LOG: a file, "-" for stdout (the default), or "off".
if [ "${WEB_ACCESS_LOG:--}" != off ]; then
    # The path without its query string (%(U)s, not %(r)s), and no referer: a GET write
    # carries the message in its query, and a job page link carries a signed token.
    access_log=(--access-logfile "${WEB_ACCESS_LOG:--}"
        --access-logformat '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s" %({x-request-id}i)s')
fi
exec gunicorn project.wsgi:application \
    "${binds[@]}" \
    --workers "${WEB_PROCESSES:-$(( $(nproc) * 2 ))}" \
    --worker-class project.gunicorn_worker.SyncWorker \
    --timeout "${WEB_TIMEOUT:-30}" \
    --graceful-timeout 10 \
    --max-requests "${WEB_MAX_REQUESTS:-0}" \
    --limit-request-line 0 \
    "${access_log[@]}" \
    --name messy-web \
    "$@"
