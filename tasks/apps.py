from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"
