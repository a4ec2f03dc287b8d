-- Rebuilds of the read models from the log (issue 10 item 3): `paywatch replay` and
-- POST /v1/ops/replay (paywatch/projections/rebuild.py).
--
-- A job rebuilds some read models (`models`, the registry names) into fresh tables of its
-- own schema (`schema_name`, pw_rebuild_<job id>), with its own projection_checkpoints,
-- from offset 0 of their source topics, then swaps the new tables in and the old ones out
-- to pw_archive_<job id>, in one transaction. The row shows its progress while it runs;
-- a job interrupted (Ctrl-C, kill) stays `running` and resumes from its schema's
-- checkpoints when it is run again.
--
-- The API (paywatch_api) starts jobs and reads them, only its tenant's under row-level
-- security like every tenant table (migration 014); a job started from the command line
-- has no tenant and is seen by the owner alone. The rows are work done, not derived from
-- Kafka: the rebuild never touches this table's history.

CREATE TABLE replay_jobs (
    job_id          text PRIMARY KEY DEFAULT paywatch_new_public_id('rb_')
                    CHECK (job_id ~ '^rb_[a-z2-7]{14}$'),
    tenant          text REFERENCES tenants (tenant) ON DELETE CASCADE,
    models          text[] NOT NULL CHECK (cardinality(models) > 0),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'swapping', 'done', 'failed')),
    requested_by    text NOT NULL CHECK (char_length(requested_by) <= 200),
    events_done     bigint NOT NULL DEFAULT 0 CHECK (events_done >= 0),
    events_total    bigint CHECK (events_total >= 0),
    events_per_s    double precision,
    eta_s           double precision,
    targets         jsonb,
    error           text CHECK (char_length(error) <= 2000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    finished_at     timestamptz,
    CHECK ((status IN ('done', 'failed')) = (finished_at IS NOT NULL))
);

COMMENT ON TABLE replay_jobs IS
    'rebuilds of read models from offset 0 (paywatch replay, POST /v1/ops/replay): one row per job';
COMMENT ON COLUMN replay_jobs.tenant IS
    'the tenant whose operator key started it over the API; null: started from the command line';
COMMENT ON COLUMN replay_jobs.models IS
    'the read models rebuilt (registry names), with the models they read';
COMMENT ON COLUMN replay_jobs.requested_by IS 'cli:<os user> or api:<key id>';
COMMENT ON COLUMN replay_jobs.events_total IS
    'records of the source topics below the end offsets taken when the job first ran';
COMMENT ON COLUMN replay_jobs.targets IS
    '{topic: {partition: end offset}} taken when the job first ran: the bulk phase ends there';
COMMENT ON COLUMN replay_jobs.heartbeat_at IS
    'last progress report of the process running it: an old one on a running job means it was interrupted';

-- One job at a time: two rebuilds would swap the same tables. A job left running by a
-- killed process keeps its place until it is run again and finishes (or fails).
CREATE UNIQUE INDEX replay_jobs_one_active ON replay_jobs ((true))
    WHERE status IN ('pending', 'running', 'swapping');
CREATE INDEX replay_jobs_page ON replay_jobs (tenant, created_at DESC, job_id DESC);

ALTER TABLE replay_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_own_tenant ON replay_jobs TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));

-- POST /v1/ops/replay inserts the job; GET /v1/ops/replay/{id} reads it. The process that
-- runs the job logs in as the owner (it creates schemas and moves tables).
GRANT SELECT, INSERT ON replay_jobs TO paywatch_api;
