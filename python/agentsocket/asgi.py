"""ASP as an ASGI app: mount ``server.asgi_app()`` in Starlette or FastAPI, run under uvicorn.

```python
app = Starlette(routes=[Mount("/v1/agent-socket", app=server.asgi_app())])
```
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

from .server import SUBPROTOCOL, AuthRequest, Server, _bearer, _Session

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class AspAsgi:
    """An ASGI 3 application serving one :class:`Server` on WebSocket connections."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif m["type"] == "lifespan.shutdown":
                    await self.server.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http":
            # SPEC §2.1: an ASP endpoint only upgrades.
            await _http(send, 426, b"the asp-v1 WebSocket subprotocol is required\n", [(b"upgrade", b"websocket")])
            return
        if scope["type"] != "websocket":
            return
        m = await receive()
        if m["type"] != "websocket.connect":
            return
        if SUBPROTOCOL not in scope.get("subprotocols", []):
            await _refuse(scope, send, 426, b"the asp-v1 subprotocol is required\n")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        ok, who = await self.server._authorize(
            AuthRequest(_bearer(headers.get("authorization")), headers, scope.get("path", ""), tuple(client) if client else None)
        )
        if not ok:
            await _refuse(scope, send, 401, b"unauthorized\n")
            return
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        session = _Session(self.server, who)
        await session.serve_transport(_AsgiTransport(send), _messages(receive))


async def _messages(receive: Receive) -> AsyncIterator[bytes | str]:
    while True:
        m = await receive()
        t = m["type"]
        if t == "websocket.receive":
            b = m.get("bytes")
            if b is not None:
                yield b
            else:
                yield m.get("text") or ""
        elif t == "websocket.disconnect":
            return


class _AsgiTransport:
    __slots__ = ("_send", "_closed")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._closed = False

    def try_send(self, data: bytes) -> bool:
        return False  # an ASGI send is a coroutine of the server's

    async def send(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int) -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code})


async def _http(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(scope: Scope, send: Send, status: int, body: bytes) -> None:
    # With the ASGI "websocket.http.response" extension the refusal is a real HTTP status
    # (401, 426); without it, closing before accept is an HTTP 403.
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
