"""Topic names are a contract with one home: paywatch/schemas/topics.py spells them."""

from __future__ import annotations

import re
from pathlib import Path

from paywatch.schemas import topics

PACKAGE = Path(__file__).resolve().parents[2] / "paywatch"
NAMES = [
    topics.WEBHOOKS_RAW,
    topics.WEBHOOKS_FETCHED,
    topics.PAYMENTS_EVENTS,
    topics.RECOVERY_COMMANDS,
    topics.RECOVERY_TRANSITIONS,
    topics.RECOVERY_TIMERS,
    topics.RECOVERY_POLICIES,
    topics.RISK_SCORES,
    topics.ALERTS,
]
LITERAL = re.compile(
    r"""["'](?:%s)(?:\.dlq)?["']""" % "|".join(re.escape(n) for n in NAMES)  # noqa: UP031
)


def test_no_topic_name_literal_outside_the_topics_module() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "schemas" / "topics.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if LITERAL.search(line)
    ]
    assert found == []


def test_the_scan_sees_a_literal() -> None:
    assert LITERAL.search('settings.topic("webhooks.raw")')
    assert LITERAL.search("'payments.events.dlq'")
    assert not LITERAL.search("recovery.timers, co-partitioned")
