"""Idempotency-Key records: where they are kept and what they hold."""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from messages.staging.shards import Shard
from project.redis import key


def idempotency_key(shard: Shard, scope: str, client_key: str) -> str:
    """The record of an Idempotency-Key, scoped to the client (messages.clients.client_scope: its
    write API key's digest, never the key itself, or its address); in the shard of the request
    it guards."""
    return key(shard.tag, "idem", scope, client_key)


# An idempotency record holds only what a replay needs: a format byte, the request's
# fingerprint (a SHA-256 digest) and the 16 bytes of each accepted id, in order; the answer
# itself is rebuilt from them. So a record is at most 33 + 16 bytes per accepted message,
# however large the request or its answer was.
_RECORD_ACCEPTED = b"A"
_DIGEST_BYTES = 32


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    fingerprint: bytes  # payloads.fingerprint(): what "the same request" means
    ids: list[str]  # the accepted message ids, in the request's order


def idempotency_record_encode(fingerprint: bytes, message_ids: Iterable[str]) -> bytes:
    assert len(fingerprint) == _DIGEST_BYTES
    return b"".join((_RECORD_ACCEPTED, fingerprint, *(bytes.fromhex(i.replace("-", "")) for i in message_ids)))


def idempotency_record_decode(raw: bytes) -> IdempotencyRecord:
    body = raw[1 + _DIGEST_BYTES :]
    ids = [str(uuid.UUID(bytes=body[i : i + 16])) for i in range(0, len(body), 16)]
    return IdempotencyRecord(raw[1 : 1 + _DIGEST_BYTES], ids)
