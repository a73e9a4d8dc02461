"""Exceptions. Every error the peer reports carries its SPEC §12.2 code and ``retryable``."""

from __future__ import annotations

from . import _core

__all__ = [
    "AspError",
    "ConnectionLost",
    "Declined",
    "LocalError",
    "ToolError",
    "ErrorCode",
]

#: A command the SPEC forbids right now (our misuse, not the peer's): ``args == (kind, message)``
#: with ``kind`` one of ``not_open``, ``closed``, ``draining``, ``not_in_flight``,
#: ``too_many_inflight``, ``too_large``, ``invalid_field``, ``stream_finished``, ``unsupported``.
LocalError = _core.LocalError


class ErrorCode:
    """The SPEC §12.2 registry as integer constants (``ErrorCode.UNKNOWN_TOOL == 0x20``)."""

    PROTOCOL_VIOLATION = 0x01
    UNSUPPORTED_VERSION = 0x02
    HANDSHAKE_TIMEOUT = 0x03
    HEARTBEAT_TIMEOUT = 0x04
    FLOOD = 0x05
    GOING_AWAY = 0x06
    FRAMING_ERROR = 0x07
    RESUME_FAILED = 0x08
    UNKNOWN_FRAME_TYPE = 0x10
    RESERVED_FLAGS = 0x11
    FRAME_TOO_LARGE = 0x12
    MALFORMED_PAYLOAD = 0x13
    MISSING_FIELD = 0x14
    INVALID_FIELD = 0x15
    INVALID_ID = 0x16
    UNKNOWN_TOOL = 0x20
    DUPLICATE_ID = 0x21
    UNKNOWN_ID = 0x22
    TOO_MANY_INFLIGHT = 0x23
    CHUNK_TOO_LARGE = 0x24
    FLOW_CONTROL = 0x25
    BAD_SEQUENCE = 0x26
    DEADLINE_EXCEEDED = 0x27
    DRAINING = 0x28
    RATE_LIMITED = 0x29
    UNSUPPORTED = 0x2A
    TOO_MANY_TOOLS = 0x30
    TOOL_STATE = 0x31
    INVALID_ARGUMENTS = 0x40
    TOOL_FAILED = 0x41
    INTERNAL = 0x42
    UNAVAILABLE = 0x43
    UPSTREAM_TIMEOUT = 0x44

    @staticmethod
    def name(code: int) -> str | None:
        """The registry name of ``code``, or None for a code SPEC §12.2 does not define."""
        return _core.error_name(code)

    @staticmethod
    def retryable(code: int) -> bool:
        """Whether the registry marks ``code`` retryable."""
        return _core.error_retryable(code)


class AspError(Exception):
    """An ERROR from the peer (or one the protocol raised for an exchange), SPEC §5.7.

    Attributes: ``code`` (SPEC §12.2 number), ``name`` (its registry name, or None for an
    application-defined code), ``message`` and ``retryable``.
    """

    def __init__(self, code: int, message: str | None = None, retryable: bool | None = None):
        self.code = code
        self.name = _core.error_name(code)
        self.message = message or ""
        self.retryable = _core.error_retryable(code) if retryable is None else retryable
        label = self.name or f"0x{code:02x}"
        super().__init__(f"{label} (0x{code:02x}): {self.message}" if self.message else label)


class ConnectionLost(AspError):
    """The connection closed before the exchange ended (``reason``: ``transport_closed``,
    ``error_sent``, ``error_received``, ``local``, ``drained`` or ``overloaded``). Retryable:
    the exchange may never have reached the peer."""

    def __init__(self, reason: str, code: int | None = None, message: str | None = None):
        self.reason = reason
        super().__init__(code or 0, message or f"connection closed ({reason})", retryable=True)
        self.code = code


class ToolError(AspError):
    """Raise from a tool to end its invocation with ERROR ``code`` (default TOOL_FAILED),
    or from a server-question handler to refuse the question with that code."""

    def __init__(
        self,
        message: str = "",
        code: int = ErrorCode.TOOL_FAILED,
        retryable: bool | None = None,
    ):
        super().__init__(code, message, retryable)


class Declined(Exception):
    """Raised by ``ctx.ask`` when the client declined to answer; raise it from a client's
    question handler to decline (REPLY status ``declined``, SPEC §5.10)."""

    def __init__(self, body: object = None):
        self.body = body
        super().__init__("declined")
