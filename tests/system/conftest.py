import re
from collections.abc import Iterator

import pytest
import redis

from tests.system import stack as system


@pytest.fixture(scope="session")
def system_database() -> None:
    system.database_create()


@pytest.fixture
def stack(request, system_database, s3_server, artifacts_dir) -> Iterator[system.Stack]:
    """A private memcached and a clean database and Redis; the test starts the Messy processes."""
    connection = system.Stack(logs=artifacts_dir, s3_endpoint=s3_server).db()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE message, stats_state_count, stats_city_count, stats_user_count, stats_minute_count, stats_totals"
        )
    connection.close()
    for url in (system.REDIS_STAGING_URL, system.REDIS_BROKER_URL):
        redis.Redis.from_url(url).flushdb()
    logs = artifacts_dir / "system" / re.sub(r"\W+", "-", request.node.name)
    logs.mkdir(parents=True, exist_ok=True)
    running = system.Stack(logs=logs, s3_endpoint=s3_server)
    running.start_memcached()
    yield running
    running.stop_all()
