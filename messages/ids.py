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
    """The id Messy stores a message under when the client gave it its own id.

    Deduplication without any state: the stored id is an HMAC (keyed by a secret derived from
    SECRET_KEY) of the client's scope (its write API key's digest, or "anon") and its id. The
    same client sending the same id again gets the same stored id, and the second insert is a
    no-op (ON CONFLICT DO NOTHING), however long after; nothing is kept in Redis per message.
    Another key sending that id gets an unrelated stored id, so it can neither overwrite the
    first client's message nor learn its stored id (nor read it through the status read); and
    without the secret nobody can compute a stored id from a client id.

    Time-ordered when the client's id is a UUIDv7 (recommended): the stored id keeps its
    millisecond (so it lands at the index's right edge, and a status read finds it in the stream
    when the client's clock is right). Any other UUID gives a UUIDv8 of 122 HMAC bits.
    Rotating SECRET_KEY changes every derived id: a retry across a rotation is stored twice.
    """
    mac = hmac.new(_client_id_secret(), key_digest.encode() + client_id.bytes, hashlib.sha256).digest()
    if client_id.version == 7:
        return message_id_from(message_id_ms(client_id), mac)
    value = int.from_bytes(mac[:16], "big") & ~(0xF << 76) & ~(0b11 << 62) | 0x8 << 76 | 0b10 << 62
    return str(uuid.UUID(int=value))
