-- API key lifecycle (issue 12 item 3): a public id, a label, expiry, last use, who created
-- and revoked each key, and which key replaced it when it was rotated.
--
-- key_id is what people and the API name a key by (`paywatch apikey revoke acme key_...`):
-- 'key_' and 10 lowercase base32 characters (50 random bits), drawn independently of the
-- secret so that listing ids reveals nothing about any key. Existing rows get one here;
-- rows inserted without one (dev seeding, tests) get one from the default.
CREATE FUNCTION paywatch_new_key_id() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    -- Bytes of a version-4 UUID (gen_random_uuid: a strong random source), skipping byte 6
    -- (version nibble) and byte 8 (variant bits), so every character is uniform.
    SELECT 'key_' || string_agg(
        substr('abcdefghijklmnopqrstuvwxyz234567', get_byte(r.b, i) % 32 + 1, 1), ''
        ORDER BY ord)
    FROM (SELECT uuid_send(gen_random_uuid()) AS b) AS r,
         unnest(ARRAY[0, 1, 2, 3, 4, 5, 7, 9, 10, 11]) WITH ORDINALITY AS picked(i, ord)
$$;

ALTER TABLE api_keys
    ADD COLUMN key_id       text,
    ADD COLUMN label        text CHECK (char_length(label) BETWEEN 1 AND 100),
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN created_by   text,
    ADD COLUMN revoked_by   text,
    ADD COLUMN replaced_by  text;

COMMENT ON COLUMN api_keys.key_id IS 'public id: key_ + 10 base32 characters, not derived from the key';
COMMENT ON COLUMN api_keys.expires_at IS 'the key is refused from this instant (null: never expires)';
COMMENT ON COLUMN api_keys.revoked_at IS 'the key is refused from this instant: now when revoked, later during a rotation grace period';
COMMENT ON COLUMN api_keys.last_used_at IS 'last authenticated request, recorded at most once a minute per key and API process';
COMMENT ON COLUMN api_keys.created_by IS 'cli:<os user>, api:<key id> or seed; null for keys made before migration 012';
COMMENT ON COLUMN api_keys.replaced_by IS 'key_id of the key a rotation made in its place';

UPDATE api_keys SET key_id = paywatch_new_key_id();

ALTER TABLE api_keys
    ALTER COLUMN key_id SET DEFAULT paywatch_new_key_id(),
    ALTER COLUMN key_id SET NOT NULL,
    ADD CONSTRAINT api_keys_key_id_key UNIQUE (key_id),
    ADD CONSTRAINT api_keys_key_id_check CHECK (key_id ~ '^key_[a-z2-7]{10}$');

-- The admin listing: a tenant's keys, newest first (keyset pagination on created_at, key_id).
CREATE INDEX api_keys_page ON api_keys (tenant, created_at DESC, key_id DESC);
