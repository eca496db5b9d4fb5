#!/usr/bin/env bash
# The system accounts make run's processes run as (root only; services.sh calls it):
#   messy        web, workers, beat and Flower (the run scripts switch to it: MESSY_USER)
#   messy-front  the front door's nginx workers, in group messy-web
#   messy-web    the group that may connect to the web socket (runserver.sh)
# and what `messy` needs to read: the checkout and the virtualenv, wherever they are (under /root,
# in a mktemp -d folder). Folders it cannot pass through get an ACL entry that lets `messy`
# (only) through them (execute, not list); files it cannot read, one that lets it read.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
user="${MESSY_USER:-messy}"

getent group messy-web >/dev/null || groupadd --system messy-web
for account in "$user" messy-front; do
    if ! id "$account" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$account"
    fi
done
usermod -a -G messy-web messy-front
# The data services' own accounts (scripts/redis.sh, memcached.sh, s3.sh make them too), made
# here first so that `messy` is in their groups before any of make run's processes starts:
# setpriv --init-groups reads the groups once, at the start.
for account in messy-redis messy-memcached messy-s3; do
    if ! id "$account" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$account"
    fi
done
usermod -a -G messy-redis,messy-memcached "$user"

as_user() { runuser -u "$user" -- "$@" 2>/dev/null; }

# Through every folder above $1, and $1 itself.
grant_path() {
    local dir="$1"
    local parents=()
    while [ "$dir" != / ]; do parents=("$dir" "${parents[@]}"); dir="$(dirname "$dir")"; done
    for dir in "${parents[@]}"; do
        as_user test -x "$dir" || setfacl -m "u:$user:x" "$dir"
    done
}

venv="$(readlink -f "$root/.venv" || true)"
grant_path "$root"
if [ -n "$venv" ] && [ -d "$venv" ]; then
    grant_path "$venv"
    # The interpreter the virtualenv was made from (pyenv's lives under /root).
    grant_path "$(dirname "$(dirname "$(readlink -f "$venv/bin/python")")")"
fi
# A checkout made with umask 077: read access to the code, never to local.sh (its secrets reach
# the processes through the environment of the root that starts them).
if ! as_user test -r "$root/manage.py"; then
    setfacl -R -m "u:$user:rX" "$root"
    setfacl -x "u:$user" "$root/local.sh" 2>/dev/null || true
fi
if [ -n "$venv" ] && [ -d "$venv" ] && ! as_user test -x "$venv/bin/python"; then
    setfacl -R -m "u:$user:rX" "$venv"
fi
as_user test -r "$root/manage.py" || { echo "service-users: $user cannot read $root" >&2; exit 1; }

# The data services keep their folders under var/ in the checkout (scripts/redis.sh, s3.sh):
# their accounts pass through the folders above it too (execute only: they list nothing).
messy_user="$user"
mkdir -p "$root/var"
for user in messy-redis messy-s3; do
    grant_path "$root/var"
done
user="$messy_user"
