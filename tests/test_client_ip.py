"""project.http.client_ip: X-Forwarded-For is believed only from a trusted proxy, and only the
part that proxy wrote."""

from typing import Any

import pytest
from django.test import RequestFactory

from project.http import client_ip, client_network

FRONT = "127.0.0.1"


def request(remote: str, forwarded: str | None = None) -> dict[str, Any]:
    """The request's WSGI environ (its META)."""
    built = RequestFactory().get("/", REMOTE_ADDR=remote)
    if forwarded is not None:
        built.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return built.META


def test_a_direct_client_is_its_own_address_whatever_it_claims():
    assert client_ip(request("203.0.113.7")) == "203.0.113.7"
    assert client_ip(request("203.0.113.7", "198.51.100.1")) == "203.0.113.7"


def test_behind_the_front_door_the_client_is_the_address_it_forwarded():
    assert client_ip(request(FRONT, "203.0.113.7")) == "203.0.113.7"
    assert client_ip(request("::1", "2001:db8::7")) == "2001:db8::7"


def test_through_the_unix_socket_the_client_is_the_address_the_front_door_forwarded():
    # gunicorn gives a peer on its Unix socket (make run's front door) no address at all.
    assert client_ip(request("", "198.51.100.1, 203.0.113.7")) == "203.0.113.7"


def test_addresses_a_client_put_in_the_header_itself_are_ignored():
    # The client sent "X-Forwarded-For: 198.51.100.1"; a proxy that appends gave us both.
    assert client_ip(request(FRONT, "198.51.100.1, 203.0.113.7")) == "203.0.113.7"
    assert client_ip(request(FRONT, " 198.51.100.1 ,203.0.113.7 ")) == "203.0.113.7"


def test_without_a_forwarded_header_the_proxy_is_the_client():
    assert client_ip(request(FRONT)) == FRONT
    assert client_ip(request(FRONT, "")) == FRONT
    assert client_ip(request(FRONT, " , ")) == FRONT


def test_a_client_on_the_proxys_own_host_is_that_host():
    assert client_ip(request(FRONT, "127.0.0.1")) == "127.0.0.1"


@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        # load balancer 10.0.0.5 -> front door 10.0.0.9 -> app
        ("10.0.0.9", "203.0.113.7, 10.0.0.5", "203.0.113.7"),
        ("10.0.0.9", "198.51.100.1, 203.0.113.7, 10.0.0.5", "203.0.113.7"),
        # the local front door is no longer trusted once the setting names others
        ("127.0.0.1", "203.0.113.7", "127.0.0.1"),
    ],
)
def test_operators_list_their_own_proxies(settings, remote, forwarded, client):
    settings.MESSY_TRUSTED_PROXIES = ["10.0.0.5", "10.0.0.9"]
    assert client_ip(request(remote, forwarded)) == client


def test_the_trusted_set_is_built_once_and_rebuilt_when_the_setting_changes(settings):
    from project import http

    assert client_ip(request(FRONT, "203.0.113.7")) == "203.0.113.7"
    built = http._trusted_proxies
    assert client_ip(request(FRONT, "198.51.100.1")) == "198.51.100.1"
    assert http._trusted_proxies is built
    settings.MESSY_TRUSTED_PROXIES = []
    assert client_ip(request(FRONT, "203.0.113.7")) == FRONT


def test_with_a_front_secret_the_header_is_believed_only_with_it(settings):
    settings.MESSY_TRUSTED_PROXIES = ["10.0.0.9"]
    settings.MESSY_FRONT_SECRET = "front-secret-" + "s" * 40
    spoofed = request("10.0.0.9", "203.0.113.7")
    assert client_ip(spoofed) == "10.0.0.9"
    spoofed["HTTP_X_MESSY_FRONT_SECRET"] = "a guess"
    assert client_ip(spoofed) == "10.0.0.9"
    spoofed["HTTP_X_MESSY_FRONT_SECRET"] = settings.MESSY_FRONT_SECRET
    assert client_ip(spoofed) == "203.0.113.7"
    # Still only from a trusted address: the secret alone names no client.
    elsewhere = request("198.51.100.9", "203.0.113.7")
    elsewhere["HTTP_X_MESSY_FRONT_SECRET"] = settings.MESSY_FRONT_SECRET
    assert client_ip(elsewhere) == "198.51.100.9"


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1%eth0", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
        ("", ""),
    ],
)
def test_per_address_limits_count_an_ipv6_client_by_its_64(address, network):
    assert client_network(address) == network
