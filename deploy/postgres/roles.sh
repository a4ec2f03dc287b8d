#!/bin/sh
# The login roles the api and the projector use under row-level security (migration 014,
# README "Row-level security"), with the passwords docker-compose.yml hands the postgres
# service. The postgres image runs this once, when it initialises an empty data volume; it is
# idempotent, so on an older volume run it by hand once (README says how). Migration 014
# finds the roles and leaves them as they are.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v api_password="$PAYWATCH_API_DB_PASSWORD" \
    -v projector_password="$PAYWATCH_PROJECTOR_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', name)
FROM (VALUES ('paywatch_api'), ('paywatch_projector')) AS wanted(name)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
SELECT format('ALTER ROLE paywatch_api LOGIN PASSWORD %L', :'api_password') \gexec
SELECT format('ALTER ROLE paywatch_projector LOGIN PASSWORD %L', :'projector_password') \gexec
SQL
