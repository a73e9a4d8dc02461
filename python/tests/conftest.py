"""Shared fixtures: the Rust `asp` binary, a Rust server, a Python server with test tools.

Binaries are found through environment variables that `.ci/run` sets (`ASP_BIN`,
`CONFORMANCE_BIN`), defaulting to the workspace's `target/{release,debug}` builds. A missing
binary fails the tests that need it (it is never a silent skip).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import AsyncIterator

import pytest

import agentsocket as asp

REPO = Path(__file__).resolve().parents[2]


def find_bin(env: str, name: str) -> str:
    p = os.environ.get(env)
    if p:
        return p
    for profile in ("debug", "release"):
        cand = REPO / "target" / profile / name
        if cand.exists():
            return str(cand)
    pytest.fail(f"{name} not found: build it (see .ci/run) or set {env}")


@pytest.fixture(scope="session")
def asp_bin() -> str:
    return find_bin("ASP_BIN", "asp")


class Proc:
    """A child process whose stdout lines are read as they come (bounded waits)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"process ended: {err.decode(errors='replace')}")
        return raw.decode()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def spawn(*args: str) -> Proc:
    p = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    return Proc(p)


async def run(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


@pytest.fixture
async def rust_server(asp_bin: str) -> AsyncIterator[str]:
    """`asp serve` (the demo agent) on a free port; yields its URL."""
    p = await spawn(asp_bin, "--json", "serve", "--addr", "127.0.0.1:0", "--token-delay-ms", "0")
    try:
        info = json.loads(await p.line())
        assert info["type"] == "listening", info
        yield info["url"]
    finally:
        await p.stop()


def make_server(**kw: object) -> asp.Server:
    """A Python server with the tools the tests use."""
    server = asp.Server(**kw)  # type: ignore[arg-type]

    @server.tool
    async def echo(text: str) -> str:
        """Returns its argument."""
        return text

    @server.tool
    async def tokens(ctx: asp.Context, n: int = 3, size: int = 0) -> dict:
        """Streams `n` text chunks (of `size` bytes if given)."""
        for i in range(n):
            await ctx.stream("x" * size if size else f"t{i} ")
        return {"sent": n}

    @server.tool
    async def blob(ctx: asp.Context, bytes: int = 1 << 20, chunk: int = 16 << 10) -> dict:
        """Streams binary data, byte i is i mod 256."""
        pattern = bytes_pattern(chunk + 256)
        sent = 0
        while sent < bytes:
            n = min(chunk, bytes - sent)
            start = sent % 256
            await ctx.stream(pattern[start : start + n])
            sent += n
        return {"bytes": sent}

    @server.tool
    async def wait(ctx: asp.Context) -> str:
        """Waits until interrupted."""
        await ctx.stream("waiting")
        await asyncio.Future()
        return "never"

    @server.tool
    async def ask(ctx: asp.Context, question: str = "ok?") -> object:
        """Asks the client and returns the answer."""
        return await ctx.ask({"question": question}, kind="confirm")

    @server.tool
    async def fail(code: int = asp.ErrorCode.TOOL_FAILED, retryable: bool = False) -> None:
        """Fails with ERROR `code`."""
        raise asp.ToolError("asked to fail", code=code, retryable=retryable)

    @server.tool
    async def crash() -> None:
        """Raises an ordinary exception."""
        raise RuntimeError("boom")

    return server


def bytes_pattern(n: int) -> bytes:
    return bytes(i % 256 for i in range(n))


@pytest.fixture
async def py_server() -> AsyncIterator[tuple[asp.Server, asp.Listening]]:
    server = make_server()
    listening = await server.start("127.0.0.1", 0)
    try:
        yield server, listening
    finally:
        await listening.close(timeout=1)
