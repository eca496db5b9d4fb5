"""UUIDv7 message ids (RFC 9562): 48 bits of Unix milliseconds, then random bits. Minted by the
client before the first attempt, so every retry of a message carries the same id and the server
stores it once."""

import os
import time

_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def uuid7() -> str:
    """A new UUIDv7, in canonical text form (formatted directly: a uuid.UUID object costs more
    than the rest, once per message)."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (time.time_ns() // 1_000_000 & _MS_MASK) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    h = f"{value | (rand & _RAND_B_MASK):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
