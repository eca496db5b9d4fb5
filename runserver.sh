#!/usr/bin/env bash
# The web process: gunicorn (pre-fork, sync workers) serving project.wsgi, behind the front
# door (scripts/front.sh, nginx), which buffers whole requests so that slow clients never hold
# a sync worker. Only the front door reaches it: its Unix socket is 0660, group messy-web (nginx's
# workers), in a folder of its own that nobody else may enter; it listens on TCP only when
# MESSY_BIND is set (a front door on another host: then firewall that port to it). Its
# request-line limit is the front door's (64 KB: room for a GET write's query string).
# Its worker class is gunicorn's sync worker with a few changes (project.gunicorn_worker): it sends
# the memcached copies a process holds once they are due, and each response in one send.
#   ./runserver.sh         production server, WEB_PROCESSES processes on the Unix socket
#                          MESSY_SOCKET (where the front door on this host reaches it), and on
#                          MESSY_BIND if set (host:port)
#   ./runserver.sh --dev   Django's autoreloading development server instead (MESSY_BIND, default
#                          127.0.0.1:8001)
set -euo pipefail
. "$(dirname "$0")/scripts/common.sh"
# Redis as the web tier's user: it may stage, read statuses and publish tasks, nothing more.
export MESSY_REDIS_ROLE="${MESSY_REDIS_ROLE:-web}"

if [ "${1:-}" = "--dev" ]; then
    exec python manage.py runserver "${MESSY_BIND:-127.0.0.1:8001}"
fi
# The front door on the same host connects through a Unix socket: a sync worker answers one
# request a connection, and a new connection on a Unix socket costs far less than a TCP one
# (no handshake, no TIME_WAIT).
socket="$(web_socket)"
binds=()
[ -n "${MESSY_BIND:-}" ] && binds+=(--bind "$MESSY_BIND")
if [ "$socket" != off ]; then
    folder="$(dirname "$socket")"
    mkdir -p "$folder"
    if [ "$(id -u)" = 0 ] && getent group messy-web >/dev/null; then
        # setgid: the socket gunicorn creates in it takes the group, whoever runs gunicorn.
        chown "${MESSY_USER:-root}:messy-web" "$folder"
        chmod 2750 "$folder"
    elif [ -O "$folder" ]; then
        chmod 0750 "$folder"  # a developer's own nginx runs as the same user
    fi
    rm -f "$socket"
    binds+=(--bind "unix:$socket")
fi
if [ ${#binds[@]} -eq 0 ]; then
    echo "runserver.sh: nothing to listen on (MESSY_SOCKET=off and MESSY_BIND unset)" >&2
    exit 2
fi
# gunicorn gives its socket its own group (whatever the folder's): messy-web, where it exists.
socket_group=()
if getent group messy-web >/dev/null; then
    service_group=messy-web
    run_as_service_user "$@"
    if [ "$(id -u)" = 0 ] || [ "$(id -gn)" = messy-web ]; then socket_group=(--group messy-web); fi
fi
run_as_service_user "$@"

# The front door's request-line limit (large_client_header_buffers in its template), in bytes.
front_request_line_limit() {
    awk '$1 == "large_client_header_buffers" { size = $3; sub(/;$/, "", size)
        if (size ~ /[kK]$/) size = size * 1024; else if (size ~ /[mM]$/) size = size * 1048576
        print size + 0; exit }' "$MESSY_ROOT/deploy/nginx.conf.template"
}
request_line="$(front_request_line_limit)"
[ -n "$request_line" ] || { echo "runserver.sh: no large_client_header_buffers in the nginx template" >&2; exit 2; }

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
    --limit-request-line "$request_line" \
    --umask 0117 \
    "${socket_group[@]}" \
    "${access_log[@]}" \
    --name messy-web \
    "$@"
