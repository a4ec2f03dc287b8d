"""bench_saga's figures and the Markdown report made of them."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Round:
    """One throughput round of one target."""

    kind: str  # "faust" or "plain"
    events: int
    seconds: float  # first to last output record
    transitions: int
    commands: int
    open_sagas: int
    rss: int | None = None  # the worker's, after its round

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Start:
    """One worker start on the synthetic saga state."""

    ready_s: float
    line: str
    rss: int
    stop_s: float
    phases: dict[str, float]  # Faust milestone -> seconds from process start
    early: list[str]  # rebuild lines logged before the ready one


@dataclass
class Restarts:
    """Part 3's figures."""

    sagas: int
    changelog_bytes: int
    produce_s: float
    starts: list[Start] = field(default_factory=list)
    store_bytes: int = 0


def mib(n: int | None) -> str:
    """Bytes as MiB."""
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


NAMES = {
    "plain": "plain aiokafka loop (same decisions, batches of 500, dict stores)",
    "faust": "saga agent: `paywatch run worker`, rocksdb tables",
}


def round_rows(rounds: list[Round]) -> list[str]:
    """The throughput table: one row per target."""
    rows = ["| target | events/s (median) | per round | transitions | commands | open sagas |",
            "|---|---:|---|---:|---:|---:|"]
    for kind, name in NAMES.items():
        mine = [r for r in rounds if r.kind == kind]

        def distinct(values: list[int]) -> str:
            return "/".join(str(v) for v in sorted(set(values)))

        rows.append(
            f"| {name} | {statistics.median(r.rate for r in mine):.0f} | "
            + ", ".join(f"{r.rate:.0f}" for r in mine)
            + f" | {distinct([r.transitions for r in mine])}"
            + f" | {distinct([r.commands for r in mine])}"
            + f" | {distinct([r.open_sagas for r in mine])} |")
    return rows


def ratio_line(rounds: list[Round]) -> str:
    """Faust over plain: median over median, and per round."""
    faust = [r.rate for r in rounds if r.kind == "faust"]
    plain = [r.rate for r in rounds if r.kind == "plain"]
    per_round = [f / p for f, p in zip(faust, plain, strict=True)]
    ratio = statistics.median(faust) / statistics.median(plain)
    verdict = "meets" if ratio >= 0.4 else "misses"
    return (f"**Ratio saga agent / plain loop: {ratio:.3f}** (median over median; per round "
            + ", ".join(f"{r:.3f}" for r in per_round)
            + f"); {verdict} the 0.4 goal.")


def _phases(start: Start) -> str:
    return ", ".join(f"{name} {t:.1f} s" for name, t in start.phases.items()) or "-"


def _message(line: str) -> str:
    start = line.find("timer index rebuilt")
    return line[start:].strip() if start >= 0 else line.split("] ")[-1].strip()


def restart_lines(r: Restarts) -> list[str]:
    """Part 3's table and notes."""
    cold, warm = r.starts
    rows = [
        f"Synthetic state: {r.sagas} open sagas (one `shell.step` entry of a soft Visa decline "
        "on the generic provider, state `retrying`, 5 pending timers; invoice, timer, event "
        "and card ids varied per saga; `p` = the murmur2 partition of its key) written to the "
        f"saga table's changelog: {r.changelog_bytes / 1e6:.0f} MB of values, "
        f"{r.changelog_bytes / max(r.sagas, 1) / 1000:.2f} kB per entry, produced in "
        f"{r.produce_s:.0f} s. The card table is left empty.", "",
        "| start | process start to ready | Faust milestones | RSS when ready "
        "| SIGTERM to exit |",
        "|---|---:|---|---:|---:|",
        f"| cold: empty state dir, table restored from the changelog | **{cold.ready_s:.1f} s** "
        f"| {_phases(cold)} | {mib(cold.rss)} | {cold.stop_s:.1f} s |",
        f"| warm: same state dir (rocksdb kept) | **{warm.ready_s:.1f} s** | {_phases(warm)} "
        f"| {mib(warm.rss)} | {warm.stop_s:.1f} s |", "",
        f"- Ready = the worker's log line `{_message(cold.line)}` (cold; warm: "
        f"`{_message(warm.line)}`).",
        f"- rocksdb store after the cold start: {mib(r.store_bytes)}.",
    ]
    for label, start in (("cold", cold), ("warm", warm)):
        if start.early:
            rows.append(f"- {label}: the index was also rebuilt before the table was complete: "
                        + "; ".join(f"`{_message(e)}`" for e in start.early[:3]))
    return rows


def report(head: list[str], rounds: list[Round], idle: int, restart: Restarts | None) -> str:
    """The Markdown report: `head` (command, machine, workload), then the three parts."""
    faust = [r for r in rounds if r.kind == "faust"]
    lines = [
        *head, "", "### 1. Events/s", "", *round_rows(rounds), "", ratio_line(rounds), "",
        "### 2. Open sagas and memory", "",
        f"- Idle worker (empty tables, ready + 5 s): RSS {mib(idle)}.",
        *(f"- Worker after agent round {i + 1}: {r.open_sagas} open sagas in the saga table, "
          f"RSS {mib(r.rss)}." for i, r in enumerate(faust)),
    ]
    if restart is not None:
        cold, warm = restart.starts
        lines += [
            f"- Worker holding {restart.sagas} open sagas (part 3): RSS {mib(cold.rss)} after "
            f"the cold start, {mib(warm.rss)} after the warm restart.", "",
            "### 3. Restart to ready with open sagas on the rocksdb store", "",
            *restart_lines(restart),
        ]
    return "\n".join(lines)
