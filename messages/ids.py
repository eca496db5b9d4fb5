"""Message ids: UUIDv7 (RFC 9562), 48 bits of Unix milliseconds, then 74 bits of entropy.

Time-ordered ids keep inserts at the right edge of the primary-key index, and an id minted
before any database write makes a second insert of the same message a no-op.
"""

import functools
import hashlib
import hmac
import os
import time
import uuid

from django.conf import settings

_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def message_id_from(unix_ms: int, entropy: bytes) -> str:
    """The UUIDv7 of this time and (10 bytes of) entropy, in canonical text form, without
    building a UUID object (the write path mints one per message)."""
    rand = int.from_bytes(entropy[:10], "big")
    value = (unix_ms & _MS_MASK) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & _RAND_B_MASK)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def message_id_text() -> str:
    """A new, random message id, minted now."""
    return message_id_from(time.time_ns() // 1_000_000, os.urandom(10))


def message_id_ms(message_id: uuid.UUID) -> int:
    """The Unix millisecond a UUIDv7 was minted at."""
    return message_id.int >> 80


def message_id_new() -> uuid.UUID:
    return uuid.UUID(message_id_text())


@functools.cache
def _client_id_secret() -> bytes:
    return hashlib.sha256(b"messy.client-message-id:" + settings.SECRET_KEY.encode()).digest()


def client_message_id(key_digest: str, client_id: uuid.UUID) -> str:
    """The id Messy stores a message under when the client gave it its own id: an HMAC (keyed
    by a secret derived from SECRET_KEY) of the client's scope and its id. The same client
    sending the same id again gets the same stored id (stored once, with no state kept);
    another key gets an unrelated one. A UUIDv7 client id keeps its millisecond; any other
    gives a UUIDv8. Rotating SECRET_KEY changes every derived id. docs/staging.md ("Accept").
    """
    mac = hmac.new(_client_id_secret(), key_digest.encode() + client_id.bytes, hashlib.sha256).digest()
    if client_id.version == 7:
        return message_id_from(message_id_ms(client_id), mac)
    value = int.from_bytes(mac[:16], "big") & ~(0xF << 76) & ~(0b11 << 62) | 0x8 << 76 | 0b10 << 62
    return str(uuid.UUID(int=value))
