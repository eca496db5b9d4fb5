# Sourced by scripts/test.sh and scripts/bench.sh: a fresh pair of Messy's own Redis servers
# (staging and broker, deploy/redis.conf through scripts/redis.sh) for one run, stopped when
# the calling script exits, so a run leaves nothing behind.
#   redis_pair_start DATA_DIR STAGING_SERVER_URL BROKER_SERVER_URL

_redis_pair_ports=()

_redis_pair_stop() {
    for port in "${_redis_pair_ports[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}

redis_pair_start() {
    local data="$1" staging="$2" broker="$3" port_of
    port_of() { python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port)' "$1"; }
    _redis_pair_ports=("$(port_of "$staging")" "$(port_of "$broker")")
    trap _redis_pair_stop EXIT
    _redis_pair_stop  # a pair left over from an interrupted run
    rm -rf "$data"
    REDIS_URL="$staging/0" REDIS_DATA_DIR="$data/staging" \
        ./scripts/redis.sh staging --daemonize yes --pidfile "$data/staging.pid" --logfile "$data/staging.log"
    CELERY_BROKER_URL="$broker/0" REDIS_DATA_DIR="$data/broker" \
        ./scripts/redis.sh broker --daemonize yes --pidfile "$data/broker.pid" --logfile "$data/broker.log"
    # The run's processes reach the staging server through its Unix socket, as make run's do
    # (the harness builds their REDIS_URL from this); the TCP port serves the rest.
    export MESSY_TEST_REDIS_STAGING_SOCKET="$data/staging/redis.sock"
    for _ in $(seq 50); do
        redis-cli -p "${_redis_pair_ports[0]}" ping >/dev/null 2>&1 \
            && redis-cli -p "${_redis_pair_ports[1]}" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "redis-pair: the Redis servers did not start (see $data/*.log)" >&2
    return 1
}
