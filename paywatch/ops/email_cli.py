"""`paywatch email|contact|template`: customer email for dunning (README "Email").

``email enable`` prints the tenant's link secret alone on its last line the first time (or
with ``--new-link-secret``): the key the tenant verifies its update_url tokens with, shown
that once. Unknown tenants are refused (exit 1) like everywhere else.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from paywatch.email import links, store
from paywatch.email.outbox import STATUSES
from paywatch.email.templates import BUILTIN, SAMPLE, Template, render
from paywatch.errors import ConfigError
from paywatch.ops.audited import audited_call
from paywatch.ops.dbcall import db_call
from paywatch.providers.money import exponent
from paywatch.settings import Settings
from paywatch.tenants.api_keys import cli_actor
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.ops_audit import OpsEntry


def _text(value: Any) -> Any:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def _json(fields: dict[str, Any]) -> str:
    return json.dumps({k: _text(v) for k, v in fields.items()})


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc}") from exc


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch email enable TENANT --from ADDR [...]"""
    box = SecretBox.from_settings(settings)
    made, secret = audited_call(
        settings,
        lambda conn: store.enable(
            conn, box, args.tenant, from_address=args.from_address, reply_to=args.reply_to,
            display_name=args.name, update_url=args.update_url, by=cli_actor(),
            new_secret=args.new_link_secret,
        ),
        lambda done: OpsEntry(
            args.tenant, "email.enable", None,
            {"from": done[0].from_address, "new_link_secret": str(done[1] is not None).lower()},
        ),
    )  # fmt: skip
    print(f"email enabled for tenant {args.tenant}: from {made.from_address}")
    if secret is not None:
        print("link secret (verifies the token= of update_url links; shown once, store it):")
        print(secret)
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch email disable TENANT"""
    done = audited_call(
        settings,
        lambda conn: store.disable(conn, args.tenant, by=cli_actor()),
        lambda done: OpsEntry(args.tenant, "email.disable") if done is not None else None,
    )
    said = "disabled" if done is not None else "was never enabled"
    print(f"email for tenant {args.tenant} {said}; pending emails are suppressed (disabled)")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch email status TENANT [--json]"""

    async def read(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        return await store.get_settings(conn, args.tenant), await store.status_counts(
            conn, args.tenant
        )

    found, counts = db_call(settings, read)
    fields = vars(found) if found is not None else {"tenant": args.tenant, "enabled": False}
    if args.json:
        print(_json({**fields, "emails": counts}))
        return 0
    for name, value in fields.items():
        print(f"{name}: {_text(value) if value is not None else '-'}")
    print("emails: " + (", ".join(f"{s} {counts[s]}" for s in STATUSES if s in counts) or "none"))
    return 0


def cmd_log(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch email log TENANT [--status S] [--json]"""

    async def read(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        return await store.list_emails(conn, args.tenant, args.status, args.limit)

    for row in db_call(settings, read):
        if args.json:
            print(_json(row))
        else:
            why = row["reason"] or row["last_error"] or ""
            print(
                f"{row['email_id']}  {_text(row['created_at'])}  {row['status']:<10}  "
                f"{row['template']}  {row['invoice_ref']}  {row['to_address'] or '-'}  {why}"
            )
    return 0


def cmd_contact_set(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch contact set TENANT CUSTOMER_REF EMAIL [--name N]"""

    async def write(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        return await store.set_contact(
            conn, args.tenant, args.customer_ref, args.email, name=args.name, by=cli_actor()
        )

    made = db_call(settings, write)
    print(f"contact of {made.customer_ref} (tenant {args.tenant}): {made.email}")
    return 0


def cmd_contact_list(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch contact list TENANT [--json]"""

    async def read(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        return await store.list_contacts(conn, args.tenant)

    for c in db_call(settings, read):
        if args.json:
            print(_json(vars(c)))
        else:
            stop = "unsubscribed" if c.unsubscribed_at else "bounced" if c.bounced_at else ""
            print(f"{c.customer_ref}  {c.email}  {c.name or '-'}  {stop}".rstrip())
    return 0


def cmd_template_set(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch template set TENANT NAME --subject S --text FILE [--html FILE]"""
    html = _read(args.html, "html") if args.html else None
    template = Template(args.subject, _read(args.text, "text"), html)
    db_call(
        settings,
        lambda conn: store.set_template(conn, args.tenant, args.name, template, by=cli_actor()),
    )
    print(f"template {args.name} of tenant {args.tenant} stored")
    return 0


def cmd_template_list(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch template list TENANT: built-in and the tenant's own."""

    async def read(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        return await store.tenant_templates(conn, args.tenant)

    own = db_call(settings, read)
    for name in sorted(set(BUILTIN) | set(own)):
        origin = "tenant" if name in own else "built-in"
        print(f"{name}  {origin}  {(own.get(name) or BUILTIN[name]).subject}")
    return 0


def _amount_minor(amount: str, currency: str) -> int:
    try:
        value = Decimal(amount)
    except InvalidOperation as exc:
        raise ConfigError(f"--amount {amount!r} is not a number") from exc
    return int(value.scaleb(exponent(currency)))


def cmd_template_preview(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch template preview TENANT NAME [...] [--html]"""

    async def read(conn: Any) -> Any:
        await store.require_tenant(conn, args.tenant)
        templates = await store.tenant_templates(conn, args.tenant)
        return templates, await store.get_settings(conn, args.tenant)

    own, email_settings = db_call(settings, read)
    template = own.get(args.name) or BUILTIN.get(args.name)
    if template is None:
        raise ConfigError(f"tenant {args.tenant} has no template {args.name!r} (template list)")
    values = {**SAMPLE, "template": args.name, "company": args.tenant}
    if email_settings is not None:  # as the tenant's customers would see it
        values["company"] = email_settings.display_name or args.tenant
        if email_settings.update_url:
            values["update_url"] = links.with_token(email_settings.update_url, "sample")
    if args.customer:
        values["customer_ref"] = args.customer
    if args.invoice:
        values["invoice_ref"] = args.invoice
    currency = args.currency or values["currency"]
    if args.amount:
        values["amount_minor"] = _amount_minor(args.amount, currency)
        values["amount"] = args.amount
    values["currency"] = currency
    values["due_date"] = datetime.now(UTC).date().isoformat()
    rendered = render(args.name, template, values)
    print(f"Subject: {rendered.subject}\n")
    print(rendered.html if args.html else rendered.text)
    return 0


def register(sub: Any) -> None:
    """Add the `email`, `contact` and `template` commands."""
    email = sub.add_parser("email", help="customer email for dunning").add_subparsers(
        dest="emcmd", required=True
    )
    en = email.add_parser("enable", help="send the tenant's customers dunning email")
    en.add_argument("tenant", metavar="TENANT")
    en.add_argument("--from", dest="from_address", required=True, metavar="ADDR")
    en.add_argument("--reply-to", metavar="ADDR")
    en.add_argument("--name", metavar="NAME", help="the From display name (the company)")
    en.add_argument("--update-url", metavar="URL", help="the tenant's payment-method page")
    en.add_argument("--new-link-secret", action="store_true", help="replace the link secret")
    en.set_defaults(func=cmd_enable)
    di = email.add_parser("disable", help="send nothing more (pending ones are suppressed)")
    di.add_argument("tenant", metavar="TENANT")
    di.set_defaults(func=cmd_disable)
    st = email.add_parser("status", help="the tenant's email settings and counts")
    st.add_argument("tenant", metavar="TENANT")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    lg = email.add_parser("log", help="the tenant's emails, newest first")
    lg.add_argument("tenant", metavar="TENANT")
    lg.add_argument("--status", choices=STATUSES)
    lg.add_argument("--limit", type=int, default=100)
    lg.add_argument("--json", action="store_true", help="one JSON object per line")
    lg.set_defaults(func=cmd_log)

    contact = sub.add_parser("contact", help="customers' email addresses").add_subparsers(
        dest="ctcmd", required=True
    )
    cs = contact.add_parser("set", help="where a customer's emails go")
    cs.add_argument("tenant", metavar="TENANT")
    cs.add_argument("customer_ref", metavar="CUSTOMER_REF")
    cs.add_argument("email", metavar="EMAIL")
    cs.add_argument("--name", metavar="NAME")
    cs.set_defaults(func=cmd_contact_set)
    cl = contact.add_parser("list", help="the tenant's contacts")
    cl.add_argument("tenant", metavar="TENANT")
    cl.add_argument("--json", action="store_true", help="one JSON object per line")
    cl.set_defaults(func=cmd_contact_list)

    template = sub.add_parser("template", help="email templates").add_subparsers(
        dest="tpcmd", required=True
    )
    ts = template.add_parser("set", help="the tenant's own template NAME (Jinja2, sandboxed)")
    ts.add_argument("tenant", metavar="TENANT")
    ts.add_argument("name", metavar="NAME")
    ts.add_argument("--subject", required=True)
    ts.add_argument("--text", required=True, metavar="FILE")
    ts.add_argument("--html", metavar="FILE")
    ts.set_defaults(func=cmd_template_set)
    tl = template.add_parser("list", help="built-in and the tenant's templates")
    tl.add_argument("tenant", metavar="TENANT")
    tl.set_defaults(func=cmd_template_list)
    tp = template.add_parser("preview", help="render a template (sample data by default)")
    tp.add_argument("tenant", metavar="TENANT")
    tp.add_argument("name", metavar="NAME")
    tp.add_argument("--customer", metavar="REF")
    tp.add_argument("--invoice", metavar="REF")
    tp.add_argument("--amount", metavar="12.34")
    tp.add_argument("--currency", metavar="EUR")
    tp.add_argument("--html", action="store_true", help="print the HTML body")
    tp.set_defaults(func=cmd_template_preview)
