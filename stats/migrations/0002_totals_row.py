from django.db import migrations


def totals_row_create(apps, schema_editor):
    apps.get_model("stats", "Totals").objects.get_or_create(id=1)


class Migration(migrations.Migration):
    dependencies = [("stats", "0001_initial")]

    operations = [migrations.RunPython(totals_row_create, migrations.RunPython.noop)]
