"""Who is writing: the write API key (only ever as a digest outside this module), whether it is
valid, and the quota that applies to it (or, when keys are off, to the client's address).

Everything here runs on every write, so what depends only on settings is built once per
process (and rebuilt when a test overrides the setting), and a key's digest is cached.
"""

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from project.conf import cached_settings
from project.http import bearer_token, client_ip, client_network

# Hex digits of a key's SHA-256 that name it in Redis keys and in MESSY_QUOTA_OVERRIDES
# (64 bits: enough to tell keys apart, and the key itself never appears in Redis).
KEY_DIGEST_CHARS = 16


def api_key_from(meta: Mapping[str, Any]) -> str:
    """The write API key the client sent (X-API-Key or Authorization: Bearer), "" if none.
    `meta`: the WSGI environ (a Django request's META)."""
    return bearer_token(meta) or meta.get("HTTP_X_API_KEY", "")


@functools.lru_cache(maxsize=1024)
def _sha256(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_digest(api_key: str) -> str:
    """The name of a write API key wherever it is stored or configured: the first
    KEY_DIGEST_CHARS hex digits of its SHA-256. Cached per process: the hot path hashes each
    distinct key once."""
    return _sha256(api_key)[:KEY_DIGEST_CHARS]


@dataclass(frozen=True, slots=True)
class Quota:
    rate: float  # tokens (messages) per second; 0: no quota
    burst: int  # the bucket's size: the most messages accepted at once after an idle spell


class _Config:
    """What the settings say, parsed once: the full digests of the valid keys, the default
    quota and the overrides by key digest (or client address)."""

    def __init__(self) -> None:
        self.valid_digests = frozenset(_sha256(k) for k in settings.MESSY_WRITE_API_KEYS)
        self.default = Quota(float(settings.MESSY_QUOTA_RATE), int(settings.MESSY_QUOTA_BURST))
        self.overrides = _overrides_parse(settings.MESSY_QUOTA_OVERRIDES)


def _overrides_parse(entries: list[str]) -> dict[str, Quota]:
    """MESSY_QUOTA_OVERRIDES entries, "<who>=<rate>:<burst>", where <who> is a write API key's
    digest (api_key_digest), the key itself, or a client address (when keys are off)."""
    overrides = {}
    for entry in entries:
        who, _, limits = entry.rpartition("=")
        rate, _, burst = limits.partition(":")
        try:
            quota = Quota(float(rate), int(burst))
        except ValueError:
            raise ValueError(f"MESSY_QUOTA_OVERRIDES: {entry!r} is not <who>=<rate>:<burst>") from None
        who = who.strip()
        if who in settings.MESSY_WRITE_API_KEYS:
            who = api_key_digest(who)
        overrides[who] = quota
    return overrides


_config: _Config | None = None


@receiver(setting_changed)
def _config_forget(setting: str, **_: Any) -> None:
    global _config
    if setting.startswith(("MESSY_QUOTA_", "MESSY_WRITE_API_KEYS")):
        _config = None


def _settings() -> _Config:
    global _config
    if _config is None:
        _config = _Config()
    return _config


def api_key_valid(api_key: str) -> bool:
    """Whether the key is one of MESSY_WRITE_API_KEYS. Compares full SHA-256 digests by a set
    lookup, so the time taken says nothing about how much of a valid key was guessed."""
    return _sha256(api_key) in _settings().valid_digests


def quota_subject(meta: Mapping[str, Any], api_key: str) -> tuple[str, Quota]:
    """Who a write is charged to and the quota that applies: the key's digest when write keys
    are required (then `api_key` is a valid one), otherwise the client's address
    (project.http.client_ip: a client cannot choose it), an IPv6 one by its /64, which one
    subscriber holds whole. An override may name the network or the address."""
    config = _settings()
    if cached_settings.MESSY_REQUIRE_WRITE_API_KEY:
        who = api_key_digest(api_key)
        return who, config.overrides.get(who, config.default)
    address = client_ip(meta)
    who = client_network(address)
    return who, config.overrides.get(who) or config.overrides.get(address, config.default)


def client_scope(subject: str, api_key: str) -> str:
    """The namespace of a client's Idempotency-Keys and own message ids, something only it holds:
    with write keys required, its key's digest (`subject`, from quota_subject); otherwise its
    address (`subject`), with the digest of a key it sent, if any (unchecked, so not enough on
    its own). Another client can then neither claim, read nor suppress what this one sends."""
    if cached_settings.MESSY_REQUIRE_WRITE_API_KEY or not api_key:
        return subject
    return f"{subject}/{api_key_digest(api_key)}"
