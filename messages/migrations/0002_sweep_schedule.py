from django.db import migrations

SWEEP_TASK_NAME = "messages: sweep staged messages"


def sweep_schedule_create(apps, schema_editor):
    """The safety net that starts a drain whenever anything is left staged. Editable in the admin."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=SWEEP_TASK_NAME,
        defaults={"task": "messages.sweep", "interval": every, "queue": "ingest", "expires": None},
    )


def sweep_schedule_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP_TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("messy_messages", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(sweep_schedule_create, sweep_schedule_delete)]
