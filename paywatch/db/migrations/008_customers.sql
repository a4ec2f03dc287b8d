-- Read model `customers`, projected from risk.scores (key tenant/customer_ref, compacted) by
-- the projector (paywatch/projections/customers.py). Derived from Kafka: it can be dropped
-- and rebuilt by replay.

-- One row per tenant/customer that has a risk score: the latest RiskScore record of its key.
-- The topic is compacted, so the latest record (highest offset) of a key is the truth, not
-- the one with the latest as_of: a row is replaced only by a record at a greater
-- (topic, partition, "offset"), so replays and overlapping projectors never move it back.
CREATE TABLE customers (
    tenant         text NOT NULL,
    customer_ref   text NOT NULL,
    score          double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    band           text NOT NULL CHECK (band IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    reasons        jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{feature, contribution, value}], largest first
    reason_texts   text[] NOT NULL DEFAULT '{}',        -- the same reasons in words
    model_version  text NOT NULL,
    as_of          timestamptz NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    "offset"       bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, customer_ref)
);
-- The analyst's worklist (GET /v1/customers): highest score first, the ref breaking ties so
-- the keyset cursor (score, customer_ref) is total. One index per listing: with a band and
-- without one.
CREATE INDEX customers_band_page ON customers (tenant, band, score DESC, customer_ref DESC);
CREATE INDEX customers_page ON customers (tenant, score DESC, customer_ref DESC);
