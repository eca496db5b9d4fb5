from django.db import migrations

RECOVER_TASK_NAME = "tasks: resume jobs whose worker died"
PRUNE_TASK_NAME = "tasks: prune old finished jobs"


def schedules_create(apps, schema_editor):
    """Recovery twice a minute (a dead worker's job resumes within MESSY_JOB_STALE_SECONDS plus
    this), pruning once a day. Both editable in the admin."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    half_minute, _ = IntervalSchedule.objects.get_or_create(every=30, period="seconds")
    daily, _ = IntervalSchedule.objects.get_or_create(every=1, period="days")
    for name, task, interval in (
        (RECOVER_TASK_NAME, "tasks.recover", half_minute),
        (PRUNE_TASK_NAME, "tasks.prune", daily),
    ):
        PeriodicTask.objects.update_or_create(
            name=name, defaults={"task": task, "interval": interval, "queue": "jobs", "expires": None}
        )


def schedules_delete(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[RECOVER_TASK_NAME, PRUNE_TASK_NAME]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tasks", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedules_create, schedules_delete)]
