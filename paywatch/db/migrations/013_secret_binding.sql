-- Provider-secret lifecycle (issue 12 item 3, secrets half).
--
-- Safe on an existing database with Fernet rows: both columns are added only if missing,
-- revoked_at starts NULL (nothing revoked) and master_key_id of a Fernet token is NULL
-- (it opens as before; `paywatch secrets rotate-key` re-seals it in the bound format).
ALTER TABLE tenant_secrets ADD COLUMN IF NOT EXISTS revoked_at timestamptz;

-- Read from the token itself, so it can never disagree with the value: format 2 is
-- 'PW2' | 4-byte key id | nonce | AES-256-GCM (paywatch/tenants/crypto.py).
ALTER TABLE tenant_secrets ADD COLUMN IF NOT EXISTS master_key_id text
    GENERATED ALWAYS AS (
        CASE WHEN substring(value_enc FROM 1 FOR 3) = '\x505732'::bytea
             THEN encode(substring(value_enc FROM 4 FOR 4), 'hex')
        END
    ) STORED;

COMMENT ON COLUMN tenant_secrets.revoked_at IS
    'never verifies again from this instant (tenant secret --revoke-previous), grace or not';
COMMENT ON COLUMN tenant_secrets.master_key_id IS
    'id of the master key that sealed value_enc (null: legacy Fernet, no id); secrets rotate-key re-seals live rows not under PAYWATCH_SECRET_KEY';
