"""GET /: where a newcomer lands (project.views.front)."""

import re

import pytest
from django.test import Client

LINKS = {"dashboard": "/stat/", "api_docs": "/api/docs/", "schema": "/api/schema/", "admin": "/admin/"}


def test_the_front_page_links_the_dashboard_the_api_docs_the_schema_and_the_admin():
    response = Client().get("/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    hrefs = set(re.findall(r'href="([^"]+)"', response.content.decode()))
    assert set(LINKS.values()) <= hrefs
    assert "Accept" in response["Vary"]


def test_a_client_that_asks_for_json_gets_the_links_as_json():
    response = Client().get("/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "messy"
    assert body["links"] == LINKS
    assert "version" not in body  # what runs is for operators, not anonymous visitors


def test_every_front_page_link_answers():
    client = Client()
    for href in LINKS.values():
        assert client.get(href).status_code in (200, 302), href  # the admin redirects to its login


def test_a_plain_curl_gets_the_page_and_a_post_is_refused_in_json():
    assert Client().get("/", HTTP_ACCEPT="*/*")["Content-Type"].startswith("text/html")
    response = Client().post("/")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "accept", ["", "garbage", "*/*;q=abc", ";;;", "text/html;q=0, application/json;q=0", "\x7f/\x00"]
)
def test_an_odd_accept_header_still_gets_an_answer(accept):
    response = Client().get("/", HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] in ("text/html", "application/json")
