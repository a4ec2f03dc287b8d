"""The executor's schedule: due-time order across partitions, low-watermark commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from paywatch.executor.schedule import Schedule

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def test_due_commands_come_out_earliest_first_across_partitions() -> None:
    s: Schedule[str, str] = Schedule()
    s.add("p0", 0, NOW + timedelta(days=7), "next week")
    s.add("p0", 1, NOW, "now on p0")
    s.add("p1", 5, NOW - timedelta(minutes=1), "late on p1")
    assert [slot.item for slot in s.due(NOW)] == ["late on p1", "now on p0"]
    assert s.next_due() == NOW + timedelta(days=7)
    assert s.due(NOW + timedelta(days=6)) == []  # never early


def test_a_not_yet_due_command_holds_only_its_partition_watermark() -> None:
    s: Schedule[str, str] = Schedule()
    s.add("p0", 10, NOW + timedelta(hours=1), "later")
    s.add("p0", 11, NOW, "now")
    s.add("p1", 3, NOW, "now too")
    for slot in s.due(NOW):
        assert s.holds(slot.partition, slot.offset)  # in flight until done
        s.done(slot.partition, slot.offset)
    assert s.watermarks() == {"p0": 10, "p1": 4}
    assert (s.backlog("p0"), s.backlog("p1"), len(s)) == (1, 0, 1)
    [later] = s.due(NOW + timedelta(hours=1))
    s.done(later.partition, later.offset)
    assert s.watermarks() == {"p0": 12, "p1": 4}


def test_an_in_flight_command_is_not_committed_past() -> None:
    s: Schedule[str, str] = Schedule()
    s.add("p0", 0, NOW, "a")
    s.add("p0", 1, NOW, "b")
    first, second = s.due(NOW)
    s.done(second.partition, second.offset)
    assert s.watermarks() == {"p0": 0}  # `a` popped but not done yet
    s.done(first.partition, first.offset)
    assert s.watermarks() == {"p0": 2}


def test_skipped_records_move_the_watermark() -> None:
    s: Schedule[str, str] = Schedule()
    s.skip("p2", 7)  # e.g. dead-lettered on arrival
    assert s.watermarks() == {"p2": 8}
    s.add("p2", 8, NOW + timedelta(days=1), "later")
    s.skip("p2", 9)
    assert s.watermarks() == {"p2": 8}


def test_dropped_partitions_are_forgotten() -> None:
    s: Schedule[str, str] = Schedule()
    s.add("p0", 0, NOW, "revoked")
    s.add("p1", 0, NOW + timedelta(seconds=1), "kept")
    s.drop(["p0"])
    assert not s.holds("p0", 0)
    assert s.next_due() == NOW + timedelta(seconds=1)
    assert [slot.item for slot in s.due(NOW + timedelta(seconds=1))] == ["kept"]
    s.done("p0", 0)  # finishing a revoked record is harmless
    assert s.watermarks() == {"p1": 0}


def test_a_held_record_holds_the_watermark_until_done_and_is_never_due() -> None:
    s: Schedule[str, str] = Schedule()
    s.add("p0", 4, NOW, "a")
    s.hold("p0", 5)  # being dead-lettered
    [slot] = s.due(NOW + timedelta(days=1))
    s.done(slot.partition, slot.offset)
    assert s.watermarks() == {"p0": 5}
    s.done("p0", 5)  # its dead letter was acked
    assert s.watermarks() == {"p0": 6}
