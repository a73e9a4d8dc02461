"""Benchmarks of the Python SDK, all in one run so that the figures are ratios of the same run.

    python python/bench/bench.py [--rounds 5] [--calls 2000] [--asp-bin target/release/asp]

Rows (each a median over ``--rounds`` runs, with the range):

1. round trip of a small call from a Python client (64-byte string, one call at a time):
   - floor: a plain ``websockets`` client sending 64 bytes to a ``websockets`` echo server
     (both Python, the server in a subprocess): the least any Python WebSocket client costs;
   - agentsocket client → agentsocket (Python) server, the same ``websockets`` underneath;
   - agentsocket client → the Rust ``asp serve`` (the client's cost with a fast server);
   - the official MCP Python SDK (``mcp`` 2.x, whose ``MCPServer`` is the former FastMCP) on
     the same tool: Streamable HTTP (uvicorn) and stdio;
2. 1,000 chunks streamed by a tool: ASP STREAM frames vs MCP progress notifications (the way
   an MCP tool streams), time to receive all 1,000 and the result;
3. a Python server's throughput under the Rust ``asp bench`` (round trips, 16 in flight), next
   to the Rust server under the same load.

Servers run in subprocesses (``python bench.py serve-*``) so that a client and its server do
not share one event loop. The machine may be loaded: compare ratios, not absolute times.
"""


import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
TEXT = "x" * 64
CHUNKS = 1000

# ── servers (subprocess entry points) ───────────────────────────────────────


async def serve_echo() -> None:
    """A plain websockets echo server: the floor."""
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for m in ws:
            await ws.send(m)

    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        print(json.dumps({"url": f"ws://127.0.0.1:{port}/"}), flush=True)
        await asyncio.Future()


async def serve_asp() -> None:
    import agentsocket

    server = agentsocket.Server()

    @server.tool
    async def echo(text: str) -> str:
        return text

    @server.tool
    async def stream(ctx: agentsocket.Context, n: int = CHUNKS) -> int:
        for i in range(n):
            await ctx.stream("tok ")
        return n

    lst = await server.start("127.0.0.1", 0)
    print(json.dumps({"url": lst.url}), flush=True)
    await asyncio.Future()


def mcp_server() -> Any:
    from mcp.server.mcpserver import Context, MCPServer

    mcp = MCPServer("bench")

    @mcp.tool()
    def echo(text: str) -> str:
        return text

    @mcp.tool()
    async def stream(ctx: Context, n: int = CHUNKS) -> int:
        for i in range(n):
            await ctx.report_progress(i + 1, n, "tok ")
        return n

    return mcp


async def serve_mcp_http() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(json.dumps({"url": f"http://127.0.0.1:{port}/mcp"}), flush=True)
    await mcp_server().run_streamable_http_async(host="127.0.0.1", port=port)


def serve_mcp_stdio() -> None:
    asyncio.run(mcp_server().run_stdio_async())


# ── clients ─────────────────────────────────────────────────────────────────


async def start(*cmd: str) -> tuple[asyncio.subprocess.Process, str]:
    p = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    line = await asyncio.wait_for(p.stdout.readline(), 30)
    info = json.loads(line)
    return p, info["url"]


async def stop(p: asyncio.subprocess.Process) -> None:
    if p.returncode is None:
        p.terminate()
        try:
            await asyncio.wait_for(p.wait(), 10)
        except asyncio.TimeoutError:
            p.kill()


TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def with_cpu(server_pid: int, n: int, run: Awaitable[float]) -> tuple[float, float]:
    """``run``'s result and the CPU µs per call that the client (this process) and the
    server spent together over its ``n`` calls and warm-up: unlike wall time, CPU time is
    not inflated by waiting for a core on a loaded machine."""
    c0, s0 = time.process_time(), proc_cpu(server_pid)
    r = await run
    calls = n + max(2, n // 10)
    return r, (time.process_time() - c0 + proc_cpu(server_pid) - s0) / calls * 1e6


async def timed(n: int, one: Callable[[], Awaitable[Any]]) -> float:
    """Median microseconds of one call over ``n`` calls after ``n // 10`` warm-up calls (the
    median, not the mean: on a loaded machine a few calls wait milliseconds for a core)."""
    for _ in range(max(2, n // 10)):
        await one()
    ts = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        await one()
        ts.append(clock() - t)
    return statistics.median(ts) * 1e6


async def rt_floor(url: str, n: int) -> float:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, ping_interval=None) as ws:
        msg = TEXT.encode()

        async def one() -> None:
            await ws.send(msg)
            await ws.recv()

        return await timed(n, one)


async def rt_asp(url: str, n: int) -> float:
    import agentsocket

    async with await agentsocket.connect(url) as c:

        async def one() -> None:
            await c.call("echo", {"text": TEXT})

        return await timed(n, one)


async def stream_asp(url: str, n: int) -> float:
    import agentsocket

    async with await agentsocket.connect(url) as c:

        async def one() -> None:
            call = c.invoke("stream", {"n": CHUNKS})
            k = 0
            async for _ in call:
                k += 1
            assert k == CHUNKS and (await call.result()).value == CHUNKS

        return await timed(n, one)


async def mcp_session(kind: str, url: str) -> Any:
    from contextlib import AsyncExitStack

    from mcp import ClientSession

    stack = AsyncExitStack()
    if kind == "http":
        from mcp.client.streamable_http import streamable_http_client

        streams = await stack.enter_async_context(streamable_http_client(url))
    else:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=sys.executable, args=[str(HERE), "serve-mcp-stdio"])
        streams = await stack.enter_async_context(stdio_client(params))
    session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
    await session.initialize()
    return stack, session


async def rt_mcp(kind: str, url: str, n: int) -> float:
    stack, s = await mcp_session(kind, url)
    try:

        async def one() -> None:
            r = await s.call_tool("echo", {"text": TEXT})
            assert not r.is_error if hasattr(r, "is_error") else True

        return await timed(n, one)
    finally:
        await stack.aclose()


async def stream_mcp(kind: str, url: str, n: int) -> float:
    stack, s = await mcp_session(kind, url)
    try:

        async def one() -> None:
            got = 0

            async def progress(p: float, total: float | None, message: str | None) -> None:
                nonlocal got
                got += 1

            await s.call_tool("stream", {"n": CHUNKS}, progress_callback=progress)
            assert got == CHUNKS, got

        return await timed(n, one)
    finally:
        await stack.aclose()


async def asp_bench(asp_bin: str, url: str, n: int) -> float:
    """Round trips per second that `asp bench` measures against ``url`` (16 in flight)."""
    p = await asyncio.create_subprocess_exec(
        asp_bin, "--json", "bench", url, "-n", str(n), "-c", "16", "--tool", "echo",
        "--args", json.dumps({"text": TEXT}), "--no-progress",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(err.decode())
    return float(json.loads(out.decode().splitlines()[-1])["throughput_per_s"])


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"


def ratio(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a/b, with their range."""
    r = [x / y for x, y in zip(a, b)]
    return f"{statistics.median(r):.2f}× ({min(r):.2f}–{max(r):.2f})"


async def main(args: argparse.Namespace) -> None:
    py = sys.executable
    procs: list[asyncio.subprocess.Process] = []

    async def srv(*cmd: str) -> str:
        p, url = await start(*cmd)
        procs.append(p)
        return url

    def pid(url: str) -> int:
        return procs[urls.index(url)].pid

    urls: list[str] = []

    try:
        echo_url = await srv(py, str(HERE), "serve-echo")
        asp_url = await srv(py, str(HERE), "serve-asp")
        urls += [echo_url, asp_url]
        rust_p = await asyncio.create_subprocess_exec(
            args.asp_bin, "--json", "serve", "--addr", "127.0.0.1:0", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        procs.append(rust_p)
        assert rust_p.stdout is not None
        rust_url = json.loads(await rust_p.stdout.readline())["url"]
        mcp_url = await srv(py, str(HERE), "serve-mcp-http")
        await asyncio.sleep(1.0)  # uvicorn binds after printing the port; no signal to wait on

        rows: dict[str, list[float]] = {k: [] for k in ["floor", "asp_py", "asp_rust", "mcp_http", "mcp_stdio", "st_asp", "st_mcp_http", "st_mcp_stdio", "tp_py", "tp_rust", "cpu_floor", "cpu_asp_py"]}
        n = args.calls
        for r in range(args.rounds):
            for key, url, fn in (("floor", echo_url, rt_floor), ("asp_py", asp_url, rt_asp)):
                wall, cpu = await with_cpu(pid(url), n, fn(url, n))
                rows[key].append(wall)
                rows["cpu_" + key].append(cpu)
            rows["asp_rust"].append(await rt_asp(rust_url, n))
            rows["mcp_http"].append(await rt_mcp("http", mcp_url, max(50, n // 10)))
            rows["mcp_stdio"].append(await rt_mcp("stdio", "", max(50, n // 10)))
            rows["st_asp"].append(await stream_asp(asp_url, 20))
            rows["st_mcp_http"].append(await stream_mcp("http", mcp_url, 3))
            rows["st_mcp_stdio"].append(await stream_mcp("stdio", "", 3))
            rows["tp_py"].append(await asp_bench(args.asp_bin, asp_url, args.bench_calls))
            rows["tp_rust"].append(await asp_bench(args.asp_bin, rust_url, args.bench_calls))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for p in procs:
            await stop(p)

    f = rows
    print(f"\nPython {sys.version.split()[0]}, {args.rounds} rounds; median (min–max). The machine was shared and loaded.\n")
    print("| round trip, 64-byte echo, one call at a time | µs per call (median) | vs the websockets floor |")
    print("|---|---|---|")
    print(f"| floor: plain `websockets` client ↔ `websockets` echo server | {med(f['floor'])} | 1× |")
    print(f"| agentsocket client ↔ agentsocket Python server | {med(f['asp_py'])} | {ratio(f['asp_py'], f['floor'])} |")
    print(f"| agentsocket client ↔ Rust `asp serve` | {med(f['asp_rust'])} | {ratio(f['asp_rust'], f['floor'])} |")
    print(f"| MCP Python SDK, Streamable HTTP (MCPServer under uvicorn) | {med(f['mcp_http'])} | {ratio(f['mcp_http'], f['floor'])} |")
    print(f"| MCP Python SDK, stdio | {med(f['mcp_stdio'])} | {ratio(f['mcp_stdio'], f['floor'])} |")
    print()
    print("| CPU per round trip, client + server processes | µs per call (median) | vs the websockets floor |")
    print("|---|---|---|")
    print(f"| floor: `websockets` client + `websockets` echo server | {med(f['cpu_floor'])} | 1× |")
    print(f"| agentsocket client + agentsocket Python server | {med(f['cpu_asp_py'])} | {ratio(f['cpu_asp_py'], f['cpu_floor'])} |")
    print()
    print("| ASP (Python ↔ Python) faster than | × |")
    print("|---|---|")
    print(f"| MCP Streamable HTTP, round trip | {ratio(f['mcp_http'], f['asp_py'])} |")
    print(f"| MCP stdio, round trip | {ratio(f['mcp_stdio'], f['asp_py'])} |")
    print(f"| MCP Streamable HTTP, 1,000 progress notifications vs 1,000 STREAM chunks | {ratio(f['st_mcp_http'], f['st_asp'])} |")
    print(f"| MCP stdio, 1,000 progress notifications vs 1,000 STREAM chunks | {ratio(f['st_mcp_stdio'], f['st_asp'])} |")
    print()
    print("| 1,000 chunks then the result | µs per call (median) |")
    print("|---|---|")
    print(f"| ASP STREAM, Python ↔ Python | {med(f['st_asp'])} |")
    print(f"| MCP progress notifications, Streamable HTTP | {med(f['st_mcp_http'])} |")
    print(f"| MCP progress notifications, stdio | {med(f['st_mcp_stdio'])} |")
    print()
    print(f"| `asp bench -c 16 -n {args.bench_calls}` (64-byte echo) | calls/s | vs the Rust server |")
    print("|---|---|---|")
    print(f"| Python server (agentsocket) | {med(f['tp_py'])} | {ratio(f['tp_py'], f['tp_rust'])} |")
    print(f"| Rust server (`asp serve`) | {med(f['tp_rust'])} | 1× |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("serve-"):
        mode = sys.argv[1]
        if mode == "serve-mcp-stdio":
            serve_mcp_stdio()
        else:
            asyncio.run({"serve-echo": serve_echo, "serve-asp": serve_asp, "serve-mcp-http": serve_mcp_http}[mode]())
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--bench-calls", type=int, default=5000)
    ap.add_argument("--asp-bin", default=os.environ.get("ASP_BIN", str(REPO / "target" / "release" / "asp")))
    asyncio.run(main(ap.parse_args()))
