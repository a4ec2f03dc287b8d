-- PayPal certificate mode's replay guard (paywatch/tenants/transmissions.py): the SHA-256 of
-- the first body bytes seen under each PayPal transmission id. PayPal signs only a CRC-32
-- of the body, so the same id with other bytes is a forged body and is refused (401).
-- Ingest state, not a read model: it is not rebuilt by replay. Rows older than the
-- freshness window (PAYWATCH_PAYPAL_TOLERANCE_S) plus a margin are deleted by the ingest.
CREATE TABLE paypal_transmissions (
    tenant           text NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    transmission_id  text NOT NULL,
    body_sha256      bytea NOT NULL CHECK (octet_length(body_sha256) = 32),
    first_seen       timestamptz NOT NULL,
    PRIMARY KEY (tenant, transmission_id)
);
-- The ingest's periodic prune deletes by age.
CREATE INDEX paypal_transmissions_first_seen ON paypal_transmissions (first_seen);
