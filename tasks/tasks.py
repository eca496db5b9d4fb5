"""Celery tasks of the jobs app. Thin: each takes ids or nothing and calls one service; the
job row's conditional transitions make every one of them safe to run twice. Each is named
after its service; the name= strings stay as they were, for queued tasks and beat schedules."""

from celery import shared_task

from tasks import retention, services


@shared_task(name="tasks.run_job")
def job_run(job_id: str) -> str:
    return services.job_run(job_id)


@shared_task(name="tasks.recover")
def jobs_recover() -> int:
    return services.jobs_recover()


@shared_task(name="tasks.prune")
def jobs_prune() -> int:
    return services.jobs_prune()


@shared_task(name="tasks.retention")
def retention_job_create() -> str | None:
    job = retention.retention_job_create()
    return None if job is None else str(job.pk)
