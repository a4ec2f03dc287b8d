-- paywatch schema v1: configuration (tenants, secrets, keys) + read models.
-- Read-model tables (invoices, failures, event_log, projection_checkpoints) are
-- derived from Kafka and can be dropped and rebuilt by replay.

CREATE TABLE tenants (
    tenant      text PRIMARY KEY CHECK (tenant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Provider secrets, Fernet-encrypted with a key derived from PAYWATCH_SECRET_KEY.
-- A new value supersedes the old one; the old one stays valid for the grace period.
CREATE TABLE tenant_secrets (
    id             bigserial PRIMARY KEY,
    tenant         text NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    provider       text NOT NULL,
    name           text NOT NULL,
    value_enc      bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    superseded_at  timestamptz
);
CREATE UNIQUE INDEX tenant_secrets_current
    ON tenant_secrets (tenant, provider, name) WHERE superseded_at IS NULL;
CREATE INDEX tenant_secrets_lookup ON tenant_secrets (tenant, provider);

-- API keys are stored as SHA-256 hashes; only the short prefix is kept readable.
CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('analyst', 'operator', 'admin')),
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE projection_checkpoints (
    projection   text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Every canonical event with its Kafka coordinates (audit).
CREATE TABLE event_log (
    event_id      uuid PRIMARY KEY,
    tenant        text NOT NULL,
    type          text NOT NULL,
    provider      text NOT NULL,
    source_type   text NOT NULL,
    invoice_ref   text NOT NULL,
    customer_ref  text,
    occurred_at   timestamptz NOT NULL,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint NOT NULL,
    payload       jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_log_invoice ON event_log (tenant, invoice_ref, occurred_at);

-- One row per failed attempt.
CREATE TABLE failures (
    event_id          uuid PRIMARY KEY,
    tenant            text NOT NULL,
    invoice_ref       text NOT NULL,
    provider          text NOT NULL,
    customer_ref      text,
    payment_ref       text,
    occurred_at       timestamptz NOT NULL,
    amount_minor      bigint,
    currency          text,
    attempt           integer,
    decline_code      text,
    decline_category  text NOT NULL,
    decline_network   text,
    network_code      text,
    advice_code       text,
    decline_message   text,
    card_brand        text,
    card_last4        text,
    topic             text NOT NULL,
    partition         integer NOT NULL,
    "offset"          bigint NOT NULL
);
CREATE INDEX failures_page ON failures (tenant, occurred_at DESC, event_id DESC);
CREATE INDEX failures_invoice ON failures (tenant, invoice_ref);
CREATE INDEX failures_customer ON failures (tenant, customer_ref, occurred_at DESC);

-- One row per tenant/invoice that has had at least one failure.
CREATE TABLE invoices (
    tenant                  text NOT NULL,
    invoice_ref             text NOT NULL,
    provider                text NOT NULL,
    customer_ref            text,
    subscription_ref        text,
    status                  text NOT NULL,
    amount_minor            bigint,
    currency                text,
    attempts                integer NOT NULL DEFAULT 0,
    last_decline_code       text,
    last_decline_category   text,
    last_decline_message    text,
    last_decline_at         timestamptz,
    first_failed_at         timestamptz,
    last_failed_at          timestamptz,
    recovered_at            timestamptz,
    canceled_at             timestamptz,
    last_event_at           timestamptz NOT NULL,
    last_event_id           uuid NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, invoice_ref)
);
CREATE INDEX invoices_page ON invoices (tenant, last_event_at DESC, invoice_ref DESC);
CREATE INDEX invoices_status ON invoices (tenant, status, last_event_at DESC, invoice_ref DESC);
CREATE INDEX invoices_customer ON invoices (tenant, customer_ref);
