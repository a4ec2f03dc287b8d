"""uvicorn's httptools protocol, writing an answer's head and first body bytes at once.

An ASGI answer is two messages, ``http.response.start`` and ``http.response.body``, and
uvicorn writes each to the socket as it comes: two ``send`` system calls per answer with a
body. On loopback the kernel delivers to the reader inside the writer's call, so the second
one cost ingest ~5 µs of its ~94 per webhook (bench/RESULTS.md, "Ingest, fourth engine
session"); an empty body (``write(b"")``) costs no call. Here the head is held until the
next write, or the end of the answer, or a close, and goes out with it: the same
bytes in the same order, one call fewer. Everything else is uvicorn's (uvicorn is pinned in
pyproject.toml: this relies on how its protocol writes a head, in one call ending with the
blank line, and tells it an answer is complete).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeldHeadTransport:
    """A connection's transport, holding each answer's head for the bytes after it.

    uvicorn writes an answer's status line and headers in one call, ending with the blank
    line; such a write (other than ``100 Continue``) is kept and sent in front of the next
    write. ``flush()`` (the end of an answer, a close) sends a head that no bytes followed
    (an answer to HEAD, a 204). Other writes pass straight on. (A body write that happens
    to look like a head is held the same way: delayed to the next write or the end of the
    answer, never reordered or lost.)
    """

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Write ``data`` after a held head; hold ``data`` if it is a head."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        elif (
            data.endswith(_BLANK_LINE)
            and data.startswith(_STATUS)
            and not data.startswith(_CONTINUE)
        ):
            self._held = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        """Flush, then close the connection."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        """The transport's own answer (called on every request: no __getattr__ detour)."""
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        """Pass-through (flow control)."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Pass-through (flow control; called on every request)."""
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_STATUS = b"HTTP/1.1 "
_CONTINUE = b"HTTP/1.1 100 "
_BLANK_LINE = b"\r\n\r\n"


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol whose answers leave in one write when they can."""

    transport: HeldHeadTransport  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Every write of the connection goes through one HeldHeadTransport."""
        super().connection_made(HeldHeadTransport(transport))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        """An answer is complete: nothing of it stays held (then uvicorn's bookkeeping)."""
        self.transport.flush()
        super().on_response_complete()
