from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Background jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Each kind's module registers it in tasks.kinds.job_kinds when imported; they import
        # models, so not before the app registry is ready.
        from tasks import erasing, importing, retention  # noqa: F401
        from tasks.status import status_components_register

        status_components_register()
        from project.metrics import registry
        from tasks.metrics import JobsCollector

        registry.register(JobsCollector())
