"""The production example of local.sh.template makes `manage.py check --deploy` pass with no
warning, and the defaults stay usable over plain http:// locally."""

import re
import secrets
import subprocess
import sys
import time
from urllib.parse import urlsplit

import redis

from tests.harness import ROOT, RunConfig, free_port, port_open, redis_user_url

PRODUCTION_BLOCK = "# --- Production example"


def production_example() -> dict[str, str]:
    """The `# NAME=value` lines of the template's production example, as documented."""
    template = (ROOT / "local.sh.template").read_text()
    assert PRODUCTION_BLOCK in template, "local.sh.template has no production example"
    block = template.split(PRODUCTION_BLOCK, 1)[1].split("\n# ---", 1)[0]
    return dict(re.findall(r"^# ([A-Z0-9_]+)=(\S*)", block, re.MULTILINE))


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def settings_env(**extra: str) -> dict[str, str]:
    """The production settings module with nothing of the parent's configuration (nor local.sh)."""
    env = RunConfig(database="messy_u_deploy", redis_db=0, key_prefix="deploy", bucket="deploy").env(**extra)
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(64)
    return env


def test_the_production_example_passes_check_deploy_with_no_warning() -> None:
    example = production_example()
    assert {"DJANGO_SECURE_PROXY_SSL_HEADER", "DJANGO_SECURE_SSL_REDIRECT", "DJANGO_SECURE_HSTS_SECONDS"} <= set(
        example
    )

    result = manage(settings_env(**example), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_the_defaults_fail_check_deploy_on_the_https_settings() -> None:
    """The test above proves the block, not a check that passes whatever is set."""
    result = manage(settings_env(), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stdout + result.stderr


def test_the_defaults_suit_a_local_run_over_plain_http(settings) -> None:
    # The test settings only override the namespace; these come from project/settings.py.
    assert settings.SECURE_SSL_REDIRECT is False
    assert settings.SECURE_PROXY_SSL_HEADER is None
    assert settings.SESSION_COOKIE_SECURE is False
    assert settings.CSRF_COOKIE_SECURE is False
    assert settings.SECURE_HSTS_SECONDS == 0


def test_with_the_production_example_probes_over_plain_http_are_not_redirected() -> None:
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "print(c.get('/healthz').status_code, c.get('/api/schema/').status_code,"
        " c.get('/api/schema/', headers={'X-Forwarded-Proto': 'https'}).status_code)\n"
    )
    example = production_example()
    env = settings_env(**{**example, "DJANGO_ALLOWED_HOSTS": "testserver"})

    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    # /healthz answers over http; anything else is sent to https, unless the proxy says it is https.
    assert result.stdout.split() == ["200", "301", "200"]


def test_by_default_processes_reach_the_staging_redis_through_the_socket_scripts_redis_sh_opens(tmp_path) -> None:
    """make run's processes stage through a Unix socket: the default REDIS_URL names the socket
    scripts/redis.sh staging opens in its default data folder (var/redis/staging)."""
    env = settings_env()
    del env["REDIS_URL"], env["CELERY_BROKER_URL"]
    shown = manage(
        env, "shell", "-c", "from django.conf import settings; print(settings.REDIS_URL, settings.CELERY_BROKER_URL)"
    )
    staging, broker = (urlsplit(url) for url in shown.stdout.strip().splitlines()[-1].split())
    assert (staging.scheme, staging.path, staging.query) == ("unix", f"{ROOT}/var/redis/staging/redis.sock", "db=0")
    assert (broker.scheme, broker.path) == ("redis+socket", f"{ROOT}/var/redis/broker/redis.sock"), shown.stdout
    assert staging.username == broker.username == "messy-worker", "as the workers' Redis user"

    port = free_port()
    server = subprocess.Popen(
        ["./scripts/redis.sh", "staging", "--save", ""],
        cwd=ROOT,
        env={**settings_env(), "REDIS_URL": "", "REDIS_PORT": str(port), "REDIS_DATA_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "redis.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert redis.Redis.from_url(redis_user_url(f"unix://{tmp_path}/redis.sock?db=0")).ping()
        assert not port_open(port), "no TCP listener unless REDIS_BIND names addresses"
    finally:
        server.terminate()
        server.wait(10)
