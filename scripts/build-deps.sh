#!/usr/bin/env bash
# What make install needs to build psycopg2 from its source (requirements.lock pins the sdist):
# libpq's headers and pg_config (libpq-dev), a C compiler and Python's headers, installed through
# apt when missing. psycopg2 then links the system's libpq and libssl, which OS updates patch.
set -euo pipefail

include="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
missing=()
command -v pg_config >/dev/null || missing+=(libpq-dev)
command -v gcc >/dev/null || missing+=(gcc)
[ -f "$include/Python.h" ] || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "build-deps: installing ${missing[*]} (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
