"""`paywatch apikey`: API keys of the query API (ARCHITECTURE §5).

``create`` and ``rotate`` print the new key alone on their last line (a contract: scripts
take it from there); the key is shown that once and never stored. Keys are named by their
public id (``key_...``), as ``list`` shows it.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from paywatch.ops.audited import audited_call
from paywatch.ops.dbcall import db_call
from paywatch.settings import Settings
from paywatch.tenants import api_keys
from paywatch.tenants.api_keys import ApiKeyRecord, parse_duration
from paywatch.tenants.ops_audit import OpsEntry
from paywatch.tenants.roles import ROLES

_COLUMNS = ("KEY ID", "ROLE", "STATE", "PREFIX", "CREATED", "EXPIRES", "LAST USED", "REVOKED")


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


def _shown(label: str) -> str:
    """A label as one table cell: control characters would break the line or the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in label)


def _expiry(record: ApiKeyRecord) -> str:
    return f", expires {_when(record.expires_at)}" if record.expires_at else ", never expires"


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch apikey create TENANT --role ROLE [--expires-in D] [--label L]."""
    expires_in = parse_duration(args.expires_in) if args.expires_in else None
    made = audited_call(
        settings,
        lambda conn: api_keys.new_api_key(
            conn, args.name, args.role,
            expires_in=expires_in, label=args.label, created_by=api_keys.cli_actor(),
        ),
        lambda made: OpsEntry(
            args.name, "apikey.create", made.record.key_id, {"role": made.record.role}
        ),
    )  # fmt: skip
    record = made.record
    print(
        f"{args.role} API key {record.key_id} for tenant {args.name}{_expiry(record)} "
        "(shown once, store it now):"
    )
    print(made.key)
    return 0


def _row(r: ApiKeyRecord) -> tuple[str, ...]:
    return (
        r.key_id, r.role, r.state, r.prefix, _when(r.created_at), _when(r.expires_at),
        _when(r.last_used_at), _when(r.revoked_at),
    )  # fmt: skip


def _json(r: ApiKeyRecord) -> str:
    fields = {name: getattr(r, name) for name in ApiKeyRecord.__dataclass_fields__}
    return json.dumps(
        {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
    )


def cmd_apikey_list(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch apikey list TENANT [--json]: every key, newest first, never the secret."""
    records: list[ApiKeyRecord] = db_call(
        settings, lambda conn: api_keys.list_api_keys(conn, args.tenant)
    )
    if args.json:
        for r in records:
            print(_json(r))
        return 0
    if not records:
        print(f"tenant {args.tenant} has no API keys")
        return 0
    rows = [_COLUMNS, *(_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    labels = ["LABEL", *(_shown(r.label or "-") for r in records)]
    for row, label in zip(rows, labels, strict=True):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(f"{line}  {label}".rstrip())
    return 0


def cmd_apikey_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch apikey revoke TENANT KEY_ID: refused from now on (idempotent)."""
    done = audited_call(
        settings,
        lambda conn: api_keys.revoke_api_key(
            conn, args.tenant, args.key_id, by=api_keys.cli_actor()
        ),
        lambda done: OpsEntry(args.tenant, "apikey.revoke", args.key_id) if done.changed else None,
    )
    r = done.record
    if done.changed:
        print(f"revoked {r.role} API key {r.key_id} of tenant {args.tenant}")
    else:
        print(
            f"{r.role} API key {r.key_id} of tenant {args.tenant} was already revoked "
            f"at {_when(r.revoked_at)} by {r.revoked_by or 'unknown'}"
        )
    return 0


def cmd_apikey_rotate(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch apikey rotate TENANT KEY_ID [--grace D] (the new key alone on the last line)."""
    grace = parse_duration(args.grace) if args.grace else None
    done = audited_call(
        settings,
        lambda conn: api_keys.rotate_api_key(
            conn, args.tenant, args.key_id, by=api_keys.cli_actor(), grace=grace
        ),
        lambda done: OpsEntry(
            args.tenant, "apikey.rotate", args.key_id,
            {"new_key_id": done.new.record.key_id, "grace": args.grace or "none"},
        ),
    )  # fmt: skip
    old, new = done.previous, done.new.record
    until = f"valid until {_when(old.revoked_at)}" if grace else "revoked now"
    print(f"rotated {old.role} API key {old.key_id} of tenant {args.tenant} ({until})")
    print(f"new API key {new.key_id}{_expiry(new)} (shown once, store it now):")
    print(done.new.key)
    return 0


def register(sub: Any) -> None:
    """Add the `apikey` command and its subcommands."""
    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(
        dest="kcmd", required=True
    )
    duration = "a whole number and a unit s, m, h or d, e.g. 90d, 12h, 30m"
    ak = apikey.add_parser("create", help="create an API key (printed once)")
    ak.add_argument("name", metavar="TENANT")
    ak.add_argument("--role", required=True, choices=ROLES)
    ak.add_argument("--expires-in", metavar="DURATION", help=f"refused after this: {duration}")
    ak.add_argument("--label", help="what the key is for (1-100 characters)")
    ak.set_defaults(func=cmd_apikey_create)
    al = apikey.add_parser("list", help="a tenant's keys, newest first (never the secret)")
    al.add_argument("tenant", metavar="TENANT")
    al.add_argument("--json", action="store_true", help="one JSON object per line")
    al.set_defaults(func=cmd_apikey_list)
    ar = apikey.add_parser("revoke", help="refuse a key from now on")
    ar.add_argument("tenant", metavar="TENANT")
    ar.add_argument("key_id", metavar="KEY_ID", help="key_..., as `apikey list` shows it")
    ar.set_defaults(func=cmd_apikey_revoke)
    ao = apikey.add_parser("rotate", help="replace a key (the new one printed once)")
    ao.add_argument("tenant", metavar="TENANT")
    ao.add_argument("key_id", metavar="KEY_ID", help="key_..., as `apikey list` shows it")
    ao.add_argument("--grace", metavar="DURATION", help=f"keep the old key valid: {duration}")
    ao.set_defaults(func=cmd_apikey_rotate)
