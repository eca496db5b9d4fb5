#!/usr/bin/env bash
# The front door: nginx (Debian's package) in front of runserver.sh, in the foreground.
# Renders deploy/nginx.conf.template with the settings below into FRONT_RUN_DIR and runs it.
#   FRONT_BIND        where clients connect (default 127.0.0.1:8000)
#   FRONT_UPSTREAMS   comma-separated web servers, host:port or unix:/path (default: the Unix
#                     socket of runserver.sh on this host, MESSY_SOCKET)
#   FLOWER_PORT       Flower on this host (scripts/flower.sh), served to staff at /flower/
#   FRONT_TRUSTED_LBS comma-separated addresses or CIDRs of the load balancers in front of this
#                     one (default none): the client's address is taken from their
#                     FRONT_REAL_IP_HEADER (default X-Forwarded-For), and their
#                     X-Forwarded-Proto is passed on
#   FRONT_TLS_CERT, FRONT_TLS_KEY  PEM files: terminate TLS here (FRONT_BIND then speaks HTTPS)
#   FRONT_CONN_PER_IP open requests per client address (an IPv6 /64), default 512
#   FRONT_ERROR_LOG_LEVEL nginx's error log level, default crit: lower levels log request lines,
#                     query strings (messages, job page tokens) included
#   MESSY_FRONT_SECRET sent to the web tier with every request (project.http.client_ip)
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
log_format=messy_json
[ "${LOG_FORMAT:-json}" = text ] && log_format=messy
[ "$access_log" = off ] && access_log_directive="off" || access_log_directive="$access_log $log_format"

# Room for multipart boundaries around an import file of the largest allowed size.
import_max=$(( ${MESSY_IMPORT_MAX_BYTES:-104857600} + 65536 ))
# Passed through the environment, not into the program's text: values with quotes stay values.
export FRONT_TRUSTED_LBS="${FRONT_TRUSTED_LBS:-}" FRONT_REAL_IP_HEADER="${FRONT_REAL_IP_HEADER:-X-Forwarded-For}"
export FRONT_TLS_CERT="${FRONT_TLS_CERT:-}" FRONT_TLS_KEY="${FRONT_TLS_KEY:-}" MESSY_FRONT_SECRET="${MESSY_FRONT_SECRET:-}"
saved_umask="$(umask)"
umask 077  # the rendered configuration holds MESSY_FRONT_SECRET
python3 - "$MESSY_ROOT/deploy/nginx.conf.template" "$run_dir/nginx.conf" <<PY
import os
import re
import sys

lbs = [lb.strip() for lb in os.environ["FRONT_TRUSTED_LBS"].split(",") if lb.strip()]
for lb in lbs:
    assert re.fullmatch(r"[0-9A-Fa-f.:]+(/[0-9]+)?", lb), f"FRONT_TRUSTED_LBS: {lb!r} is not an address or CIDR"
real_ip = []
if lbs:
    header = os.environ["FRONT_REAL_IP_HEADER"]
    assert re.fullmatch(r"[A-Za-z0-9-]+", header), f"FRONT_REAL_IP_HEADER: {header!r}"
    real_ip = [*(f"set_real_ip_from {lb};" for lb in lbs), f"real_ip_header {header};", "real_ip_recursive on;"]
secret = os.environ["MESSY_FRONT_SECRET"]
assert re.fullmatch(r"[A-Za-z0-9_.~+/=-]*", secret), "MESSY_FRONT_SECRET: letters, digits and _.~+/=- only"
headers = [
    "proxy_set_header Host \$http_host;",
    "proxy_set_header X-Forwarded-For \$remote_addr;",
    "proxy_set_header X-Forwarded-Proto \$messy_forwarded_proto;",
    "proxy_set_header X-Request-ID \$messy_request_id;",
    # Set even when empty: an empty value removes a client's own header of that name.
    f'proxy_set_header X-Messy-Front-Secret "{secret}";',
]
tls = []
listen = "${FRONT_BIND:-127.0.0.1:8000}"
if os.environ["FRONT_TLS_CERT"]:
    listen += " ssl"
    tls = [
        f"ssl_certificate {os.environ['FRONT_TLS_CERT']};",
        f"ssl_certificate_key {os.environ['FRONT_TLS_KEY']};",
        "ssl_protocols TLSv1.2 TLSv1.3;",
        "ssl_session_cache shared:messy_tls:10m;",
    ]
values = {
    "ERROR_LOG_LEVEL": "${FRONT_ERROR_LOG_LEVEL:-crit}",
    "CONN_PER_IP": "${FRONT_CONN_PER_IP:-512}",
    "WORKERS": "${FRONT_WORKERS:-auto}",
    "RUN_DIR": "$run_dir",
    "ERROR_LOG": "${FRONT_ERROR_LOG:-/dev/stderr}",
    "USER": "$user_line",
    "ACCESS_LOG": "$access_log_directive",
    "LISTEN": listen,
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
# Placeholders on a line of their own take a list of lines, each indented as the placeholder is.
blocks = {"REAL_IP": real_ip, "LB_ADDRESSES": [f"{lb} 1;" for lb in lbs], "PROXY_HEADERS": headers, "TLS": tls}
text = open(sys.argv[1]).read()
for name, lines in blocks.items():
    text = re.sub(f"^( *)@@{name}@@\n", lambda m: "".join(m[1] + line + "\n" for line in lines), text, flags=re.M)
for name, value in values.items():
    text = text.replace(f"@@{name}@@", value)
assert "@@" not in text, "unrendered placeholder in the nginx template"
open(sys.argv[2], "w").write(text)
PY
umask "$saved_umask"
exec nginx -p "$run_dir" -c "$run_dir/nginx.conf" -g 'daemon off;'
