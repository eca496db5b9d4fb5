import re
from collections.abc import Iterator

import pytest

from tests import harness
from tests.system.stack import Stack


@pytest.fixture(scope="session")
def system_database() -> None:
    harness.database_create(harness.SYSTEM)


@pytest.fixture
def stack(request, system_database, s3_server, artifacts_dir) -> Iterator[Stack]:
    """A private memcached and a clean database and Redis; the test starts the Messy processes."""
    harness.tables_reset(harness.SYSTEM)
    harness.redis_reset(harness.SYSTEM)
    logs = artifacts_dir / "system" / re.sub(r"\W+", "-", request.node.name)
    logs.mkdir(parents=True, exist_ok=True)
    running = Stack(logs=logs, s3_endpoint=s3_server)
    running.start_memcached()
    yield running
    running.stop_all()
