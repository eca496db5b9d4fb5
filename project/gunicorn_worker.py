"""runserver.sh's gunicorn worker class: gunicorn's sync worker, which also makes the sends its
process holds (project.deferred) once they are due: before a request, or while it waits for
one."""

from typing import Any

from gunicorn.workers import sync

from project import deferred


class SyncWorker(sync.SyncWorker):
    def init_process(self) -> None:
        deferred.enable()
        super().init_process()  # loads the application, then runs the worker's loop

    def wait(self, timeout: float) -> Any:
        # Only reached between requests. With sends held, wait for a connection only until they
        # are due: under load one is already waiting and is served at once (more sends join the
        # held ones, with no system call spent on looking); none by then, and the held sends go
        # out before the worker sleeps for longer.
        due = deferred.seconds_until_due()
        if due is not None:
            ready = super().wait(min(due, timeout))
            if ready:
                return ready
            deferred.flush_all()
        return super().wait(timeout)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        deferred.flush_overdue()
        super().handle(listener, client, addr)

    def run(self) -> None:
        super().run()
        deferred.flush_all()  # a clean stop (TERM, max requests): nothing held is dropped
