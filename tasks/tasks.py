"""Celery tasks of the jobs app. Thin: each takes ids or nothing and calls one service; the
job row's conditional transitions make every one of them safe to run twice."""

from celery import shared_task

from tasks import services


@shared_task(name="tasks.run_job")
def run_job(job_id: str) -> str:
    return services.job_run(job_id)


@shared_task(name="tasks.recover")
def recover_jobs() -> int:
    return services.jobs_recover()


@shared_task(name="tasks.prune")
def prune_jobs() -> int:
    return services.jobs_prune()
