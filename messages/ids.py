"""Message ids: UUIDv7 (RFC 9562), 48 bits of Unix milliseconds, then 74 bits of entropy.

Time-ordered ids keep inserts at the right edge of the primary-key index, and an id minted
before any database write makes a second insert of the same message a no-op.
"""

import os
import time
import uuid

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
