"""`paywatch endpoint`: tenants' outbound webhook endpoints (README "Outbound webhooks").

``add`` and ``rotate-secret`` print the endpoint's ``whsec_`` signing secret alone on their
last line (a contract, as for API keys: scripts take it from there); it is shown that once.
A Slack endpoint's URL is its secret (whoever has it may post to the channel), so it is
read from stdin (``-``) or a no-echo prompt, never from the command line, where ``ps`` and
the shell history would show it, and it is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime, timedelta
from typing import Any

from paywatch.errors import ConfigError
from paywatch.ops.audited import audited_call
from paywatch.ops.dbcall import db_call
from paywatch.outbound import endpoints
from paywatch.outbound.endpoints import Endpoint, TargetPolicy
from paywatch.outbound.events import EVENT_TYPES
from paywatch.settings import Settings
from paywatch.tenants.api_keys import cli_actor
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.ops_audit import OpsEntry

STDIN = "-"
_COLUMNS = ("ENDPOINT ID", "KIND", "STATUS", "CREATED", "EVENTS", "URL")


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


def _slack_url(given: str) -> str:
    """A Slack URL from stdin or a prompt; anything on the command line is refused without
    repeating it (it may be the secret URL itself)."""
    if given != STDIN:
        raise ConfigError(
            "a Slack endpoint's URL is a secret, so it is never read from the command line "
            "(it would show in `ps` and shell history): give - and the URL on stdin, e.g. "
            "printf '%s\\n' \"$SLACK_URL\" | paywatch endpoint add acme - --events "
            "recovery.escalated --kind slack"
        )
    if sys.stdin.isatty():
        return getpass.getpass("Slack incoming-webhook URL (input hidden): ").strip()
    return sys.stdin.readline().strip()


def endpoint_entry(tenant: str, action: str, e: Endpoint) -> OpsEntry:
    """The ops.audit record of an endpoint action: its id, kind and events, never its secret
    (and a Slack endpoint's URL, which is one, only as the origin the listing shows)."""
    return OpsEntry(tenant, action, e.endpoint_id, endpoints.audit_details(e))


def cmd_endpoint_add(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch endpoint add TENANT URL --events a,b [--kind webhook|slack]."""
    kind = args.kind
    url = _slack_url(args.url) if kind == "slack" else args.url
    events = endpoints.parse_events(args.events.split(","))  # before connecting
    box = SecretBox.from_settings(settings)
    made = audited_call(
        settings,
        lambda conn: endpoints.add_endpoint(
            conn, box, args.tenant, url, events, kind=kind,
            policy=TargetPolicy.from_settings(settings), created_by=cli_actor(),
        ),
        lambda made: endpoint_entry(args.tenant, "endpoint.add", made.endpoint),
    )  # fmt: skip
    e = made.endpoint
    print(f"{kind} endpoint {e.endpoint_id} of tenant {args.tenant}: {e.url}")
    print(f"events: {', '.join(e.events)}")
    if made.secret is not None:
        print("signing secret (Standard Webhooks; shown once, store it now):")
        print(made.secret)
    return 0


def _json(e: Endpoint) -> str:
    fields = {name: getattr(e, name) for name in Endpoint.__dataclass_fields__}
    shown = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    return json.dumps(shown | {"events": list(e.events)})


def cmd_endpoint_list(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch endpoint list TENANT [--json]: every endpoint, newest first, no secret."""
    found: list[Endpoint] = db_call(
        settings, lambda conn: endpoints.list_endpoints(conn, args.tenant)
    )
    if args.json:
        for e in found:
            print(_json(e))
        return 0
    if not found:
        print(f"tenant {args.tenant} has no endpoints")
        return 0
    rows = [_COLUMNS] + [
        (e.endpoint_id, e.kind, e.status, _when(e.created_at), ",".join(e.events), e.url)
        for e in found
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return 0


def cmd_endpoint_disable(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch endpoint disable TENANT EP_ID: nothing more is sent to it (idempotent)."""
    e, changed = audited_call(
        settings,
        lambda conn: endpoints.disable_endpoint(
            conn, args.tenant, args.endpoint_id, by=cli_actor()
        ),
        lambda done: endpoint_entry(args.tenant, "endpoint.disable", done[0]) if done[1] else None,
    )
    if changed:
        print(f"disabled endpoint {e.endpoint_id} of tenant {args.tenant}")
    else:
        print(
            f"endpoint {e.endpoint_id} of tenant {args.tenant} was already disabled "
            f"at {_when(e.disabled_at)} by {e.disabled_by or 'unknown'}"
        )
    return 0


def cmd_endpoint_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch endpoint rotate-secret TENANT EP_ID (the new secret alone on the last line)."""
    box = SecretBox.from_settings(settings)
    grace = timedelta(hours=settings.secret_grace_hours)
    done = audited_call(
        settings,
        lambda conn: endpoints.rotate_secret(
            conn, box, args.tenant, args.endpoint_id, by=cli_actor(), grace=grace
        ),
        lambda done: endpoint_entry(args.tenant, "endpoint.rotate_secret", done.endpoint),
    )
    until = done.endpoint.previous_valid_until
    print(
        f"rotated the signing secret of endpoint {args.endpoint_id} of tenant {args.tenant}; "
        + (
            f"the previous one also signs until {_when(until)} (PAYWATCH_SECRET_GRACE_HOURS)"
            if until is not None
            else "the previous one no longer signs"
        )
    )
    print("new signing secret (shown once, store it now):")
    print(done.secret)
    return 0


def register(sub: Any) -> None:
    """Add the `endpoint` command and its subcommands."""
    endpoint = sub.add_parser("endpoint", help="tenants' outbound webhook endpoints")
    cmds = endpoint.add_subparsers(dest="ecmd", required=True)
    ea = cmds.add_parser(
        "add",
        help="add an endpoint (its signing secret printed once)",
        description="A Slack endpoint's URL is read from stdin: give - as URL.",
    )
    ea.add_argument("tenant", metavar="TENANT")
    ea.add_argument("url", metavar="URL", help="the target (https in prod); - for slack")
    ea.add_argument(
        "--events", required=True, metavar="TYPES",
        help=f"comma separated, from: {', '.join(EVENT_TYPES)}",
    )  # fmt: skip
    ea.add_argument("--kind", choices=endpoints.KINDS, default="webhook")
    ea.set_defaults(func=cmd_endpoint_add)
    el = cmds.add_parser("list", help="a tenant's endpoints, newest first (never a secret)")
    el.add_argument("tenant", metavar="TENANT")
    el.add_argument("--json", action="store_true", help="one JSON object per line")
    el.set_defaults(func=cmd_endpoint_list)
    ed = cmds.add_parser("disable", help="send an endpoint nothing more")
    ed.add_argument("tenant", metavar="TENANT")
    ed.add_argument("endpoint_id", metavar="EP_ID", help="ep_..., as `endpoint list` shows it")
    ed.set_defaults(func=cmd_endpoint_disable)
    er = cmds.add_parser(
        "rotate-secret", help="a new signing secret (printed once); the old one signs a while"
    )
    er.add_argument("tenant", metavar="TENANT")
    er.add_argument("endpoint_id", metavar="EP_ID", help="ep_..., as `endpoint list` shows it")
    er.set_defaults(func=cmd_endpoint_rotate)
