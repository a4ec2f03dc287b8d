"""Customer email for dunning: SMTP delivery of the recovery sagas' notification commands.

Modules: ``smtp_url`` (where mail goes), ``templates`` (what it says), ``links`` (the signed
update and unsubscribe links), ``outbox`` (the database: enqueue, claim, record, contacts),
``sender`` (one SMTP conversation), ``dispatcher`` (the loop), ``portal`` (Stripe's hosted
page). Errors::

    PaywatchError
    ├── ConfigError
    │   ├── SmtpUrlError        a PAYWATCH_SMTP_URL / tenant smtp_url that does not parse
    │   └── TemplateError       a template that does not compile or render
    └── InvalidLink             a link token that is malformed, forged, expired or misused
"""
