-- Customer email for dunning (issue 11 item 3): who gets mail, what it says, what was sent.
--
-- email_settings     per tenant: on or off, the From/Reply-To, the page where a customer of
--                    a provider without a hosted page updates the card (update_url), and the
--                    secret that signs those links, sealed like provider secrets
--                    (paywatch/tenants/crypto.py, bound to tenant / 'email' / 'link_secret').
-- customer_contacts  the addresses the tenant gives (canonical events carry none), and the
--                    customer's unsubscribe and the server's hard bounce, per customer.
-- email_templates    a tenant's own subject/text/html of a template name (built-ins
--                    otherwise: paywatch/email/templates.py).
-- emails             the outbox and log: one row per notification command (UNIQUE per
--                    tenant), where it went, and what came of it.
--
-- The executor (owner) enqueues, sends and records. The API (paywatch_api) reads and writes
-- its tenant's contacts (PUT/GET /v1/customers/{ref}/contact, and the unsubscribe link,
-- bound to the tenant its signed token names) and reads its tenant's email settings
-- (for the update link), under row-level security like every tenant table (migration 014).

CREATE TABLE email_settings (
    tenant          text PRIMARY KEY REFERENCES tenants (tenant) ON DELETE CASCADE,
    enabled         boolean NOT NULL DEFAULT true,
    from_address    text NOT NULL CHECK (char_length(from_address) BETWEEN 3 AND 254),
    reply_to        text CHECK (char_length(reply_to) BETWEEN 3 AND 254),
    display_name    text CHECK (char_length(display_name) BETWEEN 1 AND 100),
    update_url      text CHECK (char_length(update_url) BETWEEN 1 AND 2048),
    link_secret_enc bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text CHECK (char_length(created_by) <= 200),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text CHECK (char_length(updated_by) <= 200)
);

COMMENT ON COLUMN email_settings.update_url IS
    'where a customer updates the payment method when the provider has no hosted page: the link is this URL with token=<signed token> appended';
COMMENT ON COLUMN email_settings.link_secret_enc IS
    'HMAC key of the update_url tokens (the tenant verifies them with it), sealed for (tenant, email, link_secret)';

CREATE TABLE customer_contacts (
    tenant          text NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    customer_ref    text NOT NULL CHECK (char_length(customer_ref) BETWEEN 1 AND 255),
    email           text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    name            text CHECK (char_length(name) BETWEEN 1 AND 200),
    unsubscribed_at timestamptz,
    bounced_at      timestamptz,
    bounce_reason   text CHECK (char_length(bounce_reason) <= 500),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text CHECK (char_length(updated_by) <= 200),
    PRIMARY KEY (tenant, customer_ref)
);

COMMENT ON COLUMN customer_contacts.bounced_at IS
    'the SMTP server refused the address for good (5xx); nothing more is sent to it until the address changes';

CREATE TABLE email_templates (
    tenant      text NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    subject     text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 998),
    text_body   text NOT NULL CHECK (char_length(text_body) BETWEEN 1 AND 20000),
    html_body   text CHECK (char_length(html_body) BETWEEN 1 AND 100000),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text CHECK (char_length(updated_by) <= 200),
    PRIMARY KEY (tenant, name)
);

CREATE TABLE emails (
    email_id        text PRIMARY KEY DEFAULT paywatch_new_public_id('em_')
                    CHECK (email_id ~ '^em_[a-z2-7]{14}$'),
    tenant          text NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    command_id      text NOT NULL CHECK (char_length(command_id) BETWEEN 1 AND 255),
    command_type    text NOT NULL
                    CHECK (command_type IN ('NOTIFY_CUSTOMER', 'REQUEST_PAYMENT_METHOD_UPDATE')),
    invoice_ref     text NOT NULL CHECK (char_length(invoice_ref) BETWEEN 1 AND 255),
    customer_ref    text CHECK (char_length(customer_ref) BETWEEN 1 AND 255),
    template        text NOT NULL CHECK (char_length(template) BETWEEN 1 AND 255),
    provider        text CHECK (char_length(provider) <= 255),
    amount_minor    bigint,
    currency        text CHECK (char_length(currency) <= 255),
    due_at          timestamptz,
    to_address      text CHECK (char_length(to_address) <= 254),
    day             date NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')::date,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'bounced')),
    reason          text CHECK (reason IN ('daily_limit', 'unsubscribed', 'bounced',
                                           'no_address', 'disabled')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz DEFAULT now(),
    leased_until    timestamptz,
    last_error      text CHECK (char_length(last_error) <= 500),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    message_id      text CHECK (char_length(message_id) <= 998),
    UNIQUE (tenant, command_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'suppressed') = (reason IS NOT NULL))
);

COMMENT ON COLUMN emails.day IS
    'the UTC day it was enqueued: at most one pending or sent email per (tenant, customer, invoice, day)';
COMMENT ON COLUMN emails.to_address IS 'where it went (or would have): the contact''s address';
COMMENT ON COLUMN emails.reason IS 'why a suppressed email was not sent';
COMMENT ON COLUMN emails.leased_until IS
    'a send is in flight until then at the latest: no other executor claims the row meanwhile';

-- "At most one email per customer per day per invoice", enforced here: a second one that
-- day cannot be pending or sent (outbox.enqueue records it as suppressed, daily_limit).
CREATE UNIQUE INDEX emails_daily_limit ON emails (tenant, customer_ref, invoice_ref, day)
    WHERE status IN ('pending', 'sent');
-- The due scan and the log pages.
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'pending';
CREATE INDEX emails_page ON emails (tenant, created_at DESC, email_id DESC);
CREATE INDEX emails_status_page ON emails (tenant, status, created_at DESC, email_id DESC);

ALTER TABLE email_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE emails ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['email_settings', 'customer_contacts', 'email_templates', 'emails']
    LOOP
        EXECUTE format(
            'CREATE POLICY api_own_tenant ON %I TO paywatch_api'
            ' USING (tenant = NULLIF(current_setting(''paywatch.tenant'', true), ''''))'
            ' WITH CHECK (tenant = NULLIF(current_setting(''paywatch.tenant'', true), ''''))',
            t);
    END LOOP;
END
$$;

-- What the API's routes do (paywatch/api/query/routes/contacts.py, email_links.py): set and
-- read contacts, record an unsubscribe; read the tenant's settings, the sealed link secret
-- included (the update link of a Stripe invoice whose tenant has no Stripe API key any more
-- falls back to the tenant's update_url, with a token signed by that secret).
GRANT SELECT, INSERT, UPDATE ON customer_contacts TO paywatch_api;
GRANT SELECT ON email_settings TO paywatch_api;

-- The update link of a Stripe invoice creates a billing-portal session when the customer
-- clicks: the API needs that tenant's Stripe API key (sealed), and nothing else of
-- tenant_secrets, which it cannot read. Current values only, of those two names.
CREATE FUNCTION paywatch_stripe_portal_secrets(tenant text)
    RETURNS TABLE (name text, value_enc bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT DISTINCT ON (s.name) s.name, s.value_enc FROM public.tenant_secrets AS s
    WHERE s.tenant = paywatch_stripe_portal_secrets.tenant AND s.provider = 'stripe'
      -- only the tenant the caller's transaction is bound to (as row-level security would)
      AND s.tenant = NULLIF(current_setting('paywatch.tenant', true), '')
      AND s.name IN ('api_key', 'api_base') AND s.superseded_at IS NULL
      AND s.revoked_at IS NULL
    ORDER BY s.name, s.created_at DESC, s.id DESC
$$;
REVOKE ALL ON FUNCTION paywatch_stripe_portal_secrets(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION paywatch_stripe_portal_secrets(text) TO paywatch_api;
