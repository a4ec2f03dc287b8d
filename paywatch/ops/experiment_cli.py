"""`paywatch experiment start|status|stop`: a challenger policy on a share of new sagas.

An experiment is part of the tenant's policy (``TenantPolicy.experiment``), so it travels
on ``recovery.policies`` like every policy change (audited, replayable): ``start`` stores
the policy in force with the challenger and share added, ``stop`` stores it without. Which
saga runs which arm is decided in the saga core (``recovery/experiments.py``); ``status``
compares the arms from the ``recovery_workflows`` read model, where each saga's experiment
and arm arrive with its transitions.

A saga counts once it is decided: closed (recovered, exhausted, canceled) or opened longer
ago than the longer of the two policies' windows; younger open sagas are shown as open.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from paywatch.errors import ConfigError, PaywatchError
from paywatch.ops.dbcall import db_call
from paywatch.ops.policy_change import change_policy
from paywatch.ops.policy_file import read_policy
from paywatch.recovery.experiments import Arm, Comparison, compare
from paywatch.recovery.tenant_policy import CHALLENGER, CONTROL, Experiment, TenantPolicy
from paywatch.settings import Settings

_ARMS = """
SELECT arm,
       count(*) FILTER (WHERE decided) AS sagas,
       count(*) FILTER (WHERE decided AND state = 'recovered') AS recovered,
       count(*) FILTER (WHERE NOT decided) AS open
FROM (SELECT arm, state,
             state IN ('recovered', 'exhausted', 'canceled') OR started_at < $3 AS decided
      FROM recovery_workflows WHERE tenant = $1 AND experiment = $2) AS s
GROUP BY arm
"""


class ExperimentState(PaywatchError):
    """The request does not fit the tenant's experiment as it stands (exit 1)."""


@dataclass(frozen=True)
class Status:
    """An experiment's arms and their comparison."""

    experiment: str
    running: bool
    share: float | None
    comparison: Comparison
    open: dict[str, int]


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch experiment start TENANT ID --policy FILE --share S."""
    from paywatch.tenants.policy_input import describe, field_error, parse_policy

    challenger = parse_policy(read_policy(args.policy))
    try:
        experiment = Experiment(id=args.id, share=args.share, challenger=challenger)
    except ValidationError as exc:
        raise ConfigError(describe([field_error(e) for e in exc.errors()])) from None

    def started(policy: TenantPolicy) -> TenantPolicy:
        if policy.experiment is not None:
            raise ExperimentState(
                f"tenant {args.tenant} already runs experiment {policy.experiment.id!r}: "
                f"stop it first (paywatch experiment stop {args.tenant})"
            )
        return policy.model_copy(update={"experiment": experiment})

    change = change_policy(settings, args.tenant, started, f"experiment {args.id} started")
    print(
        f"tenant {args.tenant}: experiment {args.id} runs the challenger on {args.share:.0%} of"
        f" new sagas (policy {change.previous_revision or 'defaults'} -> {change.revision})"
    )
    print(f"compare: paywatch experiment status {args.tenant}")
    return 0


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch experiment stop TENANT: every saga back on the control policy."""
    stopped_id: list[str] = []

    def stopped(policy: TenantPolicy) -> TenantPolicy:
        if policy.experiment is None:
            raise ExperimentState(f"tenant {args.tenant} runs no experiment")
        stopped_id.append(policy.experiment.id)
        return policy.control

    change_policy(settings, args.tenant, stopped, "experiment stopped")
    print(
        f"tenant {args.tenant}: experiment {stopped_id[0]} stopped; open challenger sagas go on"
        f" under the control policy (status: paywatch experiment status {args.tenant}"
        f" --id {stopped_id[0]})"
    )
    return 0


async def _status(conn: Any, tenant: str, wanted: str | None) -> Status:
    from paywatch.tenants.policy_store import policy_in_force, require_tenant

    await require_tenant(conn, tenant)
    policy = (await policy_in_force(conn, tenant)).policy
    running = policy.experiment
    name = wanted or (running.id if running is not None else None)
    if name is None:
        raise ExperimentState(f"tenant {tenant} runs no experiment: give --id to see a stopped one")
    is_running = running is not None and running.id == name
    window = policy.window_days
    if is_running and running is not None:
        window = max(window, running.challenger.window_days)
    cutoff = datetime.now(UTC) - timedelta(days=window)
    rows = {r["arm"]: r for r in await conn.fetch(_ARMS, tenant, name, cutoff)}
    if not rows and not is_running:
        raise ExperimentState(f"tenant {tenant} has no saga of experiment {name!r}")

    def arm(label: str) -> Arm:
        row = rows.get(label)
        return Arm(label, row["sagas"] if row else 0, row["recovered"] if row else 0)

    opened = {
        label: (rows[label]["open"] if label in rows else 0) for label in (CONTROL, CHALLENGER)
    }
    share = running.share if is_running and running is not None else None
    return Status(name, is_running, share, compare(arm(CONTROL), arm(CHALLENGER)), opened)


def _json(status: Status) -> dict[str, Any]:
    c = status.comparison
    return {
        "experiment": status.experiment,
        "running": status.running,
        "share": status.share,
        "arms": {
            a.name: {
                "sagas": a.sagas,
                "recovered": a.recovered,
                "recovery_rate": a.rate,
                "open": status.open[a.name],
            }
            for a in (c.control, c.challenger)
        },
        "difference": c.difference,
        "z": c.z,
        "p_value": c.p_value,
        "needed_per_arm": c.needed_per_arm,
        "still_needed": c.still_needed,
        "significant": c.significant,
    }


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """paywatch experiment status TENANT [--id ID] [--json]."""
    status: Status = db_call(settings, lambda conn: _status(conn, args.tenant, args.id))
    if args.json:
        print(json.dumps(_json(status)))
        return 0
    c = status.comparison
    state = f"running, challenger share {status.share:.0%}" if status.running else "stopped"
    print(f"experiment {status.experiment} ({state})")
    print(f"{'ARM':<11} {'DECIDED':>8} {'RECOVERED':>10} {'RATE':>7} {'OPEN':>6}")
    for a in (c.control, c.challenger):
        rate = f"{a.rate:.1%}" if a.rate is not None else "-"
        print(f"{a.name:<11} {a.sagas:>8} {a.recovered:>10} {rate:>7} {status.open[a.name]:>6}")
    if c.p_value is None:
        print("no comparison yet: both arms need decided sagas")
        return 0
    verdict = "significant" if c.significant else "not significant yet"
    print(f"difference {c.difference:+.1%}, z {c.z if c.z is not None else 0:.2f}, "
          f"p {c.p_value:.4f}: {verdict}")  # fmt: skip
    if c.needed_per_arm is not None:
        print(f"sagas per arm to detect this difference (alpha 0.05, power 0.8): "
              f"{c.needed_per_arm}; still needed: {c.still_needed}")  # fmt: skip
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"the challenger's share must be in (0, 1), got {text}")
    return value


def register(sub: Any) -> None:
    """Add the `experiment` command and its subcommands."""
    experiment = sub.add_parser("experiment", help="run a challenger policy on a share of sagas")
    cmds = experiment.add_subparsers(dest="xcmd", required=True)
    st = cmds.add_parser("start", help="run a challenger policy on a share of new sagas")
    st.add_argument("tenant", metavar="TENANT")
    st.add_argument("id", metavar="ID", help="a name: lowercase letters, digits, - and _")
    st.add_argument("--policy", required=True, metavar="FILE", help="the challenger (- : stdin)")
    st.add_argument("--share", type=_share, default=0.5, help="of new sagas (default 0.5)")
    st.set_defaults(func=cmd_start)
    sp = cmds.add_parser("stop", help="every saga back on the control policy")
    sp.add_argument("tenant", metavar="TENANT")
    sp.set_defaults(func=cmd_stop)
    ss = cmds.add_parser("status", help="the arms compared (two-proportion test)")
    ss.add_argument("tenant", metavar="TENANT")
    ss.add_argument("--id", metavar="ID", help="a stopped experiment (default: the running one)")
    ss.add_argument("--json", action="store_true", help="one JSON object")
    ss.set_defaults(func=cmd_status)
