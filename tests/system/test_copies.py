"""The memcached copies of staged messages, as runserver.sh's web server sends them: held by each
web process while requests are waiting (project.deferred), and sent, every one, once none is."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pymemcache.client.base import Client as MemcachedClient

from tests.system.stack import message_body

pytestmark = pytest.mark.system


def test_every_copy_a_web_process_held_is_in_memcached_once_the_requests_stop(stack):
    stack.start_web(processes=2)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: stack.post("/message/write/", message_body(i)), range(203)))
    assert {status for status, _ in answers} == {202}
    ids = [body["id"] for _, body in answers]
    memcached = MemcachedClient(("127.0.0.1", stack.memcached_port))
    keys = {f"{stack.config.key_prefix}:1:staged:{message_id}": i for i, message_id in enumerate(ids)}
    deadline = time.monotonic() + 5
    while len(found := memcached.get_many(list(keys))) < len(keys) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(found) == len(keys)
    # A marker: the copy says the message is staged and holds none of it.
    assert set(found.values()) == {b"1"}
