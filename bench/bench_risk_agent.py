"""The risk agent against the pure fold in the same run, and how soon a failure spike alerts.

Run: ``.venv/bin/python bench/bench_risk_agent.py [--customers 2000] [--months 12] [--seed 7]
[--partitions 12] [--rounds 3]`` (issue 9; about 2 minutes). Own Kafka (``.paywatch/bench-<pid>``,
deleted after; no Postgres: these agents need none); PAYWATCH_* of the shell are ignored.

1. A seeded population is appended to ``risk.customers`` (keyed as the normalize agents key it)
   *before* one ``paywatch run worker`` (rocksdb tables) starts, which is timed from its group's
   first commit there (start-up excluded, and the events that commit covered) until the
   committed offsets reach the end: events/s and the worker's CPU per event over that span.
2. The same events through ``evolve`` + ``score`` + ``changed`` in a plain loop in the bench
   process, as of the records' Kafka time like the agent: it calls for as many scores as the
   agent must have sent to ``risk.scores`` (a check, shown side by side).
3. test_alerts_agent's outage folded by ``risk.alerts.step``: event-time delay from the burst's
   first failure to OPEN and from its last to RESOLVED; then the same signals (Kafka times in
   the past) appended to ``risk.tenants`` while the worker runs: wall time from its first
   commit there to each record on ``alerts`` (processing latency, not detection delay).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _repo  # noqa: F401  (puts the repository root on sys.path)
import psutil
from bench_ingest import own_kafka, progress
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from fault_worker import UNUSED_DSN
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.kafka.codec import make_codec
from paywatch.risk.alerts import PROVIDER_SPIKE, Signal, encode_signal, step
from paywatch.risk.features import CustomerFeatures, evolve
from paywatch.risk.model import Score, changed, model_from, score
from paywatch.risk.population import generate
from paywatch.schemas.models import Alert, AlertStatus, PaymentEvent
from paywatch.schemas.topics import customer_key, topic_specs
from paywatch.settings import Settings
from tests.integration.test_alerts_agent import burst, traffic
from tests.procs import settings_env, stop

Item = tuple[bytes, bytes, int]  # key, value, Kafka timestamp (ms)
Figures = dict[str, float]
Timed = tuple[datetime, Signal]
SPIKE_TENANT = "bench-spike"
POLL_S = 0.1


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the pure loop")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per wait")
    return parser.parse_args(argv)


def append(bootstrap: str, topic: str, items: list[Item]) -> None:
    """Append in order, acks=all, idempotent; murmur2 partitions as Faust (aiokafka) does."""
    config = {"acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random"}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    errors: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, stamp in items:
        producer.produce(topic, value, key, timestamp=stamp, on_delivery=report)
        producer.poll(0)
    if producer.flush(60) or errors:
        raise RuntimeError(f"append to {topic} failed: {errors[:3]}")


def committed(group: Consumer, topic: str, parts: int) -> int:
    """Offsets the worker's group committed on ``topic``, summed (a read: never joins)."""
    tps = group.committed([TopicPartition(topic, p) for p in range(parts)], timeout=10)
    return sum(max(tp.offset, 0) for tp in tps)


def pure(settings: Settings, events: list[PaymentEvent], stamp: int, rounds: int) -> Figures:
    """The agent's per-event work in a plain loop: median events/s, CPU s/event, scores."""
    model, at = model_from(settings.risk_model), datetime.fromtimestamp(stamp / 1000.0, UTC)
    rates, cpus, sent = [], [], 0
    for _ in range(rounds):
        features: dict[bytes, CustomerFeatures] = {}
        last: dict[bytes, Score] = {}
        sent = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for event in events:
            key = _key(event)
            state = features[key] = evolve(features.get(key), event)
            new = score(model, state, at)
            if changed(last.get(key), new):
                last[key] = new
                sent += 1
        rates.append(len(events) / (time.perf_counter() - wall))
        cpus.append((time.process_time() - cpu) / len(events))
    return {"rate": statistics.median(rates), "cpu": statistics.median(cpus), "sent": sent}


def through_agent(
    settings: Settings, group: Consumer, worker: psutil.Process, total: int, timeout: float
) -> Figures:
    """Worker first commit -> every event committed on risk.customers: the agent's figures."""
    topic, parts = settings.topic("risk.customers"), settings.topic_partitions
    started = time.monotonic()
    first: tuple[float, int, float] | None = None
    while time.monotonic() < started + timeout:
        done = committed(group, topic, parts)
        now, cpu = time.monotonic(), sum(worker.cpu_times()[:2])  # user + system
        if done and first is None:
            first = (now, done, cpu)
        if first is not None and done >= total:
            span, events = now - first[0], total - first[1]
            return {
                "startup": first[0] - started,
                "first": first[1],
                "events": events,
                "span": span,
                "rate": events / span if span > 0 else float("nan"),
                "cpu": (cpu - first[2]) / events if events else float("nan"),
            }
        time.sleep(POLL_S)  # a poll interval inside a deadline-bound loop
    raise TimeoutError(f"risk.customers not committed to its end ({total}) in {timeout:.0f} s")


def spike_signals() -> list[Timed]:
    """test_alerts_agent's outage: 4 h of traffic, 200 failures in 5 min at stripe, 1 h more."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    signals = [
        *traffic(start, 4 * 60, "before"),
        *burst(start + timedelta(hours=4, minutes=2), 200),
        *traffic(start + timedelta(hours=4, minutes=10), 60, "after"),
    ]
    return sorted(signals, key=lambda timed: timed[0])


def pure_spike(signals: list[Timed]) -> list[Alert]:
    """The stripe incident's records, as the pure detector emits them."""
    state, out = None, list[Alert]()
    for at, signal in signals:
        state, alerts = step(state, SPIKE_TENANT, signal, at)
        out.extend(a for a in alerts if a.kind == PROVIDER_SPIKE)
    return out


def agent_spike(
    settings: Settings, group: Consumer, signals: list[Timed], timeout: float
) -> tuple[list[Alert], dict[str, float]]:
    """Append the signals to risk.tenants; the stripe incident's records on ``alerts`` and
    when (monotonic) the group first committed there and each status first appeared."""
    bootstrap, parts = settings.kafka_bootstrap or "", settings.topic_partitions
    topic, alerts_topic = settings.topic("risk.tenants"), settings.topic("alerts")
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{os.getpid()}"})
    reader.assign([TopicPartition(alerts_topic, p, OFFSET_BEGINNING) for p in range(parts)])
    codec, key = make_codec(settings), SPIKE_TENANT.encode()
    seen: list[Alert] = []
    times: dict[str, float] = {}
    append(
        bootstrap, topic, [(key, encode_signal(s), int(at.timestamp() * 1e3)) for at, s in signals]
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and AlertStatus.RESOLVED.value not in times:
            if "commit" not in times and committed(group, topic, parts):
                times["commit"] = time.monotonic()
            msg = reader.poll(POLL_S)  # the poll interval of this deadline-bound loop
            if msg is None or msg.error() or msg.key() != key:
                continue
            alert = codec.decode(msg.value() or b"", Alert, topic=alerts_topic)
            if alert.kind == PROVIDER_SPIKE:
                seen.append(alert)
                times.setdefault(alert.status.value, time.monotonic())
    finally:
        reader.close()
    return seen, times


def run(args: argparse.Namespace, out: Path) -> list[str]:
    """Own Kafka, the backlog, the pure loop, the worker; the report's measured lines."""
    origin = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = origin - timedelta(days=30 * (args.months + 2))  # every event in the past
    people = generate(args.customers, args.months, args.seed, start, tenant="bench")
    events = [e for e in people.events if e.customer_ref is not None]
    signals = spike_signals()
    expected = pure_spike(signals)
    with own_kafka() as (state, kafka):
        settings = Settings(
            env="dev",
            state_dir=state / "run",
            kafka_bootstrap=kafka.bootstrap,
            database_url=SecretStr(UNUSED_DSN),
            topic_prefix="br.",
            app_id="paywatch-bench-risk",
            topic_partitions=args.partitions,
            table_store="rocksdb://",
            worker_metrics_port=0,
        )
        ensure_topics(kafka.bootstrap, topic_specs(settings), timeout=60.0)
        codec, topic = make_codec(settings), settings.topic("risk.customers")
        stamp = int(time.time() * 1000)  # every record's Kafka time: the agent scores as of it
        progress(f"appending {len(events)} events to {topic}")
        items = [(_key(e), codec.encode(e, topic=topic), stamp) for e in events]
        append(kafka.bootstrap, topic, items)
        progress(f"pure loop, {args.rounds} rounds")
        base = pure(settings, events, stamp, args.rounds)
        config = {"group.id": settings.app_id, "enable.auto.commit": False}
        group = Consumer({"bootstrap.servers": kafka.bootstrap, **config})
        log = out / "worker.log"
        with log.open("ab") as sink:
            command = [sys.executable, "-m", "paywatch", "run", "worker"]
            proc = subprocess.Popen(command, stdout=sink, stderr=sink, env=settings_env(settings))
        try:
            progress("the worker through the backlog")
            worker = psutil.Process(proc.pid)
            agent = through_agent(settings, group, worker, len(events), args.timeout)
            tps = [TopicPartition(settings.topic("risk.scores"), p) for p in range(args.partitions)]
            scores = sum(group.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
            progress(f"spike: {len(signals)} signals to risk.tenants")
            seen, times = agent_spike(settings, group, signals, args.timeout)
        finally:
            stop(proc)
            group.close()
    lines = [
        f"Population: {args.customers} customers x {args.months} months, seed {args.seed}: "
        f"{len(events)} events on risk.customers ({args.partitions} partitions), appended "
        "before the worker started; one `paywatch run worker` (rocksdb tables).",
        "",
        "| figure | agent (worker) | pure loop | agent / pure |",
        "|---|---:|---:|---:|",
        f"| events timed | {agent['events']:.0f} (of {len(events)}; {agent['first']:.0f} "
        f"committed at its first commit) | {len(events)} x {args.rounds} rounds (median) | |",
        f"| **events/s** | {agent['rate']:.0f} | {base['rate']:.0f} | "
        f"**{agent['rate'] / base['rate']:.2f}** |",
        f"| CPU ms per event | {agent['cpu'] * 1e3:.3f} | {base['cpu'] * 1e3:.3f} | "
        f"{agent['cpu'] / base['cpu']:.1f} |",
        f"| risk.scores records / scores `changed` calls for | {scores} | {base['sent']:.0f} | |",
        "",
        f"Worker start to its first commit on risk.customers: {agent['startup']:.1f} s "
        f"(excluded); first to last commit: {agent['span']:.1f} s.",
    ]
    return lines + spike_lines(signals, expected, seen, times)


def _key(event: PaymentEvent) -> bytes:
    return customer_key(event.tenant, event.customer_ref or "").encode()


def spike_lines(
    signals: list[Timed], expected: list[Alert], seen: list[Alert], times: dict[str, float]
) -> list[str]:
    """The spike section: event-time delays (pure), wall latencies (worker)."""
    burst_at = [at for at, s in signals if s.event_id.startswith("burst-")]
    opened = next((a.opened_at for a in expected if a.status is AlertStatus.OPEN), None)
    resolved = next((a.resolved_at for a in expected if a.resolved_at is not None), None)
    if opened is None or resolved is None:
        return ["", "**The pure detector emitted no OPEN and RESOLVED pair.**"]
    commit = times.get("commit")
    waits = [times.get(s.value) for s in (AlertStatus.OPEN, AlertStatus.RESOLVED)]
    wall = [f"{t - commit:.2f}" if t and commit else "not seen" for t in waits]
    same = bool(seen) and {a.alert_id for a in seen} == {a.alert_id for a in expected}
    return [
        "",
        f"Spike: {len(signals)} signals on one tenant; after 4 h of ordinary traffic a burst of "
        f"{len(burst_at)} SOFT processing errors at stripe over 5 min, then 1 h more traffic.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| pure: burst's first failure to OPEN (event time, min) | "
        f"{(opened - burst_at[0]).total_seconds() / 60:.2f} |",
        f"| pure: burst's last failure to RESOLVED (event time, min) | "
        f"{(resolved - burst_at[-1]).total_seconds() / 60:.2f} |",
        f"| incident records (OPEN, updates, RESOLVED): pure / worker; same alert id | "
        f"{len(expected)} / {len(seen)}; {same} |",
        f"| worker, first commit on risk.tenants to OPEN on alerts (wall s) | {wall[0]} |",
        f"| worker, first commit on risk.tenants to RESOLVED on alerts (wall s) | {wall[1]} |",
    ]


def main(argv: list[str]) -> int:
    """Run the measurements; print the report (what it started is always stopped)."""
    args = parse_args(argv)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-risk-agent-{os.getpid()}"
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    lines = run(args, out)
    header = [
        "# The risk agent vs the pure fold (issue 9)",
        "",
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`; machine: {os.cpu_count()} CPUs,"
        f" load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after.",
        "",
    ]
    print("\n".join(header + lines))
    print(f"\nWorker log: {out / 'worker.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
