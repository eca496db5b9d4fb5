"""The write endpoints are served twice over: by Django's views and by the lean handler that
project.wsgi dispatches to (messages.lean). Their tests take `write_client`, and so run against
both: Django's test Client, which calls Django's handler directly, and LeanClient, which drives
the real WSGI entry point, project.wsgi.application."""

import pytest
from django.test import Client

from tests.lean_client import LeanClient


@pytest.fixture(params=["django", "lean"])
def write_client(request: pytest.FixtureRequest) -> type[Client]:
    """The client class to write with: Django's test Client, or LeanClient."""
    return Client if request.param == "django" else LeanClient
