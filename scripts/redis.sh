#!/usr/bin/env bash
# Run one of Messy's own Redis servers in the foreground, configured by deploy/redis.conf
# (append-only file on, noeviction). The machine's own Redis is not used: it keeps nothing.
#   scripts/redis.sh staging [redis-server options]   the staging stream, on REDIS_URL's port (6380)
#   scripts/redis.sh broker  [redis-server options]   the Celery broker, on CELERY_BROKER_URL's port (6381)
# Each also listens on a Unix socket in its data folder (REDIS_SOCKET; "off": none), which is how
# the processes on this host reach the staging Redis by default (REDIS_URL=unix://...): a round
# trip through it costs less than through TCP on loopback. The TCP port stays, for other hosts
# and for tools (a REDIS_URL naming the socket leaves it at 6380, or REDIS_PORT).
# Two servers, because a full staging Redis refuses the writes Celery needs to hand out
# tasks; with the broker apart, drains keep being scheduled and empty a full stream.
# Data lives in var/redis/<name> (git-ignored), or REDIS_DATA_DIR.
set -euo pipefail
. "$(dirname "$0")/common.sh"

name="${1:?usage: $0 staging|broker [redis-server options]}"
shift
case "$name" in
    staging) url="${REDIS_URL:-}" default_port=6380 maxmemory="${REDIS_MAXMEMORY:-1gb}" ;;
    broker) url="${CELERY_BROKER_URL:-}" default_port=6381 maxmemory="${REDIS_BROKER_MAXMEMORY:-512mb}" ;;
    *) echo "usage: $0 staging|broker" >&2; exit 2 ;;
esac
port="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or sys.argv[2])' \
    "$url" "${REDIS_PORT:-$default_port}")"
dir="${REDIS_DATA_DIR:-$MESSY_ROOT/var/redis/$name}"
mkdir -p "$dir"
socket="${REDIS_SOCKET:-$dir/redis.sock}"
socket_options=()
[ "$socket" = off ] || socket_options=(--unixsocket "$socket" --unixsocketperm 700)
exec redis-server "$MESSY_ROOT/deploy/redis.conf" \
    --port "$port" \
    --bind ${REDIS_BIND:-127.0.0.1 -::1} \
    --dir "$dir" \
    --maxmemory "$maxmemory" \
    --appendfsync "${REDIS_APPENDFSYNC:-everysec}" \
    "${socket_options[@]}" \
    "$@"
