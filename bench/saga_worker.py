"""bench_saga's handles on the outside world: worker processes and reads of Kafka topics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
from bench_ingest import child_env, stop
from confluent_kafka import Consumer, KafkaException, TopicPartition

from paywatch.settings import Settings

READY = re.compile(r"timer index rebuilt: (\d+) sagas")
PHASES = {
    "restore started": "Restoring state from changelog topics",
    "restore done": "Done reading from changelog topics",
    "Faust ready": "Worker ready",
}
"""Faust's own start-up milestones (faust/tables/recovery.py), timed on the way to ready."""


def worker_env(s: Settings) -> dict[str, str]:
    """`python -m paywatch run worker` configured as `s` (production table defaults)."""
    assert s.kafka_bootstrap and s.database_url
    return child_env({
        "PAYWATCH_ENV": s.env, "PAYWATCH_STATE_DIR": str(s.state_path),
        "PAYWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "PAYWATCH_DATABASE_URL": s.database_url.get_secret_value(),
        "PAYWATCH_TOPIC_PREFIX": s.topic_prefix, "PAYWATCH_APP_ID": s.app_id,
        "PAYWATCH_TOPIC_PARTITIONS": str(s.topic_partitions),
        "PAYWATCH_TABLE_STORE": s.table_store,
        "PAYWATCH_TABLE_STANDBY_REPLICAS": str(s.table_standby_replicas),
    })


class Worker:
    """One `paywatch run worker` process, its log and a reader of that log."""

    def __init__(self, s: Settings, name: str, procs: list[subprocess.Popen[bytes]]) -> None:
        self.log = s.state_path / f"{name}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "paywatch", "run", "worker"], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=worker_env(s))
        procs.append(self.proc)  # stopped by the bench's `finally` whatever happens
        self.phases: dict[str, float] = {}
        self._offset = 0

    def alive(self) -> None:
        """Raise with the log tail if the worker exited."""
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{tail}")

    def new_lines(self) -> list[str]:
        """Complete log lines written since the last call (milestones noted on the way)."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        lines = data[:end].decode(errors="replace").splitlines()
        now = time.monotonic() - self.started
        for line in lines:
            for name, text in PHASES.items():
                if text in line:
                    self.phases.setdefault(name, now)
        return lines

    def wait_ready(self, at_least: int, timeout: float) -> tuple[float, str, list[str]]:
        """Seconds from start to a rebuild line counting >= at_least sagas; earlier ones."""
        deadline, early = time.monotonic() + timeout, list[str]()
        while time.monotonic() < deadline:
            for line in self.new_lines():
                match = READY.search(line)
                if match and int(match.group(1)) >= at_least:
                    return time.monotonic() - self.started, line.strip(), early
                if match:
                    early.append(line.strip())
            self.alive()
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready within {timeout:.0f} s (see {self.log})")

    def rss(self) -> int:
        """Resident set size of the worker process."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> float:
        """SIGTERM, wait; the seconds it took."""
        begin = time.monotonic()
        stop(self.proc, timeout=120.0)
        return time.monotonic() - begin


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """The sum of the offsets `group` committed on `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    except KafkaException:  # e.g. the group coordinator is still loading: ask again later
        return 0
    finally:
        consumer.close()


def records(bootstrap: str, topics: Iterable[str]) -> Iterator[tuple[Any, Any, int]]:
    """(key, value, timestamp ms) of every record of `topics`, read to their high watermarks."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "paywatch-bench-read",
                         "enable.auto.commit": False})
    try:
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    ends[(topic, p)] = high
                    starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        while ends:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error():
                    continue
                yield msg.key(), msg.value(), msg.timestamp()[1]
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if int(msg.offset() or 0) + 1 >= ends.get(tp, 0):
                    ends.pop(tp, None)
    finally:
        consumer.close()


def dir_size(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
