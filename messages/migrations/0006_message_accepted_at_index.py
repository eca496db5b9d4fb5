from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built CONCURRENTLY (which cannot run in a transaction): on a large table a plain CREATE
    # INDEX would hold every drain's insert for as long as the build takes.
    atomic = False

    dependencies = [
        ("messy_messages", "0005_message_sent_at"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="message",
            index=models.Index(fields=["accepted_at"], name="message_accepted_at"),
        ),
    ]
