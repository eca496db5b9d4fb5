"""project.redis.redis_options: the clients Messy builds speak RESP2 whatever redis-py's
default (RESP3 from redis-py 8), so the reply shapes the code parses hold (docs/dependencies.md)."""

import redis

from project.redis import redis_client, redis_options
from tests.test_health import redis_server, staging_redis_at


def test_the_staging_client_speaks_resp2(settings):
    with redis_server() as port, staging_redis_at(settings, port):
        assert redis_client().client_info()["resp"] == "2"


def test_a_client_built_with_the_shared_options_speaks_resp2_and_reads_stream_replies_as_lists(settings):
    with redis_server() as port:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", **redis_options())
        try:
            assert client.client_info()["resp"] == "2"
            client.xgroup_create("s", "g", id="0", mkstream=True)
            entry = client.xadd("s", {"k": "v"})
            assert client.xreadgroup("g", "c", {"s": ">"}) == [[b"s", [(entry, {b"k": b"v"})]]]
        finally:
            client.close()
