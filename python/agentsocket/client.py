"""The asyncio client: ``client = await agentsocket.connect(url)``."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal, Union

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from . import _core
from ._driver import Driver, call_later_safe, max_incoming_message
from ._fastws import FastClientConnection
from .errors import AspError, ConnectionLost, Declined, ErrorCode, LocalError

__all__ = [
    "Call",
    "Client",
    "Result",
    "ServerQuestion",
    "ToolChange",
    "ToolInfo",
    "connect",
]

log = logging.getLogger("agentsocket")

#: The SPEC §2.1 subprotocol and default path.
SUBPROTOCOL = "asp-v1"
DEFAULT_PATH = "/v1/agent-socket"

#: Consumed chunk bytes given back as credit at once (SPEC §7.5); the core batches the
#: CREDIT frames themselves.
RELEASE_BATCH = 16 << 10

Chunk = Union[str, bytes]


@dataclass(frozen=True)
class ToolInfo:
    """A tool the server offers (SPEC §5.5)."""

    name: str
    description: str = ""
    input_schema: Any = None
    annotations: Any = None


@dataclass(frozen=True)
class ToolChange:
    """A change to ``client.tools`` pushed by the server (SPEC §9)."""

    kind: Literal["added", "updated", "removed"]
    name: str
    tool: ToolInfo | None


@dataclass(frozen=True)
class ServerQuestion:
    """A question from the server (REQUEST, SPEC §8)."""

    id: int
    kind: str
    body: Any
    invocation: int | None


@dataclass
class Result:
    """How an invocation completed (COMPLETE, SPEC §5.6)."""

    status: Literal["ok", "cancelled", "failed"]
    value: Any
    metrics: dict[str, int]
    #: Chunks that ``result()`` consumed because nobody iterated the call: at most
    #: ``keep_chunks`` bytes of them (see :meth:`Call.result`).
    chunks: list[Chunk] = field(default_factory=list)
    #: Bytes of chunks ``result()`` consumed beyond ``keep_chunks`` and did not keep.
    dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str:
        """The text chunks ``result()`` consumed, joined."""
        return "".join(c for c in self.chunks if isinstance(c, str))


def _url(url: str) -> str:
    if "://" not in url:
        url = "ws://" + url
    scheme, rest = url.split("://", 1)
    if "/" not in rest:
        url = f"{scheme}://{rest}{DEFAULT_PATH}"
    return url


class Call:
    """One invocation: ``async for chunk in call``, then ``await call.result()``.

    Chunks are ``str`` (text) or ``bytes``. Credit is given back to the server as the
    application consumes them, so a slow consumer slows the tool down instead of growing a
    buffer (SPEC §7.5): the chunks not yet consumed are at most ``initial_window`` bytes.
    """

    def __init__(self, client: Client, id: int, tool: str) -> None:
        self._client = client
        self.id = id
        self.tool = tool
        self._chunks: deque[Chunk] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[Result] = client.loop.create_future()
        self._unreleased = 0
        self._draining = False
        self._drained: list[Chunk] = []
        self._keep = 0  # bytes `result()` may still keep
        self._dropped = 0

    # Called by the client.
    def _chunk(self, data: Chunk) -> None:
        if self._draining:
            n = len(data) if isinstance(data, bytes) else len(data.encode())
            self._drain(data, n)
            self._client._release(self.id, n)
            return
        self._chunks.append(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self, result: Result | BaseException) -> None:
        if self._ended.done():
            return  # (or a caller cancelled its wait)
        if isinstance(result, BaseException):
            self._ended.set_exception(result)
        else:
            self._ended.set_result(result)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                n = len(data) if isinstance(data, bytes) else len(data.encode())
                self._unreleased += n
                if self._unreleased >= RELEASE_BATCH or not self._chunks:
                    self._client._release(self.id, self._unreleased)
                    self._unreleased = 0
                return data
            if self._ended.done():
                raise StopAsyncIteration
            self._waiter = self._client.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _drain(self, data: Chunk, n: int) -> None:
        if n <= self._keep:
            self._keep -= n
            self._drained.append(data)
        else:
            self._keep = 0  # keep a prefix of the stream, not a sample of it
            self._dropped += n

    async def result(self, *, keep_chunks: int | None = None) -> Result:
        """Waits for the end. Returns the COMPLETE; raises :class:`AspError` if the server
        answered ERROR, :class:`ConnectionLost` if the connection closed first.

        Chunks not iterated are consumed (credit is given back, so the tool is not held up):
        the first ``keep_chunks`` bytes of them (default: ``connect(keep_chunks=…)``, 4 MiB)
        are kept in ``Result.chunks`` and the rest only counted in ``Result.dropped``, so
        that a call whose stream nobody reads buffers a bounded amount."""
        if not self._ended.done() and not self._draining:
            self._draining = True
            self._keep = self._client.keep_chunks if keep_chunks is None else keep_chunks
            while self._chunks:
                data = self._chunks.popleft()
                n = len(data) if isinstance(data, bytes) else len(data.encode())
                self._drain(data, n)
                self._unreleased += n
            if self._unreleased:
                self._client._release(self.id, self._unreleased)
                self._unreleased = 0
        # Awaited directly (a shield costs a future and two callbacks per call); cancelling
        # this await cancels only the waiting, `_end` ignores a cancelled future.
        r = await self._ended
        if self._drained:
            r.chunks.extend(self._drained)
            self._drained = []
        if self._dropped:
            r.dropped += self._dropped
            self._dropped = 0
        return r

    def interrupt(self, reason: str | None = None) -> None:
        """Asks the server to stop (INTERRUPT, SPEC §7.3). The call still ends normally,
        usually with status ``cancelled``. Harmless once it has ended."""
        if self._ended.done():
            return
        try:
            self._client.conn.interrupt(self.id, reason)
        except LocalError as e:
            if e.args[0] != "not_in_flight":
                raise
        self._client.kick()

    @property
    def done(self) -> bool:
        return self._ended.done()

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.result().__await__()


QuestionHandler = Callable[[ServerQuestion], Awaitable[Any]]


class Client(Driver):
    """An ASP client connection. Make one with :func:`connect`."""

    def __init__(
        self,
        conn: _core.Connection,
        url: str,
        headers: dict[str, str],
        on_request: QuestionHandler | None,
        on_tool_change: Callable[[ToolChange], Any] | None,
        reconnect: bool,
        open_timeout: float,
        max_message: int,
        keep_chunks: int,
    ) -> None:
        super().__init__(conn)
        self._max_message = max_message
        #: Default bound of the chunks :meth:`Call.result` keeps, in bytes.
        self.keep_chunks = keep_chunks
        self.url = url
        self._headers = headers
        self._on_request = on_request
        self._on_tool_change = on_tool_change
        self._reconnect = reconnect
        self._open_timeout = open_timeout
        self._calls: dict[int, Call] = {}
        self._questions: dict[int, asyncio.Task[None]] = {}
        self.tools: dict[str, ToolInfo] = {}
        self.session: dict[str, Any] | None = None
        self._connected: asyncio.Future[None] = self.loop.create_future()
        self._watchers: list[asyncio.Queue[ToolChange | None]] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self.close_reason: tuple[str, int | None, str | None] | None = None
        #: Times the session continued on a new transport (SPEC §11).
        self.resumes = 0

    # ── API ─────────────────────────────────────────────────────────────────

    def invoke(self, tool: str, args: Any = None, *, deadline_ms: int = 0, meta: Any = None) -> Call:
        """Starts an invocation (INVOKE, SPEC §5.2) and returns its :class:`Call` at once.

        Raises :class:`LocalError` when the SPEC forbids it now (closed, draining, too many in
        flight) and ``TypeError`` for arguments with no MessagePack form."""
        id = self.conn.invoke(tool, args, deadline_ms, meta)
        call = Call(self, id, tool)
        self._calls[id] = call
        self.flush_now()
        return call

    async def call(self, tool: str, args: Any = None, *, deadline_ms: int = 0) -> Any:
        """Invokes and waits: the COMPLETE's result value. A status other than ``ok`` raises
        :class:`AspError` (``TOOL_FAILED``)."""
        r = await self.invoke(tool, args, deadline_ms=deadline_ms).result()
        if r.status != "ok":
            raise AspError(ErrorCode.TOOL_FAILED, f"{tool} completed with status {r.status}")
        return r.value

    async def watch_tools(self) -> AsyncIterator[ToolChange]:
        """Tool-set changes pushed by the server, until the connection closes."""
        q: asyncio.Queue[ToolChange | None] = asyncio.Queue(maxsize=1024)
        self._watchers.append(q)
        try:
            while True:
                c = await q.get()
                if c is None:
                    return
                yield c
        finally:
            self._watchers.remove(q)

    async def close(self) -> None:
        """Closes at once: calls in flight end with :class:`ConnectionLost`."""
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if not self.conn.is_closed:
            self.conn.close()
            self.kick()
        try:
            await asyncio.wait_for(self.closed.wait(), 5)
        except asyncio.TimeoutError:
            pass
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def goaway(self, reason: str | None = None, timeout: float = 30.0) -> None:
        """Graceful close (GOAWAY, SPEC §6.5): waits until calls in flight have ended."""
        self.conn.goaway(self.loop.time(), reason, int(timeout * 1000))
        self.kick()
        await self.closed.wait()

    @property
    def connection_id(self) -> str | None:
        return self.session["connection_id"] if self.session else None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ── internals ───────────────────────────────────────────────────────────

    def _release(self, id: int, n: int) -> None:
        self.conn.release(id, n)
        self.kick()

    async def _open(self) -> None:
        ws = await ws_connect(
            self.url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=self._headers,
            compression=None,
            ping_interval=None,  # heartbeats are ASP frames, run by the core (SPEC §6.7)
            max_size=self._max_message,  # the core bounds frames (§3.6), this messages
            open_timeout=self._open_timeout,
            create_connection=FastClientConnection,
        )
        if ws.subprotocol != SUBPROTOCOL:
            await ws.close()
            raise ConnectionError(f"server did not select the {SUBPROTOCOL} subprotocol (SPEC §2.1)")
        assert isinstance(ws, FastClientConnection)
        self._ws = ws
        self.attach(ws)  # it has the driver's `Transport` methods
        ws.asp_sink = self.feed  # messages from now on arrive in data_received
        self._reader = self.loop.create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for msg in ws:
                self.feed(msg)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # a broken transport is a closed transport
            log.debug("agentsocket: read failed: %r", e)
        finally:
            ws.asp_sink = None  # type: ignore[attr-defined]
            if self._ws is ws:
                self._ws = None
                self.transport_lost()

    async def _resume_loop(self) -> None:
        delay = 0.02
        while not self.conn.is_closed and self.conn.state == "Detached":
            try:
                await self._open()
            except Exception as e:
                log.debug("agentsocket: reconnect failed: %r", e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                self.conn.resume(self.loop.time())
            except LocalError:
                return
            self.kick()
            return

    def on_event(self, ev: tuple[Any, ...]) -> None:
        tag = ev[0]
        if tag == "chunk":
            call = self._calls.get(ev[1])
            if call is not None:
                call._chunk(ev[2])
        elif tag == "ended":
            call = self._calls.pop(ev[1], None)
            if call is not None:
                call._end(_outcome(ev[2]))
        elif tag == "aborted":
            # A question the protocol ended (its ERROR, a deadline): stop its handler.
            task = self._questions.get(ev[1])
            if task is not None:
                task.cancel()
        elif tag == "connected":
            self.session = ev[1]
            self.tools = {t["name"]: _tool(t) for t in self.conn.tools}
            if not self._connected.done():
                self._connected.set_result(None)
        elif tag in ("tool_added", "tool_updated"):
            t = _tool(ev[1])
            self.tools[t.name] = t
            self._tool_change(ToolChange("added" if tag == "tool_added" else "updated", t.name, t))
        elif tag == "tool_removed":
            self.tools.pop(ev[1], None)
            self._tool_change(ToolChange("removed", ev[1], None))
        elif tag == "requested":
            q = ServerQuestion(ev[1], ev[2], ev[3], ev[4])
            self._questions[q.id] = call_later_safe(lambda: self._answer(q))
        elif tag == "interrupted":
            # The server withdrew a question (SPEC §8): stop the handler; it replies
            # `cancelled`.
            task = self._questions.get(ev[1])
            if task is not None:
                task.cancel()
        elif tag == "detached":
            if self._reconnect:
                self._reconnecting = call_later_safe(self._resume_loop)
        elif tag == "resumed":
            self.resumes += 1
        elif tag == "closed":
            self.close_reason = ev[1]
            self._closed_all(ev[1])
        # goaway, peer_error, violation, writable: nothing to do (the core acts on them).

    def _tool_change(self, c: ToolChange) -> None:
        if self.session is None:
            return  # the initial tool set (SPEC §6.2), not a change
        if self._on_tool_change is not None:
            try:
                r = self._on_tool_change(c)
                if asyncio.iscoroutine(r):
                    call_later_safe(lambda: r)
            except Exception:
                log.exception("agentsocket: on_tool_change failed")
        for q in self._watchers:
            if not q.full():
                q.put_nowait(c)

    async def _answer(self, q: ServerQuestion) -> None:
        try:
            try:
                assert self._on_request is not None
                body = await self._on_request(q)
                self.conn.reply(q.id, "answered", body)
            except Declined as d:
                self.conn.reply(q.id, "declined", d.body)
            except asyncio.CancelledError:
                self.conn.reply(q.id, "cancelled", None)
            except AspError as e:
                self.conn.fail(q.id, e.code or ErrorCode.INTERNAL, e.message, e.retryable)
            except Exception as e:
                log.exception("agentsocket: question handler failed")
                self.conn.fail(q.id, ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
        except LocalError:
            pass  # the question ended meanwhile (withdrawn, connection closed)
        finally:
            self._questions.pop(q.id, None)
            self.kick()

    def _closed_all(self, reason: tuple[str, int | None, str | None]) -> None:
        self.note_close(reason)
        err = ConnectionLost(*reason)
        for call in list(self._calls.values()):
            call._end(err)
        self._calls.clear()
        for task in self._questions.values():
            task.cancel()
        for q in self._watchers:
            # The end must reach every watcher, or its `async for` never stops: a full queue
            # (a watcher too slow for the bound) loses its oldest change instead.
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
        if not self._connected.done():
            self._connected.set_exception(err)


def _tool(t: dict[str, Any]) -> ToolInfo:
    return ToolInfo(t["name"], t["description"], t["input_schema"], t["annotations"])


def _outcome(o: tuple[Any, ...]) -> Result | BaseException:
    kind = o[0]
    if kind == "complete":
        return Result(o[1], o[2], o[3])
    if kind == "error":
        code, message, retryable = o[1]
        return AspError(code, message, retryable)
    if kind == "lost":
        return ConnectionLost(*o[1])
    return AspError(ErrorCode.PROTOCOL_VIOLATION, f"unexpected outcome {kind}")


async def connect(
    url: str,
    *,
    token: str | None = None,
    on_request: QuestionHandler | None = None,
    on_tool_change: Callable[[ToolChange], Any] | None = None,
    resume: bool = True,
    reconnect: bool = True,
    headers: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    open_timeout: float = 10.0,
    keep_chunks: int = 4 << 20,
) -> Client:
    """Connects to an ASP server and completes the handshake (SPEC §6.2).

    - ``url``: ``ws://host:port/path`` (``host:port`` alone means the default path
      ``/v1/agent-socket``);
    - ``token``: sent as ``Authorization: Bearer …`` on the upgrade (SPEC §13.1);
    - ``on_request``: ``async def (ServerQuestion) -> answer`` for server questions (SPEC §8);
      without one the client does not offer the ``requests`` capability;
    - ``on_tool_change``: called with each :class:`ToolChange` (or use ``watch_tools()``);
    - ``resume``/``reconnect``: offer session resume and, when the transport drops, reconnect
      and resume: calls in flight continue (SPEC §11);
    - ``config``: core settings by their SPEC names (``max_inflight``, ``initial_window``,
      ``heartbeat_ms``…);
    - ``keep_chunks``: how many bytes of a call's unread chunks ``result()`` keeps in
      ``Result.chunks`` (the rest are consumed and counted in ``Result.dropped``).

    What a client buffers is bounded: unread chunks by each call's window
    (``initial_window``, SPEC §7.5), calls by the server's ``max_inflight``, a received
    WebSocket message by ``65 536 + 2 × (8 + max_frame_payload)`` bytes (SPEC §2.1).
    """
    cfg: dict[str, Any] = {"requests": on_request is not None, "resume": resume, "auto_credit": False}
    cfg.update(config or {})
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    loop = asyncio.get_running_loop()
    conn = _core.Connection("client", loop.time(), cfg)
    client = Client(
        conn, _url(url), hdrs, on_request, on_tool_change, reconnect, open_timeout, max_incoming_message(cfg), keep_chunks
    )
    await client._open()
    client.kick()
    try:
        await asyncio.wait_for(asyncio.shield(client._connected), open_timeout + 1)
    except BaseException:
        await client.close()
        raise
    return client
