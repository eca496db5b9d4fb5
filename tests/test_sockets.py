"""The write path's Redis and memcached clients keep their timeouts in the kernel
(project.sockets): no poll before each send and receive, and still a bound on every wait."""

import os
import signal
import socket
import struct
import time

import redis
from django.core.cache import caches
from django.test import Client

from messages import copies
from project.redis import redis_client
from tests.test_health import GOOD, redis_server, staging_redis_at


def kernel_timeout(sock: socket.socket, option: int) -> float:
    seconds, microseconds = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("ll")))
    return seconds + microseconds / 1_000_000


def test_the_staging_client_blocks_with_its_timeout_kept_by_the_kernel(settings):
    with redis_server() as port, staging_redis_at(settings, port):
        client = redis_client()
        client.ping()
        sock = client.connection._sock
        assert sock.gettimeout() is None  # blocking: Python polls nothing
        assert kernel_timeout(sock, socket.SO_RCVTIMEO) == kernel_timeout(sock, socket.SO_SNDTIMEO) == 0.5


def test_a_copy_goes_to_memcached_on_a_socket_with_its_timeout_kept_by_the_kernel(settings):
    copies.copies_store(["x"])
    (memcached,) = caches["staged"]._cache.clients.values()  # type: ignore[attr-defined]
    assert memcached.sock.gettimeout() is None
    assert kernel_timeout(memcached.sock, socket.SO_SNDTIMEO) == settings.CACHES["staged"]["OPTIONS"]["timeout"]


def test_a_write_to_a_frozen_redis_gets_503_once_its_timeouts_pass(settings):
    with redis_server() as port, staging_redis_at(settings, port):
        client = Client()
        assert client.post("/message/write/", GOOD, content_type="application/json").status_code == 202
        pid = int(redis.Redis(port=port).info("server")["process_id"])
        os.kill(pid, signal.SIGSTOP)  # connected, and never answering
        try:
            started = time.monotonic()
            response = client.post("/message/write/", GOOD, content_type="application/json")
            waited = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert response.status_code == 503
        assert response.json()["error"] == "staging_unavailable"
        assert 0.5 <= waited < 5, waited
