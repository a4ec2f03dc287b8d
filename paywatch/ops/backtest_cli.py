"""`paywatch backtest`: a candidate recovery policy beside the running one, on real history.

``paywatch backtest --tenant T --policy FILE [--from DATE] [--to DATE] [--json] [--seed N]``
reads the tenant's ``payments.events`` from Kafka (``paywatch.kafka.history``), takes the
policy in force from Postgres (``policy_in_force``: the stored one or the defaults) and
replays the history through each (``paywatch.recovery.backtest``): no command leaves, no
table is written. Retry outcomes are drawn from the sandbox simulator's model with
``--seed`` (default ``PAYWATCH_SIMULATOR_SEED``) and ``PAYWATCH_SIMULATOR_SUCCESS``.

Exit codes: 0 done; 2 a bad argument or policy file (one line naming what is wrong);
1 an unknown tenant, Kafka not answering, or a window with more than ``MAX_EVENTS``
events of failed invoices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paywatch.errors import ConfigError, InfraError, InvalidPolicy, Retryable
from paywatch.ops.infra import resolve_endpoints
from paywatch.recovery.backtest import MAX_EVENTS, Comparison, compare, comparison_json
from paywatch.recovery.simulator import SimulatorConfig
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.settings import Settings


@dataclass(frozen=True)
class Run:
    """What the command compared, and on what."""

    comparison: Comparison
    running_source: str
    tenant_events: int
    seconds: float


def _date(text: str) -> datetime:
    """An ISO date or time (UTC when it names no offset)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _candidate(path: str) -> TenantPolicy:
    """The policy file (`-`: stdin) as a validated policy; ConfigError in one line if not."""
    from paywatch.tenants.policy_input import describe, parse_policy

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"policy file {path} is not JSON: {exc}") from exc
    try:
        return parse_policy(data)
    except InvalidPolicy as exc:
        detail = describe(exc.errors)
        raise ConfigError(f"policy file {path} is not a valid policy: {detail}") from None


async def _run(settings: Settings, args: argparse.Namespace, candidate: TenantPolicy) -> Run:
    from paywatch.db import create_pool, migrate
    from paywatch.kafka.history import read_history
    from paywatch.tenants.policy_store import policy_in_force, require_tenant

    ends = resolve_endpoints(settings)
    pool = await create_pool(ends.dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await require_tenant(conn, args.tenant)
            current = await policy_in_force(conn, args.tenant)
    finally:
        await pool.close()
    started = time.perf_counter()
    history = await read_history(
        settings, ends.bootstrap, args.tenant,
        since=args.since, until=args.until, max_events=MAX_EVENTS,
    )  # fmt: skip
    seed = settings.simulator_seed if args.seed is None else args.seed
    simulator = SimulatorConfig.parse(seed, settings.simulator_success)
    found = compare(history.events, current.policy, candidate, simulator, args.until)
    took = time.perf_counter() - started
    return Run(found, current.source, history.tenant_events, took)


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch backtest --tenant T --policy FILE [--from --to] [--json] [--seed N]"""
    if args.since and args.until and args.since >= args.until:
        raise ConfigError(f"--from {args.since.isoformat()} is not before --to")
    candidate = _candidate(args.policy)  # before connecting to anything
    try:
        run = asyncio.run(_run(settings, args, candidate))
    except Retryable as exc:
        raise InfraError(f"{exc}; is the stack running (`paywatch status`)?") from exc
    answer = comparison_json(
        run.comparison, tenant=args.tenant,
        tenant_events=run.tenant_events, running_source=run.running_source,
    )  # fmt: skip
    if args.json:
        print(json.dumps(answer))
    else:
        print("\n".join(side_by_side(answer, run.seconds)))
    return 0


def side_by_side(answer: dict[str, Any], seconds: float) -> list[str]:
    """The comparison as a two-column table."""
    run, cand, h = answer["running"], answer["candidate"], answer["history"]
    rows = [
        ("policy revision", run["revision"], cand["revision"]),
        ("sagas opened", run["sagas"], cand["sagas"]),
        ("retries spent", run["retries_spent"], cand["retries_spent"]),
        ("recoveries reached", run["recoveries"], cand["recoveries"]),
        ("  by a paywatch retry", run["recovered_by_paywatch_retry"],
         cand["recovered_by_paywatch_retry"]),
        ("recovery rate", _pct(run["recovery_rate"]), _pct(cand["recovery_rate"])),
    ]  # fmt: skip
    for currency in sorted({*run["revenue_recovered_minor"], *cand["revenue_recovered_minor"]}):
        rows.append(
            (f"revenue recovered {currency} (minor)",
             f"{run['revenue_recovered_minor'].get(currency, 0):,}",
             f"{cand['revenue_recovered_minor'].get(currency, 0):,}")
        )  # fmt: skip
    rows += [
        ("days to recover (median)", _days(run), _days(cand)),
        ("network-rule violations", run["network_rule_violations"],
         cand["network_rule_violations"]),
        ("customer notifications sent", run["customer_notifications"],
         cand["customer_notifications"]),
        ("escalations", run["escalations"], cand["escalations"]),
        ("exhausted / canceled / open", _ends(run), _ends(cand)),
    ]  # fmt: skip
    head = (
        f"backtest of tenant {answer['tenant']}: {h['tenant_events']} events "
        f"({h['events_replayed']} of failed invoices replayed, {h['retry_outcomes_not_reused']}"
        f" paywatch retry outcomes not reused), {h['first_event_at'] or '-'} .. "
        f"{h['horizon'] or '-'}, seed {answer['seed']}, {seconds:.1f} s"
    )
    table = [("", f"running ({run['source']})", "candidate"), *rows]
    width = max(len(str(r[0])) for r in table)
    cells = [max(len(str(r[i])) for r in table) for i in (1, 2)]
    lines = [head, ""]
    for name, a, b in table:
        lines.append(f"{name:<{width}}  {a!s:>{cells[0]}}  {b!s:>{cells[1]}}")
    return lines


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _days(figures: dict[str, Any]) -> str:
    days = figures["median_days_to_recover"]
    return "-" if days is None else f"{days:.1f}"


def _ends(figures: dict[str, Any]) -> str:
    o = figures["outcomes"]
    return f"{o['exhausted']} / {o['canceled']} / {o['open']}"


def register(sub: Any) -> None:
    """Add the `backtest` command."""
    bt = sub.add_parser(
        "backtest",
        help="a candidate recovery policy beside the running one, on the tenant's history",
        description="Replays the tenant's payments.events in isolation (no command leaves, "
        "nothing is written) under the policy in force and under --policy.",
    )
    bt.add_argument("--tenant", required=True)
    bt.add_argument("--policy", required=True, metavar="FILE", help="the candidate; - for stdin")
    bt.add_argument("--from", dest="since", type=_date, help="first event time replayed")
    bt.add_argument("--to", dest="until", type=_date, help="replay events before this time")
    bt.add_argument("--json", action="store_true", help="one JSON object")
    bt.add_argument("--seed", type=int, help="simulator seed (default PAYWATCH_SIMULATOR_SEED)")
    bt.set_defaults(func=cmd_backtest)
