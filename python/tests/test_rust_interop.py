"""The binding against the Rust implementation: Python client ↔ `asp serve`, and the Rust
`asp` client (tools, call, bench) ↔ a Python server."""

from __future__ import annotations

import asyncio
import json

import pytest

import agentsocket as asp
from conftest import bytes_pattern, make_server, run, spawn

# ── Python client ↔ Rust server ─────────────────────────────────────────────


async def test_py_client_lists_and_calls_rust_tools(rust_server: str) -> None:
    async with await asp.connect(rust_server) as c:
        assert {"agent", "echo", "clarify", "fail", "blob"} <= set(c.tools)
        assert c.tools["agent"].input_schema["required"] == ["prompt"]
        assert c.session is not None and c.session["peer_agent"].startswith("asp")
        assert await c.call("echo", {"a": [1, 2.5, None, "é", b"\x00"]}) == {"a": [1, 2.5, None, "é", b"\x00"]}


async def test_py_client_streams_from_rust_agent(rust_server: str) -> None:
    async with await asp.connect(rust_server) as c:
        call = c.invoke("agent", {"prompt": "hi", "repeat": 3})
        words = [w async for w in call]
        r = await call.result()
        tokens = [w for w in words if w != "\n"]  # rounds are separated by a newline chunk
        assert r.status == "ok" and r.value == {"tokens": len(tokens)}
        assert "".join(words).startswith('You asked: "hi".')
        assert r.metrics["output_tokens"] == len(tokens)


async def test_py_client_flow_control_with_rust_blob(rust_server: str) -> None:
    window = 32 << 10
    async with await asp.connect(rust_server, config={"initial_window": window}) as c:
        call = c.invoke("blob", {"bytes": 8 << 20, "chunk": 4096})
        total = 0
        most = 0
        async for ch in call:
            assert ch[0] == total % 256
            total += len(ch)
            most = max(most, sum(len(x) for x in call._chunks))
        assert total == 8 << 20 and (await call.result()).value == {"bytes": 8 << 20}
        assert most <= window


async def test_py_client_interrupts_rust_tool(rust_server: str) -> None:
    async with await asp.connect(rust_server) as c:
        call = c.invoke("agent", {"prompt": "slow", "delay_ms": 200, "repeat": 50})
        it = call.__aiter__()
        await it.__anext__()
        call.interrupt("enough")
        r = await call.result()
        assert r.status == "cancelled"


async def test_py_client_answers_rust_question(rust_server: str) -> None:
    async def answer(q: asp.ServerQuestion) -> object:
        assert q.kind == "clarify"
        return "blue " + q.body["question"]

    async with await asp.connect(rust_server, on_request=answer) as c:
        r = await c.invoke("clarify", {"question": "colour?"}).result()
        assert r.status == "ok" and r.value == "blue colour?"
        assert r.text == "You answered: blue colour?"

    async def decline(q: asp.ServerQuestion) -> object:
        raise asp.Declined()

    async with await asp.connect(rust_server, on_request=decline) as c:
        r = await c.invoke("clarify").result()
        assert r.status == "failed"


async def test_py_client_errors_from_rust(rust_server: str) -> None:
    async with await asp.connect(rust_server) as c:
        r = await c.invoke("fail", {"message": "no"}).result()
        assert r.status == "failed" and r.value == {"error": "no"} and r.text == "working…\n"
        with pytest.raises(asp.AspError) as e:
            await c.call("fail")
        assert e.value.code == asp.ErrorCode.TOOL_FAILED
        with pytest.raises(asp.AspError) as e:
            await c.call("missing")
        assert (e.value.code, e.value.name, e.value.retryable) == (0x20, "UNKNOWN_TOOL", False)
        with pytest.raises(asp.AspError) as e:
            await c.call("agent", {"nope": 1})
        assert e.value.code == asp.ErrorCode.INVALID_ARGUMENTS
        with pytest.raises(asp.AspError) as e:
            await c.invoke("agent", {"prompt": "x", "delay_ms": 1000}, deadline_ms=30).result()
        assert e.value.code == asp.ErrorCode.DEADLINE_EXCEEDED and e.value.retryable


async def test_py_client_token_against_rust(asp_bin: str) -> None:
    p = await spawn(asp_bin, "--json", "--token", "tok", "serve", "--addr", "127.0.0.1:0")
    try:
        url = json.loads(await p.line())["url"]
        with pytest.raises(Exception) as e:
            await asp.connect(url)
        assert "401" in str(e.value)
        async with await asp.connect(url, token="tok") as c:
            assert await c.call("echo", "x") == "x"
    finally:
        await p.stop()


async def test_py_client_sees_rust_tool_pushes(asp_bin: str) -> None:
    p = await spawn(asp_bin, "--json", "serve", "--addr", "127.0.0.1:0", "--churn", "0.05")
    try:
        url = json.loads(await p.line())["url"]
        async with await asp.connect(url) as c:
            watch = c.watch_tools().__aiter__()
            kinds = [(await asyncio.wait_for(watch.__anext__(), 10)) for _ in range(2)]
            assert {(k.kind, k.name) for k in kinds} == {("added", "ephemeral"), ("removed", "ephemeral")}
    finally:
        await p.stop()


async def test_py_client_resumes_with_rust_server(rust_server: str) -> None:
    """`asp serve` offers resume (SPEC §11): the TCP connection is cut under a stream, the
    Python client redials and resumes, and every byte arrives once, in order, with one
    terminal frame."""
    size = 2 << 20
    pattern = bytes_pattern(4096 + 256)
    # A small window keeps most of the stream unsent when the connection is cut.
    async with await asp.connect(rust_server, config={"initial_window": 16 << 10}) as c:
        assert c.session is not None and c.session["resumable"]
        cid = c.connection_id
        call = c.invoke("blob", {"bytes": size, "chunk": 4096})
        ends: list[object] = []
        end = call._end

        def count_end(r: object) -> None:
            ends.append(r)
            end(r)  # type: ignore[arg-type]

        call._end = count_end  # type: ignore[method-assign]
        got = 0
        cut = False
        async for ch in call:
            assert isinstance(ch, bytes) and ch == pattern[got % 256 : got % 256 + len(ch)], got
            got += len(ch)
            if got >= 256 << 10 and not cut:
                cut = True
                assert c._ws is not None
                c._ws.transport.abort()  # the network fails: no close handshake
        r = await call.result()
        assert got == size and r.value == {"bytes": size} and len(ends) == 1
        assert c.resumes == 1 and c.connection_id == cid
        assert await c.call("echo", "after") == "after"


# ── Rust client ↔ Python server ─────────────────────────────────────────────


async def test_rust_client_watches_py_tool_pushes(asp_bin: str, py_server) -> None:
    """`asp tools --watch` against a Python server: tools added and removed at run time reach
    the Rust client (SPEC §9)."""
    server, lst = py_server
    p = await spawn(asp_bin, "--json", "tools", "--watch", lst.url)
    try:
        first = json.loads(await p.line())
        assert first["type"] == "tools" and "echo" in {t["name"] for t in first["tools"]}

        async def shout(text: str) -> str:
            """Shouts."""
            return text.upper()

        server.add_tool(shout)
        added = json.loads(await p.line())
        assert added["type"] == "tool_added" and added["tool"]["name"] == "shout"
        assert added["tool"]["input_schema"]["required"] == ["text"]
        assert server.remove_tool("shout")
        assert json.loads(await p.line()) == {"type": "tool_removed", "name": "shout"}
    finally:
        await p.stop()


async def test_rust_client_interrupts_py_tool(asp_bin: str, py_server) -> None:
    """Ctrl-C on `asp call` sends INTERRUPT; the Python tool's task is cancelled and the call
    completes `cancelled` (SPEC §7.3)."""
    import signal

    _, lst = py_server
    p = await spawn(asp_bin, "--json", "call", lst.url, "wait")
    try:
        first = json.loads(await p.line())  # the tool is running: interrupt it
        assert (first["type"], first["text"]) == ("chunk", "waiting"), first
        p.proc.send_signal(signal.SIGINT)
        last = json.loads(await p.line())
        while last.get("type") == "chunk":
            last = json.loads(await p.line())
        assert last["status"] == "cancelled", last
        assert await asyncio.wait_for(p.proc.wait(), 20) == 1
    finally:
        await p.stop()


async def test_rust_client_resumes_with_py_server(asp_bin: str) -> None:
    """The Python server offers resume; `asp call --resume` loses its connection under a
    stream (the server's side of the TCP connection is cut), redials and resumes: every chunk
    arrives once, in order."""
    server = make_server()
    sessions: list[object] = []

    @server.tool
    async def cut(ctx: asp.Context, n: int = 400, at: int = 100) -> dict:
        """Streams `n` numbered chunks; the connection is cut before chunk `at`."""
        for i in range(n):
            if i == at:
                sessions.append(ctx._s)
                t = ctx._s._transport
                assert t is not None
                t.transport.abort()  # type: ignore[attr-defined]
            await ctx.stream(f"{i:05d} ")
        return {"sent": n}

    lst = await server.start("127.0.0.1", 0)
    try:
        code, out, err = await run(asp_bin, "--json", "--resume", "call", lst.url, "cut", "--args", '{"n": 400, "at": 100}')
        assert code == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        text = "".join(x["text"] for x in lines if x.get("type") == "chunk")
        assert text == "".join(f"{i:05d} " for i in range(400))
        assert lines[-1]["status"] == "ok" and lines[-1]["result"] == {"sent": 400}
        assert len(sessions) == 1 and sessions[0].resumes == 1  # type: ignore[attr-defined]
    finally:
        await lst.close(timeout=1)


async def test_rust_tools_and_call_against_py_server(asp_bin: str, py_server) -> None:
    _, lst = py_server
    code, out, err = await run(asp_bin, "--json", "tools", lst.url)
    assert code == 0, err
    tools = json.loads(out.splitlines()[0])["tools"]
    names = {t["name"] for t in tools}
    assert {"echo", "tokens", "blob", "ask"} <= names
    echo = next(t for t in tools if t["name"] == "echo")
    assert echo["input_schema"]["required"] == ["text"]

    code, out, err = await run(asp_bin, "--json", "call", lst.url, "echo", "--args", '{"text": "from rust"}')
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[-1]["status"] == "ok" and lines[-1]["result"] == "from rust"

    code, out, err = await run(asp_bin, "--json", "call", lst.url, "tokens", "--args", '{"n": 4}')
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    chunks = [x for x in lines if x.get("type") == "chunk"]
    assert "".join(c["text"] for c in chunks) == "t0 t1 t2 t3 "
    assert lines[-1]["result"] == {"sent": 4}


async def test_rust_client_answers_py_question(asp_bin: str, py_server) -> None:
    _, lst = py_server
    code, out, err = await run(asp_bin, "--json", "call", lst.url, "ask", "--args", '{"question": "sure?"}', "--answer", '"yes"')
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["result"] == "yes"


async def test_rust_client_errors_from_py_server(asp_bin: str, py_server) -> None:
    _, lst = py_server
    code, out, err = await run(asp_bin, "call", lst.url, "fail", "--args", '{"code": 67}')
    assert code == 1 and "UNAVAILABLE" in err, (out, err)
    code, out, err = await run(asp_bin, "call", lst.url, "nope")
    assert code != 0 and "UNKNOWN_TOOL" in err, (out, err)


async def test_rust_bench_against_py_server(asp_bin: str, py_server) -> None:
    _, lst = py_server
    code, out, err = await run(asp_bin, "--json", "bench", lst.url, "-n", "300", "-c", "4", "--tool", "echo", "--args", '{"text": "x"}', "--no-progress")
    assert code == 0, err
    r = json.loads(out.splitlines()[-1])
    assert (r["mode"], r["n"], r["concurrency"]) == ("round_trip", 300, 4) and r["throughput_per_s"] > 0, r
    # The Python `blob` tool under the Rust stream test: every byte arrives, in order.
    code, out, err = await run(asp_bin, "--json", "bench", lst.url, "--stream", "2M", "-n", "3", "--no-progress")
    assert code == 0, err
    r = json.loads(out.splitlines()[-1])
    assert (r["mode"], r["bytes"]) == ("stream", 3 * (2 << 20)), r
