"""Who may read the operators' endpoints (/status, /metrics): they name the deployment's
components and their state, so they are not public (docs/deployment.md "Operator endpoints").

Allowed: an active staff session (the admin's login); `Authorization: Bearer
<MESSY_OPERATOR_TOKEN>` (a Prometheus scrape); or a request made straight to a web process from
MESSY_OPERATOR_NETWORKS (loopback by default), never one passed on by a front door, which
always adds X-Forwarded-For: through the front door only the first two count.
"""

import functools
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from project.http import ApiError, bearer_token

# A proxy in front names the client in one of these; a request without them came straight in.
_FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")

_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None


@receiver(setting_changed)
def _networks_reset(setting: str, **kwargs: Any) -> None:
    global _networks
    if setting == "MESSY_OPERATOR_NETWORKS":
        _networks = None


def _direct_from_operator_network(meta: Mapping[str, Any]) -> bool:
    global _networks
    if any(meta.get(header) for header in _FORWARDING_HEADERS):
        return False
    if _networks is None:
        _networks = tuple(ipaddress.ip_network(net, strict=False) for net in settings.MESSY_OPERATOR_NETWORKS)
    try:
        # "" on gunicorn's Unix socket: only the front door is meant to connect there.
        address = ipaddress.ip_address(meta.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in _networks)


def operator_allowed(request: HttpRequest) -> bool:
    """Whether the request may read an operator endpoint (raises ApiError 403 for a wrong token)."""
    raw = bearer_token(request.META)
    if raw:
        expected = settings.MESSY_OPERATOR_TOKEN
        if expected and hmac.compare_digest(raw.encode(), expected.encode()):
            return True
        raise ApiError(403, "invalid_token", "That operator token is not valid.")
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    return _direct_from_operator_network(request.META)


def operator_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer 401 in the shared error shape unless operator_allowed()."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not operator_allowed(request):
            raise ApiError(
                401,
                "authentication_required",
                "For operators: send the operator token (Authorization: Bearer) or log in as staff.",
                headers={"WWW-Authenticate": 'Bearer realm="messy-operators"'},
            )
        return view(request, *args, **kwargs)

    return wrapper
