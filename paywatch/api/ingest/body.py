"""Reading a request body with a hard size cap, before it is ever held whole."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body exceeds the cap (HTTP 413)."""


async def read_capped(request: Request, limit: int) -> bytes:
    """Return the raw body, raising BodyTooLarge as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
