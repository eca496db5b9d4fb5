from django.apps import AppConfig

from messages.metrics import StagingCollector
from project.metrics import registry


class MessagesConfig(AppConfig):
    name = "messages"
    # django.contrib.messages already owns the label "messages".
    label = "messy_messages"
    verbose_name = "Messages"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        registry.register(StagingCollector())
