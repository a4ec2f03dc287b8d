-- Heartbeats of the worker, projector and executor processes (paywatch/db/heartbeats.py):
-- the latest state each process instance reported, read by GET /health of ingest and api
-- and by `paywatch status`. One row per (app_id, process, instance); a restart updates it.
CREATE TABLE process_health (
    app_id              text        NOT NULL,
    process             text        NOT NULL,
    instance            text        NOT NULL,
    pid                 integer     NOT NULL,
    starts              integer     NOT NULL DEFAULT 1,
    unclean_restarts    integer     NOT NULL DEFAULT 0,
    last_start_unclean  boolean     NOT NULL DEFAULT false,
    started_at          timestamptz NOT NULL,
    heartbeat_at        timestamptz NOT NULL,
    stopped_at          timestamptz,            -- set by a requested stop, cleared at start
    records_total       bigint      NOT NULL DEFAULT 0,
    records_per_s       double precision NOT NULL DEFAULT 0,
    dead_letters        bigint      NOT NULL DEFAULT 0,  -- in the current run
    last_dead_letter_at timestamptz,
    last_error          text,                   -- scrubbed: no card-like digits, no passwords
    last_error_at       timestamptz,
    lag                 jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- {"topic[partition]": records}
    batches             jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- {stage: {count, mean, max}}
    PRIMARY KEY (app_id, process, instance)
);
