# Sourced by the run scripts: project root, local.sh, and the virtualenv's tools on PATH.
MESSY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$MESSY_ROOT"
# MESSY_NO_LOCAL_SH=1 ignores local.sh (the system tests start processes with their own settings).
if [ -f "$MESSY_ROOT/local.sh" ] && [ "${MESSY_NO_LOCAL_SH:-0}" != 1 ]; then
    # shellcheck disable=SC1091
    . "$MESSY_ROOT/local.sh"
fi
if [ -x "$MESSY_ROOT/.venv/bin/python" ]; then
    export PATH="$MESSY_ROOT/.venv/bin:$PATH"
fi
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-project.settings}"
export PYTHONUNBUFFERED=1

# A path from the settings, a relative one taken from the project's root.
messy_path() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$MESSY_ROOT/$1" ;; esac; }

# The Unix socket runserver.sh listens on and the front door on this host connects to
# (MESSY_SOCKET, default var/run/web.sock), or "off".
web_socket() {
    if [ "${MESSY_SOCKET:-}" = off ]; then echo off; else messy_path "${MESSY_SOCKET:-var/run/web.sock}"; fi
}
