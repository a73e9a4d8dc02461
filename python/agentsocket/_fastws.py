"""``websockets`` connections with two shortcuts for the driver.

Receiving: each whole binary message goes to the driver from ``data_received``, in the
transport callback, instead of queueing it for a reader task: one event-loop trip less per
message. Anything else — control frames, and fragmented messages, after which the fast path
stays off so that messages keep their order — takes websockets' normal path (``recv``).

Sending: ``try_send`` writes a message at once, without the coroutine and async context
manager of ``send()``, whenever ``send()`` would not wait either (connection open, no
fragmented message being sent, transport not above its write limit); otherwise the driver
falls back to ``send()``. Both shortcuts are what make a round trip cost about as much as a
plain ``websockets`` echo loop.

Reading can be paused (``pause_input``): the driver does so while the core's transmit queue
is full (SPEC §13.1), so that a peer that does not read what it asked for meets TCP
backpressure. Messages of data already read in that moment are held, in order, and handed
over on ``resume_input``; they are bounded by one read of the transport."""

from __future__ import annotations

import logging
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.frames import Opcode
from websockets.protocol import State

OP_BINARY, OP_CONT, OP_TEXT = Opcode.BINARY, Opcode.CONT, Opcode.TEXT
OPEN = State.OPEN

log = logging.getLogger("agentsocket")

Sink = Callable[[Any], None]


def _process(conn: Any, event: Any, default: Callable[[Any], None]) -> None:
    sink = conn.asp_sink
    op = getattr(event, "opcode", None)
    if sink is not None and op in (OP_BINARY, OP_TEXT):
        if event.fin:
            data = event.data
            if op is OP_TEXT:
                data = bytes(data).decode("utf-8", "replace")
            elif not isinstance(data, bytes):
                data = bytes(data)
            try:
                sink(data)
            except Exception:  # the driver's bug must not kill the transport callback
                log.exception("agentsocket: error feeding a message")
            return
        conn.asp_sink = None  # a fragmented message: keep order through recv() from now on
    elif op is OP_CONT:
        conn.asp_sink = None
    default(event)


#: The websockets internals `try_send` uses exist (else every message takes `send()`).
_FAST_SEND = all(hasattr(c, a) for c in (ClientConnection, ServerConnection) for a in ("send_data", "set_connection_exc"))


def _try_send(conn: Any, data: bytes) -> bool:
    # The conditions under which `send()` neither waits nor fails (websockets 14–17:
    # `send` → `send_context` → `protocol.send_binary`, `send_data`, `drain`). The driver
    # never sends fragmented messages, but the attribute that says one is being sent was
    # renamed across versions.
    if (
        not _FAST_SEND
        or conn.protocol.state is not OPEN
        or getattr(conn, "paused", True)
        or getattr(conn, "send_in_progress", None) is not None
        or getattr(conn, "fragmented_send_waiter", None) is not None
    ):
        return False
    conn.protocol.send_binary(data)
    try:
        conn.send_data()
    except Exception as exc:  # as `send_context` does: the connection is broken
        conn.set_connection_exc(exc)
        conn.transport.abort()
        raise
    return True


def _connection_made(conn: Any) -> None:
    # websockets' message assembler pauses and resumes the transport by itself (its queue
    # bound); both it and the driver must agree before reading resumes.
    conn.asp_reading = True
    asm = conn.recv_messages
    asm.pause = asm.resume = lambda: _sync_reading(conn)


def _sync_reading(conn: Any) -> None:
    t = conn.transport
    if conn.asp_reading and not getattr(conn.recv_messages, "paused", False):
        t.resume_reading()  # both are no-ops when already so, or closing
    else:
        t.pause_reading()


def _set_reading(conn: Any, on: bool) -> None:
    conn.asp_reading = on
    _sync_reading(conn)


class _Fast:
    """The driver's shortcuts, mixed into websockets' client and server connections (first
    in the bases, so that ``super()`` reaches websockets' own methods)."""

    asp_sink: Sink | None = None
    asp_reading = True

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _connection_made(self)

    def set_reading(self, on: bool) -> None:
        """Pauses (False) or resumes (True) reading from the socket, for the driver."""
        _set_reading(self, on)

    def process_event(self, event: Any) -> None:
        _process(self, event, super().process_event)

    def try_send(self, data: bytes) -> bool:
        """Sends ``data`` as one binary message now if that cannot wait; else False."""
        return _try_send(self, data)


class FastClientConnection(_Fast, ClientConnection):
    pass


class FastServerConnection(_Fast, ServerConnection):
    pass
