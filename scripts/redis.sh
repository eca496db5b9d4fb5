#!/usr/bin/env bash
# Run one of Messy's own Redis servers in the foreground, configured by deploy/redis.conf
# (append-only file on, noeviction, no default user). The machine's own Redis is not used.
#   scripts/redis.sh staging [redis-server options]   the staging stream
#   scripts/redis.sh broker  [redis-server options]   the Celery broker
# Users (docs/data-tier.md): messy-web and messy-worker, each with only what its processes run,
# and messy-admin for operators; passwords from REDIS_WEB_PASSWORD, REDIS_WORKER_PASSWORD and
# REDIS_ADMIN_PASSWORD (make run generates them into local.sh), written hashed to a 0600 file
# in the data folder, never on the command line (other local users can read that in ps).
# Each listens on a Unix socket in its data folder (REDIS_SOCKET; "off": none), mode 0770 in a
# folder only its group enters. TCP only when REDIS_BIND names addresses (for other hosts:
# with REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE and REDIS_TLS_CA_CERT_FILE it is TLS only), on
# the port of REDIS_URL / CELERY_BROKER_URL, or REDIS_PORT (6380 staging, 6381 broker).
# Run by root, the server runs as the system user REDIS_USER (default messy-redis, made here).
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
dir="$(messy_path "${REDIS_DATA_DIR:-$MESSY_ROOT/var/redis/$name}")"
mkdir -p "$dir"
socket="${REDIS_SOCKET:-$dir/redis.sock}"

users="$dir/users.conf"
(
    umask 077
    "$MESSY_ROOT/scripts/redis-users.sh" "$name" > "$users.new"
    mv "$users.new" "$users"
)

options=(--include "$users" --dir "$dir" --maxmemory "$maxmemory" --appendfsync "${REDIS_APPENDFSYNC:-everysec}")
[ "$socket" = off ] || options+=(--unixsocket "$socket" --unixsocketperm 770)
if [ -n "${REDIS_BIND:-}" ]; then
    if [ -n "${REDIS_TLS_CERT_FILE:-}" ]; then
        options+=(--port 0 --tls-port "$port" --tls-cert-file "$REDIS_TLS_CERT_FILE"
            --tls-key-file "${REDIS_TLS_KEY_FILE:?REDIS_TLS_KEY_FILE goes with REDIS_TLS_CERT_FILE}"
            --tls-ca-cert-file "${REDIS_TLS_CA_CERT_FILE:?REDIS_TLS_CA_CERT_FILE goes with REDIS_TLS_CERT_FILE}"
            --tls-auth-clients optional --tls-replication yes --tls-cluster yes)
    else
        options+=(--port "$port")
    fi
    # shellcheck disable=SC2206  # a list of addresses
    options+=(--bind $REDIS_BIND)
else
    options+=(--port 0)
fi

run_as=()
if [ "$(id -u)" = 0 ] && [ "${REDIS_USER:-messy-redis}" != root ]; then
    user="${REDIS_USER:-messy-redis}"
    # The data folder is the service user's; its group (Messy's processes are in it) reaches
    # the socket, nobody else enters.
    service_folder "$user" "$dir" 0750 REDIS_DATA_DIR
    mapfile -t run_as < <(as_service_user "$user")
else
    chmod 0700 "$dir"
fi
exec "${run_as[@]}" redis-server "$MESSY_ROOT/deploy/redis.conf" "${options[@]}" "$@"
