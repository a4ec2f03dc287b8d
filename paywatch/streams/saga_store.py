"""The saga table's store, read raw: how the timer index is rebuilt without a pass over sagas.

Faust's table API (``table.items()``) deserializes every key and value of every active
partition; with a million open sagas that took 88 s. The index needs only each entry's
header (:func:`paywatch.recovery.shell.entry_next`, about a microsecond), so the rebuild
reads the bytes of the store directly:

* rocksdb (production): one iterator per actively owned partition's database, without
  filling the block cache (a rebuild reads every entry once);
* memory (tests): the store's dict, whose values are the same bytes.

Keys are Faust's ``json`` key serialization of ``tenant/invoice_ref``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import rocksdict

OFFSET_KEY = b"__faust\x00offset__"
"""Faust keeps each partition's changelog offset in the same rocksdb database."""


def _key(raw: bytes) -> str:
    if raw[:1] == b'"' and b"\\" not in raw:
        return raw[1:-1].decode()
    key = json.loads(raw)
    return str(key)


def entries(table: Any, partitions: Iterable[int]) -> Iterator[tuple[str, bytes]]:
    """(key, raw value) of the table's entries on ``partitions`` (memory store: all)."""
    store = table.data
    if hasattr(store, "_db_for_partition"):  # faust.stores.rocksdb.Store
        for partition in sorted(partitions):
            yield from _rocksdb(store._db_for_partition(partition))
    else:  # faust.stores.memory.Store: deserialized keys, raw (bytes) values
        yield from list(store.data.items())


def values(table: Any, partitions: Iterable[int]) -> Iterator[bytes]:
    """The raw values of the table's entries on ``partitions`` (memory store: all), for
    tables whose values name their own key (any key serialization)."""
    store = table.data
    if hasattr(store, "_db_for_partition"):
        for partition in sorted(partitions):
            for _, value in _rocksdb(store._db_for_partition(partition), parse=False):
                yield value
    else:
        yield from list(store.data.values())


def _rocksdb(db: Any, *, parse: bool = True) -> Iterator[tuple[str, bytes]]:
    options = rocksdict.ReadOptions()
    options.fill_cache(False)  # type: ignore[call-arg]  # the stub lacks the flag
    it = db.iter(options)
    it.seek_to_first()
    while it.valid():
        raw = it.key()
        if raw != OFFSET_KEY:
            yield (_key(raw) if parse else ""), it.value()
        it.next()
