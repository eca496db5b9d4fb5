#!/usr/bin/env bash
# Celery workers. Run as many as you like, on any machine that reaches Redis and PostgreSQL.
#   ./runworker.sh          both pools below (the default for one machine)
#   ./runworker.sh ingest   only the "ingest" and "stats" queues: draining and publishing
#   ./runworker.sh jobs     only the "jobs" queue: imports and erasures
# Long jobs have their own processes so they can never starve ingestion.
# Stopping: TERM gives running tasks WORKER_STOP_TIMEOUT seconds (default 25) to finish, then
# the worker exits and unfinished tasks go back to the queue (they are idempotent, and jobs
# resume from their checkpoint). Give a supervisor's stop timeout a few seconds more than that.
set -euo pipefail
. "$(dirname "$0")/scripts/common.sh"
export MESSY_REDIS_ROLE="${MESSY_REDIS_ROLE:-worker}"  # Redis as the workers' user
# Celery's soft shutdown (a warm shutdown with a time limit) starts on a cold-shutdown signal.
export REMAP_SIGTERM=SIGQUIT
run_as_service_user "$@"

role="${1:-all}"
ingest() {
    exec celery -A project worker -n "ingest@%h" -Q ingest,stats \
        --concurrency "${WORKER_INGEST_CONCURRENCY:-$(nproc)}" --loglevel "${LOG_LEVEL:-INFO}" \
        --without-gossip --without-mingle
}
jobs() {
    exec celery -A project worker -n "jobs@%h" -Q jobs \
        --concurrency "${WORKER_JOBS_CONCURRENCY:-1}" --loglevel "${LOG_LEVEL:-INFO}" \
        --without-gossip --without-mingle
}
case "$role" in
    ingest) ingest ;;
    jobs) jobs ;;
    all)
        (ingest) & ingest_pid=$!
        (jobs) & jobs_pid=$!
        # Pass TERM/INT on for a warm shutdown, and stop both if either dies.
        trap 'kill -TERM $ingest_pid $jobs_pid 2>/dev/null' INT TERM
        wait -n $ingest_pid $jobs_pid || true
        kill -TERM $ingest_pid $jobs_pid 2>/dev/null || true
        wait
        ;;
    *) echo "usage: $0 [all|ingest|jobs]" >&2; exit 2 ;;
esac
