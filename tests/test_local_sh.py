"""local.sh: the template reads the same in a shell (set -a), systemd (EnvironmentFile=) and a
container runtime (--env-file); scripts/local-sh.sh writes it 0600 with fresh secrets; a
placeholder or empty secret key stops the start (docs/data-tier.md)."""

import os
import re
import shutil
import stat
import subprocess

from tests.harness import ROOT
from tests.test_deploy_settings import manage, settings_env

TEMPLATE = ROOT / "local.sh.template"
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# A value that every reader takes literally: no quotes, escapes, expansions, globs or spaces.
PLAIN_VALUE = re.compile(r"^[^\s\"'`$\\;&|<>(){}*?\[\]#~]*$")


def systemd_environment_file(text: str) -> dict[str, str]:
    """An EnvironmentFile= as systemd.exec(5) reads it: lines starting with # or ; are
    comments, blank lines are skipped, each other line is KEY=VALUE, whitespace around the
    value dropped, quotes removed (none in our values: PLAIN_VALUE), nothing expanded."""
    variables = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, _, value = line.partition("=")
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()), f"systemd would ignore: {raw!r}"
        variables[name.strip()] = value.strip()
    return variables


def container_env_file(text: str) -> dict[str, str]:
    """docker/podman --env-file: # lines are comments, each other line VAR=VAL taken verbatim."""
    return dict(line.split("=", 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def shell_set_a(path: str) -> dict[str, str]:
    """What scripts/common.sh exports from the file (set -a around sourcing it)."""
    script = f"env -i bash -c 'set -euo pipefail; set -a; . \"{path}\"; set +a; env -0'"
    output = subprocess.run(script, shell=True, capture_output=True, check=True).stdout.decode()
    return dict(item.split("=", 1) for item in output.split("\0") if item)


def every_default_uncommented() -> str:
    """The template with each documented default ("# KEY=value") turned into a setting, and
    each __GENERATED__ into a secret: what a fully edited local.sh may look like."""
    lines = []
    for line in TEMPLATE.read_text().splitlines():
        if re.match(r"^# [A-Z][A-Z0-9_]*=", line):
            line = line[2:]
        lines.append(line.replace("__GENERATED__", "s3cr3t-Value_1"))
    return "\n".join(lines) + "\n"


def test_the_template_is_plain_key_value_lines() -> None:
    for number, line in enumerate(TEMPLATE.read_text().splitlines(), 1):
        assert not line.startswith(("export ", "# export ")), f"line {number}: {line}"
        setting = line[2:] if re.match(r"^# [A-Z][A-Z0-9_]*=", line) else line
        if not setting or setting.startswith("#"):
            continue
        match = ASSIGNMENT.match(setting)
        assert match, f"line {number} is neither a comment nor KEY=value: {line}"
        assert PLAIN_VALUE.match(match.group(2)), f"line {number}: a value every reader takes literally: {line}"


def test_a_shell_systemd_and_a_container_runtime_read_the_same_settings(tmp_path) -> None:
    text = every_default_uncommented()
    path = tmp_path / "local.sh"
    path.write_text(text)

    systemd = systemd_environment_file(text)
    shell = shell_set_a(str(path))

    assert "DJANGO_SECRET_KEY" in systemd and "REDIS_WEB_PASSWORD" in systemd
    assert systemd == container_env_file(text)
    assert {name: shell.get(name) for name in systemd} == systemd


def test_the_template_as_shipped_sets_only_the_generated_secrets_and_the_local_s3() -> None:
    active = systemd_environment_file(TEMPLATE.read_text())
    assert {name for name, value in active.items() if value == "__GENERATED__"} == {
        "DJANGO_SECRET_KEY",
        "MESSY_FRONT_SECRET",
        "REDIS_WEB_PASSWORD",
        "REDIS_WORKER_PASSWORD",
        "REDIS_ADMIN_PASSWORD",
        "S3_SECRET_ACCESS_KEY",
    }


def local_sh_made(tmp_path, existing: str | None = None) -> tuple[str, int]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "local-sh.sh", tmp_path / "scripts")
    shutil.copy(TEMPLATE, tmp_path)
    if existing is not None:
        (tmp_path / "local.sh").write_text(existing)
        os.chmod(tmp_path / "local.sh", 0o644)
    subprocess.run([str(tmp_path / "scripts" / "local-sh.sh")], check=True, capture_output=True)
    local = tmp_path / "local.sh"
    return local.read_text(), stat.S_IMODE(local.stat().st_mode)


def test_make_writes_local_sh_0600_with_a_secret_of_its_own_for_each(tmp_path) -> None:
    text, mode = local_sh_made(tmp_path)

    assert mode == 0o600
    assert "__GENERATED__" not in text
    secrets = [
        value for name, value in systemd_environment_file(text).items() if name.endswith(("KEY", "PASSWORD", "SECRET"))
    ]
    assert len(secrets) == 6 and len(set(secrets)) == 6 and all(len(secret) >= 40 for secret in secrets)


def test_an_older_local_sh_gets_the_redis_passwords_it_lacks_and_mode_0600(tmp_path) -> None:
    text, mode = local_sh_made(tmp_path, existing='export DJANGO_SECRET_KEY="kept"\n')

    assert mode == 0o600
    assert text.startswith('export DJANGO_SECRET_KEY="kept"\n')
    added = systemd_environment_file(text.split("\n", 1)[1])
    assert set(added) == {
        "MESSY_FRONT_SECRET",
        "REDIS_WEB_PASSWORD",
        "REDIS_WORKER_PASSWORD",
        "REDIS_ADMIN_PASSWORD",
        "S3_SECRET_ACCESS_KEY",
    }


def test_it_refuses_to_start_with_the_placeholder_or_an_empty_secret_key() -> None:
    for key in ("__GENERATED__", "", "  "):
        env = settings_env()
        env["DJANGO_SECRET_KEY"] = key
        result = manage(env, "check")
        assert result.returncode != 0
        assert "DJANGO_SECRET_KEY is" in result.stderr and "make local.sh" in result.stderr, result.stderr


def test_a_real_secret_key_starts() -> None:
    assert manage(settings_env(), "check").returncode == 0
