from django.db import models


class Message(models.Model):
    """A stored message. Rows arrive only through messages.services.messages_persist.

    Text columns have no length limit in the database: limits are settings enforced at the
    edge (messages.validation), so raising one needs no migration.
    """

    # A UUIDv7 minted when the web process accepts the message: time-ordered, so the
    # primary-key index grows at its right edge, and known before any database write, so
    # inserting it again is a no-op (ON CONFLICT DO NOTHING).
    id = models.UUIDField(primary_key=True)
    username = models.TextField()
    city = models.TextField()
    state = models.TextField()
    message = models.TextField()
    accepted_at = models.DateTimeField(help_text="When the web process accepted the message.")
    stored_at = models.DateTimeField(help_text="When a worker stored it.")
    # The client's own timestamp, when it sent one. The stats keep counting by accepted_at: an
    # import sets accepted_at to a record's sent_at (its history keeps its own minutes), while a
    # live write's accepted_at is the server's, so the timeline stays the rate of acceptance.
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When the client says it sent the message.")

    class Meta:
        db_table = "message"
        indexes = [
            # For erasure. Declared here rather than with db_index=True, which on PostgreSQL also
            # builds a second (LIKE-pattern) index that every insert would pay for and no query uses.
            models.Index(fields=["username"], name="message_username"),
            # For retention (messages_delete_older_than): the rollups count by accepted_at, and
            # the id is no stand-in for it (a client's own id gives a UUIDv8 of random bits; an
            # imported record keeps its sent_at as accepted_at under an id of the upload's time).
            models.Index(fields=["accepted_at"], name="message_accepted_at"),
        ]

    def __str__(self) -> str:
        return f"{self.username}@{self.city}, {self.state}: {self.message[:40]}"
