"""The harness's table reset leaves nothing of the project's behind between runs."""

import pytest
from django.apps import apps
from django.db import connection

from tests import harness

pytestmark = pytest.mark.django_db


def test_the_table_reset_covers_every_table_but_django_and_third_party_ones():
    """A table the project's migrations make without a model (raw SQL) would show up here,
    rather than carry rows over from one test to the next."""
    existing = set(connection.introspection.table_names())
    reset = set(harness.project_tables())
    others = {
        model._meta.db_table
        for config in apps.get_app_configs()
        if config not in harness.project_apps()
        for model in config.get_models(include_auto_created=True)
    }
    assert reset <= existing
    assert {"message", "stats_top_user", "tasks_job"} <= reset
    assert existing - reset == (others & existing) | {"django_migrations"}
    assert not {"auth_user", "django_celery_beat_periodictask"} & reset
