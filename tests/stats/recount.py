"""A test oracle: the stats blob recounted from the message table, never from the rollups."""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max
from django.db.models.functions import TruncMinute

from messages.models import Message
from stats.selectors import stats_blob_shape, timeline_window


def stats_blob_recount(now: datetime) -> dict[str, Any]:
    """The blob computed the slow way, from the message table (several full scans): what the
    published blob must equal. After an erasure the published newest_message_at may be later
    than this one (rollups keep it)."""
    messages = Message.objects.all()
    counted = messages.aggregate(
        messages=Count("id"),
        users=Count("username", distinct=True),
        states=Count("state", distinct=True),
        newest=Max("accepted_at"),
    )
    first, last = timeline_window(now)
    recent = messages.filter(accepted_at__gte=first, accepted_at__lt=last + timedelta(minutes=1))
    minute_counts = recent.annotate(minute=TruncMinute("accepted_at")).values("minute").annotate(n=Count("id"))
    totals = {
        "messages": counted["messages"],
        "users": counted["users"],
        "cities": messages.values("state", "city").distinct().count(),
        "states": counted["states"],
    }
    by_count = Count("id")
    return stats_blob_shape(
        now,
        totals,
        counted["newest"],
        messages.values("state")
        .annotate(messages=by_count)
        .order_by("-messages", "state")[: settings.STATS_STATES_MAX],
        messages.values("state", "city")
        .annotate(messages=by_count)
        .order_by("-messages", "state", "city")[: settings.STATS_TOP_CITIES],
        messages.values("username")
        .annotate(messages=by_count)
        .order_by("-messages", "username")[: settings.STATS_TOP_USERS],
        {row["minute"]: row["n"] for row in minute_counts},
    )
