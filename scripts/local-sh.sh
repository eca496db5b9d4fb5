#!/usr/bin/env bash
# Create local.sh from local.sh.template on first use, each __GENERATED__ replaced by a random
# secret of its own; on later runs, add the generated settings a newer template has and
# local.sh lacks (the Redis users' passwords). local.sh is kept 0600: it holds the secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077
if [ ! -f local.sh ]; then
    python3 - local.sh.template local.sh <<'PY'
import secrets, sys
lines = open(sys.argv[1]).read().splitlines(keepends=True)
with open(sys.argv[2], "x") as out:
    out.writelines(line.replace("__GENERATED__", secrets.token_urlsafe(48)) for line in lines)
PY
    echo "created local.sh (edit it to configure Messy)"
else
    python3 - local.sh.template local.sh <<'PY'
import re, secrets, sys
template, local = (open(path).read() for path in sys.argv[1:])
have = set(re.findall(r"^\s*(?:export\s+)?([A-Z0-9_]+)=", local, re.MULTILINE))
missing = [name for name in re.findall(r"^([A-Z0-9_]+)=__GENERATED__$", template, re.MULTILINE) if name not in have]
if missing:
    with open(sys.argv[2], "a") as out:
        out.write("\n# Added by scripts/local-sh.sh (secrets a newer local.sh.template has)\n")
        out.writelines(f"{name}={secrets.token_urlsafe(48)}\n" for name in missing)
    print("local.sh: added", ", ".join(missing))
PY
fi
chmod 0600 local.sh
