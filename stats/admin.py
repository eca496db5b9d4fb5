"""Rollups in the admin, read-only: they change only with the messages they count (or by
`manage.py stats_reconcile --fix`). The publish schedule is under Periodic tasks. Cities are
not here: the admin cannot show a model with a composite primary key."""

from django.contrib import admin

from project.admin import ReadOnlyAdmin
from stats.models import MinuteCount, StateCount, Totals, UserCount


@admin.register(Totals)
class TotalsAdmin(ReadOnlyAdmin):
    list_display = ("messages", "users", "cities", "states", "newest_accepted_at")


@admin.register(StateCount)
class StateCountAdmin(ReadOnlyAdmin):
    list_display = ("state", "messages")
    ordering = ("-messages", "state")
    search_fields = ("state",)


@admin.register(UserCount)
class UserCountAdmin(ReadOnlyAdmin):
    list_display = ("username", "messages")
    ordering = ("-messages", "username")
    search_fields = ("username",)


@admin.register(MinuteCount)
class MinuteCountAdmin(ReadOnlyAdmin):
    list_display = ("minute", "messages")
    ordering = ("-minute",)
