-- Recovery analytics (issue 10 items 1 and 2): per-invoice facts and daily aggregates,
-- both derived from Kafka by the projector (paywatch/projections/metrics_daily.py) and
-- rebuilt by replay like every read model.
--
-- recovery_facts  one row per tenant/invoice that has failed: its failure cohort (the UTC
--                 day of its first failure), provider, decline category, currency, amount,
--                 attempts and, once recovered, when, how much and by which path
--                 (paywatch/recovery/analytics.py `attribute`). The projector keeps the row
--                 it last derived, so each batch knows the contribution to take back out of
--                 metrics_daily before adding the new one.
-- metrics_daily   the sums of recovery_facts per tenant, currency, cohort day, provider,
--                 decline category, recovery path ('none' while unrecovered) and
--                 time-to-recover bucket (-1 while unrecovered): every analytics query sums
--                 a range of these rows instead of reading invoices, and the buckets give
--                 the median time to recover. A row whose sums drop to zero is deleted, so
--                 an incremental build and a replay hold the same rows.
-- metrics_monthly the same sums per calendar month (`month`, its first day) instead of day:
--                 key groupings (provider, decline category, path) over long ranges read
--                 whole months here and only the days at the range's edges from
--                 metrics_daily (~0.5 rows per invoice there, ~1/3 of that here).
-- metrics_daily_ttr
--                 the same sums per day and time-to-recover bucket only (provider, decline
--                 category and path summed away): period groupings (day, week, month) and
--                 the currency pick read these, ~1/3 of metrics_daily's rows.
--                 All three are moved by the same differences in the same transaction.
--
-- Invoices without a currency count under 'XXX' (ISO 4217: no currency); amounts are
-- never summed across currencies (the key holds the currency).

CREATE TABLE recovery_facts (
    tenant                  text NOT NULL,
    invoice_ref             text NOT NULL,
    day                     date NOT NULL,
    provider                text NOT NULL,
    decline_category        text NOT NULL,
    currency                text NOT NULL,
    path                    text NOT NULL,
    ttr_bucket              smallint NOT NULL,
    failed_amount_minor     bigint NOT NULL,
    attempts                integer NOT NULL,
    recovered_at            timestamptz,
    recovered_amount_minor  bigint NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, invoice_ref)
);
CREATE INDEX recovery_facts_cohort ON recovery_facts (tenant, currency, day);

CREATE TABLE metrics_daily (
    tenant                  text NOT NULL,
    currency                text NOT NULL,
    day                     date NOT NULL,
    provider                text NOT NULL,
    decline_category        text NOT NULL,
    path                    text NOT NULL,
    ttr_bucket              smallint NOT NULL,
    failures                bigint NOT NULL,
    failed_amount_minor     numeric NOT NULL,
    attempts                bigint NOT NULL,
    recovered               bigint NOT NULL,
    recovered_amount_minor  numeric NOT NULL,
    recovered_attempts      bigint NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- (tenant, currency, day) first: every analytics query is a range of this index.
    PRIMARY KEY (tenant, currency, day, provider, decline_category, path, ttr_bucket)
);

CREATE TABLE metrics_monthly (
    tenant                  text NOT NULL,
    currency                text NOT NULL,
    month                   date NOT NULL CHECK (extract(day FROM month) = 1),
    provider                text NOT NULL,
    decline_category        text NOT NULL,
    path                    text NOT NULL,
    ttr_bucket              smallint NOT NULL,
    failures                bigint NOT NULL,
    failed_amount_minor     numeric NOT NULL,
    attempts                bigint NOT NULL,
    recovered               bigint NOT NULL,
    recovered_amount_minor  numeric NOT NULL,
    recovered_attempts      bigint NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, currency, month, provider, decline_category, path, ttr_bucket)
);

CREATE TABLE metrics_daily_ttr (
    tenant                  text NOT NULL,
    currency                text NOT NULL,
    day                     date NOT NULL,
    ttr_bucket              smallint NOT NULL,
    failures                bigint NOT NULL,
    failed_amount_minor     numeric NOT NULL,
    attempts                bigint NOT NULL,
    recovered               bigint NOT NULL,
    recovered_amount_minor  numeric NOT NULL,
    recovered_attempts      bigint NOT NULL,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, currency, day, ttr_bucket)
);

-- GET /v1/metrics/at-risk: open invoices of a tenant by currency, state and age.
CREATE INDEX invoices_open ON invoices
    (tenant, (coalesce(currency, 'XXX')), status, first_failed_at) INCLUDE (amount_minor)
    WHERE status IN ('failed', 'retrying', 'awaiting_customer');
-- GET /v1/invoices filters: decline category in the listing's order, and the failure date.
CREATE INDEX invoices_category_page
    ON invoices (tenant, last_decline_category, last_event_at DESC, invoice_ref DESC);
CREATE INDEX invoices_first_failed ON invoices (tenant, first_failed_at);

ALTER TABLE recovery_facts ENABLE ROW LEVEL SECURITY;
ALTER TABLE metrics_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE metrics_monthly ENABLE ROW LEVEL SECURITY;
ALTER TABLE metrics_daily_ttr ENABLE ROW LEVEL SECURITY;
CREATE POLICY api_own_tenant ON recovery_facts TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY api_own_tenant ON metrics_daily TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY api_own_tenant ON metrics_monthly TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY api_own_tenant ON metrics_daily_ttr TO paywatch_api
    USING (tenant = NULLIF(current_setting('paywatch.tenant', true), ''))
    WITH CHECK (tenant = NULLIF(current_setting('paywatch.tenant', true), ''));
CREATE POLICY projector_all_tenants ON recovery_facts TO paywatch_projector
    USING (true) WITH CHECK (true);
CREATE POLICY projector_all_tenants ON metrics_daily TO paywatch_projector
    USING (true) WITH CHECK (true);
CREATE POLICY projector_all_tenants ON metrics_monthly TO paywatch_projector
    USING (true) WITH CHECK (true);
CREATE POLICY projector_all_tenants ON metrics_daily_ttr TO paywatch_projector
    USING (true) WITH CHECK (true);

GRANT SELECT ON recovery_facts, metrics_daily, metrics_monthly, metrics_daily_ttr TO paywatch_api;
GRANT SELECT, INSERT, UPDATE ON recovery_facts TO paywatch_projector;
-- DELETE: an aggregate row whose sums reach zero goes (replay equality, above).
GRANT SELECT, INSERT, UPDATE, DELETE ON metrics_daily, metrics_monthly, metrics_daily_ttr
    TO paywatch_projector;
