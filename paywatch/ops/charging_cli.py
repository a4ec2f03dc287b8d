"""`paywatch charging`: live payment retries per tenant and provider (README "Live retries").

The sandbox simulator answers every retry until a tenant's provider is turned live here;
``enable`` refuses until the provider's API credentials are set as tenant secrets, and says
that real money moves from then on.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from paywatch.charging.registry import CREDENTIALS, LIVE_PROVIDERS
from paywatch.executor import accounts
from paywatch.ops.audited import audited_call
from paywatch.ops.dbcall import db_call
from paywatch.settings import Settings
from paywatch.tenants.api_keys import cli_actor
from paywatch.tenants.ops_audit import OpsEntry


def cmd_enable(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch charging enable TENANT PROVIDER."""
    made = audited_call(
        settings,
        lambda conn: accounts.enable(conn, args.tenant, args.provider, cli_actor()),
        lambda made: OpsEntry(args.tenant, "charging.enable", args.provider) if made else None,
    )
    state = "now charges" if made else "already charged"
    print(
        f"tenant {args.tenant} {state} its {args.provider} retries live through the provider's"
        " API: real payments, each command charged once (command id = idempotency key)."
    )
    print(f"back to the sandbox: paywatch charging disable {args.tenant} {args.provider}")
    return 0


def cmd_disable(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch charging disable TENANT PROVIDER."""
    done = audited_call(
        settings,
        lambda conn: accounts.disable(conn, args.tenant, args.provider),
        lambda done: OpsEntry(args.tenant, "charging.disable", args.provider) if done else None,
    )
    state = "back to" if done else "already in"
    print(f"tenant {args.tenant}: {args.provider} retries {state} the sandbox simulator")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch charging status TENANT [--json]."""
    rows: list[accounts.Account] = db_call(
        settings, lambda conn: accounts.accounts(conn, args.tenant)
    )
    if args.json:
        for a in rows:
            print(json.dumps({
                "provider": a.provider, "enabled_at": a.enabled_at.isoformat(),
                "enabled_by": a.enabled_by, "waiting": a.waiting, "last_error": a.last_error,
            }))  # fmt: skip
        return 0
    if not rows:
        print(f"tenant {args.tenant}: every retry is simulated (no provider charged live)")
        return 0
    print(f"{'PROVIDER':<13} {'LIVE SINCE':<26} {'WAITING':>7}  LAST ERROR")
    for a in rows:
        since = a.enabled_at.isoformat(timespec="seconds")
        print(f"{a.provider:<13} {since:<26} {a.waiting:>7}  {a.last_error or '-'}")
    return 0


def register(sub: Any) -> None:
    """Add the `charging` command and its subcommands."""
    names = "; ".join(f"{p}: {', '.join(CREDENTIALS[p])}" for p in LIVE_PROVIDERS)
    charging = sub.add_parser(
        "charging",
        help="live payment retries through the providers' APIs (sandbox by default)",
        description=f"Credentials are tenant secrets ({names}; api_base optional).",
    )
    cmds = charging.add_subparsers(dest="ccmd", required=True)
    for name, func, text in (
        ("enable", cmd_enable, "charge a provider's retries live (credentials must be set)"),
        ("disable", cmd_disable, "back to the sandbox simulator"),
    ):
        p = cmds.add_parser(name, help=text)
        p.add_argument("tenant", metavar="TENANT")
        p.add_argument("provider", metavar="PROVIDER", choices=LIVE_PROVIDERS)
        p.set_defaults(func=func)
    st = cmds.add_parser("status", help="a tenant's live providers and waiting retries")
    st.add_argument("tenant", metavar="TENANT")
    st.add_argument("--json", action="store_true", help="one JSON object per line")
    st.set_defaults(func=cmd_status)
