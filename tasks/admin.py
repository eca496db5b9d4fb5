from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from project.admin import ReadOnlyAdmin
from tasks import auth, services
from tasks.models import ApiToken, ErasureTally, Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "progress_done",
        "progress_total",
        "progress_unit",
        "created_at",
        "finished_at",
    )
    list_filter = ("kind", "status")
    ordering = ("-created_at",)
    # The erasure subject and the resume checkpoint are the worker's business, not the admin's.
    fields = (
        "id", "kind", "status", "progress_done", "progress_total", "progress_unit", "progress_message", "error",
        "result", "result_key", "params", "cancel_requested", "owner", "heartbeat_at", "attempts",
        "created_at", "started_at", "finished_at", "created_by", "created_by_token",
    )  # fmt: skip
    readonly_fields = fields
    actions = ("cancel",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # A job's row is its state (an erasure's fence, a running import's checkpoint): only a
    # finished job may go (the bulk delete action refuses a selection holding an unfinished one).
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or obj.is_finished)

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        cancelled = sum(services.job_cancel(job) for job in queryset)
        self.message_user(request, f"Cancelled {cancelled} job(s) (running ones stop at their next batch).")


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Name every scope the token needs (admin includes the others, on every job).",
    )

    class Meta:
        model = ApiToken
        fields = ("name", "scopes", "expires_at", "is_active")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ("name", "prefix", "scopes", "is_active", "expires_at", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("name",)
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("name", "scopes", "expires_at")
        return ("name", "prefix", "scopes", "expires_at", "is_active", "created_at", "last_used_at")

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = auth.api_token_create(obj.name, obj.scopes, obj.expires_at)
        obj.pk = token.pk
        # Shown once, on the page response_add renders: never through the messages framework,
        # whose storage may be a cookie.
        request.messy_new_token = raw  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: Any = None) -> HttpResponse:
        context = {**self.admin_site.each_context(request), "token": obj, "raw": request.messy_new_token}  # type: ignore[attr-defined]
        response = TemplateResponse(request, "admin/tasks/apitoken/token_created.html", context)
        response["Cache-Control"] = "no-store"
        return response


@admin.register(ErasureTally)
class ErasureTallyAdmin(ReadOnlyAdmin):
    list_display = ("erasures",)
