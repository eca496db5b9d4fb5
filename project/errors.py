"""Errors that can pass: a service unreachable or slow, not a bad request or a bug.

The one list every task and service retries on (or leaves for recovery to retry), so that
"PostgreSQL restarted" or "S3 timed out" means the same thing everywhere.
"""

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# botocore's ConnectionError covers refused connections, endpoint and connect timeouts;
# HTTPClientError covers reads that time out or connections closed mid-answer.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    S3ConnectionError,
    HTTPClientError,
)


def error_is_transient(exc: BaseException) -> bool:
    """TRANSIENT_ERRORS, and S3 answers in the 5xx range (SlowDown, InternalError). A 4xx (bad
    credentials, access denied) is not: retrying would only repeat it."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return isinstance(exc, TRANSIENT_ERRORS)
