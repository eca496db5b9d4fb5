from django.db import migrations

# Seconds after which a queued run is dropped: by then the next one is on its way, so runs
# that waited for workers that were down do not pile up.
EXPIRE_SECONDS = {
    "tasks: resume jobs whose worker died": 30,
    "tasks: prune old finished jobs": 3600,
}


def expiry_set(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, seconds in EXPIRE_SECONDS.items():
        PeriodicTask.objects.filter(name=name).update(expire_seconds=seconds)


def expiry_clear(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=EXPIRE_SECONDS).update(expire_seconds=None)


class Migration(migrations.Migration):
    dependencies = [("tasks", "0002_housekeeping_schedules")]

    operations = [migrations.RunPython(expiry_set, expiry_clear)]
