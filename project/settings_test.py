"""Test settings: the real settings, pointed at a separate namespace on the same services."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-a-secret")
os.environ.setdefault("REDIS_KEY_PREFIX", "messy-test")
# The Redis servers scripts/test.sh starts with the project's own configuration; the staging one
# through its Unix socket, as make run's processes reach it.
os.environ.setdefault(
    "REDIS_URL",
    f"unix://{os.environ['MESSY_TEST_REDIS_STAGING_SOCKET']}?db=14"
    if os.environ.get("MESSY_TEST_REDIS_STAGING_SOCKET")
    else os.environ.get("MESSY_TEST_REDIS_STAGING", "redis://127.0.0.1:6390") + "/14",
)
os.environ.setdefault("CELERY_BROKER_URL", os.environ.get("MESSY_TEST_REDIS_BROKER", "redis://127.0.0.1:6391") + "/15")
# The tests create their own databases: a role that may (make run and production use messy).
os.environ.setdefault("POSTGRES_USER", "postgres")
os.environ.setdefault("MEMCACHED_KEY_PREFIX", "messy-test")
os.environ.setdefault("MEMCACHED_SERVERS", "127.0.0.1:11211")  # the machine's, scripts/services.sh
os.environ.setdefault("S3_BUCKET", "messy-test-stats")
# The local S3 server the tests start (tests/harness.py, scripts/s3.sh), set up as
# local.sh.template's local development S3 block sets make run's.
os.environ.setdefault("S3_ENDPOINT_URL", "http://127.0.0.1:9100")
os.environ.setdefault("S3_ACCESS_KEY_ID", "messy-local")
os.environ.setdefault("S3_SECRET_ACCESS_KEY", "messy-local-secret")
os.environ.setdefault("S3_BUCKET_CREATE", "1")
os.environ.setdefault("S3_BUCKET_CORS_MANAGE", "1")
os.environ.setdefault("MESSY_BENCH_ENDPOINTS", "1")

from project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Unit tests drain in-process and would wait at the end of every drain; the end-to-end tests
# run real workers with the default.
MESSY_DRAIN_IDLE_WAIT_MS = 0
# Every /status call probes afresh: the tests change a component between two calls
# (tests/test_health.py tests the cache with it back on).
MESSY_STATUS_CACHE_SECONDS = 0.0
