"""The one driving loop every transport shares (websockets client/server, ASGI).

It does no protocol work: it hands received messages and the time to the core, sends the
messages the core produces, runs the one timer the core asks for, and passes the core's
events to the client or server layer. This is the str0m/h11 loop of the README, in asyncio.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Protocol

from . import _core

log = logging.getLogger("agentsocket")

#: Bytes handed to the transport but not yet written before the driver stops taking more
#: from the core (the core's own queue bound then applies, SPEC §13).
HIGH_WATER = 256 << 10
#: Most bytes joined into one WebSocket message (several whole frames, SPEC §2.1).
MAX_MESSAGE = 256 << 10

#: WebSocket close codes of SPEC §2.1.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
FLOOD = 0x05


class Transport(Protocol):
    """What the driver needs of a message transport."""

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int) -> None: ...


Event = tuple[Any, ...]


class Driver:
    """Owns one ``_core.Connection`` and, at a time, at most one transport."""

    def __init__(self, conn: _core.Connection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._transport: Transport | None = None
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._close_code = CLOSE_NORMAL
        #: Set once the connection is closed and its last bytes were written.
        self.closed = asyncio.Event()

    # ── inputs ──────────────────────────────────────────────────────────────

    def feed(self, data: bytes | str) -> None:
        """One WebSocket message from the transport."""
        if isinstance(data, str):
            self.pump(self.conn.receive_text(self.loop.time()))
        else:
            self.pump(self.conn.receive_message(self.loop.time(), data))

    def transport_lost(self) -> None:
        """The transport ended: stop writing to it and tell the core."""
        self._detach_transport()
        self.pump(self.conn.transport_closed(self.loop.time()))

    def kick(self) -> None:
        """A command queued output: collect it soon (commands issued in the same loop
        iteration share one batch and one WebSocket message)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.pump(self.conn.poll())

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.pump(self.conn.timeout(self.loop.time()))

    # ── the loop body ───────────────────────────────────────────────────────

    def pump(self, batch: tuple[list[Event], list[bytes], float | None]) -> None:
        """Apply one batch: events to the application, messages to the writer, the timer."""
        while True:
            events, out, deadline = batch
            for ev in events:
                try:
                    self.on_event(ev)
                except Exception:  # an application callback's bug must not stop the loop
                    log.exception("agentsocket: error handling event %r", ev[0])
            if out:
                for m in out:
                    self._out.append(m)
                    self._out_bytes += len(m)
                if self._out_bytes >= HIGH_WATER:
                    self.conn.hold_transmit = True
                self._wake.set()
            if deadline is not None:
                self._arm(deadline)
            if not self._flush_scheduled:
                break
            # An event handler issued commands: take their output now, in order.
            self._flush_scheduled = False
            batch = self.conn.poll()
        if self.conn.is_closed and not self._out:
            self._wake.set()  # let the writer close the transport

    def _arm(self, deadline: float) -> None:
        # The core's deadline moves with every frame (heartbeat); a timer that fires early is
        # harmless (`timeout` is safe to call early), so one is replaced only by an earlier one.
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def on_event(self, ev: Event) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def note_close(self, reason: tuple[str, int | None, str | None]) -> None:
        """SPEC §2.1 close code for the WebSocket after the connection closed."""
        kind, code, _ = reason
        if kind == "error_sent":
            self._close_code = CLOSE_POLICY if code == FLOOD else CLOSE_PROTOCOL_ERROR
        if self._transport is None:
            self.closed.set()
        else:
            self._wake.set()  # the writer sends what is left, closes, then sets `closed`
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None

    # ── transport ───────────────────────────────────────────────────────────

    def attach(self, transport: Transport) -> None:
        """Start writing to ``transport`` (a new connection, or the next one after a resume)."""
        self._detach_transport()
        self._transport = transport
        self._writer = self.loop.create_task(self._write_loop(transport))
        if self._out:
            self._wake.set()

    def _detach_transport(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._transport = None
        # Messages the core handed out but we never wrote are in its replay buffer (SPEC
        # §11.1) if the session is resumable, and moot if not.
        self._out.clear()
        self._out_bytes = 0
        self.conn.hold_transmit = False
        if self.conn.is_closed:
            self.closed.set()

    async def _write_loop(self, transport: Transport) -> None:
        out = self._out
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while out:
                    if len(out) == 1 or len(out[0]) >= MAX_MESSAGE:
                        data = out.popleft()
                    else:
                        parts = [out.popleft()]
                        size = len(parts[0])
                        while out and size + len(out[0]) <= MAX_MESSAGE:
                            m = out.popleft()
                            parts.append(m)
                            size += len(m)
                        data = b"".join(parts)
                    self._out_bytes -= len(data)
                    await transport.send(data)
                    if self.conn.hold_transmit and self._out_bytes < HIGH_WATER // 2:
                        self.conn.hold_transmit = False
                        self.pump(self.conn.poll())
                if self.conn.is_closed:
                    await transport.close(self._close_code)
                    self.closed.set()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the transport failed; the reader sees it end too
            log.debug("agentsocket: send failed: %r", e)
            if self.conn.is_closed:
                self.closed.set()


def call_later_safe(fn: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run ``fn()`` as a task whose exception is logged, not lost."""
    task = asyncio.get_running_loop().create_task(fn())

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("agentsocket: background task failed", exc_info=t.exception())

    task.add_done_callback(done)
    return task
