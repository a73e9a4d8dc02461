"""The asyncio server: tools from ``async def`` functions, served over ``websockets`` or
mounted as an ASGI app (``server.asgi_app()``)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import logging
import secrets
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Mapping, TypeVar, Union, overload

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from . import _core
from ._driver import Driver, Transport, finish, max_incoming_message, start_inline
from ._fastws import FastServerConnection
from ._schema import Signature
from .errors import AspError, ConnectionLost, Declined, ErrorCode, LocalError, ToolError

__all__ = ["AuthRequest", "Context", "Listening", "Server"]

log = logging.getLogger("agentsocket")

SUBPROTOCOL = "asp-v1"
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class AuthRequest:
    """What the auth hook sees of an upgrade request (SPEC §13.1)."""

    #: The bearer token of ``Authorization: Bearer …``, if any.
    token: str | None
    headers: Mapping[str, str]
    path: str
    remote: tuple[str, int] | None = None


#: ``auth(request) -> bool | identity`` (sync or async). Falsy refuses with HTTP 401; any other
#: value is accepted and kept as ``ctx.auth``.
AuthHook = Callable[[AuthRequest], Union[Any, Awaitable[Any]]]


@dataclass
class _Tool:
    name: str
    fn: Callable[..., Awaitable[Any]]
    description: str
    sig: Signature
    input_schema: Any
    annotations: Any
    whole_args: bool = False


class Context:
    """What a running tool can do besides returning: stream, ask, notice an interrupt."""

    def __init__(self, session: _Session, id: int, tool: str, deadline_ms: int, meta: Any) -> None:
        self._s = session
        #: The invocation id (SPEC §3.5).
        self.id = id
        #: The tool's name.
        self.tool = tool
        #: INVOKE ``deadline_ms`` (0: none); the core enforces it (SPEC §7.4).
        self.deadline_ms = deadline_ms
        #: INVOKE ``meta``.
        self.meta = meta
        #: Set when the client sent INTERRUPT (SPEC §7.3); the tool's task is cancelled too.
        self.interrupted = False
        #: Token metrics reported in COMPLETE (``input_tokens``, ``output_tokens``).
        self.metrics: dict[str, int] = {}
        self._ended = False
        self._started = False
        self._rest: Any = None
        self._writable: asyncio.Future[None] | None = None

    @property
    def connection_id(self) -> str:
        return self._s.connection_id

    @property
    def auth(self) -> Any:
        """What the server's auth hook returned for this connection."""
        return self._s.auth

    async def stream(self, data: str | bytes, *, final: bool = False) -> None:
        """Sends a chunk (STREAM, SPEC §5.3): ``str`` as text, ``bytes`` as binary. Waits while
        the client's window or the send queue is full (flow control, SPEC §7.5); a chunk
        larger than the client accepts is split. Raises ``asyncio.CancelledError`` once the
        invocation has ended (interrupted, deadline, connection closed)."""
        limit = self._s.conn.chunk_cap  # SPEC §7.5, decided by the core
        if isinstance(data, str):
            if len(data) * 4 > limit and len(data.encode()) > limit:
                step = max(1, limit // 4)
                parts: list[str | bytes] = [data[i : i + step] for i in range(0, len(data), step)]
                for p in parts[:-1]:
                    await self._send(p, False)
                data = parts[-1]
        elif len(data) > limit:
            for i in range(0, len(data) - limit, limit):
                await self._send(data[i : i + limit], False)
            data = data[(len(data) - 1) // limit * limit :]
        await self._send(data, final)

    async def _send(self, data: str | bytes, final: bool) -> None:
        s = self._s
        while True:
            if self._ended:
                raise asyncio.CancelledError("the invocation has ended")
            try:
                ok = s.conn.stream(self.id, data, final)
            except LocalError as e:
                if e.args[0] in ("not_in_flight", "closed"):
                    self._ended = True
                    raise asyncio.CancelledError("the invocation has ended") from None
                raise
            if ok:
                s.kick()
                return
            self._writable = s.loop.create_future()
            s.kick()
            try:
                await self._writable
            finally:
                self._writable = None

    async def ask(self, body: Any = None, *, kind: str = "question") -> Any:
        """Asks the client (REQUEST, SPEC §8) and returns its answer. Raises
        :class:`Declined` if the user declined, :class:`AspError` if the client refused (e.g.
        UNSUPPORTED when it takes no questions)."""
        s = self._s
        try:
            rid = s.conn.request(kind, body, self.id)
        except LocalError as e:
            if e.args[0] == "unsupported":
                raise AspError(ErrorCode.UNSUPPORTED, "the client takes no questions (no `requests` capability)") from None
            raise
        fut: asyncio.Future[tuple[Any, ...]] = s.loop.create_future()
        s.requests[rid] = fut
        s.kick()
        try:
            outcome = await fut
        except asyncio.CancelledError:
            # Our invocation was interrupted while asking: withdraw the question (§7.3).
            try:
                s.conn.interrupt(rid, "invocation ended")
                s.kick()
            except LocalError:
                pass
            raise
        finally:
            s.requests.pop(rid, None)
        kind_ = outcome[0]
        if kind_ == "reply":
            status, answer = outcome[1], outcome[2]
            if status == "answered":
                return answer
            if status == "declined":
                raise Declined(answer)
            raise asyncio.CancelledError("the question was cancelled")
        if kind_ == "error":
            raise AspError(*outcome[1])
        raise ConnectionLost(*outcome[1])


class _Session(Driver):
    """One server-side connection (a session that may outlive its transport, SPEC §11)."""

    def __init__(self, server: Server, auth: Any) -> None:
        cid = secrets.token_hex(8)
        cfg = dict(server.config)
        cfg["connection_id"] = cid
        if server.resume:
            cfg["resume"] = True
            cfg["resume_token"] = secrets.token_bytes(32)  # SPEC §13.1: secure random
        super().__init__(_core.Connection("server", asyncio.get_running_loop().time(), cfg))
        self.server = server
        self.auth = auth
        self.connection_id = cid
        self.tasks: dict[int, tuple[asyncio.Task[None], Context]] = {}
        self.requests: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        self.resumed_into: _Session | None = None
        #: Times this session continued on a new transport (SPEC §11).
        self.resumes = 0
        for t in server._tools.values():
            self.conn.add_tool(t.name, t.description, t.input_schema, t.annotations)

    def on_event(self, ev: tuple[Any, ...]) -> None:
        tag = ev[0]
        if tag == "writable":
            entry = self.tasks.get(ev[1])
            if entry is not None:
                w = entry[1]._writable
                if w is not None and not w.done():
                    w.set_result(None)
        elif tag == "invoked":
            self._start(ev[1], ev[2], ev[3], ev[4], ev[5])
        elif tag == "ended":
            fut = self.requests.get(ev[1])
            if fut is not None and not fut.done():
                fut.set_result(ev[2])
        elif tag == "interrupted":
            entry = self.tasks.get(ev[1])
            if entry is not None:
                entry[1].interrupted = True
                _cancel(entry)
        elif tag == "aborted":
            entry = self.tasks.get(ev[1])
            if entry is not None:
                entry[1]._ended = True
                _cancel(entry)
        elif tag == "connected":
            self.server.sessions.add(self)
        elif tag == "resume_requested":
            self.server._resume(self, ev[1], ev[2])
        elif tag == "detached":
            tok = self.conn.resume_token
            if tok is not None:
                self.server._detached[_key(tok)] = self
        elif tag == "resumed":
            self.resumes += 1
        elif tag == "closed":
            self.note_close(ev[1])
            self.server.sessions.discard(self)
            tok = self.conn.resume_token
            if tok is not None:
                self.server._detached.pop(_key(tok), None)
            for entry in list(self.tasks.values()):
                entry[1]._ended = True
                _cancel(entry)
            for fut in self.requests.values():
                if not fut.done():
                    fut.set_result(("lost", ev[1]))

    def _start(self, id: int, name: str, args: Any, deadline_ms: int, meta: Any) -> None:
        tool = self.server._tools.get(name)
        if tool is None:  # removed since the client saw it; the core checked the registry
            self._fail(id, ErrorCode.UNKNOWN_TOOL, f"no tool named {name}")
            return
        try:
            if tool.whole_args:
                kwargs = {next(iter(tool.sig.params)): args} if tool.sig.params else {}
            else:
                kwargs = tool.sig.bind(args)
        except ValueError as e:
            self._fail(id, ErrorCode.INVALID_ARGUMENTS, str(e))
            return
        ctx = Context(self, id, name, deadline_ms, meta)
        if tool.sig.context_param is not None:
            kwargs = dict(kwargs)
            kwargs[tool.sig.context_param] = ctx
        # The tool's first step runs here, in the reader: a tool that answers without waiting
        # needs no task (and its COMPLETE leaves with this batch). One that waits continues
        # in a task.
        done, rest = start_inline(self._run(tool, ctx, kwargs))
        if not done:
            task = self.loop.create_task(finish(rest))
            self.tasks[id] = (task, ctx)
            ctx._rest = rest

    async def _run(self, tool: _Tool, ctx: Context, kwargs: dict[str, Any]) -> None:
        started = time.perf_counter()
        id = ctx.id
        ctx._started = True
        try:
            try:
                if ctx._ended:
                    return
                if ctx.interrupted:
                    # Interrupted before it ran (INVOKE and INTERRUPT in one message).
                    raise asyncio.CancelledError
                value = await tool.fn(**kwargs)
            except asyncio.CancelledError:
                if ctx.interrupted and not ctx._ended:
                    self.conn.complete(id, "cancelled", None, _metrics(ctx, started))
                return
            except ToolError as e:
                self._fail(id, e.code or ErrorCode.TOOL_FAILED, e.message, e.retryable)
                return
            except AspError as e:
                # e.g. a question the client refused: the tool failed.
                self._fail(id, ErrorCode.TOOL_FAILED, str(e))
                return
            except Exception as e:
                log.exception("agentsocket: tool %s raised", tool.name)
                self._fail(id, ErrorCode.TOOL_FAILED, f"{type(e).__name__}: {e}")
                return
            if ctx._ended:
                return
            status = "cancelled" if ctx.interrupted else "ok"
            try:
                self.conn.complete(id, status, value, _metrics(ctx, started))
            except (TypeError, ValueError) as e:
                self._fail(id, ErrorCode.INTERNAL, f"result cannot be sent: {e}")
            except LocalError as e:
                if e.args[0] == "too_large":
                    self._fail(id, ErrorCode.INTERNAL, f"result too large: {e.args[1]}")
                elif e.args[0] not in ("not_in_flight", "closed"):
                    raise
        except LocalError as e:
            if e.args[0] not in ("not_in_flight", "closed"):
                log.error("agentsocket: %s", e)
        finally:
            self.tasks.pop(id, None)
            self.kick()

    def _fail(self, id: int, code: int, message: str, retryable: bool | None = None) -> None:
        try:
            self.conn.fail(id, code, message[:1024], retryable)
        except LocalError:
            pass
        self.kick()

    async def serve_transport(self, transport: Transport, messages: Any, fast: Any = None) -> None:
        """Runs this session over one transport: ``messages`` is an async iterator of
        received messages (bytes or str) that ends when the transport does. ``fast``, a
        :mod:`._fastws` connection, may deliver messages from its transport callback too."""
        feeder = _Feeder(self)
        self.attach(transport)
        self.kick()
        if fast is not None:
            fast.asp_sink = feeder.feed
        try:
            async for msg in messages:
                feeder.feed(msg)
                if feeder.session.input_paused:
                    # SPEC §13.1: pull nothing more from the transport while the core's
                    # transmit queue is full; the transport's own bound then stops it reading.
                    await feeder.session.input_ready()
        except Exception as e:
            log.debug("agentsocket: transport read failed: %r", e)
        finally:
            if fast is not None:
                fast.asp_sink = None
            feeder.session.transport_lost()


class _Feeder:
    """Which session a transport's messages go to: its own, or after a RESUME the earlier
    session it now carries (SPEC §11.2)."""

    __slots__ = ("session",)

    def __init__(self, session: _Session) -> None:
        self.session = session

    def feed(self, msg: bytes | str) -> None:
        s = self.session
        s.feed(msg)
        if s.resumed_into is not None:
            self.session = s.resumed_into


def _cancel(entry: tuple[asyncio.Task[None], Context]) -> None:
    task, ctx = entry
    rest = ctx._rest
    if rest is not None and not rest.started:
        # The task has not taken over from the tool's inline first step yet; cancelling it
        # would drop the tool without it ever seeing the cancellation (no COMPLETE).
        if rest.cancel_before_start():
            task.cancel()
    else:
        task.cancel()


def _metrics(ctx: Context, started: float) -> dict[str, int]:
    m = {"wall_us": int((time.perf_counter() - started) * 1e6)}
    m.update(ctx.metrics)
    return m


def _key(token: bytes) -> bytes:
    # Looked up by a hash of the token, then compared in constant time (SPEC §13.1).
    return hashlib.sha256(token).digest()


class Listening:
    """A running websockets server (``await server.start(host, port)``)."""

    def __init__(self, server: Server, ws_server: Any) -> None:
        self._server = server
        self._ws = ws_server
        sock = next(iter(ws_server.sockets))
        self.host, self.port = sock.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self._server.path or '/v1/agent-socket'}"

    async def close(self, timeout: float = 5.0) -> None:
        """Graceful shutdown: GOAWAY to every client, wait up to ``timeout`` for calls in
        flight, then close."""
        self._ws.close(close_connections=False)
        await self._server.shutdown(timeout)
        self._ws.close()
        await self._ws.wait_closed()

    async def __aenter__(self) -> Listening:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Server:
    """An ASP server.

    ``@server.tool`` turns an ``async def`` into a tool: its name, docstring and type hints
    give the TOOL_DEF (SPEC §5.5) and check the INVOKE's arguments. A parameter annotated
    :class:`Context` (or named ``ctx``) receives the invocation's context. Tools can be added
    and removed while clients are connected; they are told at once (SPEC §9).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        auth: AuthHook | None = None,
        resume: bool = True,
        path: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        """- ``token``: require ``Authorization: Bearer <token>`` on the upgrade;
        - ``auth``: a hook deciding each upgrade (see :class:`AuthRequest`);
        - ``resume``: offer session resume (SPEC §11);
        - ``path``: serve only this path (default: any);
        - ``config``: core settings by their SPEC names (``max_inflight``, ``heartbeat_ms``…).
        """
        self._tools: dict[str, _Tool] = {}
        self.token = token
        self.auth = auth
        self.resume = resume
        self.path = path
        self.config: dict[str, Any] = dict(config or {})
        self.sessions: set[_Session] = set()
        self._detached: dict[bytes, _Session] = {}

    # ── tools ───────────────────────────────────────────────────────────────

    @overload
    def tool(self, fn: F) -> F: ...

    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: Any = None,
        annotations: Any = None,
        whole_args: bool = False,
    ) -> Callable[[F], F]: ...

    def tool(
        self,
        fn: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: Any = None,
        annotations: Any = None,
        whole_args: bool = False,
    ) -> Any:
        """Decorator: registers an ``async def`` as a tool (arguments as for :meth:`add_tool`)."""

        def register(f: F) -> F:
            self.add_tool(
                f,
                name=name,
                description=description,
                input_schema=input_schema,
                annotations=annotations,
                whole_args=whole_args,
            )
            return f

        return register(fn) if fn is not None else register

    def add_tool(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: Any = None,
        annotations: Any = None,
        whole_args: bool = False,
    ) -> None:
        """Adds (or replaces) a tool; connected clients get TOOL_DEF at once (SPEC §9).

        ``name`` defaults to the function's, ``description`` to its docstring,
        ``input_schema`` to the JSON Schema of its type hints. With ``whole_args`` the
        function's one parameter (besides the context) receives the INVOKE ``args`` value as
        sent, whatever its type, instead of one keyword argument per map entry.
        """
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("a tool is an async def function")
        sig = Signature(fn, Context)
        t = _Tool(
            name=name or fn.__name__,
            fn=fn,
            description=description if description is not None else inspect.cleandoc(fn.__doc__ or ""),
            sig=sig,
            input_schema=input_schema if input_schema is not None else sig.schema,
            annotations=annotations,
            whole_args=whole_args,
        )
        if whole_args and input_schema is None:
            t.input_schema = None
        self._tools[t.name] = t
        for s in self._all_sessions():
            try:
                s.conn.add_tool(t.name, t.description, t.input_schema, t.annotations)
                s.kick()
            except LocalError as e:  # e.g. beyond this client's max_tools
                log.warning("agentsocket: tool %s not pushed to %s: %s", t.name, s.connection_id, e)

    def remove_tool(self, name: str) -> bool:
        """Removes a tool; connected clients are told (SPEC §9). Whether it existed."""
        existed = self._tools.pop(name, None) is not None
        for s in self._all_sessions():
            try:
                s.conn.remove_tool(name)
                s.kick()
            except LocalError:
                pass
        return existed

    @property
    def tools(self) -> list[str]:
        return list(self._tools)

    def _all_sessions(self) -> list[_Session]:
        return list(self.sessions | set(self._detached.values()))

    # ── resume (SPEC §11.2) ─────────────────────────────────────────────────

    def _resume(self, new: _Session, token: bytes, received: int) -> None:
        old = self._detached.get(_key(token))
        now = new.loop.time()
        if old is None or old.conn.resume_token is None or not hmac.compare_digest(old.conn.resume_token, token):
            new.conn.reject_resume(now)
            new.kick()
            return
        try:
            old.conn.accept_resume(now, received)
        except LocalError:
            # The replay buffer no longer holds what the client missed: that session is over.
            self._detached.pop(_key(token), None)
            new.conn.reject_resume(now)
            new.kick()
            return
        self._detached.pop(_key(token), None)
        transport = new._transport
        new._detach_transport()
        new.resumed_into = old
        if transport is not None:
            old.attach(transport)
        old.kick()

    # ── auth ────────────────────────────────────────────────────────────────

    async def _authorize(self, req: AuthRequest) -> tuple[bool, Any]:
        if self.token is not None:
            if req.token is None or not hmac.compare_digest(req.token.encode(), self.token.encode()):
                return False, None
        if self.auth is None:
            return True, None
        try:
            r = self.auth(req)
            if inspect.isawaitable(r):
                r = await r
        except Exception:
            log.exception("agentsocket: auth hook failed")
            return False, None
        return bool(r), (None if r is True else r)

    # ── serving ─────────────────────────────────────────────────────────────

    async def start(self, host: str = "127.0.0.1", port: int = 7777) -> Listening:
        """Starts listening (``port=0`` picks a free one) and returns at once."""
        auths: dict[int, Any] = {}

        async def process_request(conn: ServerConnection, request: Any) -> Any:
            path = request.path.split("?", 1)[0]
            if self.path is not None and path != self.path:
                return conn.respond(HTTPStatus.NOT_FOUND, "no ASP endpoint here\n")
            offered = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
            if SUBPROTOCOL not in [p.strip() for p in offered.split(",")]:
                # SPEC §2.1: refuse an upgrade that does not offer asp-v1.
                return conn.respond(HTTPStatus.UPGRADE_REQUIRED, "the asp-v1 subprotocol is required\n")
            ok, who = await self._authorize(
                AuthRequest(_bearer(request.headers.get("Authorization")), request.headers, path, conn.remote_address)
            )
            if not ok:
                return conn.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
            auths[id(conn)] = who
            return None

        async def handler(ws: ServerConnection) -> None:
            session = _Session(self, auths.pop(id(ws), None))
            assert isinstance(ws, FastServerConnection)
            await session.serve_transport(ws, _ws_messages(ws), ws)

        srv = await ws_serve(
            handler,
            host,
            port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            process_request=process_request,
            compression=None,
            ping_interval=None,  # heartbeats are ASP frames, run by the core (SPEC §6.7)
            max_size=max_incoming_message(self.config),  # the core bounds frames (§3.6), this messages
            create_connection=FastServerConnection,
        )
        return Listening(self, srv)

    async def serve(self, host: str = "127.0.0.1", port: int = 7777) -> None:
        """Serves until cancelled, then shuts down gracefully."""
        listening = await self.start(host, port)
        try:
            await asyncio.Future()
        finally:
            await listening.close()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """GOAWAY to every connection (SPEC §6.5); waits until they have drained or
        ``timeout`` passed (then GOING_AWAY closes them)."""
        for s in list(self._detached.values()):
            # No new transport will be accepted: a detached session can never resume.
            s.conn.close()
            s.kick()
        sessions = list(self.sessions)
        for s in sessions:
            s.conn.goaway(s.loop.time(), "server shutting down", int(timeout * 1000))
            s.kick()
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.closed.wait()) for s in sessions], timeout=timeout + 1)

    def asgi_app(self) -> Callable[..., Awaitable[None]]:
        """This server as an ASGI app: mount it in Starlette/FastAPI, run it under uvicorn."""
        from .asgi import AspAsgi

        return AspAsgi(self)


def _bearer(h: str | None) -> str | None:
    if h and h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


async def _ws_messages(ws: ServerConnection) -> Any:
    try:
        async for msg in ws:
            yield msg
    except websockets.ConnectionClosed:
        return

