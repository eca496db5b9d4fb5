"""PgBouncer (Debian's package) in transaction pooling mode, started by a test in front of the
machine's PostgreSQL, as an operator would put it in front of Messy: any database, trust
authentication, a small pool, so that the transactions of every Messy process take turns on a
few server connections."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg2

from tests.harness import free_port

# What PgBouncer itself keeps per client and sets again on whichever server connection the
# client's next transaction gets (PgBouncer 1.18's tracked startup parameters): the only
# session-level settings that are safe in transaction mode.
TRACKED_PARAMETERS = ("client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name")
# The inspecting transaction's own characteristics, which pg_settings shows as set by the session.
_TRANSACTION_PARAMETERS = ("transaction_isolation", "transaction_read_only", "transaction_deferrable")


class PgBouncer:
    """pgbouncer on a free port of 127.0.0.1 with its configuration in a temporary folder, in
    front of the PostgreSQL server on 127.0.0.1:`upstream_port`, at most `pool_size` server
    connections per database. The caller runs command() (in the foreground: it logs to its
    standard error) and stops it; remove() deletes the folder."""

    def __init__(self, upstream_port: int = 5432, pool_size: int = 4) -> None:
        self.port = free_port()
        self.pool_size = pool_size
        self.directory = Path(tempfile.mkdtemp(prefix="messy-pgbouncer-"))
        self.directory.chmod(0o755)  # pgbouncer drops root for nobody, who must read the files
        users = self.directory / "users.txt"
        users.write_text('"postgres" ""\n')
        self.config = self.directory / "pgbouncer.ini"
        self.config.write_text(
            f"""[databases]
* = host=127.0.0.1 port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
auth_type = trust
auth_file = {users}
admin_users = postgres
"""
        )

    def command(self) -> list[str]:
        # Debian installs it in /usr/sbin, which a non-login PATH may lack.
        binary = shutil.which("pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin") or "pgbouncer"
        return [binary, "-u", "nobody", str(self.config)]

    def connect(self, database: str) -> psycopg2.extensions.connection:
        """A client connection through the pooler (not in autocommit: each transaction holds a
        server connection until it ends)."""
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=5)

    def show(self, what: str) -> list[dict[str, Any]]:
        """SHOW <what> on PgBouncer's admin console (STATS, CLIENTS, SERVERS, POOLS), as dicts."""
        console = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer")
        console.autocommit = True  # the console has no transactions
        try:
            with console.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                columns = [column.name for column in cursor.description or ()]
                return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            console.close()

    def server_session_state(self, database: str) -> list[tuple[int, str, str]]:
        """(backend pid, name, value) of every setting changed by a session-level SET on any of
        the pool's server connections, PgBouncer's own tracked parameters aside. Holds
        `pool_size` transactions open at once, so each runs on a server connection of its own
        and together they see the whole pool."""
        clients = [self.connect(database) for _ in range(self.pool_size)]
        found: list[tuple[int, str, str]] = []
        pids = set()
        try:
            for client in clients:
                with client.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_backend_pid(), name, setting FROM pg_settings"
                        " WHERE source = 'session' AND NOT name = ANY(%s)",
                        [[*TRACKED_PARAMETERS, *_TRANSACTION_PARAMETERS]],
                    )
                    rows = cursor.fetchall()
                    cursor.execute("SELECT pg_backend_pid()")
                    pids.add(cursor.fetchone()[0])  # type: ignore[index]
                found.extend(rows)
        finally:
            for client in clients:
                client.rollback()  # a client leaving mid-transaction costs PgBouncer its server connection
                client.close()
        assert len(pids) == self.pool_size, f"the inspecting transactions shared server connections: {pids}"
        return found

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
