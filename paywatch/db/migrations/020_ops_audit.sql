-- ops_audit (issue 10 item 4): every OpsAudit record of `ops.audit` (operators' and admins'
-- actions: keys, secrets by name, endpoints, policies, charging, email, replays), projected
-- with its Kafka coordinates. A read model like the others: dropped and rebuilt by replaying
-- the topic, which stays the record (kept forever). GET /v1/ops/audit lists it per tenant.

CREATE TABLE ops_audit (
    audit_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    subject     text,
    at          timestamptz NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    topic       text NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    "offset"    bigint NOT NULL CHECK ("offset" >= 0),
    UNIQUE (topic, partition, "offset")
);

COMMENT ON COLUMN ops_audit.actor IS 'cli:<os user> or api:<key id>';
COMMENT ON COLUMN ops_audit.details IS 'names and short values; never a secret value';

-- The admin listing: a tenant's actions, newest first.
CREATE INDEX ops_audit_page ON ops_audit (tenant, at DESC, audit_id DESC);

-- Row-level security as migration 014 sets it for every tenant table: the API reads only
-- the rows of the tenant bound to its transaction; the projector writes every tenant's.
ALTER TABLE ops_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_own_tenant ON ops_audit TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY projector_all_tenants ON ops_audit TO paywatch_projector
    USING (true) WITH CHECK (true);

GRANT SELECT ON ops_audit TO paywatch_api;
GRANT SELECT, INSERT, UPDATE ON ops_audit TO paywatch_projector;
