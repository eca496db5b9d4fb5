"""PostgreSQL through PgBouncer in transaction pooling mode (docs/operations.md, "PgBouncer"): Messy's web,
worker and beat processes and its management commands reach the database only through the
pooler, and drains, imports, erasures, publishing and a reconcile still come out exact. Four
server connections serve every process, so each transaction may land on a connection another
process used last; afterwards none of them may hold anything of a session: a temp table, an
advisory lock, a setting. A static check keeps such statements out of the code."""

import ast
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import ROOT, VENV_BIN, wait_for_port
from tests.system import test_faults
from tests.system.pgbouncer import PgBouncer
from tests.system.stack import Stack, assert_rollups_match, assert_stored_exactly_once, load_run

# --- the code keeps no session state (no server needed) ---------------------------------------

_SESSION_STATE = (
    # A SET outlives the transaction unless it is SET LOCAL (or SET TRANSACTION / CONSTRAINTS).
    (re.compile(r"^SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b|STORAGE\b)"), "a session-level SET (use SET LOCAL)"),
    (re.compile(r"^RESET\b|^DISCARD\b"), "a session-level RESET or DISCARD"),
    (re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I), "set_config(..., false) is session-level"),
    # pg_advisory_lock, _lock_shared, pg_try_advisory_lock, pg_advisory_unlock: held by the
    # session (the _xact_ forms end with the transaction).
    (re.compile(r"pg_(try_)?advisory_(un)?lock", re.I), "a session-level advisory lock (use pg_advisory_xact_lock)"),
    (
        re.compile(r"^CREATE\s+(GLOBAL\s+|LOCAL\s+)?TEMP(ORARY)?\s+TABLE(?!.*\bON\s+COMMIT\s+DROP\b)", re.S),
        "a temp table kept past commit (ON COMMIT DROP)",
    ),
    (re.compile(r"^(LISTEN|UNLISTEN|NOTIFY)\b"), "LISTEN/NOTIFY needs a session"),
    (re.compile(r"^(PREPARE|DEALLOCATE)\b"), "a prepared statement lives in the session"),
    (re.compile(r"\bWITH\s+HOLD\b|^DECLARE\b"), "a cursor kept past its transaction"),
    (re.compile(r"^LOAD\b"), "LOAD changes the session"),
)
_CODE = ("project", "stats", "messages", "tasks")


def session_state_statements(sql: str) -> list[str]:
    """Why each statement of `sql` would keep state in the server session (nothing: []).
    Statements are recognised by their keywords in capitals, as the code writes SQL (so that
    prose such as "Set the variable" is not SQL); function names in any case."""
    problems: list[str] = []
    for statement in sql.split(";"):
        statement = " ".join(statement.split())
        problems.extend(reason for pattern, reason in _SESSION_STATE if pattern.search(statement))
    return problems


def _string_constants(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


@pytest.mark.parametrize(
    "sql",
    [
        "SET statement_timeout = 0",
        "SET search_path TO x",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock_shared(%s)",
        "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS",
        "CREATE TEMPORARY TABLE t (a int)",
        "SELECT 1; LISTEN jobs",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SELECT set_config('work_mem', '1GB', false)",
    ],
)
def test_the_check_finds_statements_that_keep_session_state(sql):
    assert session_state_statements(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SET LOCAL statement_timeout = 0",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "UPDATE stats_totals SET messages = 1",
        "SELECT pg_advisory_xact_lock(1); SELECT pg_advisory_xact_lock_shared(2)",
        "CREATE TEMP TABLE IF NOT EXISTS t (a int) ON COMMIT DROP",
        "DROP TABLE IF EXISTS pg_temp.r; CREATE TEMP TABLE r ON COMMIT DROP AS SELECT 1",
    ],
)
def test_the_check_lets_transaction_scoped_statements_through(sql):
    assert session_state_statements(sql) == []


def test_no_sql_in_the_code_keeps_state_in_the_server_session():
    """Every SQL text in the apps (string constants, migrations included) is safe behind a
    pooler in transaction mode: state ends with the transaction."""
    found = [
        f"{path.relative_to(ROOT)}:{line}: {problem}"
        for app in _CODE
        for path in sorted((ROOT / app).rglob("*.py"))
        for line, text in _string_constants(path)
        for problem in session_state_statements(text)
    ]
    assert found == []


def test_settings_behind_a_transaction_pooler_use_no_server_side_cursors_or_startup_options():
    script = "from django.conf import settings; import json; print(json.dumps(settings.DATABASES['default']))"
    for pooling, cursors_disabled, options in (("0", False, True), ("1", True, False)):
        env = {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_SECRET_KEY": "x", "PATH": str(VENV_BIN)}
        output = subprocess.run(
            [str(VENV_BIN / "python"), "-c", f"import django; django.setup(); {script}"],
            cwd=ROOT,
            env={**env, "POSTGRES_TRANSACTION_POOLING": pooling},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        database = json.loads(output.strip().splitlines()[-1])
        assert database["DISABLE_SERVER_SIDE_CURSORS"] is cursors_disabled
        assert ("options" in database["OPTIONS"]) is options
        assert database["CONN_MAX_AGE"] == 60


# --- the service through PgBouncer --------------------------------------------------------------


@pytest.fixture
def pooled(stack: Stack) -> Iterator[tuple[Stack, PgBouncer]]:
    """The stack's processes, started from now on, reach PostgreSQL only through PgBouncer in
    transaction mode (POSTGRES_PORT, POSTGRES_TRANSACTION_POOLING=1). The statement timeout
    is the database's, as docs/operations.md says to set it (PgBouncer refuses startup options).
    The test's own checks connect directly."""
    bouncer = PgBouncer(pool_size=4)
    stack.start("pgbouncer", bouncer.command())
    wait_for_port(bouncer.port)
    with_statement_timeout(stack, "SET statement_timeout = 60000")
    stack.env = {**stack.env, "POSTGRES_PORT": str(bouncer.port), "POSTGRES_TRANSACTION_POOLING": "1"}
    yield stack, bouncer
    stack.stop_all()
    with_statement_timeout(stack, "RESET statement_timeout")
    bouncer.remove()


def with_statement_timeout(stack: Stack, change: str) -> None:
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{stack.config.database}" {change}')
    connection.close()


def manage(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """manage.py with the stack's environment (through the pooler)."""
    return subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def job_finished(stack: Stack, token: str, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(
            f"http://127.0.0.1:{stack.web_port}/tasks/jobs/{job_id}/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def job_start(stack: Stack, token: str, path: str, body: bytes, content_type: str) -> str:
    response = requests.post(
        f"http://127.0.0.1:{stack.web_port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def stored_count(stack: Stack, where: str = "true") -> int:
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM message WHERE {where}")
        (count,) = cursor.fetchone() or (0,)
    connection.close()
    return int(count)


@pytest.mark.system
def test_drains_imports_erasures_and_publishing_come_out_exact_through_pgbouncer(pooled):
    stack, bouncer = pooled
    stack.start_web()
    stack.worker("worker", role="all", concurrency=2)
    stack.start_beat()

    # Drains.
    result = load_run(stack, singles=1500, batches=15, batch_size=200)
    assert result.statuses == {202: 1515}
    assert_stored_exactly_once(stack, result.accepted)
    drained = len(result.accepted)

    # An import with bad records (its error report is read with a cursor over the rejects).
    created = manage(stack, "api_token", "create", "pgbouncer-test", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    records = [
        {"username": f"importer{i % 7}", "city": f"c{i % 5}", "state": "IMP", "message": f"imported {i}"}
        for i in range(3000)
    ]
    lines = [json.dumps(record) if i % 500 else "{broken" for i, record in enumerate(records)]
    job_id = job_start(stack, token, "/tasks/import/", "\n".join(lines).encode(), "application/x-ndjson")
    job = job_finished(stack, token, job_id)
    assert (job["status"], job["result"]["stored"], job["result"]["rejected"]) == ("succeeded", 2994, 6), job
    report = requests.get(
        f"http://127.0.0.1:{stack.web_port}/tasks/jobs/{job_id}/report/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert [error["line"] for error in report.json()["errors"]] == [1, 501, 1001, 1501, 2001, 2501]

    # An erasure (under the erasure fence's transaction-scoped advisory lock).
    erased_user = "user3"
    erased = stored_count(stack, f"username = '{erased_user}'")
    assert erased > 0
    job_id = job_start(
        stack, token, "/tasks/erase/", json.dumps({"username": erased_user}).encode(), "application/json"
    )
    job = job_finished(stack, token, job_id)
    assert (job["status"], job["result"]["messages_erased"]) == ("succeeded", erased), job
    expected = drained + 2994 - erased
    assert stored_count(stack) == expected
    connection = stack.db()
    with connection.cursor() as cursor:
        assert_rollups_match(cursor)
    connection.close()

    # A publish (REPEATABLE READ snapshot) and a reconcile (a temp table, SET LOCAL).
    published = manage(stack, "shell", "-c", "from stats.tasks import stats_publish; stats_publish.delay(force=True)")
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 30
    while True:
        redirect = requests.get(f"http://127.0.0.1:{stack.web_port}/stat/get/", allow_redirects=False, timeout=10)
        blob = requests.get(redirect.headers["Location"], timeout=10).json() if redirect.status_code == 302 else {}
        if blob.get("totals", {}).get("messages") == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert blob["totals"]["messages"] == expected, blob
    reconcile = manage(stack, "stats_reconcile")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr

    # It all went through the pooler: its clients ran the transactions, on at most four server
    # connections. (The test's own checks connect directly, so every transaction the pooler
    # counted is the stack's: the import's batches and job updates, the drains, the erasure, the
    # publish, beat's schedule reads: 92 to 103 in tonight's runs, fewer when the drains take
    # bigger batches; 20 is a floor far below any run.)
    assert [client for client in bouncer.show("CLIENTS") if client["database"] == stack.config.database]
    (stats,) = [row for row in bouncer.show("STATS") if row["database"] == stack.config.database]
    assert stats["total_xact_count"] > 20, stats
    servers = [server for server in bouncer.show("SERVERS") if server["database"] == stack.config.database]
    assert 0 < len(servers) <= bouncer.pool_size, servers

    # Nothing of a session is left on the server connections the next clients will get.
    for name in ("web", "worker", "beat"):
        stack.processes.pop(name).stop()
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relpersistence = 't'")
        assert cursor.fetchall() == [], "temp tables outlived their transactions"
        cursor.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert cursor.fetchall() == [], "advisory locks outlived their transactions"
    connection.close()
    assert bouncer.server_session_state(stack.config.database) == []


@pytest.mark.system
def test_a_worker_killed_mid_batch_through_pgbouncer_loses_nothing_and_duplicates_nothing(pooled):
    """kill -9 of a worker holding a batch: PgBouncer sees its client vanish mid-transaction and
    must roll the server connection back before handing it out again."""
    stack, _ = pooled
    test_faults.test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(stack)
