"""UUIDv7 message ids (RFC 9562): 48 bits of Unix milliseconds, then random bits. Minted by the
client before the first attempt, so every retry of a message carries the same id and the server
stores it once."""

import os
import time
import uuid


def uuid7() -> str:
    """A new UUIDv7, in canonical text form."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))
