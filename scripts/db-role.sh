#!/usr/bin/env bash
# The `messy` database role of make run and production: it may log in and owns the schema
# `messy` of the database (its search_path), nothing else: no superuser, no CREATEDB, no CREATE
# on the public schema. A database that make run migrated as the superuser before (tables in
# public, owned by postgres) has them moved into the schema and given to the role, once.
#   scripts/db-role.sh DATABASE PSQL_ARGS...   (services.sh passes the superuser's connection)
# Trust auth on the socket and 127.0.0.1 here; elsewhere give the role a password
# (ALTER ROLE messy PASSWORD '...') and set POSTGRES_PASSWORD.
set -euo pipefail
db="$1"
shift
role="${MESSY_DB_ROLE:-messy}"
psql "$@" -d "$db" -v ON_ERROR_STOP=1 -q <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE "$role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
END \$\$;
CREATE SCHEMA IF NOT EXISTS "$role" AUTHORIZATION "$role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER ROLE "$role" IN DATABASE "$db" SET search_path = "$role";
DO \$\$
DECLARE
    relation regclass;
BEGIN
    IF to_regclass('public.django_migrations') IS NOT NULL
            AND to_regclass('"$role".django_migrations') IS NULL THEN
        RAISE WARNING 'moving the tables of schema public into schema $role, owned by $role';
        FOR relation IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') LOOP
            -- Their indexes, constraints and owned sequences go with them.
            EXECUTE format('ALTER TABLE %s SET SCHEMA "$role"', relation);
        END LOOP;
        FOR relation IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = '$role' AND c.relkind IN ('r', 'p', 'v', 'm') LOOP
            EXECUTE format('ALTER TABLE %s OWNER TO "$role"', relation);
        END LOOP;
    END IF;
END \$\$;
SQL
