"""Set-based writes: COPY a batch's rows into a temporary stage, then one merge statement.

A `CopyMerge` is a read model's `write` (:mod:`paywatch.projections.base`). Per call, in the
sink's transaction:

1. ``CREATE TEMP TABLE IF NOT EXISTS`` its stage, once per connection: the table's own
   columns (their types taken from the table, no constraints) plus ``ord``, the row's
   place in the batch, and ``ON COMMIT DELETE ROWS``, so the stage is empty again when the
   transaction ends, committed or rolled back;
2. binary COPY of the rows (asyncpg ``copy_records_to_table``): one round trip for
   thousands of rows instead of one statement per row;
3. one ``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT`` into the table. A batch may
   hold one key twice (a redelivered event), which one statement cannot write twice, so the
   stage keeps the row that ``executemany`` left behind: the first for ``DO NOTHING``, the
   last for an upsert. An upsert with a `guard` only replaces a stored row that is older in
   the guard's order (ARCHITECTURE §1, STYLE.md item 5): replays never move a row back.

Binary COPY cannot encode jsonb through the pool's text codec, so `json` columns are staged
as text (the rows carry JSON text) and cast in the merge. A stage serves one call per
transaction (the sink writes each model once per batch). All SQL is built at import from
the fixed identifiers given here; no value is ever formatted in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import asyncpg

from paywatch.projections.base import Row

ORD = "ord"


def quoted(name: str) -> str:
    """An identifier quoted for SQL (``offset`` is a keyword)."""
    return '"' + name.replace('"', '""') + '"'


def _names(columns: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + quoted(c) for c in columns)


@dataclass(frozen=True)
class CopyMerge:
    """Writes rows (tuples in `columns` order) into `table` by COPY and one merge."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    update: bool = False
    """On a stored key: replace every non-key column, else leave it. `updated_at` is set to
    the time of the write unless the rows carry it (it is one of `columns`)."""
    guard: tuple[str, ...] = ()
    """Replace only when the stored row's values of these columns are smaller (tuple order)."""
    json: frozenset[str] = field(default_factory=frozenset)
    """Columns of type jsonb, given as JSON text."""

    @property
    def stage(self) -> str:
        """The temporary stage table (one per table and connection)."""
        return f"pw_stage_{self.table}"

    @cached_property
    def create(self) -> str:
        """The stage's DDL: the table's column types, no constraints, emptied at commit."""
        staged = ", ".join(
            f"{quoted(c)}::text AS {quoted(c)}" if c in self.json else quoted(c)
            for c in self.columns
        )
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {quoted(self.stage)} ON COMMIT DELETE ROWS AS"  # noqa: S608
            f" SELECT {staged}, 0::bigint AS {ORD} FROM {quoted(self.table)} WITH NO DATA"
        )

    @cached_property
    def merge(self) -> str:
        """The one statement moving the stage into the table."""
        picked = ", ".join(
            f"{quoted(c)}::jsonb" if c in self.json else quoted(c) for c in self.columns
        )
        keep = ORD + (" DESC" if self.update else "")  # upsert: the last row; else the first
        return (
            f"INSERT INTO {quoted(self.table)} AS t ({_names(self.columns)})"  # noqa: S608
            f" SELECT DISTINCT ON ({_names(self.key)}) {picked} FROM {quoted(self.stage)}"
            f" ORDER BY {_names(self.key)}, {keep}"
            f" ON CONFLICT ({_names(self.key)}) {self._on_conflict()}"
        )

    def _on_conflict(self) -> str:
        if not self.update:
            return "DO NOTHING"
        assigned = [c for c in self.columns if c not in self.key]
        sets = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in assigned)
        stamp = "" if "updated_at" in self.columns else ", updated_at = now()"
        action = f"DO UPDATE SET {sets}{stamp}"
        if self.guard:
            action += f" WHERE ({_names(self.guard, 't.')}) < ({_names(self.guard, 'EXCLUDED.')})"
        return action

    async def __call__(self, conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
        """Stage the rows by COPY and merge them (inside the caller's transaction)."""
        await conn.execute(self.create)
        await conn.copy_records_to_table(
            self.stage,
            records=[(*row, i) for i, row in enumerate(rows)],
            columns=[*self.columns, ORD],
        )
        await conn.execute(self.merge)
