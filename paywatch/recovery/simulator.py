"""The sandbox payment simulator: does a retried payment go through? Pure and seeded.

It lives in the pure core (not in ``executor``) because two shells draw from the same
outcome model: the executor answers RETRY_PAYMENT commands with it, and the policy backtest
(:mod:`paywatch.recovery.backtest`) answers the retries it decides on a tenant's history;
``paywatch.executor.simulator`` re-exports it under its historical name.

A retry succeeds when ``draw(seed, command_id)`` (a SHA-256 of both, as a number in
[0, 1)) is below the success probability of the command's decline category on the
simulated day of the retry. Same seed, command and table give the same answer in any
process and on any replay; the global ``random`` is never touched.

Success table, ``PAYWATCH_SIMULATOR_SUCCESS`` (JSON): decline category -> either one
probability or ``{"<first day>": probability, ...}``, a step function over whole
simulated days since the invoice's first recovery command. A table must start at day
``"0"``; categories left out keep the defaults. Example::

    {"SOFT": {"0": 0.12, "2": 0.2, "13": 0.08}, "FRAUD": 0}

reads "a soft decline retried on day 0 or 1 succeeds with p = 0.12, on days 2..12
with 0.2, later with 0.08; a fraud decline never".
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paywatch.errors import ConfigError
from paywatch.schemas.models import DeclineCategory, RecoveryCommand

ENV_NAME = "PAYWATCH_SIMULATOR_SUCCESS"
SECONDS_PER_DAY = 86_400.0

Steps = tuple[tuple[int, float], ...]
"""(first day, probability) pairs, ascending, the first at day 0."""

# From reference/recovery-rules.md §4: about half of failed revenue is recovered
# (70-85 % best in class), most recoveries land 2-12 days after the decline, and soft
# declines (do-not-honor, insufficient funds) are about three quarters of the volume.
# Four retries of a soft decline on days ~1, 3, 5 and 8 recover 1 - 0.88 * 0.8**3,
# about 55 %. Action-required declines wait for the customer (a new card, 3-D Secure);
# hard and fraud declines almost never clear.
DEFAULT_SUCCESS: Mapping[DeclineCategory, Steps] = {
    DeclineCategory.SOFT: ((0, 0.12), (2, 0.20), (13, 0.08)),
    DeclineCategory.UNKNOWN: ((0, 0.08), (2, 0.12), (13, 0.05)),
    DeclineCategory.ACTION: ((0, 0.03), (2, 0.05), (13, 0.02)),
    DeclineCategory.HARD: ((0, 0.02),),
    DeclineCategory.FRAUD: ((0, 0.005),),
}


@dataclass(frozen=True)
class SimulatorConfig:
    """The seed and the success table of the sandbox simulator."""

    seed: int = 0
    success: Mapping[DeclineCategory, Steps] = field(default_factory=lambda: dict(DEFAULT_SUCCESS))

    @classmethod
    def parse(cls, seed: int, success: str) -> SimulatorConfig:
        """Build from the settings' seed and JSON table (empty: defaults); ConfigError if bad."""
        return cls(seed, {**DEFAULT_SUCCESS, **parse_success(success)})


@dataclass(frozen=True)
class Verdict:
    """What the simulator decided for one retry, and why."""

    succeeded: bool
    category: DeclineCategory
    day: int
    probability: float
    draw: float


def simulate(command: RecoveryCommand, config: SimulatorConfig, day: int) -> Verdict:
    """Decide whether the retry of `command` on simulated `day` succeeds."""
    category = command.decline_category or DeclineCategory.UNKNOWN
    p = probability(config.success[category], day)
    u = draw(config.seed, command.command_id)
    return Verdict(succeeded=u < p, category=category, day=day, probability=p, draw=u)


def draw(seed: int, command_id: str) -> float:
    """A uniform number in [0, 1) determined by the seed and the command id alone."""
    digest = hashlib.sha256(f"{seed}:{command_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def probability(steps: Steps, day: int) -> float:
    """The probability of the last step starting on or before `day`."""
    return next(p for first, p in reversed(steps) if first <= day)


def simulated_days(anchor: datetime, at: datetime, time_scale: float) -> int:
    """Whole simulated days from `anchor` to `at` (PAYWATCH_TIME_SCALE compresses them)."""
    seconds = (at - anchor).total_seconds() * time_scale
    return max(0, math.floor(seconds / SECONDS_PER_DAY))


def parse_success(text: str) -> dict[DeclineCategory, Steps]:
    """Parse PAYWATCH_SIMULATOR_SUCCESS; raise ConfigError naming the bad entry."""
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ENV_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{ENV_NAME} must be a JSON object of decline category -> probability or"
            f" {{day: probability}}, got {type(doc).__name__}"
        )
    return {_category(name): _steps(name, value) for name, value in doc.items()}


def _category(name: str) -> DeclineCategory:
    try:
        return DeclineCategory(name)
    except ValueError:
        known = ", ".join(c.value for c in DeclineCategory)
        raise ConfigError(
            f"{ENV_NAME}: unknown decline category {name!r} (known: {known})"
        ) from None


def _steps(name: str, value: Any) -> Steps:
    if not isinstance(value, dict):
        return ((0, _probability(f"{ENV_NAME}.{name}", value)),)
    if not value:
        raise ConfigError(f'{ENV_NAME}.{name} is empty: give at least a day "0" probability')
    steps = sorted(
        (_day(name, day), _probability(f"{ENV_NAME}.{name}[{day}]", p)) for day, p in value.items()
    )
    days = [first for first, _ in steps]
    if len(set(days)) != len(days):
        raise ConfigError(f"{ENV_NAME}.{name}: the same day is given twice ({sorted(value)})")
    if days[0] != 0:
        raise ConfigError(f'{ENV_NAME}.{name} needs a day "0" entry (the probability from day 0)')
    return tuple(steps)


def _day(name: str, day: str) -> int:
    if not (day.isascii() and day.isdigit()):
        raise ConfigError(f"{ENV_NAME}.{name}: day {day!r} is not a whole number of days >= 0")
    return int(day)


def _probability(where: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: probability {value!r} is not a number between 0 and 1")
    return float(value)
