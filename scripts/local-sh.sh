#!/usr/bin/env bash
# Create local.sh from local.sh.template on first use, with a fresh random secret key.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f local.sh ]; then
    secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
    sed "s|__GENERATED__|$secret|" local.sh.template > local.sh
    echo "created local.sh (edit it to configure Messy)"
fi
