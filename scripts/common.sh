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
