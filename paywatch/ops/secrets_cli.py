"""`paywatch tenant secret` and `paywatch secrets rotate-key` (ARCHITECTURE §5).

Secret values are read from stdin, a file, or a no-echo prompt, never from the command
line: argv shows in `ps` to every user of the machine and lands in shell history.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from paywatch.errors import ConfigError, UnknownProvider
from paywatch.ops.audited import audited_call
from paywatch.ops.dbcall import db_call
from paywatch.settings import Settings
from paywatch.tenants.cache import SECRET_CACHE_TTL_S
from paywatch.tenants.ops_audit import OpsEntry
from paywatch.tenants.secret_names import SECRET_NAMES

STDIN = "-"


def _names(provider: str) -> tuple[str, ...]:
    """The provider's secret names; UnknownProvider before anything is read or prompted."""
    names = SECRET_NAMES.get(provider)
    if names is None:
        raise UnknownProvider(f"unknown provider {provider!r}: one of {', '.join(SECRET_NAMES)}")
    return names


def _source(args: argparse.Namespace, names: tuple[str, ...]) -> str:
    """Where the values come from: a path, or ``-`` for stdin. The positional arguments may
    only be ``-``; anything else is refused without repeating it (it may be a secret)."""
    extra = [item for item in args.stdin if item != STDIN]
    if extra:
        example = (
            f"printf '{names[0]}=%s\\n' \"$SECRET\" | "
            f"paywatch tenant secret {args.name} {args.provider} -"
        )
        raise ConfigError(
            "secret values are never read from the command line (they would show in `ps` and "
            "shell history), so the arguments after PROVIDER may only be - (stdin): give "
            f"NAME=VALUE lines on stdin, e.g. {example}, or in a file with --file PATH"
        )
    if args.stdin and args.file != STDIN:
        raise ConfigError("give either - (stdin) or --file PATH, not both")
    return str(args.file)


def parse_secret_lines(text: str) -> dict[str, str]:
    """``NAME=VALUE`` lines: blank lines and ``#`` comments skipped, the value is everything
    after the first ``=`` (it may hold ``=``), a trailing CR/LF stripped. Errors name the line
    number, never its content."""
    values: dict[str, str] = {}
    # Only "\n" ends a line (str.splitlines would also split a value at \f, \x1c or U+2028).
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"line {number}: expected NAME=VALUE")
        if name in values:
            raise ConfigError(f"line {number}: {name} given twice")
        values[name] = value
    return values


def _prompt(provider: str, names: tuple[str, ...]) -> dict[str, str]:
    """Ask for each secret of the provider without echo; an empty answer skips the name."""
    print(f"{provider} secrets (input hidden; empty: leave unchanged)", file=sys.stderr)
    answers = {name: getpass.getpass(f"  {name}: ") for name in names}
    return {name: value for name, value in answers.items() if value}


def read_values(source: str, provider: str, names: tuple[str, ...]) -> dict[str, str]:
    """The values to store, from the file, stdin, or a prompt when stdin is a terminal."""
    if source == STDIN and sys.stdin.isatty():
        return _prompt(provider, names)
    try:
        text = sys.stdin.read() if source == STDIN else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read secrets from {source}: {reason}") from exc
    return parse_secret_lines(text)


def cmd_tenant_secret(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch tenant secret TENANT PROVIDER [--file PATH | -] [--revoke-previous]"""
    from paywatch.tenants.crypto import SecretBox
    from paywatch.tenants.store import check_secret_names, set_secrets

    names = _names(args.provider)
    values = read_values(_source(args, names), args.provider, names)
    check_secret_names(args.provider, values)  # before connecting: a typo needs no stack
    box = SecretBox.from_settings(settings)
    revoke = bool(args.revoke_previous)
    audited_call(  # the names only: a value never leaves this process but sealed
        settings,
        lambda conn: set_secrets(
            conn, box, args.name, args.provider, values, revoke_previous=revoke
        ),
        lambda _: OpsEntry(
            args.name, "secret.set", args.provider,
            {"names": ",".join(sorted(values)), "revoke_previous": str(revoke).lower()},
        ),
    )  # fmt: skip
    print(
        f"stored {args.provider} secret(s) {', '.join(sorted(values))} for tenant {args.name} "
        f"under key id {box.key_id}"
    )
    print(_previous_values_note(settings, revoke))
    return 0


def _previous_values_note(settings: Settings, revoked: bool) -> str:
    """What happens to the superseded values, honest about ingest's secret cache."""
    if not revoked:
        return (
            f"previous values stay valid for {settings.secret_grace_hours:g} h "
            "(PAYWATCH_SECRET_GRACE_HOURS); --revoke-previous ends that at once"
        )
    return (
        "previous values revoked: every new lookup refuses them now; an ingest process "
        f"that looked them up just before may accept them for up to {SECRET_CACHE_TTL_S:g} s "
        "more (its secret cache)"
    )


def cmd_secrets_rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch secrets rotate-key: re-seal every live value under PAYWATCH_SECRET_KEY."""
    from paywatch.tenants.crypto import SecretBox
    from paywatch.tenants.store import rotate_master_key

    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    box = SecretBox.from_settings(settings)
    grace = timedelta(hours=settings.secret_grace_hours)
    from paywatch.outbound.endpoints import reseal_secrets

    done = db_call(settings, lambda conn: rotate_master_key(conn, box, grace, args.batch))
    print(f"re-sealed {done.resealed} provider secret value(s) under key id {box.key_id}")
    endpoints = db_call(settings, lambda conn: reseal_secrets(conn, box))
    print(f"re-sealed {endpoints} endpoint signing secret(s) under key id {box.key_id}")
    if done.remaining:
        print(
            f"{done.remaining} value(s) remain under other keys (written meanwhile by a "
            "process with another PAYWATCH_SECRET_KEY?): rerun once every process has the "
            "new key"
        )
    else:
        print(
            "0 value(s) remain under other keys: rotation done, PAYWATCH_SECRET_KEY_PREVIOUS "
            "may be removed"
        )
    return 0


class _SecretParser(argparse.ArgumentParser):
    """`tenant secret`'s parser: whatever argparse leaves over joins the ``-`` positionals.

    argparse (3.11) fills a ``*`` positional before the options it meets, so the ``-`` of
    ``tenant secret acme stripe --revoke-previous -`` would be left over, and the top parser
    would print leftovers back ("unrecognized arguments: signing_secret=whsec_..."). Gathered
    here, ``-`` works in any position and anything else is refused without being repeated.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        parsed.stdin = [*(getattr(parsed, "stdin", None) or []), *extras]
        return parsed, []


def register(sub: Any, tenant: Any) -> None:
    """Add `tenant secret` to the `tenant` subcommands and the `secrets` command."""
    ts = tenant.add_parser(
        "secret",
        help="store provider secrets: NAME=VALUE lines on stdin or in a file",
        usage="%(prog)s TENANT PROVIDER [- | --file PATH] [--revoke-previous]",
        description=(
            "Values are never taken from the command line. Examples: "
            "printf 'signing_secret=%s\\n' \"$SECRET\" | paywatch tenant secret acme stripe -; "
            "paywatch tenant secret acme braintree --file bt.env; on a terminal, without "
            "input, each secret is asked for without echo."
        ),
    )
    ts.add_argument("name", metavar="TENANT")
    ts.add_argument("provider", metavar="PROVIDER")
    ts.add_argument("stdin", nargs="*", metavar="-", help="read NAME=VALUE lines from stdin")
    ts.add_argument(
        "--file",
        default=STDIN,
        metavar="PATH",
        help="NAME=VALUE lines (blank lines and # comments skipped); - is stdin (default)",
    )
    ts.add_argument(
        "--revoke-previous",
        action="store_true",
        help="the values these replace stop verifying now instead of after the grace period "
        f"(running ingest processes: within {SECRET_CACHE_TTL_S:g} s, their secret cache)",
    )
    ts.set_defaults(func=cmd_tenant_secret)
    ts.__class__ = _SecretParser  # add_parser builds the subcommands' one parser class
    secrets = sub.add_parser("secrets", help="provider secrets at rest").add_subparsers(
        dest="scmd", required=True
    )
    rk = secrets.add_parser(
        "rotate-key",
        help="re-seal every live provider secret under PAYWATCH_SECRET_KEY "
        "(PAYWATCH_SECRET_KEY_PREVIOUS: the old key)",
    )
    rk.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    rk.set_defaults(func=cmd_secrets_rotate_key)
