"""Timeouts on the sockets of the write path's clients (Redis, memcached), kept by the kernel.

A Python socket with a timeout polls before every send and every receive: two system calls
more per Redis command and one more per memcached set, which on the write path cost about as
much as the rest of those calls' Python. A blocking socket with SO_RCVTIMEO and SO_SNDTIMEO
has the same bound without them: a send or receive that waits longer fails with EAGAIN
(BlockingIOError), which the clients treat as a broken connection, as they would a timeout.
"""

import socket
import struct
from typing import Any


def socket_timeouts_in_kernel(sock: socket.socket, seconds: float) -> None:
    """Bound every send and receive on `sock` to `seconds`, in the kernel; the socket blocks."""
    whole, fraction = divmod(max(seconds, 0.001), 1)
    value = struct.pack("ll", int(whole), int(fraction * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.settimeout(None)


class KernelTimeoutSockets:
    """The socket module, as pymemcache's `socket_module` option uses it, except that the
    sockets it makes time out in the kernel (pymemcache's own `timeout` must then be None: it
    would put the socket back under Python's timeout)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    def socket(self, *args: Any, **kwargs: Any) -> socket.socket:
        sock = socket.socket(*args, **kwargs)
        socket_timeouts_in_kernel(sock, self.seconds)
        return sock
