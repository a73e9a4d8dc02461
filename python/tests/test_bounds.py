"""Every buffer is bounded, whatever the peer does: a client that floods a Python server with
calls and never reads the answers meets TCP backpressure (SPEC §13.1), and a Python client
holds at most its window of a call's unread chunks and a bounded part of what `result()`
drains."""

from __future__ import annotations

import asyncio
import socket
import struct

from websockets.asyncio.client import connect as ws_connect

import agentsocket as asp
from agentsocket import _core
from conftest import py_server  # noqa: F401 - a fixture

ANSWER = 8 << 10  # bytes of each answer the flooder provokes
CALLS = 1000  # 1000 × 8 KiB = 8 MiB of answers: twice max_buffered (4 MiB)


def invoke_frame(id: int, tool: str, args: object) -> bytes:
    """An INVOKE frame (SPEC §3.1, §5.2), built by hand: the flooder does not keep to
    `max_inflight`, as a client core would."""
    payload = _core.packb({0: tool, 1: args})
    return struct.pack(">BBHI", 0x12, 0, id, len(payload)) + payload


def held_by_server(session: asp.server._Session) -> int:
    """Bytes the server holds for this connection: the core's transmit queue, the driver's
    buffers (messages read but not given to the core, messages not yet written) and, over
    websockets, the socket's write buffer (under uvicorn, that is uvicorn's, which holds a
    `send` while its buffer is above its limit)."""
    t = getattr(session._transport, "transport", None)
    wbuf = t.get_write_buffer_size() if t is not None else 0
    return session.conn.queued_bytes + session.held_bytes + wbuf


def flood_server() -> asp.Server:
    server = asp.Server(resume=False, config={"heartbeat_ms": 0})

    @server.tool
    async def big(n: int) -> str:
        return "x" * n

    return server


async def flood(server: asp.Server, url: str, port: int) -> None:
    """Floods ``server`` with calls, never reading an answer, until it pauses reading; checks
    what it holds; then reads every answer."""
    paused = asyncio.Event()
    bound = 0
    # A small receive buffer, so that the kernel takes little of the server's output and the
    # server's own bound is what is tested.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    sock.connect(("127.0.0.1", port))
    async with ws_connect(
        url, sock=sock, subprotocols=["asp-v1"], compression=None, ping_interval=None, max_size=None  # type: ignore[list-item]
    ) as ws:
        hello = _core.Connection("client", 0.0, {"resume": False}).poll()[1]
        await ws.send(hello[0])
        assert _core.decode_frames(await ws.recv())[0][0] == "HELLO"  # type: ignore[arg-type]
        (session,) = server.sessions
        t = getattr(session._transport, "transport", None)
        if t is not None:  # over websockets, the server's socket keeps little in the kernel too
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 10)
        check = session._check_input

        def watch() -> None:
            nonlocal bound
            check()
            bound = max(bound, held_by_server(session))
            if session.input_paused:
                paused.set()

        session._check_input = watch  # type: ignore[method-assign]

        # Flood: one call per message, never reading an answer. Written without waiting for
        # the socket (what the kernel does not take waits in this process).
        for i in range(1, CALLS + 1):
            ws.protocol.send_binary(invoke_frame(i, "big", {"n": ANSWER}))
            ws.send_data()
        await asyncio.wait_for(paused.wait(), 60)
        if t is not None:
            assert not t.is_reading()  # the socket is left unread: TCP backpressure
        # Paused, the server holds its queue bound (1 MiB), what the driver took before
        # holding the core (256 KiB and one batch) and the rest of one socket read: far less
        # than the 8 MiB asked for, and under max_buffered (4 MiB), past which the core would
        # have closed the connection with OVERLOADED.
        held = held_by_server(session)
        assert session.conn.queued_bytes >= 1 << 20
        assert held < 3 << 20, held
        assert not session.conn.is_closed

        # Now read: every call is answered, once, and the server reads again.
        seen: set[int] = set()
        while len(seen) < CALLS:
            msg = await asyncio.wait_for(ws.recv(), 60)
            for name, id, fields in _core.decode_frames(msg):  # type: ignore[arg-type]
                if name == "COMPLETE":
                    assert id not in seen
                    seen.add(id)
                else:
                    assert name in ("PING", "PONG"), (name, fields)
        assert seen == set(range(1, CALLS + 1))
        assert not session.input_paused and not session.conn.is_closed
        if t is not None:
            assert t.is_reading()
        assert bound < 3 << 20, bound


async def test_flooding_peer_meets_backpressure() -> None:
    server = flood_server()
    lst = await server.start("127.0.0.1", 0)
    try:
        await flood(server, lst.url, lst.port)
    finally:
        await lst.close(timeout=1)


async def test_flooding_peer_meets_backpressure_under_asgi() -> None:
    """The same under uvicorn: the app stops pulling messages, and uvicorn, which reads one
    message ahead of the app, stops reading the socket."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    server = flood_server()
    app = Starlette(routes=[WebSocketRoute("/v1/agent-socket", server.asgi_app())])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off"))
    task = asyncio.ensure_future(uv.serve(sockets=[sock]))
    try:
        await flood(server, f"ws://127.0.0.1:{port}/v1/agent-socket", port)
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def test_unread_chunks_stay_within_the_window(py_server) -> None:
    """A call nobody iterates holds at most its window of chunks: credit follows what the
    application consumes (SPEC §7.5), so the server's window reaches zero and it waits."""
    server, lst = py_server
    window = 16 << 10
    async with await asp.connect(lst.url, config={"initial_window": window}) as c:
        call = c.invoke("tokens", {"n": 1000, "size": 1024})  # 1 MiB, 64 windows' worth
        full = asyncio.Event()
        take = call._chunk

        def chunk(data: object) -> None:
            take(data)  # type: ignore[arg-type]
            if sum(len(x) for x in call._chunks) >= window:
                full.set()

        call._chunk = chunk  # type: ignore[method-assign]
        await asyncio.wait_for(full.wait(), 30)
        assert sum(len(x) for x in call._chunks) == window
        # The server may not send one more byte until the client consumes something.
        (session,) = server.sessions
        assert not session.conn.can_stream(call.id, 1)
        got = 0
        async for _ in call:
            got += 1
        assert got == 1000 and (await call.result()).value == {"sent": 1000}


async def test_result_keeps_a_bounded_prefix_of_unread_chunks(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url, keep_chunks=64 << 10) as c:
        r = await c.invoke("tokens", {"n": 512, "size": 1024}).result()  # 512 KiB streamed
        assert r.value == {"sent": 512}
        assert sum(len(x) for x in r.chunks) == 64 << 10 and all(x == "x" * 1024 for x in r.chunks)
        assert r.dropped == (512 - 64) << 10
        # Per call, and the default is large enough for ordinary output.
        r = await c.invoke("tokens", {"n": 4, "size": 1024}).result(keep_chunks=2048)
        assert (len(r.chunks), r.dropped) == (2, 2048)
    async with await asp.connect(lst.url) as c:
        r = await c.invoke("tokens", {"n": 512, "size": 1024}).result()
        assert len(r.chunks) == 512 and r.dropped == 0


async def test_chunks_cut_to_half_the_window(py_server) -> None:
    """SPEC §7.5: a server cuts chunks to at most half the client's initial window (up to
    half a window can stay unreturned), whatever size the tool streams."""
    _, lst = py_server
    async with await asp.connect(lst.url, config={"initial_window": 16 << 10}) as c:
        call = c.invoke("tokens", {"n": 3, "size": 12000})
        sizes = [len(x) async for x in call]
        assert sum(sizes) == 36000 and max(sizes) <= 8 << 10
        assert (await call.result()).value == {"sent": 3}


async def test_oversized_message_is_refused_unbuffered(py_server) -> None:
    """A message longer than SPEC §2.1's receiver limit (65 536 + 2 × (8 + max_frame_payload))
    closes the connection (1009) before it is buffered; the server goes on."""
    import websockets

    _, lst = py_server
    async with ws_connect(lst.url, subprotocols=["asp-v1"], compression=None, ping_interval=None) as ws:  # type: ignore[list-item]
        await ws.send(_core.Connection("client", 0.0).poll()[1][0])
        await ws.recv()  # HELLO
        await ws.send(b"\x18" + b"\x00" * (3 << 20))
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009
    async with await asp.connect(lst.url) as c:
        assert await c.call("echo", {"text": "still here"}) == "still here"
