"""runserver.sh's gunicorn worker class: gunicorn's sync worker, with three changes. It makes
the sends its process holds (project.deferred) once they are due; a response goes out in one
send where gunicorn makes two (ResponseSocket); its heartbeat is a utime() at most every
HEARTBEAT_SECONDS, and an accepted connection is not made close-on-exec a second time.

A connection with nothing left unread is closed at once, without gunicorn 26's linger
(ResponseSocket.shutdown).

# Documented in docs/fast-path.md ("The web server's worker class").
"""

import socket
import time
from typing import Any

from gunicorn.http import message
from gunicorn.workers import sync

from project import deferred

# gunicorn silently caps --limit-request-line at 8190 bytes; runserver.sh sets it to the front
# door's (a GET write's query string needs more), so the cap must not apply. Loaded in the
# arbiter, before the workers fork.
message.MAX_REQUEST_LINE = 1 << 20

# The longest the heartbeat goes unrefreshed (at most a quarter of --timeout): the arbiter replaces
# a worker whose heartbeat is older than --timeout.
HEARTBEAT_SECONDS = 1.0


class ResponseSocket:
    """A client connection as gunicorn's sync worker uses it for one request.

    gunicorn writes a response's status line and headers (Response.send_headers) and then its
    body, each with a sendall(): two segments, and the client or the front door woken twice for
    one answer. Here the first sendall() is held and goes out with the next one, the body, as one
    send. What is held goes out first on close(), and on any other use of the socket (gunicorn's
    sendfile() takes fileno(), a 100-continue is a send()), after which nothing more is held."""

    __slots__ = ("_closed", "_held", "_socket", "recv", "recv_into")

    def __init__(self, client: Any) -> None:
        self._socket = client
        # None until the first sendall(), which is held here; b"" once nothing more is held.
        self._held: bytes | None = None
        self._closed = False  # by shutdown(), which found nothing to linger for
        self.recv = client.recv  # the request parser's reads, straight through
        self.recv_into = client.recv_into

    def sendall(self, data: bytes, flags: int = 0) -> None:
        if flags:
            self._release()
        elif self._held is None:
            self._held = bytes(data)
            return
        elif self._held:
            data, self._held = self._held + data, b""
        self._socket.sendall(data, flags)

    def _release(self) -> None:
        held, self._held = self._held, b""
        if held:
            self._socket.sendall(held)

    def shutdown(self, how: int) -> None:
        # gunicorn >= 26 ends a connection with util.close_graceful(): shutdown(SHUT_WR), then
        # recv() until the peer closes (up to 2 s), so that request bytes left unread do not make
        # the close a reset that cuts the response short. With none left (the front door sends a
        # whole request, the parser has read it) that is only a wait for the peer: close now, as
        # gunicorn 23 did, and the settimeout() and recv() that follow see the end at once.
        self._release()
        if how == socket.SHUT_WR and not self._closed and not self._unread():
            self._socket.close()
            self._closed = True
            self.recv = _end_of_stream
            return
        self._socket.shutdown(how)

    def settimeout(self, timeout: float | None) -> None:
        if not self._closed:
            self._socket.settimeout(timeout)

    def _unread(self) -> bool:
        """Whether request bytes wait unread (or cannot be told), without blocking."""
        try:
            return bool(self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except OSError:
            return True  # gunicorn's own shutdown() then meets the error

    def close(self) -> None:
        try:
            self._release()
        finally:
            self._socket.close()

    def __getattr__(self, name: str) -> Any:
        self._release()
        return getattr(self._socket, name)


def _end_of_stream(*_args: Any) -> bytes:
    return b""


class SyncWorker(sync.SyncWorker):
    _heartbeat_due = 0.0

    def init_process(self) -> None:
        deferred.enable()
        super().init_process()  # loads the application, then runs the worker's loop

    def notify(self) -> None:
        # The sync worker's loop calls this twice a request. (self.timeout, from the arbiter, is
        # half of --timeout.)
        now = time.monotonic()
        if now >= self._heartbeat_due:
            self._heartbeat_due = now + min(HEARTBEAT_SECONDS, self.timeout / 2)
            super().notify()

    def wait(self, timeout: float) -> Any:
        # Only reached between requests. With sends held, wait for a connection only until they
        # are due: under load one is already waiting and is served at once (more sends join the
        # held ones, with no system call spent on looking); none by then, and the held sends go
        # out before the worker sleeps for longer.
        due = deferred.seconds_until_due()
        if due is not None:
            ready = super().wait(min(due, timeout))
            if ready:
                return ready
            deferred.flush_all()
        return super().wait(timeout)

    def accept(self, listener: Any) -> None:
        # gunicorn's own, without util.close_on_exec(): Python's accept() already made the socket
        # close-on-exec (accept4 with SOCK_CLOEXEC), and two fcntl() calls a request are not free.
        client, addr = listener.accept()
        client.setblocking(True)
        self.handle(listener, client, addr)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        deferred.flush_overdue()
        if not self.cfg.is_ssl:  # gunicorn's TLS wraps the socket itself, and needs a real one
            client = ResponseSocket(client)
        super().handle(listener, client, addr)

    def run(self) -> None:
        super().run()
        deferred.flush_all()  # a clean stop (TERM, max requests): nothing held is dropped
