"""The HTTP protocol of paywatch's servers: each answer whole and in order, and the head and
first body bytes of an answer in one write. A real uvicorn server on a free port, spoken to
over raw sockets (keep-alive, pipelining, HEAD, streaming, 100-continue, a crashing app)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn

from paywatch.ops.http_protocol import HeldHeadTransport, OneWriteHttpToolsProtocol

DEADLINE_S = 10.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/echo":
        answer = b'{"got":' + str(len(body)).encode() + b"}"
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(answer)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/length":  # GET and HEAD: a length, no body bytes for HEAD
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else b"hello"}
        )
    elif path == "/crash":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]}
        )
        raise RuntimeError("the app failed after its head")
    else:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free, http=OneWriteHttpToolsProtocol, log_level="error"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(DEADLINE_S):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, no event)
            await asyncio.sleep(0.01)  # polling the started flag under the deadline
    yield free
    server.should_exit = True
    await task


async def exchange(port: int, raw: bytes, until: Callable[[bytes], bool]) -> bytes:
    """Send ``raw``; read until ``until(what arrived)`` or the server closes (deadline)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    got = b""
    async with asyncio.timeout(DEADLINE_S):
        while not until(got):
            chunk = await reader.read(65536)
            if not chunk:
                break
            got += chunk
    writer.close()
    return got


def ends_with(tail: bytes) -> Callable[[bytes], bool]:
    return lambda got: got.endswith(tail)


async def test_a_json_answer_is_whole(port: int) -> None:
    request = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nabcd"
    got = await exchange(port, request, ends_with(b"}"))
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-type: application/json" in head
    assert body == b'{"got":4}'


async def test_keep_alive_and_pipelined_requests_answer_in_order(port: int) -> None:
    one = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\na"
    two = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab"
    three = b"GET /none HTTP/1.1\r\nhost: x\r\n\r\n"
    got = await exchange(port, one + two + three, lambda got: got.count(b"HTTP/1.1 ") == 3)
    assert got.index(b'{"got":1}') < got.index(b'{"got":2}') < got.index(b"HTTP/1.1 204")


async def test_head_gets_its_head_and_no_body(port: int) -> None:
    got = await exchange(port, b"HEAD /length HTTP/1.1\r\nhost: x\r\n\r\n", ends_with(b"\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n")
    assert b"content-length: 5" in got
    # And the connection still serves the next request.
    both = b"HEAD /length HTTP/1.1\r\nhost: x\r\n\r\nGET /length HTTP/1.1\r\nhost: x\r\n\r\n"
    got = await exchange(port, both, ends_with(b"hello"))
    assert got.endswith(b"hello") and got.count(b"HTTP/1.1 200") == 2


async def test_a_streamed_answer_arrives_in_order(port: int) -> None:
    got = await exchange(port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", ends_with(b"0\r\n\r\n"))
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"


async def test_100_continue_goes_out_before_the_answer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
    )
    async with asyncio.timeout(DEADLINE_S):
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"xyz")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(9)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"got":3}'


async def test_an_app_failing_after_its_head_closes_the_connection(port: int) -> None:
    got = await exchange(port, b"GET /crash HTTP/1.1\r\nhost: x\r\n\r\n", lambda got: False)
    assert got.startswith(b"HTTP/1.1 200 OK") and b"content-length: 9" in got  # then EOF


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> None:
        return None


def test_the_head_waits_for_the_body_and_nothing_else_waits() -> None:
    rec = Recorder()
    held = HeldHeadTransport(rec)  # type: ignore[arg-type]
    held.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer: straight on
    held.write(b"HTTP/1.1 200 OK\r\nx: 1\r\n\r\n")
    assert rec.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    held.write(b"body")
    held.write(b"more\r\n\r\n")  # a body chunk that looks like a blank line: not a head
    assert rec.writes[1:] == [b"HTTP/1.1 200 OK\r\nx: 1\r\n\r\nbody", b"more\r\n\r\n"]
    held.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    held.flush()
    held.flush()
    assert rec.writes[3:] == [b"HTTP/1.1 204 No Content\r\n\r\n"]
    held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n")
    held.close()
    assert rec.writes[4:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"] and rec.closed
    assert held.get_extra_info("socket") is None and held.is_closing()


async def test_a_json_answer_leaves_in_one_write(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    made = HeldHeadTransport.__init__

    class Counting:
        def __init__(self, transport: Any) -> None:
            self.transport = transport

        def write(self, data: bytes) -> None:
            writes.append(data)
            self.transport.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.transport, name)

    def counted(self: HeldHeadTransport, transport: Any) -> None:
        made(self, Counting(transport))  # type: ignore[arg-type]

    monkeypatch.setattr(HeldHeadTransport, "__init__", counted)
    request = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab"
    got = await exchange(port, request, ends_with(b"}"))
    assert len(writes) == 1 and writes[0] == got  # uvicorn alone: head, then body
