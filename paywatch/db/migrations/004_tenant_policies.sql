-- Tenant recovery policies, projected from recovery.policies (key tenant) by the projector.
-- The topic is the system of record: both tables can be dropped and rebuilt by replay.
-- Policy writers (API, CLI) also upsert both directly after the broker ack, so a read right
-- after a change sees it; the projector's writes of the same record change nothing.

-- One row per tenant that ever stored a policy: the policy in force. A tenant without a row
-- runs the defaults. The row only moves forward: a change replaces it when its
-- (changed_at, topic, partition, offset) is greater.
CREATE TABLE tenant_policies (
    tenant             text PRIMARY KEY,
    policy             jsonb NOT NULL,
    revision           text NOT NULL,
    previous_revision  text,
    changed_at         timestamptz NOT NULL,
    changed_by         text NOT NULL,
    reason             text,
    topic              text NOT NULL,
    partition          integer NOT NULL,
    "offset"           bigint NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Every PolicyChanged record with its Kafka coordinates (audit, GET /v1/policy/history).
CREATE TABLE tenant_policy_changes (
    topic              text NOT NULL,
    partition          integer NOT NULL,
    "offset"           bigint NOT NULL,
    tenant             text NOT NULL,
    revision           text NOT NULL,
    previous_revision  text,
    policy             jsonb NOT NULL,
    changed_at         timestamptz NOT NULL,
    changed_by         text NOT NULL,
    reason             text,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX tenant_policy_changes_page
    ON tenant_policy_changes (tenant, changed_at DESC, topic DESC, partition DESC, "offset" DESC);
