"""The records between sagas and card ledgers (topic ``recovery.cards``, key = card key).

Internal JSON, like the ticks of ``recovery.timers``:

* ``{"k": "a", "card": …, "e": [CardAttempt, …]}``: attempts and stop markers a saga saw
  (provider failures, their counters); the ledger adds them once each (by id);
* ``{"k": "r", "card": …, "c": RecoveryCommand (wall time), "s": Saga}``: a saga asks for
  a retry permit; the ledger forwards the command to ``recovery.commands`` when granted,
  else answers ``PermitDenied`` on ``recovery.timers`` (key = the saga's key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paywatch.recovery.ledger import CardAttempt
from paywatch.recovery.state import PermitDenied, Saga
from paywatch.schemas.models import CommandType, RecoveryCommand


@dataclass(frozen=True)
class CardMessage:
    """One decoded ``recovery.cards`` record."""

    card: str
    entries: tuple[CardAttempt, ...] = ()
    command: RecoveryCommand | None = None
    saga: Saga | None = None


@dataclass
class Routed:
    """A decision's records once retries go through the card ledger."""

    commands: list[RecoveryCommand] = field(default_factory=list)
    card_messages: list[tuple[str, bytes]] = field(default_factory=list)


def attempts_message(card: str, entries: Sequence[CardAttempt]) -> bytes:
    """Attempts seen on `card`, for its ledger."""
    payload = {"k": "a", "card": card, "e": [e.model_dump(mode="json") for e in entries]}
    return json.dumps(payload, separators=(",", ":")).encode()


def retry_message(card: str, command: RecoveryCommand, saga: Saga) -> bytes:
    """A retry permit request: the command (wall time) and the saga that emitted it."""
    payload = {
        "k": "r",
        "card": card,
        "c": command.model_dump(mode="json"),
        "s": saga.model_dump(mode="json", exclude={"ledger", "permit"}),
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def read_card_message(value: bytes) -> CardMessage:
    """A ``recovery.cards`` record (raises ValueError / ValidationError when malformed)."""
    payload: Any = json.loads(value)
    if not isinstance(payload, dict) or not isinstance(payload.get("card"), str):
        raise ValueError("not a recovery.cards record")
    card = payload["card"]
    if payload.get("k") == "a":
        entries = tuple(CardAttempt.model_validate(e) for e in payload.get("e") or [])
        return CardMessage(card, entries=entries)
    if payload.get("k") == "r":
        command = RecoveryCommand.model_validate(payload["c"])
        return CardMessage(card, command=command, saga=Saga.model_validate(payload["s"]))
    raise ValueError(f"unknown recovery.cards record kind {payload.get('k')!r}")


def denial(denied: PermitDenied) -> bytes:
    """The ``recovery.timers`` record that tells a saga its retry was refused."""
    return json.dumps({"denied": denied.model_dump(mode="json")}).encode()


def route(
    saga: Saga | None, commands: Iterable[RecoveryCommand], entries: Iterable[CardAttempt]
) -> Routed:
    """Send retries to the card ledger as permit requests, and the saga's new attempts too.

    A retry's own attempt entry is left to the ledger: it records it when it grants.
    """
    out = Routed()
    asked: set[str] = set()
    for command in commands:
        if command.type is CommandType.RETRY_PAYMENT and saga is not None and saga.card:
            out.card_messages.append((saga.card, retry_message(saga.card, command, saga)))
            asked.add(command.command_id)
        else:
            out.commands.append(command)
    by_card: dict[str, list[CardAttempt]] = {}
    for entry in entries:
        if entry.id not in asked:
            by_card.setdefault(entry.card, []).append(entry)
    attempts = [(card, attempts_message(card, seen)) for card, seen in by_card.items()]
    out.card_messages[:0] = attempts  # attempts first: a request is judged with them known
    return out
