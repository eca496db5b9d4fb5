"""Who may read /status and /metrics (project.operators): not the public, whom a front door
passes on; /readyz and /healthz stay public for load balancers."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)  # /metrics and /status read the database

OPERATOR_PATHS = ["/status", "/metrics"]
# What the front door adds to every request it passes on (deploy/nginx.conf.template).
THROUGH_THE_FRONT_DOOR: dict[str, Any] = {"HTTP_X_FORWARDED_FOR": "127.0.0.1", "REMOTE_ADDR": ""}


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_it_refuses_an_anonymous_client_through_the_front_door(path):
    response = Client().get(path, **THROUGH_THE_FRONT_DOOR)

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_required"
    assert "messy_build_info" not in response.content.decode()


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_it_refuses_a_client_straight_from_outside_the_operator_networks(path):
    assert Client(REMOTE_ADDR="203.0.113.9").get(path).status_code == 401


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_a_client_that_claims_a_loopback_address_through_the_front_door_is_refused(path):
    response = Client(REMOTE_ADDR="127.0.0.1").get(path, HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 401


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_the_operator_token_opens_it_and_a_wrong_one_is_403(path, settings):
    settings.MESSY_OPERATOR_TOKEN = "operator-secret-0123456789"
    right = Client().get(path, HTTP_AUTHORIZATION="Bearer operator-secret-0123456789", **THROUGH_THE_FRONT_DOOR)
    wrong = Client().get(path, HTTP_AUTHORIZATION="Bearer guess", **THROUGH_THE_FRONT_DOOR)

    assert right.status_code == 200
    assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_token")


def test_without_an_operator_token_configured_no_bearer_token_opens_it(settings):
    settings.MESSY_OPERATOR_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ", **THROUGH_THE_FRONT_DOOR)
    assert response.status_code == 401


@pytest.mark.parametrize("path", OPERATOR_PATHS)
def test_a_staff_session_opens_it_through_the_front_door(path):
    client = Client()
    client.force_login(get_user_model().objects.create_user("op", password="pw", is_staff=True))
    assert client.get(path, **THROUGH_THE_FRONT_DOOR).status_code == 200


def test_the_operator_networks_are_a_setting(settings):
    settings.MESSY_OPERATOR_NETWORKS = ["10.0.0.0/8"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client().get("/metrics").status_code == 401


@pytest.mark.parametrize("path", ["/readyz", "/healthz"])
def test_readiness_and_liveness_stay_public(path):
    assert Client().get(path, **THROUGH_THE_FRONT_DOOR).status_code in (200, 503)
