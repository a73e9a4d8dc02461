"""The bridge's third-party peer: an MCP server written with the official Python SDK
(`mcp` 2.x, whose `MCPServer` is the former FastMCP), with the same tools as the rmcp
fixture (`fixture/main.rs`). stdio by default; `--http` serves Streamable HTTP on a free
loopback port and prints its URL first.
"""

from __future__ import annotations

import os
import socket
import sys

import anyio
from pydantic import BaseModel

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult

server = MCPServer("python-fixture")

MODERN = "2026-07-28"
state = {"cancelled": 0, "extra": False}
cancel_seen: list[anyio.Event] = []


def is_modern(ctx: Context) -> bool:
    return (ctx.protocol_version or "") >= MODERN


@server.tool(description="echoes its text")
def echo(text: str) -> str:
    return text


class Sum(BaseModel):
    sum: float


@server.tool(description="adds two numbers")
def add(a: float, b: float) -> Sum:
    return Sum(sum=a + b)


@server.tool(description="a tiny PNG")
def image() -> Image:
    return Image(data=b"\x89PNG\r\n\x1a\n\x00\xff", format="png")


@server.tool(description="n progress notifications")
async def progress(n: int, ctx: Context) -> str:
    for i in range(n):
        await ctx.report_progress(i + 1, n, f"chunk {i}")
    return "done"


@server.tool(description="waits ms")
async def slow(ms: int, ctx: Context) -> str:
    await ctx.report_progress(0, None, "started")
    try:
        await anyio.sleep(ms / 1000)
    except anyio.get_cancelled_exc_class():
        state["cancelled"] += 1
        for e in cancel_seen:
            e.set()
        raise
    return "slept"


@server.tool(description="how many calls were cancelled (waits for at_least)")
async def cancelled(at_least: int = 0) -> str:
    with anyio.move_on_after(10):
        while state["cancelled"] < at_least:
            e = anyio.Event()
            cancel_seen.append(e)
            await e.wait()
            cancel_seen.remove(e)
    return str(state["cancelled"])


class Name(BaseModel):
    name: str


@server.tool(description="asks for a name")
async def ask(ctx: Context) -> str | InputRequiredResult:
    if is_modern(ctx):
        answer = (ctx.input_responses or {}).get("name")
        if answer is None:
            schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
            return InputRequiredResult(
                input_requests={
                    "name": ElicitRequest(
                        params=ElicitRequestFormParams(message="your name?", requested_schema=schema)
                    )
                }
            )
        data = answer if isinstance(answer, dict) else answer.model_dump()
        if data.get("action") == "accept":
            return f"hello {data['content']['name']}"
        return f"no name ({data.get('action')})"
    r = await ctx.elicit("your name?", Name)
    if r.action == "accept":
        return f"hello {r.data.name}"
    return f"no name ({r.action})"


@server.tool(description="fails as a tool")
def fail() -> str:
    raise ToolError("it failed")


@server.tool(description="fails as a protocol error")
def boom() -> str:
    raise MCPError(code=-32603, message="boom")


def extra() -> str:
    return "extra"


@server.tool(description="adds or removes `extra`")
async def toggle(ctx: Context) -> str:
    if state["extra"]:
        server.remove_tool("extra")
    else:
        server.add_tool(extra, name="extra", description="appears after toggle")
    state["extra"] = not state["extra"]
    await ctx.notify_tools_changed()
    if not is_modern(ctx):
        try:
            await ctx.session.send_tool_list_changed()
        except Exception:  # noqa: BLE001 - no back channel on this session
            pass
    return "added" if state["extra"] else "removed"


@server.tool(description="exits the process")
def crash() -> str:
    os._exit(3)


def main() -> None:
    if "--http" in sys.argv:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts
        port = sock.getsockname()[1]
        print(f"http://127.0.0.1:{port}/mcp", flush=True)
        app = server.streamable_http_app()
        config = uvicorn.Config(app, log_level="warning")
        anyio.run(uvicorn.Server(config).serve, [sock])
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
