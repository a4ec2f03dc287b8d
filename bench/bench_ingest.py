"""Ingest throughput: signed Stripe webhooks/s accepted with broker ack vs a bare FastAPI 200.

Run: ``.venv/bin/python bench/bench_ingest.py [--seconds 10] [--connections 16] [--rounds 3]
[--compare-provider braintree]``.
Starts its own Kafka + Postgres (``.paywatch/bench-<pid>``, free ports), one
``python -m paywatch run ingest`` and the bare app of ``bench/bare_app.py``, loads
them alternately with ``wrk`` and prints a Markdown report with the ratio measured in
the same run. Needs ``wrk`` (``apt-get install -y wrk``). About 2 minutes by default.

``--compare-provider braintree`` adds a third target, alternated with the other two in the
same run: the same ingest process loaded with signed Braintree deliveries
(``POST /webhooks/braintree/<tenant>``); the report adds the ratio braintree/stripe and
each ingest target vs the baseline. About 3 minutes.

The bench's one tenant sends faster than the default per-tenant rate limit
(PAYWATCH_INGEST_RATE 2,000/s per process), so its ingest runs with the limiter on but a
rate and burst of 1,000,000 (``LIMIT_ON``): every webhook takes a token, none is refused.
``--compare-rate-limit`` starts a second ingest process with ``PAYWATCH_INGEST_RATE=0``
(limiter off) and alternates it with that one and the baseline in the same run; the report
gives the limiter's overhead in req/s and server CPU per request. About 3 minutes.
PAYWATCH_* variables of the calling shell are ignored: the bench always uses its own stack.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import _repo  # noqa: F401  (puts tests.builders on sys.path)
import asyncpg
import psutil
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from paywatch.kafka.admin import ensure_topics
from paywatch.ops.infra import Endpoints, start_infra, stop_infra
from paywatch.ops.kafka import EmbeddedKafka
from paywatch.ops.pids import pid_alive
from paywatch.schemas.topics import WEBHOOKS_RAW, topic_specs
from paywatch.settings import DEV_SECRET_KEY, Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import create_tenant, set_secrets
from tests.builders.braintree import (
    BRAINTREE_HEADERS,
    braintree_body,
    braintree_notification_xml,
    braintree_subscription_xml,
    braintree_transaction_xml,
)
from tests.builders.stripe import sign_stripe, stripe_body, stripe_event, stripe_invoice

REPO = Path(__file__).resolve().parent.parent
BENCH_ROOT = REPO / ".paywatch"
JAR_SEEDS = (REPO / ".paywatch" / "kafka" / "libs",
             REPO / ".paywatch" / "test-infra" / "jars" / "kafka" / "libs")
RESERVED_PORTS = frozenset({8080, 8081, 9092, 9093, 55432})  # the developer's stack
TENANT = "bench"
BODIES = 4096
WARMUP_S = 2
THREADS = 2
READY_TIMEOUT_S = 60.0
EVENT_TYPE = "invoice.payment_failed"
BRAINTREE_KIND = "subscription_charged_unsuccessfully"
COMPARE_PROVIDERS = ("braintree",)

WRK_SCRIPT = r"""
-- Rotate through pre-generated signed deliveries ({headers, body} each);
-- thread k sends k, k+T, k+2T...
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs, step, i

function init(args)
  local bodies = dofile(args[1])
  step = tonumber(args[2])
  i = tid
  reqs = {}
  for k, b in ipairs(bodies) do
    reqs[k] = wrk.format("POST", nil, b[1], b[2])
  end
end

function request()
  local r = reqs[(i % #reqs) + 1]
  i = i + step
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Run:
    """One wrk invocation against one target."""

    requests: int
    duration_s: float
    status_errors: int  # wrk: responses with status >= 400
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float = 0.0  # CPU seconds of the server process (all threads) during the run

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per completed request."""
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0

    @property
    def core_share(self) -> float:
        """Share of one core the server used (1.0: its pinned core was saturated)."""
        return self.cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        """Responses below 400 (neither app ever answers 1xx or 3xx)."""
        return self.requests - self.status_errors


@dataclass
class Target:
    """A server under load, the deliveries wrk sends it and the wrk runs against it."""

    name: str
    url: str
    provider: str = "stripe"  # whose signed deliveries wrk sends (see `deliveries`)
    ingest: bool = False  # the paywatch ingest process (counted in /metrics and Kafka)
    pid: int = 0  # the server process, for its CPU time
    runs: list[Run] = field(default_factory=list)
    warmups: list[Run] = field(default_factory=list)


@dataclass
class Bench:
    """Everything the bench started, so `finally` can stop it."""

    state: Path
    settings: Settings
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    secret: str = field(default_factory=lambda: "whsec_" + secrets.token_hex(16))
    bt_keys: dict[str, str] = field(default_factory=lambda: {
        "public_key": "bench_bt_public_" + secrets.token_hex(4),
        "private_key": "bench_bt_private_" + secrets.token_hex(16)})
    invocations: int = 0


# -- setup --------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--rounds", type=int, default=3, help="baseline+ingest rounds")
    parser.add_argument("--compare-provider", choices=COMPARE_PROVIDERS, default=None,
                        help="also load ingest with this provider's deliveries, alternated "
                        "with Stripe's and the baseline in the same run")
    parser.add_argument("--compare-rate-limit", action="store_true",
                        help="also run an ingest with the per-tenant rate limit off "
                        "(PAYWATCH_INGEST_RATE=0), alternated with the default one")
    args = parser.parse_args(argv)
    if args.compare_provider and args.compare_rate_limit:
        parser.error("--compare-provider and --compare-rate-limit are separate runs")
    if not 1 <= args.seconds <= 240:  # Stripe signatures are valid for 300 s
        parser.error("--seconds must be between 1 and 240")
    if args.connections < THREADS or args.rounds < 1:
        parser.error(f"--connections must be >= {THREADS} and --rounds >= 1")
    return args


def free_port(taken: set[int]) -> int:
    """A free TCP port on 127.0.0.1, not reserved and not already picked."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS and port not in taken:
            taken.add(port)
            return port


def bench_settings(state: Path, taken: set[int]) -> Settings:
    """Settings of the bench's own embedded Kafka and Postgres."""
    return Settings(
        env="dev", state_dir=state, kafka_bootstrap=None, database_url=None,
        secret_key=SecretStr(DEV_SECRET_KEY), topic_prefix="",
        embedded_kafka_port=free_port(taken), embedded_kafka_controller_port=free_port(taken),
        embedded_pg_port=free_port(taken), kafka_heap="512m",
    )


def sweep_stale() -> None:
    """Stop and delete the stacks of earlier benches whose process was killed."""
    for run_dir in BENCH_ROOT.glob("bench-*"):
        pid = run_dir.name.removeprefix("bench-")
        if pid.isdigit() and not pid_alive(int(pid)):
            stop_infra(Settings(state_dir=run_dir, kafka_bootstrap=None, database_url=None))
            shutil.rmtree(run_dir, ignore_errors=True)


def _bench_state() -> Path:
    """A bench's own state dir ``.paywatch/bench-<pid>``: PAYWATCH_* variables dropped (the
    bench runs its own stack, whatever the shell says), stale benches swept, SIGTERM turned
    into an exit so that what the bench started is always stopped."""
    signal.signal(signal.SIGTERM, _raise_exit)
    for name in [k for k in os.environ if k.startswith("PAYWATCH_")]:
        del os.environ[name]
    sweep_stale()
    state = BENCH_ROOT / f"bench-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    return state


@contextmanager
def own_kafka() -> Iterator[tuple[Path, EmbeddedKafka]]:
    """A bench's own embedded Kafka on free ports (no Postgres), stopped and its state
    deleted on the way out. Yields (state dir, broker)."""
    state = _bench_state()
    taken: set[int] = set()
    infra = Settings(
        env="dev",
        state_dir=state,
        kafka_bootstrap=None,
        database_url=None,
        embedded_kafka_port=free_port(taken),
        embedded_kafka_controller_port=free_port(taken),
        kafka_heap="512m",
    )
    try:
        seed_jars(infra)
        kafka = EmbeddedKafka(infra)
        kafka.start()
        yield state, kafka
    finally:
        progress("stopping")
        EmbeddedKafka(infra).stop()
        shutil.rmtree(state, ignore_errors=True)


@contextmanager
def own_stack() -> Iterator[tuple[Path, Settings, Endpoints]]:
    """A bench's own embedded Kafka and Postgres on free ports, stopped and their state
    deleted on the way out. Yields (state dir, their settings, endpoints)."""
    state = _bench_state()
    base = bench_settings(state, set())
    try:
        seed_jars(base)
        progress(f"starting Kafka + Postgres in {state}")
        yield state, base, start_infra(base)
    finally:
        progress("stopping")
        stop_infra(base)
        shutil.rmtree(state, ignore_errors=True)


def seed_jars(settings: Settings) -> Path:
    """Hard-link the Kafka jars from the dev stack or the tests (Maven only if neither has them)."""
    kafka = EmbeddedKafka(settings)
    for seed in JAR_SEEDS:
        if (seed / ".paywatch-complete").exists():
            return kafka.ensure_jars(seed_from=seed)
    return kafka.ensure_jars()


async def _create_tenant(dsn: str, box: SecretBox, bench: Bench) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await create_tenant(conn, TENANT)
        await set_secrets(conn, box, TENANT, "stripe", {"signing_secret": bench.secret})
        await set_secrets(conn, box, TENANT, "braintree", bench.bt_keys)
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def start_stack(bench: Bench) -> tuple[Endpoints, str]:
    """Kafka + Postgres, topics, tenant; the endpoints and the Postgres version."""
    seed_jars(bench.settings)
    ends = start_infra(bench.settings)
    ensure_topics(ends.bootstrap, topic_specs(bench.settings), timeout=60.0)
    box = SecretBox(bench.settings.secret_key.get_secret_value())
    pg_version = asyncio.run(_create_tenant(ends.dsn, box, bench))
    return ends, pg_version


# -- processes ----------------------------------------------------------------


def pin(cpu: int) -> list[str]:
    """`taskset -c cpu` when taskset exists and we may use two CPUs, else nothing."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment without the shell's PAYWATCH_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


def spawn(bench: Bench, name: str, argv: list[str], env: dict[str, str]) -> Path:
    """Start a server pinned to CPU 0, output to <state>/<name>.log; return the log path."""
    log = bench.state / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([*pin(0), *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    bench.procs.append(proc)
    return log


LIMIT_ON = {"PAYWATCH_INGEST_RATE": "1000000", "PAYWATCH_INGEST_BURST": "1000000"}
"""The per-tenant limiter checked on every webhook and never reached."""


def start_ingest(bench: Bench, ends: Endpoints, port: int, name: str = "ingest",
                 extra: Mapping[str, str] = LIMIT_ON) -> Path:
    """`python -m paywatch run ingest`, configured through the environment as in production."""
    env = child_env({
        "PAYWATCH_ENV": "dev", "PAYWATCH_STATE_DIR": str(bench.state),
        "PAYWATCH_KAFKA_BOOTSTRAP": ends.bootstrap, "PAYWATCH_DATABASE_URL": ends.dsn,
        "PAYWATCH_INGEST_PORT": str(port), **extra,
    })
    return spawn(bench, name, [sys.executable, "-m", "paywatch", "run", "ingest"], env)


def start_baseline(bench: Bench, port: int) -> Path:
    """bench/bare_app.py on `port`."""
    app = str(Path(__file__).resolve().parent / "bare_app.py")
    return spawn(bench, "baseline", [sys.executable, app, str(port)], child_env({}))


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM a child we started, SIGKILL after `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def http_status(url: str, data: bytes | None = None) -> int:
    """Status of a GET (or POST with `data`), 0 when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_ready(proc: subprocess.Popen[bytes], log: Path, url: str, data: bytes | None) -> None:
    """Wait until `url` answers 200; raise with the log tail if the process dies or is late."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while http_status(url, data) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{url} not ready (exit code {proc.poll()}):\n{tail}")
        time.sleep(0.2)


# -- load ---------------------------------------------------------------------


def lua_string(text: str) -> str:
    """`text` as a Lua long string (its first newline is dropped by Lua, so add one)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[\n{text}]{eq}]"


Delivery = tuple[dict[str, str], str]
"""(HTTP headers, body) of one pre-generated request."""


def signed_bodies(run: int, secret: str) -> Iterator[tuple[str, str]]:
    """BODIES distinct Stripe deliveries (event and invoice ids vary), signed now."""
    now = int(time.time())
    for i in range(BODIES):
        ref = f"{run:03d}{i:05d}"
        invoice = stripe_invoice(basil=True, invoice_id=f"in_bench_{ref}", created=now)
        event = stripe_event(EVENT_TYPE, invoice, event_id=f"evt_bench_{ref}", created=now)
        body = stripe_body(event)
        yield sign_stripe(body, secret, now), body.decode("ascii")


def stripe_deliveries(run: int, secret: str) -> Iterator[Delivery]:
    """`signed_bodies` with their headers."""
    for sig, body in signed_bodies(run, secret):
        yield {"Content-Type": "application/json", "Stripe-Signature": sig}, body


def braintree_deliveries(run: int, keys: Mapping[str, str]) -> Iterator[Delivery]:
    """BODIES distinct Braintree `subscription_charged_unsuccessfully` deliveries.

    The timestamp and the subscription and transaction ids vary, so each body has its own
    dedupe key and, like the Stripe invoices, its own Kafka key (subject = subscription).
    The signature is in the form (`braintree_body`), so the only header is the content type.
    """
    start = datetime.now(UTC).replace(microsecond=0)
    for i in range(BODIES):
        ref = f"{run:03d}{i:05d}"
        stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        sub = f"bt_sub_bench_{ref}"
        txn = braintree_transaction_xml(transaction_id=f"bt_txn_bench_{ref}",
                                        subscription_id=sub)
        xml = braintree_notification_xml(
            BRAINTREE_KIND, braintree_subscription_xml(subscription_id=sub, transactions=[txn]),
            timestamp=stamp)
        body = braintree_body(xml, keys["public_key"], keys["private_key"])
        yield dict(BRAINTREE_HEADERS), body.decode("ascii")


def deliveries(bench: Bench, provider: str, run: int) -> Iterator[Delivery]:
    """Fresh signed deliveries of `provider` for wrk invocation `run`."""
    if provider == "braintree":
        return braintree_deliveries(run, bench.bt_keys)
    return stripe_deliveries(run, bench.secret)


def lua_headers(headers: Mapping[str, str]) -> str:
    """A Lua table constructor of `headers` (spaces keep `[ [[` from reading as `[[[`)."""
    return "{" + ", ".join(f"[ {lua_string(k)} ] = {lua_string(v)}"
                           for k, v in headers.items()) + "}"


def write_bodies(bench: Bench, provider: str) -> tuple[Path, int]:
    """A fresh Lua table of signed requests for the next wrk invocation; (path, body size)."""
    bench.invocations += 1
    path = bench.state / "bodies.lua"
    size = 0
    with path.open("w", encoding="ascii") as out:
        out.write("return {\n")
        for headers, body in deliveries(bench, provider, bench.invocations):
            out.write(f"{{{lua_headers(headers)}, {lua_string(body)}}},\n")
            size = len(body)
        out.write("}\n")
    return path, size


def run_wrk(bench: Bench, target: Target, seconds: int, connections: int) -> Run:
    """One wrk invocation pinned to CPU 1 with fresh deliveries for `target`; its summary."""
    url = target.url
    bodies, _ = write_bodies(bench, target.provider)
    script = bench.state / "bench.lua"
    script.write_text(WRK_SCRIPT, encoding="ascii")
    cmd = [*pin(1), "wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s",
           "--timeout", "10s", "-s", str(script), url, "--", str(bodies), str(THREADS)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return Run(
        requests=data["requests"], duration_s=data["duration_us"] / 1e6,
        status_errors=data["status"],
        socket_errors=sum(data[k] for k in ("connect", "read", "write", "timeout")),
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
    )


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a server process, all its threads (0 without a pid)."""
    if not pid:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def load_rounds(bench: Bench, targets: list[Target], args: argparse.Namespace) -> None:
    """Alternate the targets: warmup then a measured run each, `rounds` times."""
    for rnd in range(1, args.rounds + 1):
        for target in targets:
            target.warmups.append(run_wrk(bench, target, WARMUP_S, args.connections))
            cpu = server_cpu(target.pid)
            run = run_wrk(bench, target, args.seconds, args.connections)
            run = replace(run, cpu_s=server_cpu(target.pid) - cpu)
            target.runs.append(run)
            progress(f"round {rnd}/{args.rounds} {target.name}: {run.rps:.0f} req/s, "
                     f"p50 {run.p50_ms:.1f} ms, >=400: {run.status_errors}")


# -- checks -------------------------------------------------------------------


Outcomes = dict[tuple[str, str], int]
"""paywatch_ingest_requests_total by (provider, outcome)."""


def ingest_outcomes(base: str) -> Outcomes:
    """paywatch_ingest_requests_total by provider and outcome, from the ingest's /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: Outcomes = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "paywatch_ingest_requests_total":
                key = (sample.labels["provider"], sample.labels["outcome"])
                counts[key] = counts.get(key, 0) + int(sample.value)
    return counts


def by_outcome(outcomes: Outcomes) -> dict[str, int]:
    """Counts by outcome, summed over providers."""
    counts: dict[str, int] = {}
    for (_, outcome), value in outcomes.items():
        counts[outcome] = counts.get(outcome, 0) + value
    return counts


def settled_outcomes(base: str) -> Outcomes:
    """Outcomes once requests still in flight when wrk stopped have been answered."""
    deadline = time.monotonic() + 15
    previous = ingest_outcomes(base)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        current = ingest_outcomes(base)
        if current == previous:
            return current
        previous = current
    return previous


def raw_records(bootstrap: str, topic: str) -> int:
    """Records in `topic`: the sum over partitions of high minus low watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "paywatch-bench-check",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


# -- report -------------------------------------------------------------------


def kafka_version() -> str:
    """Kafka version from the broker jar name."""
    for seed in JAR_SEEDS:
        for jar in seed.glob("kafka_2.*-*.jar"):
            match = re.match(r"kafka_[\d.]+-([\d.]+)\.jar$", jar.name)
            if match:
                return match.group(1)
    return "unknown"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def command_line(argv: list[str]) -> str:
    """How this bench was invoked, relative to the repo."""
    exe = Path(sys.executable)
    python = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else str(exe)
    return shlex.join([python, "bench/bench_ingest.py", *argv])


def target_row(target: Target) -> str:
    """One Markdown table row: medians over the measured runs."""
    runs = target.runs
    per_round = ", ".join(f"{r.rps:.0f}" for r in runs)
    return (f"| {target.name} | {statistics.median(r.rps for r in runs):.0f} | {per_round} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | "
            f"{statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{sum(r.status_errors for r in runs + target.warmups)} | "
            f"{sum(r.socket_errors for r in runs + target.warmups)} | "
            f"{statistics.median(r.cpu_us for r in runs):.0f} | "
            f"{statistics.median(r.core_share for r in runs):.2f} |")


def kafka_lines(ingest: Target, outcomes: dict[str, int], records: int, conns: int) -> list[str]:
    """The proof that every accepted webhook is in Kafka."""
    wrk_ok = sum(r.ok for r in ingest.runs + ingest.warmups)
    accepted = outcomes.get("accepted", 0)
    in_flight = records - wrk_ok
    bound = conns * len(ingest.runs + ingest.warmups)
    verdict = "OK" if records == accepted and 0 <= in_flight <= bound else "MISMATCH"
    return [
        f"- `{WEBHOOKS_RAW}` holds **{records}** records (sum of high watermarks); ingest's "
        f"/metrics counted **{accepted}** accepted; wrk saw **{wrk_ok}** 2xx from ingest "
        "(warmups included).",
        f"- {in_flight} records were answered after wrk stopped reading (requests in flight at "
        f"the end of a run; at most connections x runs = {bound}). **{verdict}**: every "
        "webhook ingest answered 200 is in Kafka.",
    ]


def validity(ingest: Target, outcomes: dict[str, int]) -> str:
    """Whether the ingest figures can be used."""
    runs = ingest.runs + ingest.warmups
    bad = sum(r.status_errors + r.socket_errors for r in runs)
    others = {k: v for k, v in outcomes.items() if k != "accepted" and v}
    if bad or others:
        return (f"**INVALID**: ingest answered {bad} requests with >= 400 or a socket error "
                f"(outcomes {others}); the figures above do not measure accepted webhooks.")
    return "Valid: ingest answered every request 200 (no error outcome in /metrics)."


def ratio_line(label: str, num: Target, den: Target) -> str:
    """Median req/s over median req/s, and the same ratio per round."""
    ratio = statistics.median(r.rps for r in num.runs) / statistics.median(
        r.rps for r in den.runs)
    rounds = [n.rps / d.rps for d, n in zip(den.runs, num.runs, strict=True)]
    per_round = ", ".join(f"{r:.3f}" for r in rounds)
    return (f"**Ratio {label}: {ratio:.3f}** (median req/s over median req/s); per round "
            f"{per_round}, median {statistics.median(rounds):.3f}.")


def cpu_line(label: str, num: Target, den: Target) -> str:
    """Server CPU per request of a target vs the baseline (steadier than req/s on a busy box)."""
    mine = statistics.median(r.cpu_us for r in num.runs)
    base = statistics.median(r.cpu_us for r in den.runs)
    return (f"Server CPU per request: {label} {mine:.0f} us, baseline {base:.0f} us "
            f"(**CPU ratio baseline/{label}: {base / mine:.3f}**, what the req/s ratio would be "
            "if both saturated their core and nothing else ran on it).")


def setup_lines(args: argparse.Namespace, argv: list[str], facts: dict[str, str]) -> list[str]:
    """Command, machine and load: the same in both reports."""
    return [
        f"Command: `{command_line(argv)}`", "",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; Apache Kafka "
        f"{facts['kafka']} (embedded KRaft, 1 broker); PostgreSQL {facts['pg']}; {facts['wrk']}.",
        f"- Load: wrk -t{THREADS} -c{args.connections}, {args.rounds} rounds x {args.seconds} s "
        f"per target after a {WARMUP_S} s warmup, targets alternated in one run; "
        f"{facts['pinning']}.",
    ]


TABLE_HEAD = [
    "| target | req/s (median) | req/s per round | p50 ms | p99 ms | status >= 400 "
    "| socket errors | server CPU us/req | server core share |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|",
]


def report(args: argparse.Namespace, argv: list[str], targets: list[Target],
           facts: dict[str, str], outcomes: dict[str, int], checks: list[str]) -> str:
    """The Markdown report."""
    base, ingest = targets
    return "\n".join([
        "## Ingest throughput: signed Stripe webhooks vs bare FastAPI", "",
        *setup_lines(args, argv, facts),
        f"- Bodies: {BODIES} distinct `{EVENT_TYPE}` deliveries per wrk run ({facts['size']} "
        "bytes, `stripe_body`), each with a fresh `Stripe-Signature`, rotated; same requests "
        "to both targets.",
        f"- ingest: `python -m paywatch run ingest` (verify HMAC, PAN scan, parse, append to "
        f"`{WEBHOOKS_RAW}` with acks=all, {facts['partitions']} partitions, 200 after the ack). "
        "baseline: `bench/bare_app.py` `POST /plain` reads the body and returns 200; same "
        "uvicorn settings (`paywatch.ops.runners._serve`).", "",
        *TABLE_HEAD,
        target_row(base), target_row(ingest), "",
        ratio_line("ingest/baseline", ingest, base), "",
        cpu_line("ingest", ingest, base), "",
        validity(ingest, outcomes), "", *checks,
    ])


def compare_kafka_lines(ingests: list[Target], outcomes: Outcomes, records: int,
                        conns: int) -> list[str]:
    """The proof that every accepted webhook of every provider is in Kafka."""
    accepted = by_outcome(outcomes).get("accepted", 0)
    per_target, fits = [], records == accepted
    for target in ingests:
        wrk_ok = sum(r.ok for r in target.runs + target.warmups)
        mine = outcomes.get((target.provider, "accepted"), 0)
        in_flight, bound = mine - wrk_ok, conns * len(target.runs + target.warmups)
        fits = fits and 0 <= in_flight <= bound
        per_target.append(f"{target.provider}: /metrics {mine} accepted, wrk {wrk_ok} 2xx, "
                          f"{in_flight} answered after wrk stopped reading (at most {bound})")
    verdict = "OK" if fits else "MISMATCH"
    return [
        f"- `{WEBHOOKS_RAW}` holds **{records}** records (sum of high watermarks); ingest's "
        f"/metrics counted **{accepted}** accepted over both providers (warmups included).",
        f"- Per provider: {'; '.join(per_target)}. Requests in flight at the end of a run are "
        f"answered after wrk stops reading: at most connections x runs. **{verdict}**: every "
        "webhook ingest answered 200 is in Kafka.",
    ]


def compare_validity(ingests: list[Target], outcomes: Outcomes) -> str:
    """Whether the ingest figures of both providers can be used."""
    runs = [r for target in ingests for r in target.runs + target.warmups]
    bad = sum(r.status_errors + r.socket_errors for r in runs)
    others = {f"{p}/{o}": v for (p, o), v in outcomes.items() if o != "accepted" and v}
    if bad or others:
        return (f"**INVALID**: ingest answered {bad} requests with >= 400 or a socket error "
                f"(outcomes {others}); the figures above do not measure accepted webhooks.")
    return ("Valid: ingest answered every request of both providers 200 (no error outcome in "
            "/metrics).")


def compare_report(args: argparse.Namespace, argv: list[str], targets: list[Target],
                   facts: dict[str, str], outcomes: Outcomes, checks: list[str]) -> str:
    """The Markdown report of `--compare-provider`: baseline, ingest Stripe, ingest <other>."""
    base, stripe, other = targets
    name = other.provider
    return "\n".join([
        f"## Ingest throughput: signed Stripe vs {name.capitalize()} webhooks vs bare FastAPI",
        "", *setup_lines(args, argv, facts),
        f"- Bodies: {BODIES} distinct deliveries per wrk run, freshly signed, rotated. Stripe: "
        f"`{EVENT_TYPE}` ({facts['size']} bytes, `stripe_body`, `Stripe-Signature` header), "
        f"sent to the baseline and to ingest stripe. Braintree: `{BRAINTREE_KIND}` "
        f"({facts['bt_size']} bytes, `braintree_body`: form with `bt_signature` and base64 XML "
        "`bt_payload`, content type application/x-www-form-urlencoded); timestamp, "
        "subscription and transaction ids vary, so each is a distinct delivery with its own "
        "Kafka key.",
        f"- ingest: one `python -m paywatch run ingest` serves both ingest targets, "
        f"`POST /webhooks/stripe/{TENANT}` and `POST /webhooks/{name}/{TENANT}` (verify "
        f"signature, PAN scan, parse, append to `{WEBHOOKS_RAW}` with acks=all, "
        f"{facts['partitions']} partitions, 200 after the ack). baseline: `bench/bare_app.py` "
        "`POST /plain` reads the body and returns 200; same uvicorn settings "
        "(`paywatch.ops.runners._serve`).", "",
        *TABLE_HEAD,
        target_row(base), target_row(stripe), target_row(other), "",
        "- " + ratio_line(f"{name}/stripe", other, stripe),
        "- " + ratio_line("stripe/baseline", stripe, base),
        "- " + ratio_line(f"{name}/baseline", other, base),
        "- " + cpu_line("stripe", stripe, base),
        "- " + cpu_line(name, other, base), "",
        compare_validity([stripe, other], outcomes), "", *checks,
    ])


def rate_limit_report(args: argparse.Namespace, argv: list[str], targets: list[Target],
                      facts: dict[str, str], outcomes: dict[str, int], records: int) -> str:
    """The Markdown report of `--compare-rate-limit`: baseline, limiter on, limiter off."""
    base, on, off = targets
    cpu_on = statistics.median(r.cpu_us for r in on.runs)
    cpu_off = statistics.median(r.cpu_us for r in off.runs)
    wrk_ok = sum(r.ok for t in (on, off) for r in t.runs + t.warmups)
    bad = sum(r.status_errors + r.socket_errors for t in (on, off) for r in t.runs + t.warmups)
    others = {k: v for k, v in outcomes.items() if k != "accepted" and v}
    valid = ("Valid: both ingests answered every request 200 (no error outcome, no "
             "rate_limited, in /metrics)." if not bad and not others else
             f"**INVALID**: {bad} requests >= 400 or socket errors, outcomes {others}.")
    kafka = "OK" if records == outcomes.get("accepted", 0) and records >= wrk_ok else "MISMATCH"
    return "\n".join([
        "## Ingest: per-tenant rate limiter on vs off", "",
        *setup_lines(args, argv, facts),
        f"- Bodies: {BODIES} distinct `{EVENT_TYPE}` deliveries per wrk run ({facts['size']} "
        "bytes), freshly signed, rotated; one tenant, same requests to every target.",
        "- ingest limiter on: `python -m paywatch run ingest` with PAYWATCH_INGEST_RATE and "
        "_BURST 1,000,000 (a token taken from the tenant's bucket per webhook, never empty; "
        "the default 2,000/s would refuse this one tenant's load). ingest limiter off: a "
        "second ingest process, PAYWATCH_INGEST_RATE=0. Both pinned to CPU 0, loaded one at "
        "a time.", "",
        *TABLE_HEAD,
        target_row(base), target_row(on), target_row(off), "",
        "- " + ratio_line("limiter on/off", on, off),
        f"- Server CPU per request: limiter on {cpu_on:.0f} us, off {cpu_off:.0f} us "
        f"(**difference {cpu_on - cpu_off:+.0f} us, ratio on/off {cpu_on / cpu_off:.3f}**).",
        "- " + cpu_line("limiter on", on, base), "",
        valid, "",
        f"- `{WEBHOOKS_RAW}` holds **{records}** records; both ingests' /metrics counted "
        f"**{outcomes.get('accepted', 0)}** accepted; wrk saw {wrk_ok} 2xx. **{kafka}**.",
    ])


def progress(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- main ---------------------------------------------------------------------


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def measure(bench: Bench, args: argparse.Namespace, argv: list[str]) -> str:
    """Start everything, load both targets, check Kafka; the report."""
    progress(f"starting Kafka + Postgres in {bench.state}")
    ends, pg_version = start_stack(bench)
    taken = {bench.settings.embedded_kafka_port, bench.settings.embedded_pg_port,
             bench.settings.embedded_kafka_controller_port}
    ingest_port, base_port = free_port(taken), free_port(taken)
    ingest_log = start_ingest(bench, ends, ingest_port)
    base_log = start_baseline(bench, base_port)
    ingest_url = f"http://127.0.0.1:{ingest_port}"
    wait_ready(bench.procs[0], ingest_log, f"{ingest_url}/health", None)
    wait_ready(bench.procs[1], base_log, f"http://127.0.0.1:{base_port}/plain", b"")
    base = Target("baseline", f"http://127.0.0.1:{base_port}/plain", pid=bench.procs[1].pid)
    ingest_pid = bench.procs[0].pid
    if args.compare_rate_limit:
        off_port = free_port(taken)
        off_log = start_ingest(bench, ends, off_port, "ingest-nolimit",
                               {"PAYWATCH_INGEST_RATE": "0"})
        off_url = f"http://127.0.0.1:{off_port}"
        wait_ready(bench.procs[2], off_log, f"{off_url}/health", None)
        targets = [base,
                   Target("ingest limiter on", f"{ingest_url}/webhooks/stripe/{TENANT}",
                          ingest=True, pid=ingest_pid),
                   Target("ingest limiter off", f"{off_url}/webhooks/stripe/{TENANT}",
                          ingest=True, pid=bench.procs[2].pid)]
        progress("servers ready; loading")
        load_rounds(bench, targets, args)
        both = by_outcome(settled_outcomes(ingest_url))
        for outcome, n in by_outcome(settled_outcomes(off_url)).items():
            both[outcome] = both.get(outcome, 0) + n
        records = raw_records(ends.bootstrap, bench.settings.topic(WEBHOOKS_RAW))
        return rate_limit_report(args, argv, targets, _facts(bench, pg_version), both, records)
    if args.compare_provider:
        other = args.compare_provider
        targets = [base,
                   Target("ingest stripe", f"{ingest_url}/webhooks/stripe/{TENANT}",
                          ingest=True, pid=ingest_pid),
                   Target(f"ingest {other}", f"{ingest_url}/webhooks/{other}/{TENANT}",
                          provider=other, ingest=True, pid=ingest_pid)]
    else:
        targets = [base, Target("ingest", f"{ingest_url}/webhooks/stripe/{TENANT}",
                                ingest=True, pid=ingest_pid)]
    progress("servers ready; loading")
    load_rounds(bench, targets, args)
    outcomes = settled_outcomes(ingest_url)
    records = raw_records(ends.bootstrap, bench.settings.topic(WEBHOOKS_RAW))
    facts = _facts(bench, pg_version)
    if args.compare_provider:
        ingests = [t for t in targets if t.ingest]
        checks = compare_kafka_lines(ingests, outcomes, records, args.connections)
        return compare_report(args, argv, targets, facts, outcomes, checks)
    checks = kafka_lines(targets[1], by_outcome(outcomes), records, args.connections)
    return report(args, argv, targets, facts, by_outcome(outcomes), checks)


def _facts(bench: Bench, pg_version: str) -> dict[str, str]:
    """Versions, pinning and body sizes for the report."""
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "kafka": kafka_version(), "pg": pg_version, "wrk": (wrk.stdout or wrk.stderr).split(
            " Copyright")[0].strip(),
        "pinning": "servers on CPU 0, wrk on CPU 1 (taskset), Kafka/Postgres unpinned"
        if pin(0) else "no CPU pinning (taskset missing or one CPU)",
        "size": str(len(next(signed_bodies(0, bench.secret))[1])),
        "bt_size": str(len(next(braintree_deliveries(0, bench.bt_keys))[1])),
        "partitions": str(bench.settings.topic_partitions),
    }


def main(argv: list[str]) -> int:
    """Run the bench; print the report; always stop what it started."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench_ingest needs wrk: install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_exit)
    for name in [k for k in os.environ if k.startswith("PAYWATCH_")]:
        del os.environ[name]  # the bench runs its own stack, whatever the shell says
    sweep_stale()
    state = BENCH_ROOT / f"bench-{os.getpid()}"
    state.mkdir(parents=True, exist_ok=True)
    bench = Bench(state=state, settings=bench_settings(state, set()))
    try:
        print(measure(bench, args, argv))
    finally:
        progress("stopping")
        for proc in reversed(bench.procs):
            stop(proc)
        stop_infra(bench.settings)
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
