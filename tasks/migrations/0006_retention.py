from django.db import migrations, models

TASK_NAME = "tasks: delete messages past retention"


def schedule_create(apps, schema_editor):
    """Hourly (tasks/retention.py says why), editable in the admin. It runs whatever the
    setting: with MESSY_MESSAGE_RETENTION_DAYS at 0 the task does nothing. A run not picked up
    within the hour is dropped, the next one being due."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.update_or_create(
        name=TASK_NAME,
        defaults={"task": "tasks.retention", "interval": hourly, "queue": "jobs", "expire_seconds": 3600},
    )


def schedule_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0005_token_scopes_expiry"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AlterField(
            model_name="job",
            name="kind",
            field=models.CharField(
                choices=[
                    ("import", "Import messages"),
                    ("erase", "Erase a user's messages"),
                    ("retain", "Delete messages past retention"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(schedule_create, schedule_delete),
    ]
