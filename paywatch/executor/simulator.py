"""The executor's sandbox payment simulator: the pure outcome model, re-exported.

The model itself is :mod:`paywatch.recovery.simulator` (moved down to the pure core so the
policy backtest can draw from the very same model without importing a shell); this module
keeps the executor's import path and the names its callers and tests use.
"""

from __future__ import annotations

from paywatch.recovery.simulator import (
    DEFAULT_SUCCESS,
    ENV_NAME,
    SECONDS_PER_DAY,
    SimulatorConfig,
    Steps,
    Verdict,
    draw,
    parse_success,
    probability,
    simulate,
    simulated_days,
)

__all__ = [
    "DEFAULT_SUCCESS",
    "ENV_NAME",
    "SECONDS_PER_DAY",
    "SimulatorConfig",
    "Steps",
    "Verdict",
    "draw",
    "parse_success",
    "probability",
    "simulate",
    "simulated_days",
]
