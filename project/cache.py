"""memcached through Django's cache framework, with connections kept across requests."""

import zlib
from typing import Any

from django.core.cache.backends.memcached import PyMemcacheCache
from pymemcache.client.rendezvous import RendezvousHash

from project.sockets import KernelTimeoutSockets


class PersistentPyMemcacheCache(PyMemcacheCache):
    """PyMemcacheCache that keeps its connections, hashes keys in C and leaves its timeouts to
    the kernel.

    Django closes memcached connections on request_finished for clients that leak them;
    pymemcache does not (its HashClient reconnects a broken socket by itself), and the
    reconnect costs a TCP handshake on every request of the write path.
    """

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        options = self._options  # type: ignore[attr-defined]
        options.setdefault("hasher", Crc32RendezvousHash)
        if options.get("timeout") is not None:
            # The same bound on every send and receive, kept by the kernel (project.sockets):
            # a noreply set is then one system call, not a poll and a send.
            options["socket_module"] = KernelTimeoutSockets(options["timeout"])
            options["timeout"] = None

    def close(self, **kwargs: Any) -> None:
        pass


class Crc32RendezvousHash(RendezvousHash):
    """pymemcache's rendezvous hashing with zlib's CRC-32 (C) instead of its pure-Python
    murmur3, which costs more than the rest of a memcached set on the write path. Every
    process must use the same hasher so that they agree on which server holds a key."""

    def __init__(self, nodes: list[str] | None = None, seed: int = 0) -> None:
        super().__init__(nodes, seed, hash_function=_crc32)


def _crc32(key: str, seed: int) -> int:
    return zlib.crc32(key.encode("utf-8"), seed)
