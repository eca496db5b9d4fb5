"""Messy settings. Every value comes from the environment (see local.sh.template)."""

import os
import ssl
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from project.env import env_bool, env_float, env_int, env_list, env_secret_key, env_str, env_url_with_credentials

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Django core -------------------------------------------------------------------------
DEBUG = env_bool("DJANGO_DEBUG", False)
# A production secret has no default: the process refuses to start without it, or with the
# template's placeholder.
SECRET_KEY = env_secret_key("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "messages.apps.MessagesConfig",
    "stats.apps.StatsConfig",
    "tasks.apps.TasksConfig",
]

# Session, auth and message middleware are lazy: they touch the database only when a view
# reads request.user or the session, which the write endpoints never do.
MIDDLEWARE = [
    # First, so that every line logged for a request (and its response) carries its id.
    "project.logs.request_id_middleware",
    # The route that answered, for the web request metrics (project.request_metrics).
    "project.request_metrics.request_route_middleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, but a POST without its trailing slash is a JSON 404, never a redirect.
    "project.http.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "project.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Behind a pooler in transaction mode (PgBouncer's pool_mode = transaction) each transaction may
# run on another server connection, so nothing may outlive a transaction on the server: no
# WITH HOLD cursors (Django's .iterator() outside a transaction declares one: off), and no
# startup options (PgBouncer refuses the "options" parameter; set statement_timeout on the role
# or database instead, see docs/operations.md). The code keeps no other session state (tests/system/test_pgbouncer.py).
POSTGRES_TRANSACTION_POOLING = env_bool("POSTGRES_TRANSACTION_POOLING", False)
_POSTGRES_STARTUP_OPTIONS = {
    # Statement timeout bounds every query so a stuck lock surfaces as an error.
    "options": f"-c statement_timeout={env_int('POSTGRES_STATEMENT_TIMEOUT_MS', 60000)}",
}
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env_str("POSTGRES_DB", "messy"),
        # The role that owns only Messy's schema (scripts/db-role.sh), never a superuser.
        "USER": env_str("POSTGRES_USER", "messy"),
        "PASSWORD": env_str("POSTGRES_PASSWORD", ""),
        "HOST": env_str("POSTGRES_HOST", "127.0.0.1"),
        "PORT": env_str("POSTGRES_PORT", "5432"),
        # Persistent connections: web and worker processes reuse one connection each (to the
        # pooler, when there is one: it hands out server connections per transaction).
        "CONN_MAX_AGE": env_int("POSTGRES_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "DISABLE_SERVER_SIDE_CURSORS": POSTGRES_TRANSACTION_POOLING,
        "OPTIONS": {
            "connect_timeout": env_int("POSTGRES_CONNECT_TIMEOUT", 5),
            **({} if POSTGRES_TRANSACTION_POOLING else _POSTGRES_STARTUP_OPTIONS),
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- memcached ---------------------------------------------------------------------------
# By default the Unix socket of make run's memcached (scripts/memcached.sh) on this host, in
# MESSY_RUN_DIR (which scripts/common.sh sets): every write sends it a copy, cheaper through a
# Unix socket than through TCP on loopback. Servers on other hosts: host:port (keys are hashed
# across the list).
MESSY_RUN_DIR = env_str("MESSY_RUN_DIR", str(BASE_DIR / "var" / "run"))
MEMCACHED_SERVERS = env_list("MEMCACHED_SERVERS", f"unix:{MESSY_RUN_DIR}/memcached/memcached.sock")
_MEMCACHED_OPTIONS = {
    "connect_timeout": env_float("MEMCACHED_TIMEOUT", 0.2),
    "timeout": env_float("MEMCACHED_TIMEOUT", 0.2),
    # memcached is never the only copy of anything: a dead node is skipped for a while and
    # reads as a miss instead of failing the request.
    "ignore_exc": True,
    "retry_attempts": 1,
    "dead_timeout": 5,
    "no_delay": True,
}
CACHES = {
    # Django's default cache (replies awaited); readyz probes its servers. The app's own
    # shared state lives in Redis.
    "default": {
        "BACKEND": "project.cache.PersistentPyMemcacheCache",
        "LOCATION": MEMCACHED_SERVERS,
        "KEY_PREFIX": env_str("MEMCACHED_KEY_PREFIX", "messy"),
        "OPTIONS": _MEMCACHED_OPTIONS,
    },
    # Copies of staged payloads for status reads. Written without waiting for memcached's
    # reply (noreply): on the write path's hot loop, and the Redis stream is the real copy.
    "staged": {
        "BACKEND": "project.cache.PersistentPyMemcacheCache",
        "LOCATION": MEMCACHED_SERVERS,
        "KEY_PREFIX": env_str("MEMCACHED_KEY_PREFIX", "messy"),
        "TIMEOUT": env_int("MEMCACHED_PAYLOAD_TTL", 3600),
        "OPTIONS": {**_MEMCACHED_OPTIONS, "default_noreply": True},
    },
}

# --- Redis: staging stream and shared counters --------------------------------------------
# Messy's own Redis (scripts/redis.sh: append-only file on, noeviction), not the machine's.
# By default the Unix socket of the staging Redis that scripts/redis.sh runs on this host (a
# round trip through it costs less than through TCP on loopback); other hosts name its TCP port,
# redis://host:6380/0.
# Each process connects as the Redis user of its role (docs/data-tier.md): runserver.sh sets
# MESSY_REDIS_ROLE=web (only what the web tier runs), the rest are workers; the user's password
# is REDIS_<ROLE>_PASSWORD (local.sh), or REDIS_USERNAME and REDIS_PASSWORD name another. They
# go into REDIS_URL and CELERY_BROKER_URL unless those carry credentials of their own.
MESSY_REDIS_ROLE = env_str("MESSY_REDIS_ROLE", "worker")
if MESSY_REDIS_ROLE not in ("web", "worker", "admin"):
    raise ImproperlyConfigured(f"MESSY_REDIS_ROLE must be web, worker or admin, not {MESSY_REDIS_ROLE!r}.")
REDIS_USERNAME = env_str("REDIS_USERNAME", f"messy-{MESSY_REDIS_ROLE}")
REDIS_PASSWORD = env_str("REDIS_PASSWORD", env_str(f"REDIS_{MESSY_REDIS_ROLE.upper()}_PASSWORD", ""))
REDIS_URL = env_url_with_credentials(
    env_str("REDIS_URL", f"unix://{BASE_DIR}/var/redis/staging/redis.sock?db=0"), REDIS_USERNAME, REDIS_PASSWORD
)
REDIS_TIMEOUT = env_float("REDIS_TIMEOUT", 2.0)
# The CA that signs the Redis servers' certificates, for rediss:// URLs (empty: the system's CAs).
REDIS_TLS_CA_CERT_FILE = env_str("REDIS_TLS_CA_CERT_FILE", "")
# Namespaces every Redis key, so several deployments (or test runs) can share one server.
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "messy")
# REDIS_URL names one node of a Redis Cluster (cluster mode: database 0 only), not a single Redis.
MESSY_REDIS_CLUSTER = env_bool("MESSY_REDIS_CLUSTER", False)
# Stream shards the backlog is split into (messages.staging: each with its own hash tag, spread
# over the slot space so a cluster's masters share them). Change it only with an empty backlog.
MESSY_STAGING_SHARDS = max(1, env_int("MESSY_STAGING_SHARDS", 1))
# Replicas that must hold a staged write before it is answered 202 (WAIT; 0: do not wait), and
# how long to wait for them before answering 503 instead.
MESSY_STAGING_WAIT_REPLICAS = env_int("MESSY_STAGING_WAIT_REPLICAS", 0)
MESSY_STAGING_WAIT_TIMEOUT_MS = env_int("MESSY_STAGING_WAIT_TIMEOUT_MS", 1000)

# --- Write path ----------------------------------------------------------------------------
MESSY_FIELD_MAX_CHARS = env_int("MESSY_FIELD_MAX_CHARS", 64)
MESSY_MESSAGE_MAX_CHARS = env_int("MESSY_MESSAGE_MAX_CHARS", 4096)
MESSY_WRITE_MAX_BYTES = env_int("MESSY_WRITE_MAX_BYTES", 32 * 1024)
MESSY_BATCH_MAX_ITEMS = env_int("MESSY_BATCH_MAX_ITEMS", 1000)
MESSY_BATCH_MAX_BYTES = env_int("MESSY_BATCH_MAX_BYTES", 4 * 1024 * 1024)
# A gzipped body (Content-Encoding: gzip) may inflate to at most this many times its sent size
# (413 beyond): every inflated byte is parsed, so this bounds the work a small body can buy.
MESSY_GZIP_MAX_RATIO = env_int("MESSY_GZIP_MAX_RATIO", 100)
MESSY_BACKLOG_MAX = env_int("MESSY_BACKLOG_MAX", 1_000_000)
# ...and in bytes: the stream's memory (MEMORY USAGE) plus what a write adds. Keep it well
# under the staging Redis's maxmemory, so writes get 503 backlog_full before Redis is full.
MESSY_BACKLOG_MAX_BYTES = env_int("MESSY_BACKLOG_MAX_BYTES", 256 * 1024 * 1024)
MESSY_RETRY_AFTER_SECONDS = env_int("MESSY_RETRY_AFTER_SECONDS", 5)
# Idempotency-Key records (and the records of messages sent with the client's own id) live this
# long, and cost Redis memory: new ones are refused past a budget per client and in total (in
# estimated bytes; at most twice a budget is alive), never plain writes. Keep the total and
# MESSY_BACKLOG_MAX_BYTES together well under the staging Redis's maxmemory (docs/fairness.md).
MESSY_IDEMPOTENCY_TTL = env_int("MESSY_IDEMPOTENCY_TTL", 3600)
MESSY_IDEMPOTENCY_CLIENT_BYTES = env_int("MESSY_IDEMPOTENCY_CLIENT_BYTES", 4 * 1024 * 1024)
MESSY_IDEMPOTENCY_MAX_BYTES = env_int("MESSY_IDEMPOTENCY_MAX_BYTES", 128 * 1024 * 1024)
# The part of the backlog (MESSY_BACKLOG_MAX and MESSY_BACKLOG_MAX_BYTES) one client (write API
# key, or address when keys are off) may hold: past it its writes get 429, others' still pass.
MESSY_BACKLOG_CLIENT_SHARE = env_float("MESSY_BACKLOG_CLIENT_SHARE", 0.1)
# How far apart web hosts' clocks may be: a status read looks for a staged message this far
# past its id's time in the stream.
MESSY_CLOCK_SKEW_MS = env_int("MESSY_CLOCK_SKEW_MS", 5000)
MESSY_WRITE_API_KEYS = env_list("MESSY_WRITE_API_KEYS", "")
MESSY_REQUIRE_WRITE_API_KEY = env_bool("MESSY_REQUIRE_WRITE_API_KEY", False)
# Write API keys shorter than this stop the start-up: a key is the whole credential, and failed
# guesses are only slowed (project.ratelimit), so it must be too long to guess (docs/front-door.md).
MESSY_WRITE_API_KEY_MIN_CHARS = env_int("MESSY_WRITE_API_KEY_MIN_CHARS", 32)
if any(len(k) < MESSY_WRITE_API_KEY_MIN_CHARS for k in MESSY_WRITE_API_KEYS):
    raise ImproperlyConfigured(
        f"MESSY_WRITE_API_KEYS: every key needs at least {MESSY_WRITE_API_KEY_MIN_CHARS} characters; make one with"
        " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
MESSY_BENCH_ENDPOINTS = env_bool("MESSY_BENCH_ENDPOINTS", False)
# Addresses of the reverse proxies in front of the web processes (project.http.client_ip):
# only a request from one of them may name its client in X-Forwarded-For. The default is the
# front door on the same host (scripts/front.sh); list your load balancers' addresses too.
MESSY_TRUSTED_PROXIES = env_list("MESSY_TRUSTED_PROXIES", "127.0.0.1,::1")
# Who may read /status and /metrics (project.operators): a staff session, this bearer token
# (empty: none works), or a request straight to a web process (not through a front door) from
# one of these networks.
MESSY_OPERATOR_TOKEN = env_str("MESSY_OPERATOR_TOKEN", "")
MESSY_OPERATOR_NETWORKS = env_list("MESSY_OPERATOR_NETWORKS", "127.0.0.0/8,::1/128")
# How long a web process reuses its last /status report: a burst of calls probes once.
MESSY_STATUS_CACHE_SECONDS = env_float("MESSY_STATUS_CACHE_SECONDS", 5.0)
# A secret the front door sends with every request (X-Messy-Front-Secret, scripts/front.sh reads
# the same variable). Set, a proxy's X-Forwarded-For is believed only with it: needed when the
# front door is on another host, where an address alone proves little. Generate it as the secret key.
MESSY_FRONT_SECRET = env_str("MESSY_FRONT_SECRET", "")
if MESSY_FRONT_SECRET and MESSY_FRONT_SECRET == SECRET_KEY:
    raise ImproperlyConfigured("MESSY_FRONT_SECRET travels in every request: it must not be DJANGO_SECRET_KEY")
# Per-client quotas (messages.clients): a token bucket per write API key (per client address
# when keys are off) of MESSY_QUOTA_BURST messages, refilled at MESSY_QUOTA_RATE a second;
# 0 turns quotas off. Overrides: "<key digest, key or address>=<rate>:<burst>,...".
MESSY_QUOTA_RATE = env_float("MESSY_QUOTA_RATE", 10_000.0)
MESSY_QUOTA_BURST = env_int("MESSY_QUOTA_BURST", 100_000)
MESSY_QUOTA_OVERRIDES = env_list("MESSY_QUOTA_OVERRIDES", "")
# Failed bearer tokens (jobs API) and admin logins per client address and window: 429 beyond.
MESSY_AUTH_FAILURES_MAX = env_int("MESSY_AUTH_FAILURES_MAX", 20)
MESSY_AUTH_FAILURES_WINDOW_SECONDS = env_int("MESSY_AUTH_FAILURES_WINDOW_SECONDS", 300)
# A message's optional sent_at may be this far ahead of the server's clock, and (except in
# imports, which carry history) this old.
MESSY_SENT_AT_MAX_FUTURE_SECONDS = env_int("MESSY_SENT_AT_MAX_FUTURE_SECONDS", 300)
MESSY_SENT_AT_MAX_AGE_SECONDS = env_int("MESSY_SENT_AT_MAX_AGE_SECONDS", 7 * 24 * 3600)

# --- Drain -----------------------------------------------------------------------------------
MESSY_DRAIN_BATCH_SIZE = env_int("MESSY_DRAIN_BATCH_SIZE", 5000)
MESSY_DRAIN_RUN_SECONDS = env_float("MESSY_DRAIN_RUN_SECONDS", 20.0)
MESSY_DRAIN_SLOT_TTL = env_int("MESSY_DRAIN_SLOT_TTL", 30)
MESSY_DRAIN_RECLAIM_IDLE_MS = env_int("MESSY_DRAIN_RECLAIM_IDLE_MS", 30_000)
MESSY_DRAIN_IDLE_WAIT_MS = env_int("MESSY_DRAIN_IDLE_WAIT_MS", 200)

# --- S3 ----------------------------------------------------------------------------------------
# Empty endpoint and keys: AWS, with boto3's own credential chain (AWS_* variables, an
# instance or task role, ~/.aws). local.sh.template's local development S3 block sets all three
# for the local server make run starts (scripts/s3.sh).
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL", "") or None
S3_PUBLIC_ENDPOINT_URL = env_str("S3_PUBLIC_ENDPOINT_URL", "") or S3_ENDPOINT_URL
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_BUCKET = env_str("S3_BUCKET", "messy-stats")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", "")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "")
# Opt-ins that need more than object access: create S3_BUCKET when it is missing
# (s3:CreateBucket), and keep a CORS rule for STATS_CORS_ALLOWED_ORIGINS among the bucket's
# rules (s3:GetBucketCors, s3:PutBucketCors). Off, the bucket and its CORS are the operator's.
S3_BUCKET_CREATE = env_bool("S3_BUCKET_CREATE", False)
S3_BUCKET_CORS_MANAGE = env_bool("S3_BUCKET_CORS_MANAGE", False)
S3_TIMEOUT = env_float("S3_TIMEOUT", 5.0)

# --- Stats -------------------------------------------------------------------------------------
STATS_BLOB_KEY = env_str("STATS_BLOB_KEY", "stats/latest.json")
STATS_URL_EXPIRY_SECONDS = env_int("STATS_URL_EXPIRY_SECONDS", 300)
STATS_TOP_CITIES = env_int("STATS_TOP_CITIES", 10)
STATS_TOP_USERS = env_int("STATS_TOP_USERS", 10)
# Users kept on the leaderboard the top list is read from; at least STATS_TOP_USERS.
STATS_TOP_USERS_KEPT = max(env_int("STATS_TOP_USERS_KEPT", 100), STATS_TOP_USERS)
STATS_TIMELINE_MINUTES = env_int("STATS_TIMELINE_MINUTES", 60)
# A drain with more behind its batch adds its counts to the rollup rows (a fold, one at a time)
# at most this often per process; its batches' counts wait as pending rows meanwhile.
STATS_ROLLUP_FOLD_SECONDS = env_float("STATS_ROLLUP_FOLD_SECONDS", 5.0)
STATS_STATES_MAX = env_int("STATS_STATES_MAX", 100)
# Origins whose pages may read the blob from S3 (the dashboard follows /stat/get/ there).
STATS_CORS_ALLOWED_ORIGINS = env_list("STATS_CORS_ALLOWED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000")
STATS_RETRY_AFTER_SECONDS = env_int("STATS_RETRY_AFTER_SECONDS", 10)
# The dashboard warns that its data is stale when the blob is older than this (published every minute).
STATS_STALE_AFTER_SECONDS = env_int("STATS_STALE_AFTER_SECONDS", 180)
# The dashboard and /stat/get/ for staff sessions only (the admin login); off: public.
STATS_LOGIN_REQUIRED = env_bool("STATS_LOGIN_REQUIRED", False)

# --- Jobs (tasks/: imports, erasures) ---------------------------------------------------------
# Uploads larger than this are refused with 413 before anything is stored.
MESSY_IMPORT_MAX_BYTES = env_int("MESSY_IMPORT_MAX_BYTES", 100 * 1024 * 1024)
MESSY_IMPORT_BATCH_SIZE = env_int("MESSY_IMPORT_BATCH_SIZE", 2000)
# A line (or JSON array element) longer than this is one rejected record, never buffered whole.
MESSY_IMPORT_MAX_RECORD_BYTES = env_int("MESSY_IMPORT_MAX_RECORD_BYTES", 64 * 1024)
MESSY_IMPORT_MAX_REPORTED_ERRORS = env_int("MESSY_IMPORT_MAX_REPORTED_ERRORS", 100_000)
# Uploaded files and error reports live under this key prefix in S3_BUCKET, one folder per job.
MESSY_JOB_S3_PREFIX = env_str("MESSY_JOB_S3_PREFIX", "jobs/")
# A running job whose heartbeat is older than this is taken to be dead and is resumed.
MESSY_JOB_STALE_SECONDS = env_int("MESSY_JOB_STALE_SECONDS", 60)
MESSY_JOB_MAX_ATTEMPTS = env_int("MESSY_JOB_MAX_ATTEMPTS", 5)
MESSY_JOB_RUN_SECONDS = env_int("MESSY_JOB_RUN_SECONDS", 600)
MESSY_JOB_RETENTION_DAYS = env_int("MESSY_JOB_RETENTION_DAYS", 30)
MESSY_JOB_PRUNE_CHUNK = env_int("MESSY_JOB_PRUNE_CHUNK", 500)
MESSY_JOB_PAGE_TOKEN_MAX_AGE = env_int("MESSY_JOB_PAGE_TOKEN_MAX_AGE", 3600)
MESSY_JOB_REPORT_URL_EXPIRY = env_int("MESSY_JOB_REPORT_URL_EXPIRY", 300)
# runserver.sh's gunicorn timeout: the longest a request runs before its worker is replaced. A web
# process sends the memcached copies of what it staged within about that (messages.staging
# copies_late_seconds), so an erasure deletes recent copies again once it has passed.
WEB_TIMEOUT = env_int("WEB_TIMEOUT", 30)
MESSY_ERASE_BATCH_SIZE = env_int("MESSY_ERASE_BATCH_SIZE", 1000)
MESSY_ERASE_RATE_PER_MINUTE = env_int("MESSY_ERASE_RATE_PER_MINUTE", 10)
MESSY_ERASE_PENDING_WAIT_SECONDS = env_int("MESSY_ERASE_PENDING_WAIT_SECONDS", 90)
# Retention (tasks/retention.py): an hourly job deletes the stored messages accepted more than
# this many days ago, rollups included, MESSY_RETENTION_CHUNK per transaction; 0 keeps them all.
MESSY_MESSAGE_RETENTION_DAYS = env_int("MESSY_MESSAGE_RETENTION_DAYS", 0)
MESSY_RETENTION_CHUNK = env_int("MESSY_RETENTION_CHUNK", 5000)

# --- Celery ------------------------------------------------------------------------------------
# A Redis of its own (scripts/redis.sh broker): a staging Redis that is full refuses the writes
# Celery needs to hand out tasks, and the drains that would empty it must still be scheduled.
# By default through the broker's Unix socket on this host (no TCP: other hosts name
# rediss://host:6381/0, see docs/data-tier.md).
CELERY_BROKER_URL = env_url_with_credentials(
    env_str("CELERY_BROKER_URL", f"redis+socket://{BASE_DIR}/var/redis/broker/redis.sock?virtual_host=0"),
    REDIS_USERNAME,
    REDIS_PASSWORD,
)
# Celery reads CELERY_BROKER_URL from the environment itself, ahead of this setting: it must
# say the same, credentials included.
os.environ["CELERY_BROKER_URL"] = CELERY_BROKER_URL
if CELERY_BROKER_URL.startswith("rediss://"):
    # Verified against REDIS_TLS_CA_CERT_FILE (or the system's CAs), as the staging client is.
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": REDIS_TLS_CA_CERT_FILE or None}
CELERY_RESULT_BACKEND = None  # Results live in our own tables (jobs) or nowhere: nothing reads them.
CELERY_TASK_IGNORE_RESULT = True
# JSON only: a pickle payload on a shared broker is remote code execution.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# Acknowledge after the task ran: every task is idempotent, so redelivery after a crash is safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: a long job must not sit on prefetched drain tasks.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # How long an unacknowledged task waits before the broker hands it out again. Our own
    # recovery (drain slots, job heartbeats) is faster; this is the last resort.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    # kombu builds the broker's connections itself and passes redis-py only the options it
    # knows, which name no protocol: they speak redis-py 8's default, RESP3 (kombu 5.7 reads it),
    # and retry nothing inside redis-py; Celery reconnects (CELERY_BROKER_CONNECTION_RETRY_*).
    "socket_timeout": REDIS_TIMEOUT,
    "socket_connect_timeout": REDIS_TIMEOUT,
    "retry_on_timeout": False,  # a timed-out BRPOP or publish is not sent twice
}
CELERY_TASK_DEFAULT_QUEUE = "ingest"
# Three queues so that long jobs never starve ingestion: runworker.sh gives "jobs" its own
# worker processes.
CELERY_TASK_QUEUES = [Queue("ingest"), Queue("stats"), Queue("jobs")]
CELERY_TASK_ROUTES = {
    "messages.*": {"queue": "ingest"},
    "stats.*": {"queue": "stats"},
    "tasks.*": {"queue": "jobs"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task events for Flower (scripts/flower.sh): workers report each task's start, end and runtime,
# and publishers its sending, so Flower shows task rates and queue times. Events go over the
# broker (a fanout, kept by nobody when no monitor listens), not through gossip or mingle.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
# A task running when the broker connection drops is cancelled rather than left to finish
# unacknowledged: the broker redelivers it anyway, and every task is idempotent.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Stopping a worker (TERM, which runworker.sh turns into Celery's soft shutdown): running
# tasks get this long to finish, then the worker exits and their messages go back to the
# queue (acks_late). Drains hand over within MESSY_DRAIN_RUN_SECONDS and jobs resume from
# their last checkpoint, so nothing is lost either way; give the supervisor a few seconds more.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("WORKER_STOP_TIMEOUT", 25.0)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3500)

# --- i18n, static, security ---------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# project is not an app: its own static files (the API docs page's vendored assets).
STATICFILES_DIRS = [BASE_DIR / "project" / "static"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# HTTPS in production (see the production example in local.sh.template); every one is off by
# default, so a local run over plain http:// keeps its cookies and is not redirected.
# Trust X-Forwarded-Proto only behind a proxy that sets it itself (the front door does).
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False) else None
)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Probes inside the network call the web hosts over plain HTTP, without the proxy's header.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# The write endpoints enforce their own, smaller limits and answer 413 in JSON.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(MESSY_BATCH_MAX_BYTES, 2_621_440)

# --- Build ---------------------------------------------------------------------------------------
# The commit /metrics reports in messy_build_info. Unset: `git rev-parse` of the checkout, once
# per process (set it where the code is deployed without its .git folder).
MESSY_GIT_COMMIT = env_str("MESSY_GIT_COMMIT", "")

# --- Logs ----------------------------------------------------------------------------------------
# Web, worker and beat alike (project.celery hands Celery this configuration). JSON lines by
# default, one object a line with the ids bound by project.logs (request_id, task_id,
# task_name, job_id, ...); "text" is the same content as classic lines, for a terminal.
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "project.logs.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "project.logs.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(process)d %(message)s",
            "timestamp": "time",
        },
        "text": {
            "()": "project.logs.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
