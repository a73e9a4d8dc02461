"""``websockets`` connections that hand each whole binary message to the driver from
``data_received``, in the transport callback, instead of queueing it for a reader task: one
event-loop trip less per message (what makes a round trip cost as much as a plain echo).

Anything else — control frames, and fragmented messages, after which the fast path stays
off so that messages keep their order — takes websockets' normal path (``recv``)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.frames import Opcode

OP_BINARY, OP_CONT, OP_TEXT = Opcode.BINARY, Opcode.CONT, Opcode.TEXT

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


class FastClientConnection(ClientConnection):
    asp_sink: Sink | None = None

    def process_event(self, event: Any) -> None:
        _process(self, event, super().process_event)


class FastServerConnection(ServerConnection):
    asp_sink: Sink | None = None

    def process_event(self, event: Any) -> None:
        _process(self, event, super().process_event)
