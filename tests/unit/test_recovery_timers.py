"""The in-memory timer index: due order, resend pacing, replacement, partition changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.recovery.timer_index import Due, TimerIndex

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_due_timers_come_out_in_due_order_and_only_when_due() -> None:
    index = TimerIndex()
    index.put("t/b", 1, [("b1", at(20))])
    index.put("t/a", 0, [("a1", at(10)), ("a2", at(30))])
    assert len(index) == 3
    assert index.next_due() == at(10)
    assert index.due(at(5)) == []
    assert index.due(at(25)) == [Due(at(10), "t/a", "a1", 0), Due(at(20), "t/b", "b1", 1)]


def test_a_sent_timer_is_not_resent_before_resend_after_then_is() -> None:
    index = TimerIndex(resend_after=30)
    index.put("t/a", 0, [("a1", at(10))])
    assert [d.timer_id for d in index.due(at(10))] == ["a1"]
    assert index.due(at(20)) == []  # tick sent, saga has not confirmed yet
    assert [d.timer_id for d in index.due(at(41))] == ["a1"]  # lost tick: sent again


def test_replacing_a_sagas_timers_drops_fired_and_superseded_ones() -> None:
    index = TimerIndex()
    index.put("t/a", 0, [("a1", at(10)), ("a2", at(20))])
    index.due(at(10))
    index.put("t/a", 0, [("a2", at(20))])  # a1 fired: the saga's state no longer has it
    assert [d.timer_id for d in index.due(at(60))] == ["a2"]
    index.put("t/a", 0, [])  # saga closed
    assert index.due(at(1000)) == [] and len(index) == 0 and index.next_due() is None


def test_a_rescheduled_timer_fires_at_its_new_time_only() -> None:
    index = TimerIndex()
    index.put("t/a", 0, [("a1", at(10))])
    index.put("t/a", 0, [("a1", at(50))])
    assert index.due(at(20)) == []
    assert [d.due_at for d in index.due(at(50))] == [at(50)]


def test_partitions_no_longer_owned_are_forgotten() -> None:
    index = TimerIndex()
    index.put("t/a", 0, [("a1", at(10))])
    index.put("t/b", 1, [("b1", at(10))])
    index.drop_partitions({1})
    assert [d.key for d in index.due(at(10))] == ["t/b"]
    index.clear()
    assert len(index) == 0 and index.due(at(100)) == []


def test_a_rebuild_adds_each_sagas_next_timer_and_due_order_holds_after() -> None:
    index = TimerIndex()
    index.add("t/c", 2, "c1", at(30), 3)  # a rebuild: the header's first timer and count
    index.add("t/a", 0, "a1", at(10), 1)
    index.add("t/b", 1, "b1", at(20), 2)
    index.add("t/b", 1, "b1", at(20), 2)  # the same saga twice counts once
    assert len(index) == 6 and index.next_due() == at(10)
    index.put("t/d", 0, [("d1", at(5))])  # a decision during or after the rebuild
    assert [d.key for d in index.due(at(25))] == ["t/d", "t/a", "t/b"]
    index.put("t/c", 2, [("c2", at(40))])  # the saga fired c1: its next one replaces it
    assert index.due(at(35)) == [] and [d.timer_id for d in index.due(at(40))] == ["c2"]
