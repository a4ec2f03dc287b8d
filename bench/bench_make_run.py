"""Time `make run` from a fresh clone to the ready banner: first (cold) and second start.

Usage: .venv/bin/python bench/bench_make_run.py [--warm-caches]
Cold = no pip cache and an empty Maven repository, as on a new machine (everything
is downloaded from PyPI and Maven Central). Uses the default ports: stop any running
`paywatch up` first. Everything started is stopped by pid (Ctrl-C, as a user would).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = "paywatch is running"


def timed_make_run(clone: Path, env: dict[str, str], log: Path, limit: float = 1500) -> float:
    """Seconds from `make run` to the ready banner; then Ctrl-C and wait for the exit."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - started > limit:
                raise SystemExit(f"make run did not get ready; see {log}")
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the group we started: make and paywatch up
        proc.wait(120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm-caches", action="store_true", help="keep pip/Maven caches")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="paywatch-makerun-"))
    clone = work / "paywatch"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = dict(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith("PAYWATCH_")}
    if not args.warm_caches:
        env["PIP_NO_CACHE_DIR"] = "1"
        env["MAVEN_OPTS"] = f"-Dmaven.repo.local={work / 'm2'}"
    first = timed_make_run(clone, env, work / "first.log")
    second = timed_make_run(clone, env, work / "second.log")
    caches = "warm pip/Maven caches" if args.warm_caches else "cold: no pip cache, empty Maven repo"
    print(f"| make run from a fresh clone ({caches}) | first start | {first:.1f} s |")
    print(f"| same clone again (venv, jars, data kept) | second start | {second:.1f} s |")
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
