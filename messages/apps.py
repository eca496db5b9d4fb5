from django.apps import AppConfig


class MessagesConfig(AppConfig):
    name = "messages"
    # django.contrib.messages already owns the label "messages".
    label = "messy_messages"
    verbose_name = "Messages"
    default_auto_field = "django.db.models.BigAutoField"
