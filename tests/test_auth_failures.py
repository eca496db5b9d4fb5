"""Failed bearer tokens (jobs API) and admin logins are limited per client address
(project.ratelimit); successful attempts do not count."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tasks.auth import api_token_create


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
