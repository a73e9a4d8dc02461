"""Agent Socket Protocol (ASP) for Python.

The protocol runs in the Rust Sans-IO core ``asp-proto`` (``agentsocket._core``); this
package moves its bytes over asyncio and ``websockets`` and gives it a Python API:

- :func:`connect` → :class:`Client`: ``client.tools``, ``client.invoke(tool, args)`` →
  :class:`Call` (``async for chunk in call``, ``await call.result()``, ``call.interrupt()``),
  server questions, tool-change notifications, reconnect with resume;
- :class:`Server`: ``@server.tool`` on ``async def`` functions, ``ctx.stream``, ``ctx.ask``,
  tools added and removed at run time, an auth hook, ``await server.serve(host, port)`` or
  ``server.asgi_app()`` for Starlette/FastAPI under uvicorn;
- :class:`Connection` (from the core) for driving ASP from any other event loop.
"""

from ._core import Connection, Raw, packb, unpackb
from .client import Call, Client, Result, ServerQuestion, ToolChange, ToolInfo, connect
from .errors import AspError, ConnectionLost, Declined, ErrorCode, LocalError, ToolError
from .server import AuthRequest, Context, Listening, Server

__all__ = [
    "AspError",
    "AuthRequest",
    "Call",
    "Client",
    "Connection",
    "ConnectionLost",
    "Context",
    "Declined",
    "ErrorCode",
    "Listening",
    "LocalError",
    "Raw",
    "Result",
    "Server",
    "ServerQuestion",
    "ToolChange",
    "ToolError",
    "ToolInfo",
    "connect",
    "packb",
    "unpackb",
]

__version__ = "0.1.0"
