"""The Markdown report of bench_e2e.py: what each system did, side by side, with ratios."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOADGEN, PROBE = "load generator", "bench (probe)"
NOT_SYSTEM = (LOADGEN, PROBE)
COUNTERPART = {  # paywatch role -> the baseline role doing the same I/O
    "ingest": "baseline app", "worker": "baseline consumer", "kafka": "kafka",
    "postgres": "postgres",
}
ROLE_ORDER = ("ingest", "baseline app", "worker", "projector", "executor", "api",
              "paywatch up (supervisor)", "baseline consumer", "kafka", "postgres")
STAGES = ("webhook -> Kafka record", "webhook -> canonical event", "webhook -> read-model row",
          "webhook -> saga decision", "webhook -> decision in read model")


@dataclass(frozen=True)
class Row:
    """One request of the load generator."""

    i: int
    kind: str
    due: float
    sent: float
    done: float
    status: int
    partition: int
    offset: int
    event_id: str


def read_rows(path: Path) -> list[Row]:
    """The load generator's CSV."""
    rows = []
    for line in path.read_text().splitlines():
        if line:
            i, kind, due, sent, done, status, part, off, event_id = line.split(",")
            rows.append(Row(int(i), kind, float(due), float(sent), float(done), int(status),
                            int(part), int(off), event_id))
    return rows


@dataclass
class Result:
    """Everything measured on one system."""

    name: str
    rows: list[Row]
    seconds: float
    load_summary: str = ""
    drained: bool = False
    times: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    pss: dict[str, int] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)
    seen_at: dict[str, list[float]] = field(default_factory=dict)
    unknown: Counter[str] = field(default_factory=Counter)
    missing: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # accepted deliveries of an event id already delivered (no new event)
    facts: dict[str, str] = field(default_factory=dict)
    log_errors: dict[str, str] = field(default_factory=dict)

    def add(self, stage: str, row: Row, at: float | None) -> None:
        """Record when `row` reached `stage` (None: never seen)."""
        if at is None:
            self.unknown[stage] += 1
            return
        self.stages.setdefault(stage, []).append(at - row.sent)
        self.seen_at.setdefault(stage, []).append(at)

    @property
    def accepted(self) -> int:
        """Requests answered 200."""
        return sum(1 for r in self.rows if r.status == 200)

    def window(self) -> float:
        """Seconds from the load's start to the last read-model commit."""
        return self.times["settled"] - self.times["start"]

    def system_cpu(self) -> float:
        """CPU seconds of the system's own processes (not the generator, not the probe)."""
        return sum(v for k, v in self.cpu.items() if k not in NOT_SYSTEM)

    def ms_per_webhook(self, role: str) -> float:
        """CPU ms of `role` per accepted webhook."""
        return 1000 * self.cpu.get(role, 0.0) / max(1, self.accepted)

    def rate(self, stage: str) -> float:
        """Webhooks per second that reached `stage` before the load ended."""
        end = self.times["end"]
        return sum(1 for t in self.seen_at.get(stage, ()) if t <= end) / self.seconds


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) in ms; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def lat(values: list[float]) -> str:
    """p50 / p95 / p99 / max in ms."""
    return " / ".join(f"{pct(values, q):.0f}" for q in (50, 95, 99, 100))


def ratio(a: float, b: float) -> str:
    """a/b to two places, or n/a."""
    return f"{a / b:.2f}" if b else "n/a"


def mib(n: int) -> str:
    """Bytes as MiB."""
    return f"{n / 2**20:.0f}"


def throughput_rows(results: dict[str, Result]) -> list[str]:
    """Offered, answered, accepted and sustained rates."""
    p, b = results.get("paywatch"), results.get("baseline")
    out = ["| | paywatch | baseline | paywatch/baseline |", "|---|---:|---:|---:|"]

    def line(label: str, get: Callable[[Result], Any], fmt: str = "{:.0f}",
             with_ratio: bool = True) -> None:
        vals = [get(r) if r else None for r in (p, b)]
        cells = [fmt.format(v) if v is not None else "-" for v in vals]
        a, z = vals
        rat = ratio(a, z) if with_ratio and a is not None and z is not None else ""
        out.append(f"| {label} | {cells[0]} | {cells[1]} | {rat} |")

    line("requests sent", lambda r: len(r.rows), with_ratio=False)
    line("answered 200", lambda r: r.accepted, with_ratio=False)
    line("other answers (status: count)", lambda r: ", ".join(
        f"{s}: {n}" for s, n in sorted(Counter(x.status for x in r.rows if x.status != 200)
                                       .items())) or "none", "{}", False)
    line("accepted webhooks/s (load window)", lambda r: r.accepted / r.seconds)
    line("read-model rows/s within the load window",
         lambda r: r.rate("webhook -> read-model row"))
    line("saga decisions/s within the load window",
         lambda r: r.rate("webhook -> saga decision") if r.name == "paywatch" else None)
    line("last read-model commit after the load ended (s)",
         lambda r: r.times["settled"] - r.times["end"], "{:.1f}", False)
    return out


def latency_rows(results: dict[str, Result]) -> list[str]:
    """Percentiles of HTTP and of each stage."""
    out = ["| latency ms, p50 / p95 / p99 / max | paywatch | baseline | p99 ratio |",
           "|---|---:|---:|---:|"]
    http = {k: [r.done - r.sent for r in v.rows if r.status == 200] for k, v in results.items()}
    due = {k: [r.done - r.due for r in v.rows if r.status == 200] for k, v in results.items()}
    for label, data in (("HTTP answer (from send)", http), ("HTTP answer (from due time)", due),
                        *((s, {k: v.stages.get(s, []) for k, v in results.items()})
                          for s in STAGES)):
        p, b = data.get("paywatch", []), data.get("baseline", [])
        if not p and not b:
            continue
        out.append(f"| {label} | {lat(p) if p else '-'} | {lat(b) if b else '-'} "
                   f"| {ratio(pct(p, 99), pct(b, 99)) if p and b else ''} |")
    return out


def cpu_rows(results: dict[str, Result]) -> list[str]:
    """CPU ms per accepted webhook, per process, and the totals."""
    roles = sorted({k for r in results.values() for k in r.cpu},
                   key=lambda k: (ROLE_ORDER.index(k) if k in ROLE_ORDER else 99, k))
    out = ["| process | paywatch ms/webhook | idle ms/s | baseline ms/webhook | idle ms/s |",
           "|---|---:|---:|---:|---:|"]
    for role in roles:
        cells = []
        for name in ("paywatch", "baseline"):
            r = results.get(name)
            has = r is not None and role in r.cpu
            cells += [f"{r.ms_per_webhook(role):.2f}" if has and r else "",
                      f"{1000 * r.idle.get(role, 0.0):.0f}" if has and r else ""]
        out.append(f"| {role} | " + " | ".join(cells) + " |")
    totals = {k: 1000 * r.system_cpu() / max(1, r.accepted) for k, r in results.items()}
    out.append(f"| **total, system processes** | **{totals.get('paywatch', 0):.2f}** | "
               f"| **{totals.get('baseline', 0):.2f}** | |")
    return out


def memory_rows(results: dict[str, Result]) -> list[str]:
    """Peak summed RSS and PSS at the load's end per process."""
    out = ["| process | paywatch RSS peak MiB | PSS at end MiB | baseline RSS peak MiB "
           "| PSS at end MiB |", "|---|---:|---:|---:|---:|"]
    roles = sorted({k for r in results.values() for k in r.rss if k not in NOT_SYSTEM},
                   key=lambda k: (ROLE_ORDER.index(k) if k in ROLE_ORDER else 99, k))
    for role in roles:
        cells = []
        for name in ("paywatch", "baseline"):
            r = results.get(name)
            cells += [mib(r.rss[role]) if r and role in r.rss else "",
                      mib(r.pss.get(role, 0)) if r and role in r.rss else ""]
        out.append(f"| {role} | " + " | ".join(cells) + " |")
    return out


def timeline_rows(results: dict[str, Result]) -> list[str]:
    """Per time bucket from the load's start: webhooks accepted, rows visible, decisions."""
    p = results.get("paywatch")
    if not p or not p.rows:
        return []
    start = p.times["start"]
    span = p.times["settled"] - start
    step = max(5.0, round(span / 12 / 5) * 5)
    buckets = int(span // step) + 1

    def per_s(times: list[float]) -> list[str]:
        counts = Counter(int((t - start) // step) for t in times if t >= start)
        return [f"{counts.get(i, 0) / step:.0f}" for i in range(buckets)]

    series = [("accepted", [r.done for r in p.rows if r.status == 200]),
              ("read-model rows", p.seen_at.get("webhook -> read-model row", [])),
              ("saga decisions", p.seen_at.get("webhook -> saga decision", []))]
    head = [f"{i * step:.0f}-{(i + 1) * step:.0f} s" for i in range(buckets)]
    out = ["| paywatch, per second | " + " | ".join(head) + " |",
           "|---|" + "---:|" * buckets]
    out += [f"| {name} | " + " | ".join(per_s(times)) + " |" for name, times in series]
    return out


def ratio_lines(results: dict[str, Result]) -> list[str]:
    """The headline ratios of the same run."""
    p, b = results.get("paywatch"), results.get("baseline")
    if not (p and b):
        return ["(one system only: no ratio)"]
    cpu_p = p.system_cpu() / max(1, p.accepted)
    cpu_b = b.system_cpu() / max(1, b.accepted)
    row_p = p.stages.get("webhook -> read-model row", [])
    row_b = b.stages.get("webhook -> read-model row", [])
    return [
        f"- **Efficiency, baseline CPU / paywatch CPU per webhook: {ratio(cpu_b, cpu_p)}** "
        f"({1000 * cpu_b:.2f} vs {1000 * cpu_p:.2f} ms; goal >= 0.5).",
        f"- Accepted webhooks/s paywatch/baseline: {ratio(p.accepted, b.accepted)}; read-model "
        f"rows/s within the load window: {ratio(p.rate('webhook -> read-model row'), b.rate('webhook -> read-model row'))}.",  # noqa: E501
        f"- p99 webhook -> read-model row: {pct(row_p, 99):.0f} ms vs {pct(row_b, 99):.0f} ms "
        "(goal <= 1,000 ms).",
    ]


def where_lines(results: dict[str, Result]) -> list[str]:
    """Where paywatch's CPU goes, against the baseline process doing the same I/O."""
    p, b = results.get("paywatch"), results.get("baseline")
    if not p:
        return []
    total = 1000 * p.system_cpu() / max(1, p.accepted)
    out = []
    for role in sorted((k for k in p.cpu if k not in NOT_SYSTEM), key=lambda k: -p.cpu[k]):
        ms = p.ms_per_webhook(role)
        twin = COUNTERPART.get(role)
        vs = (f"; the baseline's {twin}: {b.ms_per_webhook(twin):.2f} ms"
              if b and twin and twin in b.cpu else "")
        idle = 1000 * p.idle.get(role, 0.0) * p.window() / max(1, p.accepted)
        out.append(f"- {role}: {ms:.2f} ms ({100 * ms / total:.0f} %) per webhook, of which "
                   f"~{idle:.2f} ms is its idle burn over the window{vs}.")
    return out


def check_lines(results: dict[str, Result]) -> list[str]:
    """What went wrong, if anything: the figures above are only valid without it."""
    out = []
    for name, r in results.items():
        notes = [f"load generator: {r.load_summary}"]
        if r.name == "paywatch":
            notes.append(f"{r.duplicates} accepted redeliveries of an event already accepted "
                         "(no new event expected: the worker drops them)")
        if not r.drained:
            notes.append("**the read models were still moving at the drain timeout**")
        if r.missing:
            notes.append(f"**accepted Stripe events with no read-model event** (kind: count): "
                         f"{r.missing}")
        if r.unknown:
            notes.append(f"stage never reached (stage: count): {dict(r.unknown)}")
        restarted = {k: len(v) for k, v in r.pids.items()
                     if len(v) > 1 and k not in ("postgres", "bench (probe)")}
        if restarted:
            notes.append(f"**processes with more than one pid in the window (restarted)**: "
                         f"{restarted}")
        if r.log_errors:
            notes += [f"{name}.log: {text}" for name, text in r.log_errors.items()]
        if "status after" in r.facts:
            notes.append(f"`paywatch status` after the drain: {r.facts['status after']}")
        out.append(f"- {name}: " + "; ".join(notes) + ".")
    return out


def report(args: argparse.Namespace, argv: list[str], results: dict[str, Result],
           elapsed: float) -> str:
    """The whole Markdown report."""
    p = results.get("paywatch")
    kinds = Counter(r.kind for r in (p or next(iter(results.values()))).rows)
    mix = ", ".join(f"{k} {100 * n / max(1, sum(kinds.values())):.0f} %"
                    for k, n in kinds.most_common())
    cpu = cpu_model()
    return "\n".join([
        "## End to end: `paywatch up` vs a hand-written pipeline, same machine, same run", "",
        f"Command: `{shlex.join(['.venv/bin/python', 'bench/bench_e2e.py', *argv])}` "
        f"({elapsed / 60:.0f} min in all)", "",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), load average at the end "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}; Python "
        f"{platform.python_version()}; each system on its own fresh embedded Kafka (KRaft, 1 "
        "broker, 12 partitions) and Postgres; paywatch started with `paywatch up -d` "
        f"(ready in {p.facts.get('ready_s', '?') if p else '-'} s).",
        f"- Load: {args.rate:g} signed Stripe webhooks/s offered for {args.minutes:g} min "
        f"(open loop, {args.connections} keep-alive connections; after a {args.warmup:g} s "
        f"warm-up and {5:g} s of idle measurement), identical requests to both: {mix}.",
        "- Baseline: `bench/e2e_baseline.py`, FastAPI `POST` -> aiokafka acks=all (paywatch's "
        "producer settings) -> answer with partition/offset after the ack; a consumer-group "
        "member COPYing batches of up to 5,000 bodies into a table with its checkpoints in the "
        "same transaction. No verification, no parsing, no state.",
        "- Read-model row visible: first 50 ms poll of the checkpoint table (committed with the "
        "rows) past the record's offset; decision: the `recovery.transitions` record's "
        "CreateTime; all latencies from the moment the request was written.",
        "", *throughput_rows(results), "", *ratio_lines(results), "",
        *latency_rows(results), "", *timeline_rows(results), "",
        "CPU per accepted webhook over the load and until the last read-model commit "
        "(user+system, every pid of the process; Postgres = postmaster and all backends, the "
        "bench's poll connection left out); idle = the same process's CPU per second while "
        "idle before the load.", "", *cpu_rows(results), "",
        f"Not counted above: load generator {results_ms(results, LOADGEN)}, bench probe "
        f"{results_ms(results, PROBE)} ms/webhook.", "",
        "Where paywatch's milliseconds go:", "", *where_lines(results), "",
        *memory_rows(results), "", "Checks:", "", *check_lines(results),
    ])


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def results_ms(results: dict[str, Result], role: str) -> str:
    """`role`'s ms/webhook per system."""
    return " / ".join(f"{k} {r.ms_per_webhook(role):.2f}" for k, r in results.items())
