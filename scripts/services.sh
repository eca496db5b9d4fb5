#!/usr/bin/env bash
# Make sure the system services Messy talks to are installed and running on this machine:
# memcached and nginx (installed through apt when missing), PostgreSQL (started if stopped),
# and the database. Messy's own Redis servers are not system services: scripts/redis.sh runs
# them with the project's configuration (make run, make test).
# As root it also creates the accounts make run's processes run as (scripts/service-users.sh), and
# the `messy` database role, which owns only its schema (docs/deployment.md "Least privilege").
# Extra Debian packages to install can be named as arguments (the tests need chromium and pgbouncer).
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

missing=()
command -v memcached >/dev/null || missing+=(memcached)
command -v nginx >/dev/null || missing+=(nginx)
command -v setfacl >/dev/null || missing+=(acl)
for package in "$@"; do
    command -v "$package" >/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The tests start PgBouncer themselves, with their own configuration: not the package's service.
    if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
fi

if ! port_open 11211; then
    echo "services: starting memcached on 127.0.0.1:11211"
    memcached -d -u nobody -l 127.0.0.1 -p 11211 -m "${MEMCACHED_MEMORY_MB:-256}" -U 0
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi

for _ in $(seq 50); do
    port_open 11211 && pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.2
done

# The database and the role are made by the server's superuser (trust auth on this host);
# Messy's processes connect as the role (POSTGRES_USER, default messy).
admin=(-h "${POSTGRES_HOST:-127.0.0.1}" -p "${POSTGRES_PORT:-5432}" -U "${POSTGRES_ADMIN_USER:-postgres}")
db="${POSTGRES_DB:-messy}"
if ! psql "${admin[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    echo "services: creating database $db"
    createdb "${admin[@]}" "$db"
fi
"$(dirname "$0")/db-role.sh" "$db" "${admin[@]}"

if [ "$(id -u)" = 0 ]; then
    "$(dirname "$0")/service-users.sh"
fi
