"""Rollups: aggregate counts kept up to date in the same transaction that stores messages.

Publishing the stats blob reads only these tables (a few hundred rows and two index scans),
so it costs the same at ten million messages as at ten thousand. A row exists only while its
count is positive, so "distinct users" is the number of UserCount rows, kept in Totals.
"""

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
    username = models.TextField(primary_key=True)
    messages = models.BigIntegerField()

    class Meta:
        db_table = "stats_user_count"
        # Top users without a scan; username breaks ties (see CityCount).
        indexes = [models.Index(fields=["-messages", "username"], name="stats_user_top")]

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

    class Meta:
        db_table = "stats_totals"
        verbose_name_plural = "totals"

    def __str__(self) -> str:
        return f"{self.messages} messages, {self.users} users, {self.cities} cities, {self.states} states"
