"""`make bench`: every benchmark in turn, each printing its own report, then a summary.

Run from the repository root with the project venv: ``.venv/bin/python bench/run_all.py``
(``--full`` adds the 1M-open-saga restart of bench_saga, about 8 more minutes;
``--only NAME ...`` runs a subset). A bench that cannot run on this machine (``wrk``
missing for the ingest bench) is reported as skipped with the reason, not as a pass.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


@dataclass(frozen=True)
class Bench:
    """One benchmark command and what it needs."""

    name: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()


def benches(full: bool) -> list[Bench]:
    """The benchmarks of bench/README.md, quickest first."""
    sagas = "1000000" if full else "0"
    return [
        Bench("house", ("house_metrics.py",)),
        Bench("codec", ("bench_codec.py",)),
        Bench("providers", ("bench_providers.py",)),
        Bench("policy", ("bench_policy.py",)),
        Bench("projector", ("bench_projector.py",)),
        Bench("executor", ("bench_executor.py",)),
        Bench("api", ("bench_api.py",)),
        Bench("outbound", ("bench_outbound.py",)),
        Bench("ingest", ("bench_ingest.py",), needs=("wrk",)),
        Bench("producer", ("bench_producer.py",)),
        Bench("saga", ("bench_saga.py", "--sagas", sagas)),
        Bench("e2e", ("bench_e2e.py", "--minutes", "10" if full else "1")),
    ]


def run(bench: Bench) -> tuple[str, float]:
    """Run one bench with its output streamed; (outcome, seconds)."""
    missing = [tool for tool in bench.needs if shutil.which(tool) is None]
    if missing:
        return (
            f"skipped: {', '.join(missing)} not installed (apt-get install -y {' '.join(missing)})",
            0.0,
        )
    print(f"\n## {bench.name}: bench/{' '.join(bench.args)}\n", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, str(BENCH / bench.args[0]), *bench.args[1:]], cwd=REPO)
    seconds = time.monotonic() - started
    return ("ok" if code == 0 else f"FAILED (exit {code})"), seconds


def main(argv: list[str]) -> int:
    """Run the selected benches; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="include the 1M-saga restart")
    parser.add_argument("--only", nargs="+", default=None, help="bench names to run")
    args = parser.parse_args(argv)
    selected = [b for b in benches(args.full) if args.only is None or b.name in args.only]
    outcomes = [(bench, *run(bench)) for bench in selected]
    print("\n## Summary\n")
    for bench, outcome, seconds in outcomes:
        print(f"- {bench.name:10} {outcome}" + (f" ({seconds:.0f} s)" if seconds else ""))
    return 1 if any(outcome.startswith("FAILED") for _, outcome, _ in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
