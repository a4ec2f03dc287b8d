"""`paywatch replay`: rebuild read models from the log (README "Rebuilding read models").

``--projection NAME|all`` rebuilds the named models (and those they read) into a new
generation and swaps it in when it has caught up; progress goes to stderr about once a
second. Ctrl-C stops it after the batch being written (exit 130); run the same command
again and it resumes the unfinished job. ``--job ID`` runs one job by its id: how POST
/v1/ops/replay starts its job in a process of its own (paywatch/api/query/routes/replay.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

from paywatch.errors import ConfigError, PaywatchError
from paywatch.settings import Settings

INTERRUPTED = 130


class ReplayFailed(PaywatchError):
    """The job cannot run or failed (exit 1)."""


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch replay --projection NAME|all | --job ID"""
    from paywatch.projections.rebuild import UnknownModel, plan

    if (args.projection is None) == (args.job is None):
        raise ConfigError("replay: give exactly one of --projection NAME|all and --job ID")
    names = [] if args.projection is None else [args.projection]
    if names:
        try:
            plan(names)  # before connecting: a usage error
        except UnknownModel as exc:
            raise ConfigError(f"replay --projection: {exc}") from exc
    return asyncio.run(_replay(settings, names, args.job))


def _report_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _replay(settings: Settings, names: list[str], job_id: str | None) -> int:
    from paywatch.db import create_pool, migrate
    from paywatch.kafka.codec import make_codec
    from paywatch.ops.infra import resolve_endpoints
    from paywatch.projections import rebuild
    from paywatch.tenants.api_keys import cli_actor

    ends = resolve_endpoints(settings)
    pool = await create_pool(ends.dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            try:
                job = await rebuild.open_job(conn, names, job_id, cli_actor())
            except rebuild.JobUnusable as exc:
                raise ReplayFailed(str(exc)) from exc
    finally:
        await pool.close()
    runner = rebuild.Rebuild(
        settings, ends.bootstrap, ends.dsn, make_codec(settings), job,
        report=lambda p: _report_line(p.line(job.job_id)),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    _report_line(f"replay {job.job_id}: rebuilding {', '.join(runner.plan.tables)}")
    try:
        await rebuild.run_job(runner)
    except rebuild.Interrupted as exc:
        _report_line(f"paywatch: {exc}")
        return INTERRUPTED
    except rebuild.JobBusy as exc:
        raise ReplayFailed(str(exc)) from exc
    except Exception as exc:
        raise ReplayFailed(f"replay {job.job_id} failed: {type(exc).__name__}: {exc}") from exc
    skipped = (
        f"; {runner.skipped} undecodable or unwritable records skipped" if runner.skipped else ""
    )
    print(f"replay {job.job_id}: swapped in; the old tables are in {job.archive}{skipped}")
    return 0


def register(sub: Any) -> None:
    """Add the `replay` command, or its rebuild options to the one already there.

    ``--renormalize`` (paywatch/ops/renormalize.py) may have made the parser first: its
    options stay, and a command line without ``--renormalize`` is a rebuild."""
    replay = sub.choices.get("replay") or sub.add_parser(
        "replay",
        help="rebuild read models from the log and swap them in",
        description="Rebuild read models from offset 0 into new tables, swapped in when"
        " caught up; run again after an interruption to resume.",
    )
    replay.add_argument(
        "--projection", metavar="NAME", help="a read model, or all (with the models it reads)"
    )
    replay.add_argument("--job", metavar="ID", help="run (or resume) this rebuild job: rb_...")
    replay.set_defaults(func=_dispatch(replay.get_default("func")))


Command = Callable[[Settings, argparse.Namespace], int]


def _dispatch(other: Command | None) -> Command:
    """A rebuild, or the command already registered when its --renormalize is given."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        if not getattr(args, "renormalize", False):
            return cmd_replay(settings, args)
        if args.projection is not None or args.job is not None:
            raise ConfigError("replay: --renormalize takes neither --projection nor --job")
        assert other is not None  # --renormalize exists only where it registered a command
        return other(settings, args)

    return run
