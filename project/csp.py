"""The Content-Security-Policy of the HTML pages: the dashboard, the job page, the admin and
the API docs.

Built once per process (not per response, as django-csp does) and set on text/html responses
only, so the write endpoints pay one Content-Type lookup. The pages carry no inline script or
style, so no nonce is needed. Documented in docs/operations.md ("Notes from the code").
"""

import functools
import hashlib
from base64 import b64encode
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

HEADER = "Content-Security-Policy"

# Inline scripts of installed apps' templates that we serve unchanged, allowed by their hash
# (tests/test_csp.py fails, naming the new hash, when an upgrade changes one):
# django_celery_beat's periodic task form (admin/djcelery/change_periodictask_form.html),
# which shows a readable translation of the chosen crontab.
INLINE_SCRIPTS = ("sha256-QE3U2xYF7B4J2ro1/9oxiKhaWCGW39gB7ocQ/xlD0bE=",)


def script_hash(source: str) -> str:
    """The CSP source expression allowing an inline script of exactly this text."""
    return "sha256-" + b64encode(hashlib.sha256(source.encode()).digest()).decode()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def s3_origins() -> list[str]:
    """Where the dashboard's script fetches the stats blob after following /stat/get/: the
    origin of the presigned URLs (path-style, see project/storage.py). Without an endpoint,
    AWS: the regional path-style host, the virtual-hosted one, and for us-east-1 the global
    host boto3 signs for there."""
    endpoint = settings.S3_PUBLIC_ENDPOINT_URL or settings.S3_ENDPOINT_URL
    if endpoint:
        return [origin(endpoint)]
    region, bucket = settings.S3_REGION, settings.S3_BUCKET
    origins = [f"https://s3.{region}.amazonaws.com", f"https://{bucket}.s3.{region}.amazonaws.com"]
    if region == "us-east-1":
        origins.append("https://s3.amazonaws.com")
    return origins


@functools.cache
def policy() -> str:
    """The header's value, built once per process (and again when a test changes a setting)."""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *(f"'{digest}'" for digest in INLINE_SCRIPTS)],
        # No 'unsafe-inline' for styles either: Swagger UI and the admin's scripts set styles
        # through the DOM (element.style), which a policy does not govern, and no page serves
        # an inline <style> or style attribute (an admin without actions would: the change
        # list's <style>; tests/test_csp.py checks every page).
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", *s3_origins()],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "object-src": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


@receiver(setting_changed)
def _policy_forget(setting: str, **kwargs: Any) -> None:
    if setting.startswith("S3_"):
        policy.cache_clear()


class ContentSecurityPolicyMiddleware:
    """Sets the policy on every text/html response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and HEADER not in response:
            response[HEADER] = policy()
        return response
