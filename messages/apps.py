from django.apps import AppConfig

from messages.metrics import StagingAgeCollector, StagingCollector, staging_status
from project.health import status_components
from project.lean import lean_views_register
from project.metrics import registry


class MessagesConfig(AppConfig):
    name = "messages"
    # django.contrib.messages already owns the label "messages".
    label = "messy_messages"
    verbose_name = "Messages"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from messages.models import Message
        from stats.selectors import recount_source_register

        recount_source_register(Message._meta.db_table)  # what stats' recount counts
        registry.register(StagingCollector())
        registry.register(StagingAgeCollector())
        status_components.register("staging", staging_status)
        # The write endpoints, served by project.wsgi before Django's handler.
        from messages.lean import HANDLERS  # imports the views: not before the apps are ready

        lean_views_register(HANDLERS)
