"""Reading an ASGI request body with a hard size cap, before it is ever held whole."""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from paywatch.deadlines import Deadlines


class BodyTooLarge(Exception):
    """The body exceeds the cap (HTTP 413)."""


class BodyTimeout(Exception):
    """The body did not arrive in full within the read timeout (HTTP 408): a client that
    trickles bytes (slowloris) must not hold a connection and its buffer for ever."""


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody is left to answer."""


async def read_body(
    declared: str | None, receive: Receive, limit: int, deadlines: Deadlines
) -> bytes:
    """The raw body, with one deadline (``deadlines.seconds``) for all of it: BodyTimeout
    when it passes, BodyTooLarge as soon as it passes ``limit`` bytes.

    ``declared`` is the Content-Length header: a declared size over the cap is refused
    before a byte is read.
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    deadline = deadlines.arm()
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except asyncio.CancelledError:
        if deadline.caused_cancel():
            raise BodyTimeout from None
        raise
    finally:
        deadline.disarm()
