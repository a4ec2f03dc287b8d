"""Policy experiments: which arm a saga runs, and whether the arms differ. Pure.

Assignment: a saga opened while the tenant's policy carries an ``Experiment`` runs the
challenger when ``draw(tenant, invoice, experiment id) < share``; the draw is the first 8
bytes of a SHA-256 as a number in [0, 1), so the same invoice gets the same arm in every
process and on every replay, and arms of different experiments are independent.

Comparison: recovery rate per arm (sagas of the experiment that reached ``recovered`` over
those that ended or are still open), a two-proportion z-test (pooled standard error,
two-sided p-value) and the sample size per arm a test at alpha 0.05 with power 0.8 would
need to detect the difference observed so far (Fleiss' formula without continuity
correction), so the operator sees how many more sagas each arm still needs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from paywatch.recovery.tenant_policy import CHALLENGER, CONTROL

Z_ALPHA = 1.959963984540054
"""Two-sided alpha 0.05."""
Z_POWER = 0.8416212335729143
"""Power 0.8."""


def draw(tenant: str, invoice_ref: str, experiment_id: str) -> float:
    """A uniform number in [0, 1) fixed by the saga and the experiment alone."""
    digest = hashlib.sha256(f"{tenant}/{invoice_ref}/{experiment_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(tenant: str, invoice_ref: str, experiment_id: str, share: float) -> str:
    """The arm of a saga opened under the experiment."""
    return CHALLENGER if draw(tenant, invoice_ref, experiment_id) < share else CONTROL


@dataclass(frozen=True)
class Arm:
    """What one arm reached."""

    name: str
    sagas: int
    recovered: int

    @property
    def rate(self) -> float | None:
        """Recovered over sagas; None without sagas."""
        return self.recovered / self.sagas if self.sagas else None


@dataclass(frozen=True)
class Comparison:
    """Challenger against control."""

    control: Arm
    challenger: Arm
    difference: float | None
    """Challenger rate minus control rate."""
    z: float | None
    p_value: float | None
    needed_per_arm: int | None
    """Sagas per arm to detect the observed difference (None: no difference seen yet)."""

    @property
    def still_needed(self) -> int | None:
        """More sagas the smaller arm needs before the test can be trusted."""
        if self.needed_per_arm is None:
            return None
        return max(0, self.needed_per_arm - min(self.control.sagas, self.challenger.sagas))

    @property
    def significant(self) -> bool:
        """p < 0.05 with enough sagas in both arms."""
        return self.p_value is not None and self.p_value < 0.05 and self.still_needed == 0


def compare(control: Arm, challenger: Arm) -> Comparison:
    """The two-proportion z-test and the sample size still needed."""
    p1, p2 = control.rate, challenger.rate
    if p1 is None or p2 is None:
        return Comparison(control, challenger, None, None, None, None)
    diff = p2 - p1
    pooled = (control.recovered + challenger.recovered) / (control.sagas + challenger.sagas)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.sagas + 1 / challenger.sagas))
    z = diff / se if se > 0 else None
    p_value = math.erfc(abs(z) / math.sqrt(2)) if z is not None else None
    return Comparison(control, challenger, diff, z, p_value, sample_size(p1, p2))


def sample_size(p1: float, p2: float) -> int | None:
    """Sagas per arm to tell p1 from p2 (alpha 0.05 two-sided, power 0.8); None if equal."""
    if p1 == p2:
        return None
    mean = (p1 + p2) / 2
    a = Z_ALPHA * math.sqrt(2 * mean * (1 - mean))
    b = Z_POWER * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil((a + b) ** 2 / (p1 - p2) ** 2)
