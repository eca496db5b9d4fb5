from django.db import migrations

SWEEP_TASK_NAME = "messages: sweep staged messages"
# A sweep still queued after its successor was sent is worth nothing: while workers are down,
# expired sweeps are dropped instead of piling up for them to run all at once.
SWEEP_EXPIRE_SECONDS = 10


def sweep_expiry_set(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).update(expire_seconds=SWEEP_EXPIRE_SECONDS)


def sweep_expiry_clear(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=SWEEP_TASK_NAME).update(expire_seconds=None)


class Migration(migrations.Migration):
    dependencies = [("messy_messages", "0003_username_index_without_like")]

    operations = [migrations.RunPython(sweep_expiry_set, sweep_expiry_clear)]
