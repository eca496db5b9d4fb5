from django.contrib import admin

from messages.models import Message
from project.admin import ReadOnlyAdmin


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    """Read-only: messages change only through the write path and erasure jobs."""

    list_display = ("id", "username", "city", "state", "accepted_at", "stored_at")
    # Exact lookups, so a search is an index scan on username rather than a scan of the table.
    search_fields = ("username__exact", "city__exact")
    search_help_text = "Exact username or city."
    # Newest first by the time-ordered id (the primary key index); no COUNT(*) of the table.
    ordering = ("-id",)
    show_full_result_count = False
    list_per_page = 50
