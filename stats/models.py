"""Rollups: aggregate counts kept up to date in the same transaction that stores messages.

Publishing the stats blob reads only these tables (a few hundred rows and two index scans),
so it costs the same at ten million messages as at ten thousand. A row exists only while its
count is positive, so "distinct users" is the number of UserCount rows, kept in Totals.
Drains do not update these rows: each adds a PendingRollup, and one folder at a time adds the
pending rows into them (stats.services.rollups; docs/scaling.md says why).
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models


class StateCount(models.Model):
    state = models.TextField(primary_key=True)
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_state_count"
        # The busiest states first without a sort, however many distinct states arrive.
        indexes = [models.Index(fields=["-messages", "state"], name="stats_state_top")]

    def __str__(self) -> str:
        return f"{self.state}: {self.messages}"


class CityCount(models.Model):
    pk = models.CompositePrimaryKey("state", "city")
    state = models.TextField()
    city = models.TextField()
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_city_count"
        # Top cities without a scan. The key columns break ties, so the order is stable and a
        # LIMIT never has to sort a large group of equal counts.
        indexes = [models.Index(fields=["-messages", "state", "city"], name="stats_city_top")]

    def __str__(self) -> str:
        return f"{self.city}, {self.state}: {self.messages}"


class UserCount(models.Model):
    """Messages per user. No index on the count: a drain updates thousands of these rows per
    batch, and without one the updates can be HOT (no index entries to rewrite; the table
    keeps free space on each page for that). Top users come from TopUser instead."""

    username = models.TextField(primary_key=True)
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_user_count"

    def __str__(self) -> str:
        return f"{self.username}: {self.messages}"


class TopUser(models.Model):
    """The leaderboard: the STATS_TOP_USERS_KEPT users with the most messages, with their
    counts, and up to as many again just below them (trimmed in bulk, not every batch).

    Drains keep it exact without reading UserCount: counts only grow when messages are
    stored, so a user can enter the top only at the moment one of their counts grows, and
    each drain adds its users whose new count reaches the board's lowest. An erasure lowers
    counts, which can let someone outside the board overtake; it marks the board stale (in
    Totals) and the next publish rebuilds it from UserCount.
    """

    username = models.TextField(primary_key=True)
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_top_user"
        # username breaks ties (see CityCount).
        indexes = [models.Index(fields=["-messages", "username"], name="stats_top_user_rank")]

    def __str__(self) -> str:
        return f"{self.username}: {self.messages}"


class MinuteCount(models.Model):
    minute = models.DateTimeField(primary_key=True, help_text="Start of the minute the messages were accepted in.")
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_minute_count"

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M}: {self.messages}"


class Totals(models.Model):
    """The single row (id=1) of running totals."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    messages = models.BigIntegerField(default=0)
    users = models.BigIntegerField(default=0)
    cities = models.BigIntegerField(default=0)
    states = models.BigIntegerField(default=0)
    newest_accepted_at = models.DateTimeField(null=True)
    top_users_stale = models.BooleanField(default=False, help_text="An erasure changed a leader: rebuild TopUser.")

    class Meta:
        db_table = "stats_totals"
        verbose_name_plural = "totals"

    def __str__(self) -> str:
        return f"{self.messages} messages, {self.users} users, {self.cities} cities, {self.states} states"


class PendingRollup(models.Model):
    """One transaction's changes to the rollups, not yet added to them: what a batch stored (or
    an erasure deleted), counted per state, city, user and minute into parallel arrays (key i
    counts counts[i], negative for a deletion). Inserted in the transaction that stores or
    deletes the messages, deleted in the one that adds it to the rollups (the fold): a row is
    counted exactly once, and drains that insert rows never wait for each other."""

    id = models.BigAutoField(primary_key=True)
    messages = models.BigIntegerField()
    newest_accepted_at = models.DateTimeField(null=True)
    states = ArrayField(models.TextField())
    state_counts = ArrayField(models.BigIntegerField())
    city_states = ArrayField(models.TextField())
    cities = ArrayField(models.TextField())
    city_counts = ArrayField(models.BigIntegerField())
    users = ArrayField(models.TextField())
    user_counts = ArrayField(models.BigIntegerField())
    minutes = ArrayField(models.DateTimeField())
    minute_counts = ArrayField(models.BigIntegerField())

    class Meta:
        db_table = "stats_pending_rollup"

    def __str__(self) -> str:
        return f"pending {self.messages:+} messages"
