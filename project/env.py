"""Typed readers for environment variables: the only source of configuration.

Every variable read here is listed, with its default and purpose, in local.sh.template.
"""

import os
from urllib.parse import quote, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"Set the environment variable {name} (see local.sh.template).")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}.") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}.") from exc


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {raw!r}.")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# What local.sh.template holds until scripts/local-sh.sh replaces it with a random key.
_SECRET_PLACEHOLDER = "__GENERATED__"  # noqa: S105 (not a secret: the marker of none)


def env_secret_key(name: str) -> str:
    """A secret that must be set, and not to the template's placeholder: a key everyone can read
    in the repository signs nothing."""
    value = env_str(name, "").strip()
    if not value or value == _SECRET_PLACEHOLDER:
        raise ImproperlyConfigured(
            f"{name} is {'the placeholder ' + _SECRET_PLACEHOLDER if value else 'empty'}: set it to a long random "
            "value (make local.sh writes one; python3 -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    return value


def env_url_with_credentials(url: str, username: str, password: str) -> str:
    """`url` with username and password in it, unless it carries credentials already or the
    password is empty (a server without users)."""
    parts = urlsplit(url)
    if not password or "@" in parts.netloc:
        return url
    where = parts.netloc
    return urlunsplit(parts._replace(netloc=f"{quote(username, safe='')}:{quote(password, safe='')}@{where}"))
