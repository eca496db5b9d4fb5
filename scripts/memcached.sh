#!/usr/bin/env bash
# Messy's own memcached, in the foreground (make run's Procfile starts it): the copies of staged
# payloads that answer "pending" status reads. It listens on a Unix socket only
# (MEMCACHED_SOCKET, $MESSY_RUN_DIR/memcached/memcached.sock), which the default MEMCACHED_SERVERS
# names: every write sends it a copy, and a send through a Unix socket costs less than through
# TCP on loopback.
# memcached on other hosts listens on TCP instead; list them as host:port in MEMCACHED_SERVERS.
# One worker thread by default (MEMCACHED_THREADS; memcached's own default is 4): the writes'
# noreply sets are a few microseconds of work each, and one thread that finds several waiting
# when it wakes costs less than four woken for one each.
# Documented in docs/benchmarks.md (the figures).
set -euo pipefail
. "$(dirname "$0")/common.sh"

socket="$(messy_path "${MEMCACHED_SOCKET:-$MESSY_RUN_DIR/memcached/memcached.sock}")"
folder="$(dirname "$socket")"
mkdir -p "$folder"
user=()
mode=0700
if [ "$(id -u)" = 0 ]; then
    # memcached will not run as root: it becomes a system user of its own (not nobody, whom
    # any other daemon may run as) and then makes its socket, 0770: its group (Messy's
    # processes are in it) may connect, no one else (the folder is closed to others too).
    service_user messy-memcached
    chown messy-memcached:messy-memcached "$folder"
    chmod 0750 "$folder"
    user=(-u messy-memcached)
    mode=0770
fi
exec memcached "${user[@]}" -s "$socket" -a "$mode" -m "${MEMCACHED_MEMORY_MB:-256}" -t "${MEMCACHED_THREADS:-1}" "$@"
