from django.db import migrations

CATCH_UP_TASK_NAME = "stats: publish a minute whose publisher died"
CATCH_UP_EVERY_SECONDS = 30


def catch_up_schedule_create(apps, schema_editor):
    """The same task every 30 s beside the minute's own (0004). Each send finds its minute
    published and does nothing, except when the minute's publisher died holding the claim (its
    host lost mid-publish): the claim lapses after PUBLISH_LEASE_SECONDS (20), and one of the
    two sends of every minute falls in its second half, after that, and publishes the minute.
    A send that waited longer than its period expires: the next replaces it."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=CATCH_UP_EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=CATCH_UP_TASK_NAME,
        defaults={
            "task": "stats.publish",
            "interval": every,
            "crontab": None,
            "queue": "stats",
            "expire_seconds": CATCH_UP_EVERY_SECONDS - 5,
        },
    )


def catch_up_schedule_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=CATCH_UP_TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("stats", "0006_publish_expires")]

    operations = [migrations.RunPython(catch_up_schedule_create, catch_up_schedule_delete)]
