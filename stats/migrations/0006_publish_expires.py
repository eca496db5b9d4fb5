from django.db import migrations

PUBLISH_TASK_NAME = "stats: publish the blob"
# A publish that waited past its minute is replaced by the next minute's.
PUBLISH_EXPIRE_SECONDS = 55


def publish_expiry_set(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=PUBLISH_TASK_NAME).update(expire_seconds=PUBLISH_EXPIRE_SECONDS)


def publish_expiry_clear(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=PUBLISH_TASK_NAME).update(expire_seconds=None)


class Migration(migrations.Migration):
    dependencies = [("stats", "0005_leaderboard")]

    operations = [migrations.RunPython(publish_expiry_set, publish_expiry_clear)]
