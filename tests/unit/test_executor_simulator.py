"""The sandbox payment simulator: seeded determinism, its tables, its configuration."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from paywatch.errors import ConfigError
from paywatch.executor.simulator import (
    DEFAULT_SUCCESS,
    SimulatorConfig,
    draw,
    parse_success,
    probability,
    simulate,
    simulated_days,
)
from paywatch.schemas.models import CommandType, DeclineCategory, RecoveryCommand, RuleRef

DUE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def retry(
    command_id: str, category: DeclineCategory | None = DeclineCategory.SOFT
) -> RecoveryCommand:
    return RecoveryCommand(
        command_id=command_id,
        type=CommandType.RETRY_PAYMENT,
        tenant="acme",
        invoice_ref="in_1",
        due_at=DUE,
        attempt=2,
        reason="soft decline",
        rule=RuleRef(id="visa-cat2", edition="2026-04", source="test"),
        decline_category=category,
    )


def test_same_seed_and_command_give_the_same_verdict() -> None:
    config = SimulatorConfig.parse(7, "")
    first = [simulate(retry(f"cmd-{i}"), config, day=3) for i in range(200)]
    again = [simulate(retry(f"cmd-{i}"), SimulatorConfig.parse(7, ""), day=3) for i in range(200)]
    assert first == again
    assert draw(7, "cmd-1") == draw(7, "cmd-1")
    assert draw(7, "cmd-1") != draw(8, "cmd-1")  # the seed matters
    assert draw(7, "cmd-1") != draw(7, "cmd-2")  # and so does the command id
    assert 0.0 <= min(v.draw for v in first) and max(v.draw for v in first) < 1.0


@pytest.mark.parametrize(
    ("category", "day"),
    [
        (DeclineCategory.SOFT, 0),
        (DeclineCategory.SOFT, 5),
        (DeclineCategory.SOFT, 20),
        (DeclineCategory.UNKNOWN, 3),
        (DeclineCategory.ACTION, 3),
        (DeclineCategory.HARD, 3),
    ],
)
def test_success_rate_follows_the_table(category: DeclineCategory, day: int) -> None:
    config = SimulatorConfig.parse(42, "")
    n = 20_000
    wins = sum(simulate(retry(f"c{i}", category), config, day).succeeded for i in range(n))
    p = probability(DEFAULT_SUCCESS[category], day)
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(wins / n - p) < 5 * sigma + 1e-9, (wins / n, p)


def test_configured_extremes_always_or_never_succeed() -> None:
    config = SimulatorConfig.parse(1, '{"SOFT": 1, "HARD": {"0": 0.0}}')
    assert all(simulate(retry(f"c{i}"), config, 0).succeeded for i in range(500))
    hard = [simulate(retry(f"c{i}", DeclineCategory.HARD), config, 9) for i in range(500)]
    assert not any(v.succeeded for v in hard)
    assert config.success[DeclineCategory.FRAUD] == DEFAULT_SUCCESS[DeclineCategory.FRAUD]


def test_a_command_without_decline_category_counts_as_unknown() -> None:
    verdict = simulate(retry("c1", None), SimulatorConfig(), 0)
    assert verdict.category is DeclineCategory.UNKNOWN
    assert verdict.probability == probability(DEFAULT_SUCCESS[DeclineCategory.UNKNOWN], 0)


def test_defaults_recover_soft_often_and_hard_or_fraud_almost_never() -> None:
    for day in (0, 1, 2, 7, 12, 13, 30):
        p = {c: probability(steps, day) for c, steps in DEFAULT_SUCCESS.items()}
        assert p[DeclineCategory.SOFT] > p[DeclineCategory.UNKNOWN] > p[DeclineCategory.ACTION]
        assert p[DeclineCategory.ACTION] >= p[DeclineCategory.HARD] >= p[DeclineCategory.FRAUD]
        assert p[DeclineCategory.HARD] <= 0.02
    # Four soft retries on days 1, 3, 5, 8 recover about half (reference numbers ~50 %).
    soft = DEFAULT_SUCCESS[DeclineCategory.SOFT]
    missed = math.prod(1 - probability(soft, d) for d in (1, 3, 5, 8))
    assert 0.45 <= 1 - missed <= 0.65
    assert set(DEFAULT_SUCCESS) == set(DeclineCategory)


def test_probability_is_a_step_function_over_days() -> None:
    steps = parse_success('{"SOFT": {"0": 0.1, "2": 0.3, "10": 0.05}}')[DeclineCategory.SOFT]
    assert [probability(steps, d) for d in (0, 1, 2, 9, 10, 400)] == [
        0.1,
        0.1,
        0.3,
        0.3,
        0.05,
        0.05,
    ]


def test_simulated_days_follow_the_time_scale() -> None:
    assert simulated_days(DUE, DUE + timedelta(hours=47), 1.0) == 1
    assert simulated_days(DUE, DUE + timedelta(days=3), 1.0) == 3
    assert simulated_days(DUE, DUE + timedelta(seconds=5.5), 86_400.0) == 5  # a day per second
    assert simulated_days(DUE, DUE - timedelta(days=2), 1.0) == 0  # never negative


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope", "PAYWATCH_SIMULATOR_SUCCESS is not valid JSON"),
        (
            "[0.5]",
            "object of decline category -> probability or {day: probability}, got list",
        ),
        (
            '{"SOFTISH": 0.5}',
            "unknown decline category 'SOFTISH' (known: SOFT, HARD, ACTION, FRAUD, UNKNOWN)",
        ),
        (
            '{"SOFT": {}}',
            'PAYWATCH_SIMULATOR_SUCCESS.SOFT is empty: give at least a day "0" probability',
        ),
        (
            '{"SOFT": {"0": 0.1, "two": 0.2}}',
            "PAYWATCH_SIMULATOR_SUCCESS.SOFT: day 'two' is not a whole number",
        ),
        (
            '{"SOFT": {"0": 0.1, "-1": 0.2}}',
            "PAYWATCH_SIMULATOR_SUCCESS.SOFT: day '-1' is not a whole number",
        ),
        (
            '{"SOFT": {"0": 1.5}}',
            "PAYWATCH_SIMULATOR_SUCCESS.SOFT[0]: probability 1.5 is not a number between 0 and 1",
        ),
        (
            '{"HARD": -0.1}',
            "PAYWATCH_SIMULATOR_SUCCESS.HARD: probability -0.1 is not a number between 0 and 1",
        ),
        ('{"HARD": true}', "PAYWATCH_SIMULATOR_SUCCESS.HARD: probability True is not a number"),
        ('{"HARD": "0.2"}', "PAYWATCH_SIMULATOR_SUCCESS.HARD: probability '0.2' is not a number"),
        (
            '{"SOFT": {"0": NaN}}',
            "PAYWATCH_SIMULATOR_SUCCESS.SOFT[0]: probability nan is not a number",
        ),
        ('{"SOFT": {"3": 0.2}}', 'PAYWATCH_SIMULATOR_SUCCESS.SOFT needs a day "0" entry'),
        (
            '{"SOFT": {"0": 0.1, "2": 0.2, "02": 0.3}}',
            "PAYWATCH_SIMULATOR_SUCCESS.SOFT: the same day is given twice",
        ),
    ],
)
def test_bad_tables_are_refused_with_a_precise_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SimulatorConfig.parse(0, text)
    assert message in str(err.value)


def test_an_empty_table_means_the_defaults() -> None:
    assert SimulatorConfig.parse(3, "  ").success == DEFAULT_SUCCESS
    assert SimulatorConfig.parse(3, "{}").success == DEFAULT_SUCCESS
