"""The whole system under load: `paywatch up` vs a hand-written pipeline doing the same I/O.

Run: ``.venv/bin/python bench/bench_e2e.py [--rate 1000] [--minutes 10] [--connections 64]
[--warmup 10] [--only paywatch|baseline]``.

For each system in turn, on its own fresh embedded Kafka and Postgres (free ports, under
``.paywatch/bench-<pid>``): start it (`paywatch up -d` as a user runs it; the baseline of
``e2e_baseline.py``), warm it up with ``--warmup`` seconds of load and wait until it is
idle, measure its idle CPU for a few seconds, then offer signed Stripe webhooks of a
realistic mix (``e2e_mix.py``; identical requests for both systems) at ``--rate`` per second
for ``--minutes`` from ``e2e_load.py`` and wait until the read models stop moving. The report
(Markdown, stdout): sustained throughput, latency from webhook to Kafka record, to
read-model row and (paywatch) to saga decision, CPU milliseconds per webhook for every
process including Kafka and Postgres, memory, and paywatch/baseline ratios. Everything
started is stopped by pid (`paywatch down` for the stack) and the state dirs are removed.
PAYWATCH_* variables of the calling shell are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import asyncpg
from bench_ingest import BENCH_ROOT, progress, sweep_stale
from e2e_probe import CheckpointPoller, record_times
from e2e_report import Result, Row, read_rows, report
from e2e_sampler import Sampler
from e2e_stack import BASELINE_TOPIC, PaywatchStack, Stack, make_stack

from paywatch.ops.infra import stop_infra
from paywatch.ops.pids import pid_alive, process_cmdline
from paywatch.schemas.topics import PAYMENTS_EVENTS, RECOVERY_TRANSITIONS, WEBHOOKS_RAW
from paywatch.settings import Settings

BENCH = Path(__file__).resolve().parent
IDLE_S = 5.0
QUIET_S = 5.0  # no read-model commit for this long: the system is done


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="webhooks offered per second")
    p.add_argument("--minutes", type=float, default=10.0, help="measured load (fractions ok)")
    p.add_argument("--connections", type=int, default=64, help="HTTP keep-alive connections")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    p.add_argument("--drain-timeout", type=float, default=600.0,
                   help="seconds to wait after the load for the read models to catch up")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--only", choices=("paywatch", "baseline"), default=None)
    p.add_argument("--keep", action="store_true", help="keep the state dirs and logs")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.minutes <= 0 or args.connections < 1:
        p.error("--rate and --minutes must be positive, --connections at least 1")
    return args


async def offer(stack: Stack, args: argparse.Namespace, seconds: float, tag: str,
                out: Path) -> str:
    """Run the load generator to completion (registered as role `load generator`)."""
    argv = [str(BENCH / "e2e_load.py"), "--port", str(stack.port), "--path", stack.path,
            "--secret", stack.secret, "--rate", str(args.rate), "--seconds", str(seconds),
            "--connections", str(args.connections), "--seed", str(args.seed), "--tag", tag,
            "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stack.extra[proc.pid] = "load generator"
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {stderr.decode(errors='replace')[-2000:]}")
    return stdout.decode().strip()


async def measure(stack: Stack, args: argparse.Namespace) -> Result:
    """Warm up, idle, load, drain; everything the report needs from one system."""
    poller = CheckpointPoller(stack.dsn(), stack.checkpoints)
    await poller.start()
    stack.exclude.add(poller.backend_pid)
    sampler = Sampler(stack.roles)
    sampler.start()
    try:
        progress(f"{stack.name}: warm-up, {args.warmup:g} s at {args.rate:g}/s")
        await offer(stack, args, args.warmup, "w", stack.state / "warmup.csv")
        await poller.drained(QUIET_S, args.drain_timeout)
        sampler.mark("idle0")
        await asyncio.sleep(IDLE_S)
        sampler.mark("idle1")
        progress(f"{stack.name}: load, {args.minutes:g} min at {args.rate:g}/s")
        sampler.mark("start")
        summary = await offer(stack, args, args.minutes * 60, "m", stack.state / "load.csv")
        sampler.mark("end", with_pss=True)
        progress(f"{stack.name}: {summary}; waiting for the read models")
        drained = await poller.drained(QUIET_S, args.drain_timeout)
        sampler.mark("settled")
        sampler.marks["settled"] = sampler_index_at(sampler, poller.last_change)
    finally:
        sampler.stop()
        await poller.stop()
    result = Result(stack.name, read_rows(stack.state / "load.csv"), args.minutes * 60)
    result.load_summary, result.drained = summary, drained
    result.times = {k: sampler.samples[v].at for k, v in sampler.marks.items()}
    result.cpu = sampler.cpu("start", "settled")
    result.idle = {k: v / IDLE_S for k, v in sampler.cpu("idle0", "idle1").items()}
    result.rss = sampler.peak_rss("start", "settled")
    result.pss = sampler.pss["end"]
    result.pids = sampler.pids("start", "settled")
    await stages(stack, result, poller)
    return result


def sampler_index_at(sampler: Sampler, at: float) -> int:
    """The first sample taken at or after `at` (the end of the work, not of the quiet wait)."""
    return next((i for i, s in enumerate(sampler.samples) if s.at >= at),
                len(sampler.samples) - 1)


async def stages(stack: Stack, result: Result, poller: CheckpointPoller) -> None:
    """Per accepted webhook: when its record, row and (paywatch) decision appeared."""
    assert stack.ends is not None
    ok = [r for r in result.rows if r.status == 200 and r.partition >= 0]
    if stack.name == "baseline":
        times = record_times(stack.ends.bootstrap, BASELINE_TOPIC)
        for r in ok:
            result.add("webhook -> Kafka record", r, times.at(r.partition, r.offset))
            result.add("webhook -> read-model row", r,
                       poller.visible_at(BASELINE_TOPIC, r.partition, r.offset))
        return
    raw = record_times(stack.ends.bootstrap, WEBHOOKS_RAW)
    events_t = record_times(stack.ends.bootstrap, PAYMENTS_EVENTS)
    trans_t = record_times(stack.ends.bootstrap, RECOVERY_TRANSITIONS)
    events, decisions = await _paywatch_rows(stack.dsn())
    with_event = {r.event_id for r in ok if (r.partition, r.offset) in events}
    first: dict[str, Row] = {}
    for r in ok:
        first.setdefault(r.event_id, r)
    result.duplicates = len(ok) - len(first)
    for r in first.values():
        if r.event_id not in with_event:  # no delivery of this Stripe event became an event
            result.missing[r.kind] = result.missing.get(r.kind, 0) + 1
    for r in ok:
        result.add("webhook -> Kafka record", r, raw.at(r.partition, r.offset))
        event = events.get((r.partition, r.offset))
        if event is None:
            continue
        p, o, event_id = event
        result.add("webhook -> canonical event", r, events_t.at(p, o))
        result.add("webhook -> read-model row", r, poller.visible_at(PAYMENTS_EVENTS, p, o))
        decision = decisions.get(event_id)
        if decision is not None:
            result.add("webhook -> saga decision", r, trans_t.at(*decision))
            result.add("webhook -> decision in read model", r,
                       poller.visible_at(RECOVERY_TRANSITIONS, *decision))


async def _paywatch_rows(dsn: str) -> tuple[dict[tuple[int, int], tuple[int, int, str]],
                                            dict[str, tuple[int, int]]]:
    """Raw coordinates -> (payments.events coordinates, event id); event id -> transition."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (payload->'raw'->>'partition')::int, (payload->'raw'->>'offset')::bigint,"
            ' partition, "offset", event_id::text FROM event_log ORDER BY "offset"')
        trans = await conn.fetch(
            'SELECT cause_event_id, partition, "offset" FROM recovery_log'
            " WHERE kind = 'transition' AND topic = $1 ORDER BY \"offset\"",
            RECOVERY_TRANSITIONS)
    finally:
        await conn.close()
    events: dict[tuple[int, int], tuple[int, int, str]] = {}
    for rp, ro, p, o, event_id in rows:
        events.setdefault((rp, ro), (p, o, event_id))
    decisions: dict[str, tuple[int, int]] = {}
    for cause, p, o in trans:
        if cause:
            decisions.setdefault(cause, (p, o))
    return events, decisions


def run_one(kind: str, root: Path, taken: set[int], args: argparse.Namespace) -> Result:
    """Start one system, measure it, stop it."""
    stack = make_stack(kind, root, taken)
    progress(f"{kind}: starting in {stack.state}")
    try:
        stack.start()
        result = asyncio.run(measure(stack, args))
        result.facts = dict(stack.facts)
        if isinstance(stack, PaywatchStack):
            result.facts["status after"] = status_summary(stack)
        result.log_errors = log_errors(stack)
        return result
    finally:
        progress(f"{kind}: stopping")
        stack.stop()


def status_summary(stack: PaywatchStack) -> str:
    """The top-level verdicts of `paywatch status` (JSON), as a user would read them."""
    out = stack.paywatch("status", timeout=60)
    try:
        status = json.loads(out.stdout)
    except ValueError:
        return f"exit {out.returncode}, not JSON: {out.stdout[:200]!r}"
    keep = {k: v for k, v in status.items()
            if isinstance(v, str | bool | int | float) or k in ("reasons", "degraded", "errors")}
    return f"exit {out.returncode}, {json.dumps(keep, default=str)[:600]}"


def log_errors(stack: Stack) -> dict[str, str]:
    """Per process log with ERROR/Traceback lines: their count and the first distinct ones."""
    logs = stack.state / "logs"
    found = {}
    for log in sorted(logs.glob("*.log")) if logs.exists() else []:
        lines = [line.strip()[:300] for line in log.read_text(errors="replace").splitlines()
                 if " ERROR " in line or "[ERROR]" in line or "Traceback" in line]
        if lines:
            first = list(dict.fromkeys(line.split("] ", 3)[-1] for line in lines))[:3]
            found[log.stem] = f"{len(lines)} lines, e.g. " + " | ".join(f"`{x}`" for x in first)
    return found


def sweep_nested() -> None:
    """Stop the stacks of earlier bench_e2e runs whose process was killed (by their pids)."""
    for run_dir in BENCH_ROOT.glob("bench-*"):
        pid = run_dir.name.removeprefix("bench-")
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        for sub in (run_dir / "paywatch", run_dir / "baseline"):
            supervisor = sub / "supervisor.pid"
            if supervisor.exists() and supervisor.read_text().strip().isdigit():
                sup = int(supervisor.read_text())
                if pid_alive(sup) and "paywatch" in " ".join(process_cmdline(sup)):
                    os.kill(sup, signal.SIGTERM)
            if sub.exists():
                stop_infra(Settings(state_dir=sub, kafka_bootstrap=None, database_url=None))


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    """Measure both systems (paywatch first), print the report, clean up."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    for name in [k for k in os.environ if k.startswith("PAYWATCH_")]:
        del os.environ[name]
    sweep_nested()
    sweep_stale()
    root = BENCH_ROOT / f"bench-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    taken: set[int] = set()
    results: dict[str, Result] = {}
    started = time.time()
    try:
        for kind in ("paywatch", "baseline"):
            if args.only in (None, kind):
                results[kind] = run_one(kind, root, taken, args)
        print(report(args, argv, results, time.time() - started))
    finally:
        if args.keep:
            progress(f"state dirs and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
