#!/usr/bin/env bash
# The users of one of Messy's Redis servers, as redis.conf "user" lines (scripts/redis.sh
# includes them; the cluster tests' Redis Cluster too), passwords hashed (SHA-256):
#   scripts/redis-users.sh staging|broker
# messy-web: what the web tier runs (staging, quotas, status reads, /readyz, /status; on the
# broker, publishing tasks); messy-worker: everything but the dangerous commands (CONFIG,
# FLUSH*, KEYS, DEBUG, SHUTDOWN, ACL, MONITOR, ...) plus INFO, and on the staging server
# BGREWRITEAOF (after an erasure); messy-admin: all, for operators. On the staging server both
# roles are held to keys under the namespace (REDIS_KEY_PREFIX starts with messy); the default
# user is off. docs/data-tier.md says why each command is there.
set -euo pipefail
name="${1:?usage: $0 staging|broker}"
for variable in REDIS_WEB_PASSWORD REDIS_WORKER_PASSWORD REDIS_ADMIN_PASSWORD; do
    if [ -z "${!variable:-}" ]; then
        echo "$0: $variable is not set: Messy's Redis has no user without a password (make local.sh writes them)" >&2
        exit 2
    fi
done
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
# Connecting (redis-py's handshake, SELECT of the URL's database), pipelines in MULTI, and a
# cluster client's discovery of the slots.
connection='+ping +select +hello +client|setname +client|id +command +multi +exec +discard'
case "$name" in
    staging)
        keys='resetkeys ~messy* resetchannels'
        # The stage script (EVALSHA, SCRIPT LOAD after a restart; inside: XADD, XGROUP CREATE, XLEN, MEMORY
        # USAGE, GET, SET, DEL), quotas, idempotency budgets and failed-login counts (GET, TTL, INCR, INCRBY, EXPIRE),
        # status reads (XRANGE, XINFO, HGETALL), /readyz (SET with expiry), /status (INFO).
        web="-@all $connection +info +evalsha +eval +script|load +script|exists +get +set +del +exists +incr
            +incrby +expire +ttl +xadd +xgroup|create +xlen +xrange +xrevrange +xinfo|stream +xinfo|groups +memory|usage +hget
            +hgetall +hincrby +mget +zrangebyscore +zrevrange +zrange +zscore
            +cluster|slots +cluster|shards +cluster|nodes +readonly +wait"
        worker="+@all -@dangerous +info +bgrewriteaof +cluster|slots +cluster|nodes"
        ;;
    broker)
        # Celery's own key and channel names (queues, bindings, events): not under the prefix.
        keys='resetkeys ~* resetchannels &*'
        web="-@all $connection +info +lpush +rpush +sadd +smembers +publish +llen"
        worker="+@all -@dangerous +info"
        ;;
    *) echo "usage: $0 staging|broker" >&2; exit 2 ;;
esac
# The default user is off: no client can log in as it, and new connections are not logged in.
# It keeps every permission all the same: Redis 7.0 replays the append-only file's transactions
# (every script's writes) as this user after a restart, and drops those it may not run.
echo "user default off resetpass ~* &* +@all"
# shellcheck disable=SC2086  # the rules are words
echo "user messy-web on resetpass #$(sha "$REDIS_WEB_PASSWORD")" $keys $web
# shellcheck disable=SC2086
echo "user messy-worker on resetpass #$(sha "$REDIS_WORKER_PASSWORD")" $keys $worker
echo "user messy-admin on resetpass #$(sha "$REDIS_ADMIN_PASSWORD") ~* &* +@all"
