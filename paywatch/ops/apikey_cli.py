"""`paywatch apikey`: API keys of the query API (ARCHITECTURE §5)."""

from __future__ import annotations

import argparse
from typing import Any

from paywatch.ops.dbcall import db_call
from paywatch.settings import Settings
from paywatch.tenants.roles import ROLES


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch apikey create NAME --role ROLE (the key alone on the last line)."""
    from paywatch.tenants.store import create_api_key

    key = db_call(settings, lambda conn: create_api_key(conn, args.name, args.role))
    print(f"{args.role} API key for tenant {args.name} (shown once, store it now):")
    print(key)
    return 0


def register(sub: Any) -> None:
    """Add the `apikey` command and its subcommands."""
    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(
        dest="kcmd", required=True
    )
    ak = apikey.add_parser("create", help="create an API key (printed once)")
    ak.add_argument("name")
    ak.add_argument("--role", required=True, choices=ROLES)
    ak.set_defaults(func=cmd_apikey_create)
