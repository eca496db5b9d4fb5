from django.db import migrations

PUBLISH_TASK_NAME = "stats: publish the blob"


def publish_schedule_create(apps, schema_editor):
    """Publish the stats blob at the start of every minute. Editable in the admin. A crontab,
    not an interval, so every beat fires in the same minute and the once-a-minute claim makes
    all but one of them a no-op."""
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = CrontabSchedule.objects.get_or_create(
        minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.update_or_create(
        name=PUBLISH_TASK_NAME,
        defaults={
            "task": "stats.publish",
            "crontab": every_minute,
            "interval": None,
            "queue": "stats",
            "expires": None,
        },
    )


def publish_schedule_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=PUBLISH_TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("stats", "0003_top_indexes_break_ties"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(publish_schedule_create, publish_schedule_delete)]
