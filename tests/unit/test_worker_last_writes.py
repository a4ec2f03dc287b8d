"""Per table key, only a batch's last record that folded it writes the table."""

from __future__ import annotations

from paywatch.streams.batches import LastWrites, Record


def test_only_the_last_record_of_a_key_keeps_its_write() -> None:
    table: dict[str, int] = {}
    records = [Record(event=None) for _ in range(4)]
    writes = LastWrites()
    for n, (key, record) in enumerate(zip("abab", records, strict=True)):
        writes.set(key, record, lambda key=key, n=n: table.__setitem__(key, n))
    assert [r.after is not None for r in records] == [False, False, True, True]
    for record in records:
        if record.after is not None:
            record.after()
    assert table == {"a": 2, "b": 3}  # each key's last fold: it already holds the earlier ones
