# Sourced by scripts/test.sh and scripts/bench.sh: a fresh pair of Messy's own Redis servers
# (staging and broker, deploy/redis.conf through scripts/redis.sh, with its users) for one run,
# stopped when the calling script exits, so a run leaves nothing behind. The users' passwords
# are made up for the run unless set (REDIS_WEB_PASSWORD, REDIS_WORKER_PASSWORD,
# REDIS_ADMIN_PASSWORD), and exported for the run's processes.
#   redis_pair_start DATA_DIR STAGING_SERVER_URL BROKER_SERVER_URL

_redis_pair_ports=()
_redis_pair_data=

_redis_pair_stop() {
    local refused
    for port in "${_redis_pair_ports[@]}"; do
        # Commands a role was refused (scripts/redis-users.sh): a test that meant it, or a
        # command the code now runs that the role lacks.
        refused="$(redis-cli --user messy-admin --pass "${REDIS_ADMIN_PASSWORD:-}" --no-auth-warning -p "$port" \
            --csv acl log 2>/dev/null | grep -v '^$' || true)"
        [[ "$refused" != *'"reason"'* ]] || printf 'redis-pair: refused by the ACL on port %s:\n%s\n' "$port" "$refused" >&2
        redis-cli --user messy-admin --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning -p "$port" \
            shutdown nosave >/dev/null 2>&1 || true
    done
    # A pair left over from an interrupted run has other passwords: stop it by its pid.
    for pidfile in "$_redis_pair_data/staging/redis.pid" "$_redis_pair_data/broker/redis.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for port in "${_redis_pair_ports[@]}"; do
        for _ in $(seq 50); do
            redis-cli -p "$port" ping >/dev/null 2>&1 || break
            sleep 0.1
        done
    done
}

redis_pair_start() {
    local data="$1" staging="$2" broker="$3" port_of variable
    port_of() { python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port)' "$1"; }
    for variable in REDIS_WEB_PASSWORD REDIS_WORKER_PASSWORD REDIS_ADMIN_PASSWORD; do
        [ -n "${!variable:-}" ] || export "$variable=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    done
    _redis_pair_ports=("$(port_of "$staging")" "$(port_of "$broker")")
    _redis_pair_data="$data"
    trap _redis_pair_stop EXIT
    _redis_pair_stop  # a pair left over from an interrupted run
    rm -rf "$data"
    # TCP on loopback too: the tests and benchmarks also reach them on their ports.
    REDIS_URL="$staging/0" REDIS_DATA_DIR="$data/staging" REDIS_BIND="127.0.0.1" \
        ./scripts/redis.sh staging --daemonize yes --pidfile "$data/staging/redis.pid" --logfile "$data/staging/redis.log"
    CELERY_BROKER_URL="$broker/0" REDIS_DATA_DIR="$data/broker" REDIS_BIND="127.0.0.1" \
        ./scripts/redis.sh broker --daemonize yes --pidfile "$data/broker/redis.pid" --logfile "$data/broker/redis.log"
    # The run's processes reach the staging server through its Unix socket, as make run's do
    # (the harness builds their REDIS_URL from this); the TCP port serves the rest.
    export MESSY_TEST_REDIS_STAGING_SOCKET="$data/staging/redis.sock"
    local auth=(--user messy-admin --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning)
    for _ in $(seq 50); do
        redis-cli "${auth[@]}" -p "${_redis_pair_ports[0]}" ping 2>/dev/null | grep -q PONG \
            && redis-cli "${auth[@]}" -p "${_redis_pair_ports[1]}" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "redis-pair: the Redis servers did not start (see $data/*/redis.log)" >&2
    return 1
}
