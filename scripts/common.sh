# Sourced by the run scripts: project root, local.sh, and the virtualenv's tools on PATH.
MESSY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
messy_script="$(readlink -f "$0")"  # before the cd: run_as_service_user starts it again
cd "$MESSY_ROOT"
# MESSY_NO_LOCAL_SH=1 ignores local.sh (the system tests start processes with their own settings).
# local.sh holds plain KEY=value lines (systemd's EnvironmentFile reads it too): set -a exports them.
if [ -f "$MESSY_ROOT/local.sh" ] && [ "${MESSY_NO_LOCAL_SH:-0}" != 1 ]; then
    set -a
    # shellcheck disable=SC1091
    . "$MESSY_ROOT/local.sh"
    set +a
fi
if [ -x "$MESSY_ROOT/.venv/bin/python" ]; then
    export PATH="$MESSY_ROOT/.venv/bin:$PATH"
fi
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-project.settings}"
export PYTHONUNBUFFERED=1

# A path from the settings, a relative one taken from the project's root.
messy_path() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$MESSY_ROOT/$1" ;; esac; }

# Whether user nobody can reach into a folder: memcached and nginx's workers, started by root,
# run as nobody.
nobody_can_enter() { [ "$(id -u)" != 0 ] || runuser -u nobody -- test -x "$1" 2>/dev/null; }

# MESSY_RUN_DIR: this host's sockets (web, memcached) and the front door's files. var/run in
# the checkout, unless root runs a checkout that nobody cannot enter (one under /root, or in a
# mktemp -d folder): then a folder of its own under /run, which memcached and nginx's workers
# reach. The settings read it (the default MEMCACHED_SERVERS).
if [ -z "${MESSY_RUN_DIR:-}" ]; then
    MESSY_RUN_DIR="$MESSY_ROOT/var/run"
    if ! nobody_can_enter "$MESSY_ROOT"; then
        MESSY_RUN_DIR="/run/messy/$(printf '%s' "$MESSY_ROOT" | sha256sum | cut -c1-12)"
        mkdir -p -m 0755 /run/messy "$MESSY_RUN_DIR"
    fi
fi
MESSY_RUN_DIR="$(messy_path "$MESSY_RUN_DIR")"
export MESSY_RUN_DIR

# The Unix socket runserver.sh listens on and the front door on this host connects to
# (MESSY_SOCKET, default $MESSY_RUN_DIR/web/web.sock), or "off". Its folder is the web's alone.
web_socket() {
    if [ "${MESSY_SOCKET:-}" = off ]; then echo off; else messy_path "${MESSY_SOCKET:-$MESSY_RUN_DIR/web/web.sock}"; fi
}

# MESSY_USER (make run: messy, scripts/service-users.sh): a run script that root starts goes on
# as this account, which can read the code and write nothing of it. local.sh was read already
# (it is root's, 0600): its settings go on in the environment.
#   run_as_service_user "$@"   (service_group=G first: that primary group instead of the user's)
run_as_service_user() {
    [ -n "${MESSY_USER:-}" ] && [ "$(id -u)" = 0 ] || return 0
    export MESSY_NO_LOCAL_SH=1 HOME=/nonexistent
    exec setpriv --reuid="$MESSY_USER" --regid="${service_group:-$MESSY_USER}" --init-groups --inh-caps=-all \
        -- "$messy_script" "$@"
}

# A system user of its own for a data service (Redis, the local S3), made on first use by root,
# with a group of the same name. Messy's processes, when they run as the user messy, join it:
# the service's socket is group-shared.
service_user() {
    if ! id -u "$1" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1"
    fi
    if id -u messy >/dev/null 2>&1 && ! id -nG messy | tr ' ' '\n' | grep -qx "$1"; then
        usermod -a -G "$1" messy
    fi
}

# The command that runs the rest of a command line as that user: exec'd in place (no parent
# process left behind to relay signals, as runuser would be), without root's capabilities.
as_service_user() { printf '%s\n' setpriv "--reuid=$1" "--regid=$1" --init-groups --inh-caps=-all --; }

# Hand a server's data folder to its service user (service_user), mode $3; stop with a message
# naming the setting $4 when a folder above it is closed to that user.
service_folder() {
    service_user "$1"
    chown -R "$1:$1" "$2"
    chmod "$3" "$2"
    if ! runuser -u "$1" -- test -w "$2"; then
        echo "$0: $1 cannot reach $2 (a folder above it is closed to it): set $4" >&2
        exit 2
    fi
}
