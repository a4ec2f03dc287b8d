"""A small run of every provider's fuzz harness (fuzz/targets.py) in the normal suite.

``make fuzz`` runs atheris for a million inputs per provider; this runs the same one-input
functions over 2,000 pseudo-random inputs each with a fixed seed (pure Python, no atheris),
so a provider change that lets a non-domain exception escape verify/read/normalize or the
Avro encode fails ``make test`` too. ``one_input`` swallows only ProviderError.
"""

from __future__ import annotations

import random

import pytest

from fuzz.targets import FACTORIES, NAMES

INPUTS = 2_000


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_harness_finds_no_crash(name: str) -> None:
    target = FACTORIES[name]()
    rng = random.Random(f"paywatch-fuzz-{name}")
    for _ in range(INPUTS):
        data = rng.randbytes(rng.randrange(0, 256))
        target.one_input(data)  # anything but a ProviderError fails the test


def test_harness_reaches_normalize() -> None:
    """The signing works: some inputs get past verify into normalize (else the smoke is moot)."""
    target = FACTORIES["stripe"]()
    reached = 0
    original = target.codec.encode

    def counting(model: object, topic: str | None = None) -> bytes:
        nonlocal reached
        reached += 1
        return original(model, topic)  # type: ignore[arg-type]

    target.codec.encode = counting  # type: ignore[method-assign]
    rng = random.Random(7)
    for _ in range(300):
        target.one_input(rng.randbytes(rng.randrange(0, 64)))
    assert reached > 0
