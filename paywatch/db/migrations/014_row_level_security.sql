-- Row-level security (issue 12 item 8): defense in depth behind the tenant filters the
-- query API writes by hand. The API and the projector log in as two non-owner roles; a
-- query of the API that forgets `WHERE tenant = ...` still sees only the caller's tenant.
--
--   paywatch_api        reads the read models, writes policies and its tenant's API keys;
--                       sees only the rows whose tenant is the setting `paywatch.tenant`,
--                       which the API sets per request, transaction-locally
--                       (paywatch/db TenantPool). No setting: no row of any tenant.
--   paywatch_projector  writes every read model for every tenant in one batch: all rows.
--
-- Neither may read tenant_secrets, executed_commands or paypal_transmissions, delete,
-- truncate or change the schema. The owner (who runs these migrations, the CLI, ingest,
-- worker and executor) is unaffected: RLS is enabled, not forced, so the owner bypasses it.
--
-- LOGIN roles, not NOLOGIN roles the owner switches to with SET ROLE: RESET ROLE would undo
-- such a switch from inside the session, so an injected statement could become the owner
-- again. They are created without a password: the embedded server's trust auth lets them
-- in; on a server with password auth the operator sets one (README "Row-level security").
-- Roles are cluster-wide: on a server that already has them (created by a DBA, or by
-- another paywatch database) they are used as they are, after the checks below.
--
-- Tables with a `tenant` column, all under RLS: tenants, tenant_secrets, api_keys,
-- event_log, failures, invoices, executed_commands, recovery_workflows, recovery_log,
-- tenant_policies, tenant_policy_changes, customers, alerts, paypal_transmissions. Left out,
-- having no tenant column: projection_checkpoints, process_health, schema_migrations.
-- tests/integration/test_row_level_security.py fails for a tenant table without RLS.

DO $$
DECLARE
    role_name text;
BEGIN
    IF current_user IN ('paywatch_api', 'paywatch_projector') THEN
        RAISE EXCEPTION 'migrations run as %, one of the roles they restrict', current_user
            USING HINT = 'run them as the owner: PAYWATCH_DATABASE_URL names the owner';
    END IF;
    FOREACH role_name IN ARRAY ARRAY['paywatch_api', 'paywatch_projector'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format(
                    'CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION'
                    ' NOBYPASSRLS', role_name);
            EXCEPTION
                -- Another database of this server created it a moment ago.
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % is missing and % may not create roles',
                        role_name, current_user
                        USING HINT = format('create it once as a superuser: CREATE ROLE %I'
                            ' LOGIN PASSWORD ''...'' (README "Row-level security")', role_name);
            END;
        END IF;
        -- A role that bypasses RLS or holds the owner's rights would make all of this void.
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = role_name
                   AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'role % is a superuser or has BYPASSRLS', role_name;
        END IF;
        IF pg_has_role(role_name, current_user, 'MEMBER') THEN
            RAISE EXCEPTION 'role % is a member of the owner %: it would bypass RLS',
                role_name, current_user;
        END IF;
    END LOOP;
    -- Explicit, for servers that revoked these from PUBLIC. TEMPORARY: the projector
    -- stages each batch in temporary tables (paywatch/projections/merge.py).
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO paywatch_api', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO paywatch_projector',
        current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO paywatch_api, paywatch_projector;

-- What the API's routes read and write (paywatch/api/query/routes, tenants/policy_store.py,
-- tenants/api_keys.py): read models, its tenant's policy (PUT /v1/policy writes both policy
-- tables right after the broker ack), its tenant's API keys (/v1/apikeys lists, creates,
-- revokes, rotates; authentication records the last use), the tenant row (existence
-- checks) and process_health (GET /health).
GRANT SELECT ON tenants, invoices, failures, event_log, recovery_workflows, recovery_log,
    customers, alerts, process_health TO paywatch_api;
GRANT SELECT, INSERT, UPDATE ON tenant_policies, api_keys TO paywatch_api;
GRANT SELECT, INSERT ON tenant_policy_changes TO paywatch_api;
GRANT USAGE ON SEQUENCE api_keys_id_seq TO paywatch_api;

-- What the projector writes and reads (paywatch/projections): every read model, its
-- checkpoints, and its heartbeat row (paywatch/kafka/heartbeat.py).
GRANT SELECT, INSERT, UPDATE ON event_log, failures, recovery_log, recovery_workflows,
    invoices, tenant_policies, tenant_policy_changes, customers, alerts,
    projection_checkpoints, process_health TO paywatch_projector;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE executed_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovery_workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE recovery_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_policy_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE paypal_transmissions ENABLE ROW LEVEL SECURITY;

-- The API sees, writes and may leave only rows of the tenant set for the transaction. An
-- unset setting is NULL and one reset after a transaction is '': both match no row.
-- tenant_secrets, executed_commands and paypal_transmissions get no policy: RLS without one
-- refuses every row to everyone but the owner (and neither role has a grant there anyway).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'api_keys', 'event_log', 'failures', 'invoices',
        'recovery_workflows', 'recovery_log', 'tenant_policies', 'tenant_policy_changes',
        'customers', 'alerts'] LOOP
        EXECUTE format(
            'CREATE POLICY api_own_tenant ON %I TO paywatch_api'
            ' USING (tenant = NULLIF(current_setting(''paywatch.tenant'', true), ''''))'
            ' WITH CHECK (tenant = NULLIF(current_setting(''paywatch.tenant'', true), ''''))',
            t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['event_log', 'failures', 'invoices', 'recovery_workflows',
        'recovery_log', 'tenant_policies', 'tenant_policy_changes', 'customers', 'alerts'] LOOP
        EXECUTE format(
            'CREATE POLICY projector_all_tenants ON %I TO paywatch_projector'
            ' USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- Authentication happens before the tenant is known: the API finds a key by its hash
-- through these functions, which run with the owner's rights. SECURITY DEFINER with a
-- fixed search_path (pg_temp last, so a temporary table cannot stand in for api_keys).
-- SELECT *: the columns of migration 012 (key_id, expires_at, ...) and any later ones come
-- along; the caller decides what a revoked or expired key is answered.
CREATE FUNCTION paywatch_authenticate(key_hash bytea) RETURNS SETOF public.api_keys
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT * FROM public.api_keys AS k WHERE k.key_hash = paywatch_authenticate.key_hash
$$;

-- The last use of the key with this hash, for a caller without a tenant-bound connection.
-- PL/pgSQL: last_used_at (migration 012) is looked up when it runs, not when it is created.
CREATE FUNCTION paywatch_touch_api_key(key_hash bytea) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    UPDATE public.api_keys AS k SET last_used_at = now()
    WHERE k.key_hash = paywatch_touch_api_key.key_hash;
END
$$;

REVOKE ALL ON FUNCTION paywatch_authenticate(bytea), paywatch_touch_api_key(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION paywatch_authenticate(bytea), paywatch_touch_api_key(bytea)
    TO paywatch_api;
