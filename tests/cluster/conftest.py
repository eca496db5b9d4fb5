import re
from collections.abc import Iterator

import pytest

from tests.cluster.netns import Cluster, cluster_running


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: builds a cluster of network namespaces (root only; a few minutes)")


@pytest.fixture
def cluster(request, artifacts_dir) -> Iterator[Cluster]:
    """Hosts of network namespaces with Redis, PostgreSQL, two memcached servers and S3 up; the
    test starts web, worker, beat and the front door. Logs in test-artifacts/cluster/<test>/."""
    logs = artifacts_dir / "cluster" / re.sub(r"\W+", "-", request.node.name)
    with cluster_running(logs) as running:
        yield running
