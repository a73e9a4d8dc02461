"""The conformance live profile (conformance/README.md "Live profile") as a Python server."""

from __future__ import annotations

import asyncio
from typing import Any

import agentsocket as asp


def live_server() -> asp.Server:
    # SPEC §13 defaults, without resume, as the profile asks.
    server = asp.Server(resume=False)

    @server.tool(whole_args=True)
    async def echo(args: Any) -> Any:
        return args

    @server.tool(whole_args=True)
    async def chunks(ctx: asp.Context, args: Any) -> None:
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise asp.ToolError("args must be an array of strings", code=asp.ErrorCode.INVALID_ARGUMENTS)
        for part in args:
            await ctx.stream(part)

    @server.tool
    async def wait() -> None:
        await asyncio.Future()

    @server.tool(whole_args=True)
    async def fail(args: Any) -> None:
        if not isinstance(args, int) or isinstance(args, bool) or not 0 < args < 65536:
            raise asp.ToolError("args must be an error code", code=asp.ErrorCode.INVALID_ARGUMENTS)
        raise asp.ToolError("failed as asked", code=args)

    @server.tool(whole_args=True)
    async def ask(ctx: asp.Context, args: Any) -> Any:
        try:
            return await ctx.ask(args, kind="confirm")
        except asp.Declined as d:
            return d.body
        except asp.AspError as e:
            raise asp.ToolError(f"cannot ask: {e}") from None

    return server
