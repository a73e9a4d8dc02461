"""The ASGI app mounted in Starlette, under a real uvicorn."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute

import agentsocket as asp
from conftest import make_server


@pytest.fixture
async def uvicorn_app() -> AsyncIterator[tuple[asp.Server, str]]:
    """A Starlette service with an ordinary HTTP route and ASP mounted beside it."""
    server = make_server(auth=lambda req: req.token != "bad")

    async def health(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    asgi = server.asgi_app()
    app = Starlette(
        routes=[
            Route("/health", health),
            WebSocketRoute("/v1/agent-socket", asgi),  # the SPEC's default path
            Mount("/mounted", app=asgi),  # or mounted under a prefix
        ]
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio", lifespan="on")
    uv = uvicorn.Server(config)
    task = asyncio.ensure_future(uv.serve())
    while not uv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # uvicorn offers no startup signal to await
    port = uv.servers[0].sockets[0].getsockname()[1]
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_asgi_under_uvicorn(uvicorn_app) -> None:
    server, hostport = uvicorn_app
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{hostport}/health")).text == "ok"
        r = await http.get(f"http://{hostport}/mounted/")
        assert r.status_code == 426  # SPEC §2.1: the endpoint only upgrades
    async with await asp.connect(hostport) as c:
        assert await c.call("echo", {"text": "through uvicorn"}) == "through uvicorn"
        call = c.invoke("tokens", {"n": 100})
        assert [x async for x in call] == [f"t{i} " for i in range(100)]
        call = c.invoke("blob", {"bytes": 2 << 20})
        n = 0
        async for ch in call:
            n += len(ch)
        assert n == 2 << 20

        async def answer(q: asp.ServerQuestion) -> object:
            return 42

    async with await asp.connect(f"ws://{hostport}/mounted/", on_request=answer) as c:
        assert await c.call("ask") == 42
        call = c.invoke("wait")
        await call.__aiter__().__anext__()
        call.interrupt()
        assert (await call.result()).status == "cancelled"


async def test_asgi_refusals(uvicorn_app) -> None:
    _, hostport = uvicorn_app
    with pytest.raises(websockets.InvalidStatus) as e:
        await asp.connect(hostport, token="bad")
    assert e.value.response.status_code in (401, 403)
    with pytest.raises(websockets.InvalidStatus) as e:
        async with websockets.connect(f"ws://{hostport}/v1/agent-socket"):
            pass
    assert e.value.response.status_code in (426, 403)


async def test_asgi_resume_and_tool_push(uvicorn_app) -> None:
    server, hostport = uvicorn_app
    # A small window keeps most of the stream unsent when the connection is cut.
    async with await asp.connect(hostport, config={"initial_window": 16 << 10}) as c:
        watch = c.watch_tools().__aiter__()

        async def late() -> str:
            return "late"

        server.add_tool(late)
        assert (await asyncio.wait_for(watch.__anext__(), 5)).name == "late"
        assert await c.call("late") == "late"
        call = c.invoke("tokens", {"n": 2000, "size": 50})
        got = 0
        async for ch in call:
            got += 1
            if got == 300:
                assert c._ws is not None
                c._ws.transport.abort()
        assert got == 2000 and c.resumes == 1
        server.remove_tool("late")
