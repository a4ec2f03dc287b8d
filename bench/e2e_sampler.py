"""CPU seconds and memory per process role, sampled from /proc (psutil) in a thread.

Every ``interval`` seconds the sampler asks ``discover()`` which pids play which role (the
pids can change: a supervised process restarted, a Postgres backend or autovacuum worker
started) and records each pid's cumulative user+system CPU and RSS. ``mark(label)`` takes a
sample at once. The CPU of a role between two marks is, over every pid seen in between, its
last value minus its value at the first mark (0 for a pid born after it): a process that
restarts or exits is counted up to its last sample (at most ``interval`` of its CPU is
missed). Memory: the peak over the samples of the role's summed RSS, and at ``mark`` time
on request its summed PSS (shared pages divided among the processes sharing them, so
Postgres's shared buffers are not counted once per backend).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

Discover = Callable[[], dict[int, str]]


@dataclass
class Sample:
    """One pass over the processes: pid -> (role, cpu seconds, rss bytes)."""

    at: float
    procs: dict[int, tuple[str, float, int]]


@dataclass
class Sampler:
    """Samples the processes `discover` names until `stop`."""

    discover: Discover
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    pss: dict[str, dict[str, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="e2e-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> int:
        """Take one sample now; its index."""
        procs: dict[int, tuple[str, float, int]] = {}
        for pid, role in self.discover().items():
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    procs[pid] = (role, cpu.user + cpu.system, proc.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        with self._lock:
            self.samples.append(Sample(time.time(), procs))
            return len(self.samples) - 1

    def mark(self, label: str, with_pss: bool = False) -> float:
        """Sample now and remember it as `label` (optionally with PSS per role); its time."""
        index = self.sample()
        self.marks[label] = index
        if with_pss:
            self.pss[label] = self._pss(self.samples[index])
        return self.samples[index].at

    def _pss(self, sample: Sample) -> dict[str, int]:
        by_role: dict[str, int] = {}
        for pid, (role, _, _) in sample.procs.items():
            try:
                pss = int(psutil.Process(pid).memory_full_info().pss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            by_role[role] = by_role.get(role, 0) + pss
        return by_role

    def window(self, start: str, end: str) -> list[Sample]:
        """The samples from mark `start` to mark `end`, both included."""
        with self._lock:
            return self.samples[self.marks[start] : self.marks[end] + 1]

    def cpu(self, start: str, end: str) -> dict[str, float]:
        """CPU seconds per role between two marks."""
        window = self.window(start, end)
        first = window[0].procs
        last: dict[int, tuple[str, float, int]] = {}
        for sample in window:
            last.update(sample.procs)
        by_role: dict[str, float] = {}
        for pid, (role, cpu, _) in last.items():
            base = first[pid][1] if pid in first else 0.0
            by_role[role] = by_role.get(role, 0.0) + max(0.0, cpu - base)
        return by_role

    def peak_rss(self, start: str, end: str) -> dict[str, int]:
        """Peak summed RSS per role between two marks."""
        peak: dict[str, int] = {}
        for sample in self.window(start, end):
            sums: dict[str, int] = {}
            for role, _, rss in sample.procs.values():
                sums[role] = sums.get(role, 0) + rss
            for role, rss in sums.items():
                peak[role] = max(peak.get(role, 0), rss)
        return peak

    def pids(self, start: str, end: str) -> dict[str, set[int]]:
        """Every pid seen per role between two marks (a role with two pids restarted)."""
        seen: dict[str, set[int]] = {}
        for sample in self.window(start, end):
            for pid, (role, _, _) in sample.procs.items():
                seen.setdefault(role, set()).add(pid)
        return seen


def tree(pid: int | None, role: str, exclude: set[int]) -> dict[int, str]:
    """`pid` and its live children (Postgres: the postmaster and its backends) as `role`."""
    if pid is None:
        return {}
    found = {pid: role}
    try:
        for child in psutil.Process(pid).children(recursive=True):
            if child.pid not in exclude:
                found[child.pid] = role
    except psutil.NoSuchProcess:
        return {}
    return found
