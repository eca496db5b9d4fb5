"""Failed bearer tokens (jobs API) and admin logins are limited per client address
(project.ratelimit); successful attempts do not count."""

import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from project import ratelimit
from tasks.auth import api_token_create

MESSAGE = {"username": "ada", "city": "London", "state": "LDN", "message": "hello"}


@pytest.fixture
def limit(settings):
    settings.MESSY_AUTH_FAILURES_MAX = 3
    settings.MESSY_AUTH_FAILURES_WINDOW_SECONDS = 60


def jobs(token: str, address: str = "203.0.113.5"):
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/tasks/jobs/", headers={"X-Forwarded-For": address})


@pytest.mark.django_db
def test_too_many_wrong_tokens_from_one_address_get_429_even_with_a_right_one(limit):
    _, right = api_token_create("limit-test", ["read"])
    assert [jobs(right).status_code for _ in range(5)] == [200] * 5  # successes do not count
    assert [jobs(f"wrong-{i}").status_code for i in range(3)] == [403, 403, 403]

    refused = jobs("wrong-again")
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_failures"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert jobs(right).status_code == 429
    assert jobs(right, address="203.0.113.6").status_code == 200


@pytest.mark.django_db
def test_too_many_failed_admin_logins_get_a_plain_429(limit):
    get_user_model().objects.create_user("boss", password="right-password", is_staff=True)
    client = Client()

    def login(password: str, address: str = "203.0.113.7"):
        return client.post(
            "/admin/login/", {"username": "boss", "password": password}, headers={"X-Forwarded-For": address}
        )

    assert [login("nope").status_code for _ in range(3)] == [200, 200, 200]
    refused = login("right-password")
    assert refused.status_code == 429
    assert refused["Retry-After"]
    assert refused["Content-Type"].startswith("text/plain")
    assert login("right-password", address="203.0.113.8").status_code == 302


@pytest.mark.django_db
def test_successful_admin_logins_do_not_count(limit):
    get_user_model().objects.create_user("boss", password="right-password", is_staff=True)
    for _ in range(5):
        client = Client()
        assert client.post("/admin/login/", {"username": "boss", "password": "right-password"}).status_code == 302


@pytest.mark.django_db
def test_one_clients_failed_logins_refuse_neither_another_client_nor_another_account(limit):
    """Behind a load balancer every client used to share its address: one guesser locked
    everyone out. Counts are per client network and account."""
    get_user_model().objects.create_user("boss", password="right-password", is_staff=True)
    get_user_model().objects.create_user("clerk", password="clerk-password", is_staff=True)

    def login(username: str, password: str, address: str):
        return Client().post(
            "/admin/login/", {"username": username, "password": password}, headers={"X-Forwarded-For": address}
        )

    assert [login("boss", "nope", "203.0.113.7").status_code for _ in range(3)] == [200] * 3
    assert login("boss", "right-password", "203.0.113.7").status_code == 429
    assert login("boss", "right-password", "203.0.113.8").status_code == 302
    assert login("clerk", "clerk-password", "203.0.113.7").status_code == 302


@pytest.mark.django_db
def test_addresses_of_one_ipv6_64_share_a_count(limit):
    _, right = api_token_create("limit-v6", ["read"])
    for i in range(3):
        assert jobs(f"wrong-{i}", address=f"2001:db8:1:2::{i + 1:x}").status_code == 403
    assert jobs(right, address="2001:db8:1:2:ffff::9").status_code == 429
    assert jobs(right, address="2001:db8:1:3::1").status_code == 200


@pytest.fixture
def write_keys(settings, limit):
    settings.MESSY_REQUIRE_WRITE_API_KEY = True
    settings.MESSY_WRITE_API_KEYS = ["right-write-key-" + "x" * 32]
    ratelimit._write_key_blocked.clear()
    yield settings.MESSY_WRITE_API_KEYS[0]
    ratelimit._write_key_blocked.clear()


def write(api_key: str, address: str):
    return Client(HTTP_X_API_KEY=api_key).post(
        "/message/write/", MESSAGE, content_type="application/json", headers={"X-Forwarded-For": address}
    )


def test_wrong_write_keys_count_toward_the_failure_limit(write_keys):
    assert [write(f"guess-{i}", "203.0.113.9").status_code for i in range(3)] == [403] * 3
    refused = write(write_keys, "203.0.113.9")
    assert (refused.status_code, refused.json()["error"]) == (429, "too_many_failures")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert write(write_keys, "203.0.113.10").status_code == 202


def test_a_missing_write_key_is_not_a_guess(write_keys):
    assert [write("", "203.0.113.11").status_code for _ in range(5)] == [401] * 5
    assert write(write_keys, "203.0.113.11").status_code == 202


def test_a_short_write_key_stops_the_start_up():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": "x" * 50,
        "MESSY_WRITE_API_KEYS": "s3cret," + "k" * 32,
    }
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "at least 32 characters" in started.stderr
    env["MESSY_WRITE_API_KEYS"] = "k" * 32
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 0, started.stderr
