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
#: Most bytes joined into one WebSocket message (several whole frames): SPEC §2.1 stops
#: coalescing at 64 KiB, so a message stays within `65 536 + 8 + max_frame_payload`.
MAX_MESSAGE = 64 << 10
#: SPEC §13 default of `max_frame_payload`.
DEFAULT_MAX_FRAME_PAYLOAD = 1 << 20


def max_incoming_message(config: dict[str, Any]) -> int:
    """Largest WebSocket message read from a peer, as the Rust servers do (SPEC §2.1):
    ``65 536 + 2 × (8 + max_frame_payload)``. Senders keep messages within ``65 536 + 8 +
    max_frame_payload``; the rest is room for a frame somewhat above the limit to still be
    skipped with FRAME_TOO_LARGE (§3.6). websockets assembles a message in memory before the
    core sees a byte of it, so this is what bounds the input one connection can make us
    buffer; a longer message closes the connection (1009)."""
    mfp = config.get("max_frame_payload") or DEFAULT_MAX_FRAME_PAYLOAD
    return (64 << 10) + 2 * (8 + int(mfp))

#: WebSocket close codes of SPEC §2.1.
CLOSE_NORMAL = 1000


class _Resume:
    """Awaitable that continues a coroutine already stepped once outside any task.

    ``start_inline`` runs a coroutine's first step at once, in the caller (most tool calls
    and socket writes finish there, without a task or a trip through the event loop); if it
    suspends, the task that awaits this object takes over: it waits on what the coroutine
    yielded (an asyncio future) and forwards results, exceptions and cancellation to it."""

    __slots__ = ("coro", "pending", "started")

    def __init__(self, coro: Any, pending: Any) -> None:
        self.coro = coro
        self.pending = pending
        self.started = False

    def cancel_before_start(self) -> bool:
        """Throws CancelledError into the coroutine now, for a task that has not taken over
        yet (cancelling such a task would close it without the coroutine ever seeing the
        cancellation). True if the coroutine finished."""
        try:
            self.pending = self.coro.throw(asyncio.CancelledError())
        except BaseException:  # StopIteration, or what it raised: it is done either way
            return True
        return False

    def __await__(self) -> Any:
        self.started = True
        coro, pending = self.coro, self.pending
        while True:
            try:
                sent = yield pending
            except BaseException as e:  # noqa: BLE001 - forwarded to the coroutine
                try:
                    pending = coro.throw(e)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def start_inline(coro: Any) -> tuple[bool, Any]:
    """Steps ``coro`` once. ``(True, value)`` if it finished (an exception propagates);
    ``(False, awaitable)`` to finish it in a task otherwise."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _Resume(coro, pending)


async def finish(rest: Any) -> Any:
    """A coroutine (for ``create_task``) that finishes what ``start_inline`` began."""
    return await rest


class Transport(Protocol):
    """What the driver needs of a message transport."""

    def try_send(self, data: bytes) -> bool:
        """Sends one message now if that cannot wait (no coroutine); False to use ``send``."""
        ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int) -> None: ...


def _set_reading(t: Any, on: bool) -> None:
    # A transport that can stop reading its socket (`_fastws`); for others (ASGI) the
    # reader loop stops pulling messages (`input_ready`).
    f = getattr(t, "set_reading", None)
    if f is not None:
        f(on)


Event = tuple[Any, ...]


class Driver:
    """Owns one ``_core.Connection`` and, at a time, at most one transport."""

    def __init__(self, conn: _core.Connection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._transport: Transport | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self._pumping = False
        self._flush_handle: asyncio.Handle | None = None
        self._close_code = CLOSE_NORMAL
        #: Input paused because the core's transmit queue is full (SPEC §13.1,
        #: `wants_input`): messages the transport had already read wait in `_held`, in order.
        self.input_paused = False
        self._held: deque[bytes | str] = deque()
        self._held_bytes = 0
        self._releasing = False
        self._input_ready: asyncio.Future[None] | None = None
        #: Set once the connection is closed and its last bytes were written.
        self.closed = asyncio.Event()

    # ── inputs ──────────────────────────────────────────────────────────────

    def feed(self, data: bytes | str) -> None:
        """One WebSocket message from the transport."""
        if self.input_paused or self._held:
            # Read before the transport paused (the rest of one socket read): kept in order
            # until the core wants input again.
            self._held.append(data)
            self._held_bytes += len(data)
            return
        self._feed(data)

    def _feed(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.pump(self.conn.receive_text(self.loop.time()))
        else:
            self.pump(self.conn.receive_message(self.loop.time(), data))

    @property
    def held_bytes(self) -> int:
        """Bytes this driver holds for the connection outside the core: messages read but
        not yet given to the core (input paused), and messages taken from the core but not
        yet handed to the transport."""
        return self._held_bytes + self._out_bytes

    async def input_ready(self) -> None:
        """Returns when the core wants input (at once unless input is paused)."""
        while self.input_paused:
            if self._input_ready is None:
                self._input_ready = self.loop.create_future()
            await asyncio.shield(self._input_ready)

    def _check_input(self) -> None:
        # SPEC §13.1: a server stops reading while its transmit queue is full, so that a peer
        # that does not read what it asks for meets TCP backpressure, not a growing queue.
        if self.input_paused:
            if self.conn.wants_input:
                self.input_paused = False
                self._release_held()
        elif not self.conn.wants_input:
            self.input_paused = True
            _set_reading(self._transport, False)

    def _release_held(self) -> None:
        if self._releasing:
            return  # the outer call goes on
        self._releasing = True
        try:
            while self._held and not self.input_paused:
                data = self._held.popleft()
                self._held_bytes -= len(data)
                self._feed(data)
        finally:
            self._releasing = False
        if not self.input_paused:
            _set_reading(self._transport, True)
            w = self._input_ready
            if w is not None:
                self._input_ready = None
                if not w.done():
                    w.set_result(None)

    def transport_lost(self) -> None:
        """The transport ended: stop writing to it and tell the core."""
        self._detach_transport()
        self.pump(self.conn.transport_closed(self.loop.time()))

    def kick(self) -> None:
        """A command queued output: collect it soon (commands issued in the same loop
        iteration share one batch and one WebSocket message). Inside ``pump`` the batch loop
        collects it before it returns, with no callback scheduled."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if not self._pumping:
                self._flush_handle = self.loop.call_soon(self._flush)

    def flush_now(self) -> None:
        """Collect a command's output and write it at once (one exchange's start or end: no
        later command in this iteration to share a message with, and latency matters)."""
        if self._pumping:
            self.kick()
        else:
            self.pump(self.conn.poll())

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flush_handle = None
        self.pump(self.conn.poll())

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.pump(self.conn.timeout(self.loop.time()))

    # ── the loop body ───────────────────────────────────────────────────────

    def pump(self, batch: tuple[list[Event], list[bytes], float | None]) -> None:
        """Apply one batch: events to the application, messages to the transport, the timer."""
        self._pumping = True
        try:
            self._pump(batch)
        finally:
            self._pumping = False
        self._send_now()
        if self.input_paused or self._out_bytes:
            # Only a full transmit queue pauses input, and it fills only while the transport
            # is behind: an idle driver skips the check.
            self._check_input()

    def _pump(self, batch: tuple[list[Event], list[bytes], float | None]) -> None:
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
            if deadline is not None:
                self._arm(deadline)
            if not self._flush_scheduled:
                break
            # An event handler issued commands: take their output now, in order.
            self._flush_scheduled = False
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            batch = self.conn.poll()

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
        # The core decides the code (1001 after a timeout, 1008 after FLOOD, …).
        self._close_code = _core.websocket_close_code(kind, code)
        if self._transport is None:
            self.closed.set()
        # Otherwise `_send_now` writes what is left, closes the transport, then sets `closed`.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None

    # ── transport ───────────────────────────────────────────────────────────

    def attach(self, transport: Transport) -> None:
        """Start writing to ``transport`` (a new connection, or the next one after a resume)."""
        self._detach_transport()
        self._transport = transport
        self._send_now()

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
        # Input read from that transport is moot too; the next one starts reading.
        self._held.clear()
        self._held_bytes = 0
        if self.input_paused:
            self.input_paused = False
            w, self._input_ready = self._input_ready, None
            if w is not None and not w.done():
                w.set_result(None)
        if self.conn.is_closed:
            self.closed.set()

    def _take(self) -> bytes:
        out = self._out
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
        return data

    def _send_now(self) -> None:
        """Writes what is queued, in the caller while the transport takes it at once; a
        write that must wait (socket buffer full) continues in a writer task, and later
        messages queue behind it."""
        t = self._transport
        if t is None or self._writer is not None:
            return
        try:
            while self._out:
                data = self._take()
                if t.try_send(data):
                    self._sent()
                    continue
                done, rest = start_inline(t.send(data))
                if not done:
                    self._writer = self.loop.create_task(self._write_rest(t, rest))
                    return
                self._sent()
            if self.conn.is_closed:
                self._writer = self.loop.create_task(self._close_transport(t))
        except Exception as e:  # the transport failed; its reader sees it end too
            log.debug("agentsocket: send failed: %r", e)
            self._out.clear()
            self._out_bytes = 0
            if self.conn.is_closed:
                self.closed.set()

    def _sent(self) -> None:
        if self.conn.hold_transmit and self._out_bytes < HIGH_WATER // 2:
            self.conn.hold_transmit = False
            self.kick()  # take more from the core

    async def _write_rest(self, t: Transport, pending: Any) -> None:
        try:
            await pending
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("agentsocket: send failed: %r", e)
            if self.conn.is_closed:
                self.closed.set()
            return
        self._writer = None
        self._sent()
        self._send_now()

    async def _close_transport(self, t: Transport) -> None:
        try:
            await t.close(self._close_code)
        except Exception as e:
            log.debug("agentsocket: close failed: %r", e)
        finally:
            self.closed.set()


def call_later_safe(fn: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run ``fn()`` as a task whose exception is logged, not lost."""
    task = asyncio.get_running_loop().create_task(fn())

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("agentsocket: background task failed", exc_info=t.exception())

    task.add_done_callback(done)
    return task
