-- Read model `alerts`, projected from the alerts topic (key tenant, 90 days) by the projector
-- (paywatch/projections/alerts.py). Derived from Kafka: it can be dropped and rebuilt by
-- replay.

-- One row per tenant/incident (alert_id): the incident's latest Alert record. Every record
-- of a tenant is on one partition, in the order the worker decided them (OPEN, OPEN updates,
-- one RESOLVED), so the latest record is the one at the greatest (topic, partition,
-- "offset"): a row is replaced only by such a record, so a replay never reopens a resolved
-- incident. updated_at is that record's window end (the time the detector last judged the
-- incident), not the time the row was written, so a rebuild lists alerts in the same order.
CREATE TABLE alerts (
    tenant         text NOT NULL,
    alert_id       text NOT NULL,
    kind           text NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL')),
    status         text NOT NULL CHECK (status IN ('OPEN', 'RESOLVED')),
    provider       text,
    decline_code   text,
    customer_ref   text,
    observed       double precision NOT NULL,
    baseline       double precision NOT NULL,
    window_start   timestamptz NOT NULL,
    window_end     timestamptz NOT NULL,
    message        text,
    opened_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,  -- = window_end of the latest record
    resolved_at    timestamptz,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    "offset"       bigint NOT NULL,
    PRIMARY KEY (tenant, alert_id)
);
-- GET /v1/alerts: newest updated_at first, the id breaking ties so the keyset cursor
-- (updated_at, alert_id) is total. One index per listing: of one status, and of all.
CREATE INDEX alerts_status_page ON alerts (tenant, status, updated_at DESC, alert_id DESC);
CREATE INDEX alerts_page ON alerts (tenant, updated_at DESC, alert_id DESC);
