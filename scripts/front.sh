#!/usr/bin/env bash
# The front door: nginx (Debian's package) in front of runserver.sh, in the foreground.
# Renders deploy/nginx.conf.template with the settings below into FRONT_RUN_DIR and runs it.
#   FRONT_BIND        where clients connect (default 127.0.0.1:8000)
#   FRONT_UPSTREAMS   comma-separated web servers, host:port or unix:/path (default: the Unix
#                     socket of runserver.sh on this host, MESSY_SOCKET)
#   FLOWER_PORT       Flower on this host (scripts/flower.sh), served to staff at /flower/
# Body limits follow the application's own settings, so the proxy never refuses what the
# application would take, nor passes on what it would refuse anyway.
set -euo pipefail
. "$(dirname "$0")/common.sh"

run_dir="$(messy_path "${FRONT_RUN_DIR:-$MESSY_RUN_DIR/nginx}")"
mkdir -p "$run_dir"
static_root="$MESSY_ROOT/staticfiles"
if ! nobody_can_enter "$static_root"; then
    # nginx's workers (nobody) serve the static files: a copy where they can read it.
    rm -rf "$run_dir/static"
    cp -R "$static_root" "$run_dir/static"
    chmod -R a+rX "$run_dir/static"
    static_root="$run_dir/static"
fi
user_line=""
if [ "$(id -u)" = 0 ]; then
    # Workers never run as root; the master creates their temporary folders for them. They run
    # as messy-front in group messy-web, the only group that may connect to the web socket
    # (scripts/service-users.sh); nobody else on this host reaches the web tier.
    user_line="user nobody nogroup;"
    if id messy-front >/dev/null 2>&1 && getent group messy-web >/dev/null; then
        user_line="user messy-front messy-web;"
    fi
fi
upstream_servers=""
socket="$(web_socket)"
default_upstream="unix:$socket"
[ "$socket" = off ] && default_upstream="${MESSY_BIND:-127.0.0.1:8001}"
IFS=',' read -ra upstreams <<< "${FRONT_UPSTREAMS:-$default_upstream}"
for upstream in "${upstreams[@]}"; do
    upstream_servers+="        server ${upstream} max_fails=1 fail_timeout=5s;"$'\n'
done
access_log="${FRONT_ACCESS_LOG:-/dev/stdout}"
[ "$access_log" = off ] && access_log_directive="off" || access_log_directive="$access_log messy"

# Room for multipart boundaries around an import file of the largest allowed size.
import_max=$(( ${MESSY_IMPORT_MAX_BYTES:-104857600} + 65536 ))
python3 - "$MESSY_ROOT/deploy/nginx.conf.template" "$run_dir/nginx.conf" <<PY
import sys
values = {
    "WORKERS": "${FRONT_WORKERS:-auto}",
    "RUN_DIR": "$run_dir",
    "ERROR_LOG": "${FRONT_ERROR_LOG:-/dev/stderr}",
    "USER": "$user_line",
    "ACCESS_LOG": "$access_log_directive",
    "LISTEN": "${FRONT_BIND:-127.0.0.1:8000}",
    "UPSTREAM_SERVERS": """$upstream_servers""".rstrip("\n"),
    "UPSTREAM_TIMEOUT": "${WEB_TIMEOUT:-30}",
    "STATIC_ROOT": "$static_root",
    "WRITE_MAX_BYTES": "${MESSY_WRITE_MAX_BYTES:-32768}",
    "BATCH_MAX_BYTES": "${MESSY_BATCH_MAX_BYTES:-4194304}",
    "IMPORT_MAX_BYTES": "$import_max",
    "RATE_PER_IP": "${FRONT_RATE_PER_IP:-2000}",
    "FLOWER_PORT": "${FLOWER_PORT:-5555}",
    "BURST_PER_IP": "${FRONT_BURST_PER_IP:-4000}",
}
text = open(sys.argv[1]).read()
for name, value in values.items():
    text = text.replace(f"@@{name}@@", value)
assert "@@" not in text, "unrendered placeholder in the nginx template"
open(sys.argv[2], "w").write(text)
PY
exec nginx -p "$run_dir" -c "$run_dir/nginx.conf" -g 'daemon off;'
