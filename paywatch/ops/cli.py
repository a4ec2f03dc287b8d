"""The `paywatch` command line (ARCHITECTURE §2, §5)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from pydantic import ValidationError

from paywatch.errors import ConfigError, InfraError, PaywatchError
from paywatch.ops.apikey_cli import register as register_apikeys
from paywatch.ops.audit_cli import register as register_audit
from paywatch.ops.backtest_cli import register as register_backtest
from paywatch.ops.charging_cli import register as register_charging
from paywatch.ops.dbcall import db_call as _db_call
from paywatch.ops.email_cli import register as register_email
from paywatch.ops.endpoint_cli import register as register_endpoints
from paywatch.ops.experiment_cli import register as register_experiments
from paywatch.ops.infra import resolve_endpoints, stop_infra
from paywatch.ops.pids import log_tail, pid_alive
from paywatch.ops.policy_file import read_policy
from paywatch.ops.renormalize import register_replay
from paywatch.ops.replay_cli import register as register_rebuild
from paywatch.ops.risk_cli import register as register_risk
from paywatch.ops.secrets_cli import register as register_secrets
from paywatch.settings import Settings, load_settings

EXIT_USAGE = 2


def cmd_tenant_create(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch tenant create NAME"""
    from paywatch.tenants.store import create_tenant

    created = _db_call(settings, lambda conn: create_tenant(conn, args.name))
    print(f"tenant {args.name} {'created' if created else 'already exists'}")
    return 0


def cmd_policy_show(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch policy show TENANT: the policy JSON on stdout, its revision on stderr."""
    from paywatch.tenants.policy_store import policy_in_force, require_tenant

    async def show(conn: Any) -> Any:
        await require_tenant(conn, args.tenant)
        return await policy_in_force(conn, args.tenant)

    current = _db_call(settings, show)
    print(json.dumps(current.policy.model_dump(mode="json"), indent=2))
    if current.source == "default":
        origin = "the defaults: never changed"
    else:
        origin = f"stored, changed {current.changed_at.isoformat()} by {current.changed_by}"
    print(f"tenant {args.tenant}: revision {current.revision} ({origin})", file=sys.stderr)
    return 0


def cmd_policy_set(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch policy set TENANT --file FILE (the new revision alone on the last line)."""
    from paywatch.ops.policy_change import change_policy
    from paywatch.tenants.policy_input import parse_policy

    policy = parse_policy(read_policy(args.file))  # before connecting to anything
    _print_change(args.tenant, change_policy(settings, args.tenant, policy, args.reason))
    return 0


def _print_change(tenant: str, change: Any) -> None:
    """What a policy change did, then its revision alone on the last line."""
    if change.changed:
        at = change.at
        print(
            f"tenant {tenant}: policy {change.previous_revision or 'defaults'} -> "
            f"{change.revision} ({at.topic}[{at.partition}]@{at.offset}); "
            "it applies to decisions made from now on"
        )
    else:
        print(f"tenant {tenant}: unchanged, revision {change.revision} is already in force")
    print(change.revision)


def cmd_policy_history(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch policy history TENANT: every change, newest first."""
    from paywatch.tenants.policy_store import policy_history, require_tenant

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")

    async def history(conn: Any) -> Any:
        await require_tenant(conn, args.tenant)
        return await policy_history(conn, args.tenant, args.limit)

    rows = _db_call(settings, history)
    if not rows:
        print(f"tenant {args.tenant} never changed its policy: it runs the defaults")
    for row in rows:
        line = (
            f"{row.changed_at.isoformat()}  {row.revision}  "
            f"previous={row.previous_revision or 'defaults'}  by={row.changed_by}"
        )
        print(line + (f"  reason={row.reason!r}" if row.reason else ""))
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch run PROCESS: one process in the foreground."""
    from paywatch.ops.runners import RUNNERS

    configure_logging()
    RUNNERS[args.process](settings, resolve_endpoints(settings))
    return 0


QUIET_LOGGERS = ("httpx", "httpcore")
"""Libraries that log every request's full URL at INFO: a Slack endpoint's URL is its
secret, and provider API paths carry merchant ids. paywatch logs its own requests without
them, so these log warnings only."""


def configure_logging() -> None:
    """A process's logging: INFO to stderr, the URL-logging libraries held to WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch init: create topics and run migrations against the configured stack."""
    from paywatch.ops.bootstrap import prepare

    prepare(
        settings.model_copy(update={"env": "prod"}) if not args.seed else settings,
        resolve_endpoints(settings),
    )
    print("topics and database ready")
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch up [-d]"""
    from paywatch.ops import supervisor
    from paywatch.ops.banner import render

    running = supervisor.running_supervisor(settings)
    if running is not None:
        print(
            f"paywatch is already running (supervisor pid {running}); "
            "`paywatch status` shows it, `paywatch down` stops it"
        )
        return 1
    if args.detach:
        return _up_detached(settings)
    print(
        "starting paywatch (Kafka, Postgres, ingest, worker, projector, api, executor)...",
        flush=True,
    )

    def on_ready(seeded: Any) -> None:
        print(render(settings, resolve_endpoints(settings), seeded, detached=False), flush=True)

    return supervisor.supervise(settings, on_ready)


def _up_detached(settings: Settings) -> int:
    from paywatch.ops import supervisor
    from paywatch.ops.banner import render

    log = supervisor.logs_dir(settings) / "supervisor.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paywatch", "up"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PAYWATCH_STATE_DIR": str(settings.state_path)},
        )
    print(f"starting paywatch in the background (pid {proc.pid}, log {log})...", flush=True)
    ready = supervisor.ready_file(settings)
    deadline = time.monotonic() + supervisor.READY_TIMEOUT_S + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"paywatch failed to start; last log lines:\n{log_tail(log)}", file=sys.stderr)
            return 1
        time.sleep(0.25)
    seeded = json.loads(ready.read_text() or "{}")
    print(render(settings, resolve_endpoints(settings), seeded, detached=True))
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch down: stop a detached `paywatch up` (and its embedded infrastructure)."""
    from paywatch.ops import supervisor

    pid = supervisor.running_supervisor(settings)  # never a stranger that reused the pid
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        print("paywatch stopped")
        return 0
    stop_infra(settings)  # leftovers of a supervisor that was killed
    print("paywatch was not running")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch status: infrastructure, processes and their health (JSON)."""
    from paywatch.ops.status import stack_status

    status, running = stack_status(settings)
    print(json.dumps(status, indent=2, default=str))
    return 0 if running else 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = argparse.ArgumentParser(prog="paywatch", description="Payment-failure watchdog")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Kafka, Postgres and every process")
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `paywatch up -d` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what is running").set_defaults(func=cmd_status)
    init = sub.add_parser("init", help="create topics and run migrations, then exit")
    init.add_argument("--seed", action="store_true", help="also seed the dev demo tenant")
    init.set_defaults(func=cmd_init)
    from paywatch.ops.runners import PROCESSES

    run = sub.add_parser("run", help="run one process in the foreground")
    run.add_argument("process", choices=PROCESSES)
    run.set_defaults(func=cmd_run)
    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="tcmd", required=True
    )
    tc = tenant.add_parser("create", help="create a tenant")
    tc.add_argument("name")
    tc.set_defaults(func=cmd_tenant_create)
    register_secrets(sub, tenant)  # tenant secret, secrets rotate-key
    register_apikeys(sub)  # apikey create|list|revoke|rotate
    register_endpoints(sub)  # endpoint add|list|disable|rotate-secret
    register_email(sub)  # email enable|disable|status|log, contact, template
    register_charging(sub)  # charging enable|disable|status (live retries)
    register_experiments(sub)  # experiment start|status|stop
    _policy_parser(sub)
    register_risk(sub)  # demo generate, risk train
    register_audit(sub)  # audit invoice|ops (from Kafka itself)
    register_backtest(sub)  # backtest --tenant T --policy FILE (in isolation)
    register_replay(sub)  # replay --renormalize (until replay_cli.py has --renormalize)
    register_rebuild(sub)  # replay --projection NAME|all, --job ID (after --renormalize)
    return p


def _policy_parser(sub: Any) -> None:
    policy = sub.add_parser("policy", help="a tenant's recovery policy").add_subparsers(
        dest="pcmd", required=True
    )
    ps = policy.add_parser("show", help="print the policy in force (JSON) and its revision")
    ps.add_argument("tenant")
    ps.set_defaults(func=cmd_policy_show)
    pset = policy.add_parser("set", help="change the policy (an event on recovery.policies)")
    pset.add_argument("tenant")
    pset.add_argument("--file", required=True, help="the whole policy as JSON; - for stdin")
    pset.add_argument("--reason", help="why, recorded with the change")
    pset.set_defaults(func=cmd_policy_set)
    ph = policy.add_parser("history", help="every change of the policy, newest first")
    ph.add_argument("tenant")
    ph.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ph.set_defaults(func=cmd_policy_history)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `paywatch` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"paywatch: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(settings, args)
        return code
    except ConfigError as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (InfraError, PaywatchError) as exc:
        print(f"paywatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
