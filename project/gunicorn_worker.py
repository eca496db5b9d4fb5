"""runserver.sh's gunicorn worker class: gunicorn's sync worker, which also makes the sends its
process holds (project.deferred) whenever it has no connection waiting, and before a request
once they are overdue."""

from typing import Any

from gunicorn.workers import sync

from project import deferred


class SyncWorker(sync.SyncWorker):
    def init_process(self) -> None:
        deferred.enable()
        super().init_process()  # loads the application, then runs the worker's loop

    def wait(self, timeout: float) -> Any:
        # Only reached between requests. With sends held, look without blocking first: a
        # connection waiting is served (more sends may join the held ones); none, and the held
        # sends go out before the worker sleeps.
        if deferred.holding():
            ready = super().wait(0)
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
