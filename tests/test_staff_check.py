"""The front door's staff check (auth_request for Flower at /flower/): 204 for a staff session,
401 without a login, 403 for anyone else, whatever the method of the guarded request."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

URL = "/admin/staff-check/"


def test_without_a_login_it_answers_401():
    assert Client().get(URL).status_code == 401


def test_a_user_who_is_not_staff_gets_403():
    client = Client()
    client.force_login(get_user_model().objects.create_user("viewer", password="x"))
    assert client.get(URL).status_code == 403


def test_an_inactive_staff_user_counts_as_logged_out():
    client = Client()
    client.force_login(get_user_model().objects.create_user("gone", password="x", is_staff=True, is_active=False))
    assert client.get(URL).status_code == 401


def test_a_staff_session_gets_204_for_any_method_without_a_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.create_user("op", password="x", is_staff=True))
    for method in (client.get, client.post, client.head):
        response = method(URL)
        assert response.status_code == 204
        assert response["Cache-Control"] == "no-store"
