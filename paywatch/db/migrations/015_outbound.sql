-- Outbound webhooks (issue 11 item 1): tenants' endpoints and the delivery log.
--
-- endpoints   where a tenant wants events sent, which types, and the signing secret
--             (Standard Webhooks `whsec_`), sealed at rest like provider secrets
--             (paywatch/tenants/crypto.py, bound to tenant / 'endpoint' / endpoint id).
-- deliveries  one row per (endpoint, event): the envelope sent, its attempts and outcome.
--             UNIQUE (endpoint_id, event_id) makes enqueueing the same event twice a no-op,
--             and event_id is the `webhook-id` receivers deduplicate on.
--
-- The executor (owner) enqueues and sends; the API (paywatch_api) manages its tenant's
-- endpoints and reads and redelivers its tenant's deliveries, under row-level security
-- like every tenant table (migration 014). The projector needs neither table.

-- A public id: the prefix and 14 lowercase base32 characters (70 random bits) from a
-- version-4 UUID, skipping byte 6 (version nibble) and byte 8 (variant bits) as
-- paywatch_new_key_id (migration 012) does, so every character is uniform.
CREATE FUNCTION paywatch_new_public_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT prefix || string_agg(
        substr('abcdefghijklmnopqrstuvwxyz234567', get_byte(r.b, i) % 32 + 1, 1), ''
        ORDER BY ord)
    FROM (SELECT uuid_send(gen_random_uuid()) AS b) AS r,
         unnest(ARRAY[0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14, 15])
             WITH ORDINALITY AS picked(i, ord)
$$;

CREATE TABLE endpoints (
    endpoint_id          text PRIMARY KEY DEFAULT paywatch_new_public_id('ep_')
                         CHECK (endpoint_id ~ '^ep_[a-z2-7]{14}$'),
    tenant               text NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    url                  text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    kind                 text NOT NULL DEFAULT 'webhook' CHECK (kind IN ('webhook', 'slack')),
    -- The type names are checked by the code (paywatch/outbound/events.py EVENT_TYPES), so a
    -- new type needs no migration.
    events               text[] NOT NULL CHECK (cardinality(events) > 0),
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    secret_enc           bytea NOT NULL,
    previous_secret_enc  bytea,
    previous_valid_until timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    created_by           text,
    secret_rotated_at    timestamptz,
    rotated_by           text,
    disabled_at          timestamptz,
    disabled_by          text,
    CHECK ((previous_secret_enc IS NULL) = (previous_valid_until IS NULL)),
    CHECK ((status = 'disabled') = (disabled_at IS NOT NULL))
);

COMMENT ON COLUMN endpoints.url IS
    'the target; for kind slack (whose URL is its secret) only scheme://host/..., the URL itself sealed in secret_enc';
COMMENT ON COLUMN endpoints.secret_enc IS
    'webhook: the whsec_ signing secret; slack: the incoming-webhook URL; sealed for (tenant, endpoint, <endpoint id>)';
COMMENT ON COLUMN endpoints.previous_secret_enc IS
    'the secret a rotation replaced, sealed for (tenant, endpoint, <endpoint id>/previous); still signs until previous_valid_until';
COMMENT ON COLUMN endpoints.created_by IS 'cli:<os user> or api:<key id>';

-- The admin listing: a tenant's endpoints, newest first.
CREATE INDEX endpoints_page ON endpoints (tenant, created_at DESC, endpoint_id DESC);
-- Fan-out of one event: the tenant's active endpoints.
CREATE INDEX endpoints_active ON endpoints (tenant) WHERE status = 'active';

CREATE TABLE deliveries (
    delivery_id     text PRIMARY KEY DEFAULT paywatch_new_public_id('dlv_')
                    CHECK (delivery_id ~ '^dlv_[a-z2-7]{14}$'),
    tenant          text NOT NULL,
    endpoint_id     text NOT NULL REFERENCES endpoints (endpoint_id) ON DELETE CASCADE,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    body            jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    round_attempts  integer NOT NULL DEFAULT 0 CHECK (round_attempts >= 0),
    next_attempt_at timestamptz DEFAULT now(),
    leased_until    timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text CHECK (char_length(last_error) <= 500),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);

COMMENT ON COLUMN deliveries.event_id IS 'the webhook-id header: the same on every attempt';
COMMENT ON COLUMN deliveries.attempts IS 'attempts made, redeliveries included';
COMMENT ON COLUMN deliveries.round_attempts IS
    'attempts since the delivery was enqueued or last redelivered: picks the next retry delay';
COMMENT ON COLUMN deliveries.next_attempt_at IS 'pending: when the next attempt is due';
COMMENT ON COLUMN deliveries.leased_until IS
    'an attempt is in flight until then at the latest: no other executor claims the row meanwhile';
COMMENT ON COLUMN deliveries.last_status IS 'HTTP status of the last attempt; null: no answer';
COMMENT ON COLUMN deliveries.delivered_at IS 'the last attempt answered 2xx';

-- The due scan: per endpoint (the dispatcher claims for one endpoint at a time, so one
-- endpoint's backlog never stands in another's way), and overall (when is the next one due).
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_next ON deliveries (next_attempt_at) WHERE status = 'pending';
-- The log: newest first, for the tenant, one endpoint of it, or one status.
CREATE INDEX deliveries_page ON deliveries (tenant, created_at DESC, delivery_id DESC);
CREATE INDEX deliveries_endpoint_page
    ON deliveries (tenant, endpoint_id, created_at DESC, delivery_id DESC);
CREATE INDEX deliveries_status_page
    ON deliveries (tenant, status, created_at DESC, delivery_id DESC);

-- Row-level security as migration 014 sets it for every tenant table: the API sees and
-- writes only the rows of the tenant bound to its transaction; the owner is unaffected.
ALTER TABLE endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_own_tenant ON endpoints TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY api_own_tenant ON deliveries TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));

-- What the API's routes do (paywatch/api/query/routes/endpoints.py, deliveries.py): add,
-- list, disable and rotate endpoints (the sealed secret is read to re-seal it as the
-- previous one); list deliveries and redeliver one (an UPDATE). Enqueueing is the
-- executor's, as the owner.
GRANT SELECT, INSERT, UPDATE ON endpoints TO paywatch_api;
GRANT SELECT, UPDATE ON deliveries TO paywatch_api;
