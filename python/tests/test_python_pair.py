"""Python client ↔ Python server, both on the binding."""

from __future__ import annotations

import asyncio

import pytest
import websockets

import agentsocket as asp
from conftest import bytes_pattern, make_server


async def test_tools_schema_and_echo(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        assert set(c.tools) >= {"echo", "tokens", "blob", "wait", "ask", "fail", "crash"}
        echo = c.tools["echo"]
        assert echo.description == "Returns its argument."
        assert echo.input_schema == {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        }
        assert c.tools["tokens"].input_schema["properties"]["n"] == {"type": "integer", "default": 3}
        assert await c.call("echo", {"text": "héllo"}) == "héllo"
        r = await c.invoke("echo", {"text": "x"}).result()
        assert r.status == "ok" and r.value == "x" and "wall_us" in r.metrics


async def test_streaming_in_order(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        call = c.invoke("tokens", {"n": 200})
        got = [ch async for ch in call]
        assert got == [f"t{i} " for i in range(200)]
        r = await call.result()
        assert r.value == {"sent": 200} and r.chunks == []
        # result() without iterating consumes the chunks itself.
        r = await c.invoke("tokens", {"n": 5}).result()
        assert r.text == "t0 t1 t2 t3 t4 "


async def test_flow_control_bounds_a_slow_consumer(py_server) -> None:
    """The tool streams 4 MiB; the client reads slowly. The server can never be more than
    the window (plus what is in transit) ahead: the tool waits on ctx.stream (SPEC §7.5)."""
    server, lst = py_server
    window = 64 << 10
    async with await asp.connect(lst.url, config={"initial_window": window}) as c:
        call = c.invoke("blob", {"bytes": 4 << 20, "chunk": 8 << 10})
        total = 0
        expect = bytes_pattern((8 << 10) + 256)
        max_buffered = 0
        async for ch in call:
            assert isinstance(ch, bytes)
            assert ch == expect[total % 256 : total % 256 + len(ch)]
            total += len(ch)
            max_buffered = max(max_buffered, sum(len(x) for x in call._chunks))
            if total % (256 << 10) == 0:
                await asyncio.sleep(0.01)  # a slow consumer (pacing only, not waiting for state)
        assert total == 4 << 20
        assert (await call.result()).value == {"bytes": 4 << 20}
        # The client never held more unread data than the window it granted.
        assert max_buffered <= window


async def test_interrupt(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        call = c.invoke("wait")
        it = call.__aiter__()
        assert await it.__anext__() == "waiting"
        call.interrupt("stop")
        r = await call.result()
        assert r.status == "cancelled"
        call.interrupt()  # harmless after the end


async def test_server_questions(py_server) -> None:
    _, lst = py_server
    seen: list[asp.ServerQuestion] = []

    async def answer(q: asp.ServerQuestion) -> object:
        seen.append(q)
        if q.body["question"] == "no":
            raise asp.Declined()
        if q.body["question"] == "err":
            raise asp.ToolError("refused", code=asp.ErrorCode.INVALID_ARGUMENTS)
        return {"answer": q.body["question"].upper()}

    async with await asp.connect(lst.url, on_request=answer) as c:
        call = c.invoke("ask", {"question": "yes"})
        r = await call.result()
        assert (r.status, r.value) == ("ok", {"answer": "YES"})
        assert seen[0].kind == "confirm" and seen[0].invocation == call.id
        # Declined → the tool's ctx.ask raises Declined → the tool fails (TOOL_FAILED).
        with pytest.raises(asp.AspError) as e:
            await c.call("ask", {"question": "no"})
        assert e.value.code == asp.ErrorCode.TOOL_FAILED
        with pytest.raises(asp.AspError) as e:
            await c.call("ask", {"question": "err"})
        assert e.value.code == asp.ErrorCode.TOOL_FAILED and "INVALID_ARGUMENTS" in e.value.message
    # A client without a handler does not offer `requests`: the server may not ask (§6.4).
    async with await asp.connect(lst.url) as c:
        with pytest.raises(asp.AspError) as e:
            await c.call("ask")
        assert "UNSUPPORTED" in e.value.message


async def test_question_withdrawn_when_interrupted(py_server) -> None:
    _, lst = py_server
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def answer(q: asp.ServerQuestion) -> object:
        started.set()
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with await asp.connect(lst.url, on_request=answer) as c:
        call = c.invoke("ask")
        await started.wait()
        call.interrupt()
        assert (await call.result()).status == "cancelled"
        await asyncio.wait_for(cancelled.wait(), 5)


async def test_errors_carry_code_and_retryable(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        with pytest.raises(asp.AspError) as e:
            await c.call("fail", {"code": asp.ErrorCode.UNAVAILABLE, "retryable": True})
        assert (e.value.code, e.value.name, e.value.retryable) == (0x43, "UNAVAILABLE", True)
        with pytest.raises(asp.AspError) as e:
            await c.call("fail", {"code": 0x99})
        assert e.value.code == 0x99 and e.value.name is None and not e.value.retryable
        with pytest.raises(asp.AspError) as e:
            await c.call("crash")
        assert e.value.code == asp.ErrorCode.TOOL_FAILED and "boom" in e.value.message
        with pytest.raises(asp.AspError) as e:
            await c.call("echo", {"text": 5})
        assert e.value.code == asp.ErrorCode.INVALID_ARGUMENTS
        with pytest.raises(asp.AspError) as e:
            await c.call("nope")
        assert e.value.code == asp.ErrorCode.UNKNOWN_TOOL and not e.value.retryable
        with pytest.raises(TypeError):
            c.invoke("echo", {"text": object()})
        with pytest.raises(asp.LocalError) as le:
            c.invoke("")
        assert le.value.args[0] == "invalid_field"
        # The connection is still fine after all that.
        assert await c.call("echo", {"text": "still here"}) == "still here"


async def test_deadline(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        with pytest.raises(asp.AspError) as e:
            await c.invoke("wait", deadline_ms=50).result()
        assert e.value.code == asp.ErrorCode.DEADLINE_EXCEEDED and e.value.retryable


async def test_tools_pushed_at_run_time(py_server) -> None:
    server, lst = py_server
    changes: list[asp.ToolChange] = []
    async with await asp.connect(lst.url, on_tool_change=changes.append) as c:
        watch = c.watch_tools().__aiter__()

        async def added(x: int) -> int:
            """Doubles."""
            return 2 * x

        server.add_tool(added)
        ch = await asyncio.wait_for(watch.__anext__(), 5)
        assert (ch.kind, ch.name) == ("added", "added") and ch.tool is not None
        assert c.tools["added"].description == "Doubles."
        assert await c.call("added", {"x": 21}) == 42
        server.add_tool(added, description="Doubles again.")
        ch = await asyncio.wait_for(watch.__anext__(), 5)
        assert ch.kind == "updated" and c.tools["added"].description == "Doubles again."
        assert server.remove_tool("added")
        ch = await asyncio.wait_for(watch.__anext__(), 5)
        assert (ch.kind, ch.name, ch.tool) == ("removed", "added", None)
        assert "added" not in c.tools
        assert [x.kind for x in changes] == ["added", "updated", "removed"]
        with pytest.raises(asp.AspError) as e:
            await c.call("added", {"x": 1})
        assert e.value.code == asp.ErrorCode.UNKNOWN_TOOL


async def test_resume_after_cut_connection(py_server) -> None:
    """The TCP connection is cut mid-stream; the client reconnects and resumes (SPEC §11):
    the invocation continues and no chunk is lost or repeated."""
    _, lst = py_server
    # A small window keeps most of the stream unsent when the connection is cut.
    async with await asp.connect(lst.url, config={"initial_window": 16 << 10}) as c:
        assert c.session is not None and c.session["resumable"]
        cid = c.connection_id
        call = c.invoke("tokens", {"n": 3000, "size": 100})
        got = 0
        cut = False
        async for ch in call:
            assert ch == "x" * 100
            got += 1
            if got == 500 and not cut:
                cut = True
                assert c._ws is not None
                c._ws.transport.abort()  # the network fails: no close handshake
        assert got == 3000
        assert (await call.result()).value == {"sent": 3000}
        assert c.resumes == 1 and c.connection_id == cid
        assert await c.call("echo", {"text": "after"}) == "after"


async def test_auth_hook_and_token() -> None:
    seen: list[asp.AuthRequest] = []

    def auth(req: asp.AuthRequest) -> object:
        seen.append(req)
        return {"user": "ann"} if req.token == "s3cret" else False

    server = asp.Server(auth=auth)

    @server.tool
    async def whoami(ctx: asp.Context) -> object:
        return ctx.auth

    async with await server.start("127.0.0.1", 0) as lst:
        with pytest.raises(websockets.InvalidStatus) as e:
            await asp.connect(lst.url, token="wrong")
        assert e.value.response.status_code == 401
        async with await asp.connect(lst.url, token="s3cret") as c:
            assert await c.call("whoami") == {"user": "ann"}
        assert seen[-1].path == "/v1/agent-socket"
    server = asp.Server(token="t")
    async with await server.start("127.0.0.1", 0) as lst:
        with pytest.raises(websockets.InvalidStatus):
            await asp.connect(lst.url)
        async with await asp.connect(lst.url, token="t") as c:
            assert c.session is not None


async def test_subprotocol_required(py_server) -> None:
    _, lst = py_server
    with pytest.raises(websockets.InvalidStatus) as e:
        async with websockets.connect(lst.url):
            pass
    assert e.value.response.status_code == 426


async def test_bad_peer_input_never_crashes(py_server) -> None:
    """Garbage from a peer gets the SPEC's ERROR and close code; the server keeps serving."""
    _, lst = py_server
    hello = asp.Connection("client", 0.0).poll()[1][0]
    cases: list[tuple[object, int]] = [
        (b"\x00" * 3, 1002),  # a message ending inside a frame: FRAMING_ERROR
        ("text", 1002),  # a text message: FRAMING_ERROR
        (b"\x12\x00\x00\x01\x00\x00\x00\x01\xc1", 1002),  # INVOKE before HELLO
        (b"\x21\x00\x00\x00\x00\x00\x00\x00", 1002),  # version 2: UNSUPPORTED_VERSION
    ]
    for payload, close_code in cases:
        async with websockets.connect(lst.url, subprotocols=["asp-v1"]) as ws:  # type: ignore[list-item]
            await ws.send(payload)  # type: ignore[arg-type]
            frames = []
            try:
                async for m in ws:
                    frames.append(m)
            except websockets.ConnectionClosed:
                pass
            assert ws.close_code == close_code, (payload, ws.close_code)
            assert any(isinstance(f, bytes) and f[0] & 0x0F == 0x7 for f in frames)  # an ERROR
    # After the handshake: a malformed INVOKE is a frame error; the connection goes on.
    async with websockets.connect(lst.url, subprotocols=["asp-v1"]) as ws:  # type: ignore[list-item]
        await ws.send(hello)
        await ws.recv()  # HELLO + tools
        await ws.send(b"\x12\x00\x00\x01\x00\x00\x00\x01\xc1")  # payload not a map
        err = await ws.recv()
        assert isinstance(err, bytes) and err[0] == 0x17
        await ws.send(b"\x18\x00\x00\x00\x00\x00\x00\x00")  # PING
        assert await ws.recv() == b"\x19\x00\x00\x00\x00\x00\x00\x00"  # PONG
    async with await asp.connect(lst.url) as c:
        assert await c.call("echo", {"text": "fine"}) == "fine"


async def test_many_concurrent_invocations(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        calls = [c.invoke("tokens", {"n": 20}) for _ in range(100)]
        results = await asyncio.gather(*(x.result() for x in calls))
        assert all(r.text == "".join(f"t{i} " for i in range(20)) for r in results)


async def test_graceful_shutdown_lets_calls_finish() -> None:
    server = make_server()
    lst = await server.start("127.0.0.1", 0)
    c = await asp.connect(lst.url, reconnect=False)
    call = c.invoke("wait")
    it = call.__aiter__()
    assert await it.__anext__() == "waiting"  # the invocation runs
    closing = asyncio.ensure_future(lst.close(timeout=5))
    # GOAWAY (SPEC §6.5): the call in flight may finish; the server waits for it.
    await asyncio.sleep(0.05)
    assert not closing.done()
    call.interrupt()
    r = await call.result()
    assert r.status == "cancelled"
    await closing
    await c.closed.wait()
    assert c.close_reason is not None and c.close_reason[0] in ("drained", "transport_closed")
    with pytest.raises(asp.LocalError):
        c.invoke("echo", {"text": "late"})
    await c.close()


async def test_packb_unpackb_and_raw() -> None:
    v = {"a": [1, -1, 2**63, -(2**63), 1.5, None, True, b"\x00", "é"], "n": {"x": {}}}
    assert asp.unpackb(asp.packb(v)) == v
    raw = asp.Raw(b"\x81\xa1t\xa2hi")
    assert asp.packb({"k": raw}) == b"\x81\xa1k" + raw.data
    assert raw.decode() == {"t": "hi"}
    with pytest.raises(ValueError):
        asp.Raw(b"\x81")
    with pytest.raises(ValueError):
        asp.unpackb(b"\x92\x01")
    with pytest.raises(ValueError):
        asp.packb(2**64)
    deep: object = []
    for _ in range(1000):
        deep = [deep]
    with pytest.raises(ValueError):
        asp.packb(deep)
    with pytest.raises(ValueError):
        asp.unpackb(b"\x81\x80\x01")  # a map keyed by a map has no Python form


async def test_value_without_python_form_arrives_raw(py_server) -> None:
    _, lst = py_server
    async with await asp.connect(lst.url) as c:
        # The server cannot make a dict of {{}: 1}: its tool sees a Raw, not a str.
        with pytest.raises(asp.AspError) as e:
            await c.call("echo", {"text": asp.Raw(b"\x81\x80\x01")})
        assert e.value.code == asp.ErrorCode.INVALID_ARGUMENTS


async def test_client_survives_a_bad_server() -> None:
    """A server that sends garbage: the client's core answers with the SPEC's ERROR, and
    `connect` raises ConnectionLost carrying the code; nothing else breaks."""
    from websockets.asyncio.server import serve

    got: list[bytes] = []

    async def bad(ws: object) -> None:
        await ws.recv()  # type: ignore[attr-defined]  # the client's HELLO
        await ws.send(b"\x11\x00\x00\x00\x00\x00\x00\x02\x81")  # a HELLO cut inside its payload
        try:
            async for m in ws:  # type: ignore[attr-defined]
                got.append(m)
        except websockets.ConnectionClosed:
            pass

    async with serve(bad, "127.0.0.1", 0, subprotocols=["asp-v1"]) as srv:  # type: ignore[list-item]
        port = next(iter(srv.sockets)).getsockname()[1]
        with pytest.raises(asp.ConnectionLost) as e:
            await asp.connect(f"ws://127.0.0.1:{port}/", reconnect=False)
        assert e.value.reason == "error_sent" and e.value.code == asp.ErrorCode.FRAMING_ERROR
    assert got and got[0][0] == 0x17  # the client sent ERROR(FRAMING_ERROR)
