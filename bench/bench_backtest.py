"""A policy backtest of one tenant-year: events/s and total time (issue 10 figures).

Usage: .venv/bin/python bench/bench_backtest.py [--customers 10000] [--months 12] [--seed 7]

1. Generates one tenant-year of realistic history with the generator behind
   ``paywatch demo generate`` (``paywatch.risk.population``: subscribers billed every 30
   days, a few % of renewals failing, mostly soft declines, the generic provider's own
   retries, recoveries 2-12 days after the decline, losses, card updates).
2. Decodes the tenant's events from their Avro bytes as ``paywatch.kafka.history`` does (the
   CPU part of reading the history back from Kafka; the broker's share is not measured).
3. Runs ``paywatch.recovery.backtest.compare``: the default policy against a candidate with
   fewer retries (days 2 and 6, at most 2), the sandbox simulator seeded.

Prints a Markdown report: events, events of failed invoices replayed, time of each stage,
events/s over the tenant's events, peak RSS, and both policies' figures. No Kafka, no
Postgres. One run is the figure (the replay is deterministic; the machine's noise is not).
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime

import _repo  # noqa: F401 (puts the repository root on sys.path)

from paywatch.kafka.codec import make_codec
from paywatch.recovery.backtest import compare, prepare
from paywatch.recovery.backtest_figures import Figures
from paywatch.recovery.simulator import SimulatorConfig
from paywatch.recovery.tenant_policy import RetrySchedule, TenantPolicy
from paywatch.risk.population import generate
from paywatch.schemas.models import PaymentEvent
from paywatch.settings import Settings

START = datetime(2025, 1, 1, tzinfo=UTC)
CANDIDATE = TenantPolicy(retry=RetrySchedule(days=(2, 6), max_retries=2))


def _rows(name: str, f: Figures) -> str:
    revenue = ", ".join(f"{c} {v / 100:,.0f}" for c, v in f.revenue.items())
    return (
        f"| {name} | {f.sagas} | {f.retries} | {f.recovered} ({f.recovered_by_retry} by retry) "
        f"| {revenue} | {f.median_days_to_recover} | {f.violations} | {f.notifications} |"
    )


def main() -> None:
    """Run the bench once and print its report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--customers", type=int, default=10_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()

    t0 = time.perf_counter()
    events = generate(args.customers, args.months, args.seed, START, tenant="bench").events
    t1 = time.perf_counter()
    codec, topic = make_codec(Settings()), "payments.events"
    blobs = [codec.encode(e, topic=topic) for e in events]
    t2 = time.perf_counter()
    decoded = [codec.decode(b, PaymentEvent, topic=topic) for b in blobs]
    t3 = time.perf_counter()
    kept = prepare(decoded).events
    found = compare(kept, TenantPolicy(), CANDIDATE, SimulatorConfig(seed=args.seed))
    t4 = time.perf_counter()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    decode_s, replay_s = t3 - t2, t4 - t3
    total = decode_s + replay_s
    n = len(events)
    print(f"## Policy backtest, one tenant-year ({args.customers} subscribers, {args.months} "
          f"months, seed {args.seed})\n")  # fmt: skip
    print("| what | figure |\n|---|---:|")
    print(f"| tenant events | {n:,} |")
    print(f"| events of failed invoices replayed (x2 policies) | {len(kept):,} |")
    print(f"| history generated (not part of a backtest) | {t1 - t0:.2f} s |")
    print(f"| decode from Avro (reader's CPU) | {decode_s:.2f} s ({n / decode_s:,.0f} events/s) |")
    print(f"| replay, both policies | {replay_s:.2f} s ({n / replay_s:,.0f} events/s) |")
    print(f"| **total (decode + replay)** | **{total:.2f} s ({n / total:,.0f} events/s)** |")
    print(f"| peak RSS (all events decoded at once) | {peak_mib:,.0f} MiB |")
    print("\n| policy | sagas | retries | recovered | revenue | median days | violations "
          "| notifications |\n|---|---:|---:|---:|---|---:|---:|---:|")  # fmt: skip
    print(_rows("running (defaults)", found.running))
    print(_rows("candidate (days 2, 6; max 2)", found.candidate))


if __name__ == "__main__":
    main()
