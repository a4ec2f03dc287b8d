-- Live payment retries (issue 11 item 5).
--
-- charge_accounts  which providers a tenant has turned live charging on for. The sandbox
--                  simulator stays the default: a RETRY_PAYMENT of a (tenant, provider) not
--                  listed here is simulated, as before. The credentials are tenant secrets
--                  (tenant_secrets, sealed), never stored here.
-- charge_claims    a live retry is claimed here, committed, before the provider is called:
--                  one executor at a time holds a command (lease_until), so two executors
--                  after a rebalance never charge it at once; a claim found again after its
--                  lease (its executor died between the charge and the journal) is resumed
--                  with the same idempotency key (tries > 1), which the provider client
--                  resolves without a second charge (paywatch/charging/base.py).
--                  The journal (executed_commands) remains the record of the outcome.
--
-- Both are the executor's (owner); the API and the projector get no grant.

CREATE TABLE charge_accounts (
    tenant     text NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    provider   text NOT NULL
               CHECK (provider IN ('stripe', 'braintree', 'authorizenet', 'adyen', 'checkout')),
    enabled_at timestamptz NOT NULL DEFAULT now(),
    enabled_by text CHECK (char_length(enabled_by) <= 200),
    PRIMARY KEY (tenant, provider)
);
COMMENT ON COLUMN charge_accounts.enabled_by IS 'cli:<os user>';

CREATE TABLE charge_claims (
    tenant       text NOT NULL,
    command_id   text NOT NULL,
    provider     text NOT NULL,
    invoice_ref  text NOT NULL,
    claimed_by   text NOT NULL CHECK (char_length(claimed_by) <= 200),
    lease_until  timestamptz NOT NULL,
    tries        integer NOT NULL DEFAULT 1 CHECK (tries >= 1),
    first_claimed_at timestamptz NOT NULL DEFAULT now(),
    last_error   text CHECK (char_length(last_error) <= 500),
    PRIMARY KEY (tenant, command_id)
);
COMMENT ON COLUMN charge_claims.claimed_by IS 'the executor instance (host, pid, start) holding it';
COMMENT ON COLUMN charge_claims.tries IS 'claims of this command: above 1, an earlier try may have reached the provider';
COMMENT ON COLUMN charge_claims.last_error IS 'why the last try produced no outcome (provider unavailable)';

ALTER TABLE charge_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE charge_claims ENABLE ROW LEVEL SECURITY;
