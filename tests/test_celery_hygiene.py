"""Celery settings that keep workers sane when things go wrong."""

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask


@pytest.mark.django_db
def test_every_periodic_task_expires_before_it_could_pile_up() -> None:
    tasks = list(PeriodicTask.objects.exclude(task="celery.backend_cleanup"))
    assert {task.task for task in tasks} >= {"messages.sweep", "stats.publish", "tasks.recover", "tasks.prune"}
    for task in tasks:
        assert task.expire_seconds, f"{task.name} never expires"
        if task.interval is not None:
            period = task.interval.schedule.run_every.total_seconds()
            # Expired once its successor is due (give or take one period), never much later.
            assert task.expire_seconds <= 2 * period, task.name


def test_a_worker_cancels_tasks_when_the_broker_connection_is_lost() -> None:
    assert settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is True


def test_a_stopping_worker_has_a_bounded_wait() -> None:
    assert 0 < settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT < 60
