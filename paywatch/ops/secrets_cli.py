"""`paywatch tenant secret`: a tenant's provider secrets (ARCHITECTURE §5)."""

from __future__ import annotations

import argparse
from typing import Any

from paywatch.errors import ConfigError
from paywatch.ops.dbcall import db_call
from paywatch.settings import Settings


def _pairs(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"expected NAME=VALUE, got {item.split('=')[0]!r}")
        values[name] = value
    return values


def cmd_tenant_secret(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch tenant secret NAME PROVIDER KEY=VALUE..."""
    from paywatch.tenants.crypto import SecretBox
    from paywatch.tenants.store import set_secrets

    values = _pairs(args.pairs)
    box = SecretBox(settings.secret_key.get_secret_value())
    db_call(settings, lambda conn: set_secrets(conn, box, args.name, args.provider, values))
    names = ", ".join(sorted(values))
    print(
        f"stored {args.provider} secret(s) {names} for tenant {args.name} "
        f"(previous values stay valid for {settings.secret_grace_hours:g} h)"
    )
    return 0


def register(sub: Any, tenant: Any) -> None:
    """Add `tenant secret` to the `tenant` subcommands."""
    ts = tenant.add_parser("secret", help="store provider secrets: NAME=VALUE pairs")
    ts.add_argument("name")
    ts.add_argument("provider")
    ts.add_argument("pairs", nargs="+", metavar="NAME=VALUE")
    ts.set_defaults(func=cmd_tenant_secret)
