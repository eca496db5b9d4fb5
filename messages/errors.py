"""The messages app's domain errors: why a write or a status read was refused."""

from messages.clients import Quota


class BacklogFull(Exception):
    def __init__(self, backlog: int) -> None:
        super().__init__(f"staged backlog is {backlog}")
        self.backlog = backlog


class StagingFull(Exception):
    """The staging Redis is over its maxmemory and refuses writes (the drains still empty it)."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class IdempotencyBudgetSpent(Exception):
    """The request would make an idempotency record, and the client's budget of them (`full`
    False) or everyone's (`full` True) is spent until `retry_after` seconds from now."""

    def __init__(self, full: bool, retry_after: int) -> None:
        super().__init__("idempotency records' budget spent")
        self.full = full
        self.retry_after = retry_after


class MessageIdConflict(Exception):
    """Messages sent with the client's own ids that were accepted before with other content:
    `positions`, their places among the request's accepted messages."""

    def __init__(self, positions: tuple[int, ...]) -> None:
        super().__init__(f"{len(positions)} message ids already used")
        self.positions = positions


class BacklogShareFull(Exception):
    """The client holds its share of the backlog (MESSY_BACKLOG_CLIENT_SHARE)."""


class QuotaExceeded(Exception):
    """The client's token bucket holds fewer tokens than the request has messages."""

    def __init__(self, quota: Quota, remaining: int, retry_after: int) -> None:
        super().__init__(f"{remaining} of {quota.burst} tokens left")
        self.quota = quota
        self.remaining = remaining
        self.retry_after = retry_after


class StagingUnavailable(Exception):
    """The staging Redis cannot be reached (or failed the write): nothing was accepted for sure."""
