"""The Sans-IO binding itself: two `Connection`s wired back to back on injected time (the
quinn-proto `Pair` recipe), with no sockets and no sleeping."""

from __future__ import annotations

from typing import Any

import pytest

import agentsocket as asp


class Pair:
    def __init__(self, client_cfg: dict[str, Any] | None = None, server_cfg: dict[str, Any] | None = None) -> None:
        self.now = 0.0
        self.c = asp.Connection("client", 0.0, client_cfg)
        self.s = asp.Connection("server", 0.0, {"connection_id": "c9", **(server_cfg or {})})
        self.c_events: list[tuple[Any, ...]] = []
        self.s_events: list[tuple[Any, ...]] = []
        self.c_deadline: float | None = None
        self.s_deadline: float | None = None
        self.wire: list[bytes] = []
        self.apply("c", self.c.poll())

    def apply(self, side: str, batch: tuple[list[Any], list[bytes], float | None]) -> None:
        events, out, deadline = batch
        (self.c_events if side == "c" else self.s_events).extend(events)
        peer = self.s if side == "c" else self.c
        for m in out:
            self.wire.append(m)
            self.apply("s" if side == "c" else "c", peer.receive_message(self.now, m))
        if side == "c":
            self.c_deadline = deadline
        else:
            self.s_deadline = deadline

    def advance(self, to: float) -> None:
        self.now = to
        self.apply("c", self.c.timeout(to))
        self.apply("s", self.s.timeout(to))


def tags(events: list[tuple[Any, ...]]) -> list[str]:
    return [e[0] for e in events]


def test_handshake_invoke_stream_complete() -> None:
    p = Pair()  # replaced below: a tool must be in the registry before the client's HELLO
    s = asp.Connection("server", 0.0, {"connection_id": "c9"})
    s.add_tool("echo", "returns its arguments", {"type": "object"})
    p.s = s
    p.c = asp.Connection("client", 0.0)
    p.c_events.clear()
    p.s_events.clear()
    p.apply("c", p.c.poll())
    assert tags(p.s_events) == ["connected"]
    assert "connected" in tags(p.c_events)
    assert p.c.tools == [{"name": "echo", "description": "returns its arguments", "input_schema": {"type": "object"}, "annotations": None}]
    session = p.c.session
    assert session is not None and session["connection_id"] == "c9" and session["version"] == 1

    id = p.c.invoke("echo", {"t": "hi"})
    p.apply("c", p.c.poll())
    inv = p.s_events[-1]
    assert inv[:4] == ("invoked", id, "echo", {"t": "hi"})
    for i, part in enumerate(["a", b"\x00\x01", "c"]):
        assert p.s.stream(id, part)
    p.s.complete(id, "ok", {"n": 3}, {"output_tokens": 3})
    p.apply("s", p.s.poll())
    chunks = [e for e in p.c_events if e[0] == "chunk"]
    assert [(c[2], c[3], c[4]) for c in chunks] == [("a", 0, False), (b"\x00\x01", 1, False), ("c", 2, False)]
    assert p.c_events[-1] == ("ended", id, ("complete", "ok", {"n": 3}, {"output_tokens": 3}))
    assert p.c.in_flight == 0 and p.s.in_flight == 0


def test_deadline_on_injected_time() -> None:
    p = Pair(server_cfg={"check_tools": False})
    id = p.c.invoke("slow", None, 100)
    p.apply("c", p.c.poll())
    assert p.s_events[-1][0] == "invoked"
    assert p.s_deadline is not None and p.s_deadline == pytest.approx(0.1)
    p.advance(0.099)
    assert p.s_events[-1][0] == "invoked"
    p.advance(0.1)
    code, _, retryable = p.s_events[-1][2]
    assert p.s_events[-1][0] == "aborted" and code == asp.ErrorCode.DEADLINE_EXCEEDED and retryable
    assert p.c_events[-1][0] == "ended" and p.c_events[-1][2][0] == "error"
    with pytest.raises(asp.LocalError) as e:
        p.s.complete(id)
    assert e.value.args[0] == "not_in_flight"


def test_heartbeat_timeout_on_injected_time() -> None:
    p = Pair({"heartbeat_ms": 1000}, {"heartbeat_ms": 1000})
    assert "connected" in tags(p.s_events)
    # Only the server's timers run (the client went silent): PING at 1 s, dead at 3 s.
    s = p.s
    events, out, deadline = s.timeout(1.0)
    assert out and out[0][0] == 0x18  # PING
    events, out, deadline = s.timeout(3.0)
    assert events[-1][0] == "closed" and events[-1][1][:2] == ("error_sent", asp.ErrorCode.HEARTBEAT_TIMEOUT)
    assert s.is_closed and s.state == "Closed"


def test_byte_stream_binding_one_byte_at_a_time() -> None:
    c = asp.Connection("client", 0.0)
    s = asp.Connection("server", 0.0, {"connection_id": "c1", "check_tools": False})
    hello = b"".join(c.poll()[1])
    events: list[Any] = []
    for i in range(len(hello)):
        ev, out, _ = s.receive_bytes(0.0, hello[i : i + 1])
        events += ev
    assert tags(events) == ["connected"]


def test_local_misuse_and_peer_violations() -> None:
    c = asp.Connection("client", 0.0)
    with pytest.raises(asp.LocalError) as e:
        c.invoke("echo")
    assert e.value.args[0] == "not_open"
    with pytest.raises(asp.LocalError) as e:
        c.complete(1)
    assert e.value.args[0] == "wrong_role"
    s = asp.Connection("server", 0.0, {"connection_id": "c1"})
    events, out, _ = s.receive_message(0.0, b"\x12\x00\x00\x01\x00\x00\x00\x01\xc1")
    # SPEC §3.7: a frame error during the handshake is a connection error.
    assert events[-1][0] == "closed" and events[-1][1][:2] == ("error_sent", asp.ErrorCode.MALFORMED_PAYLOAD)
    assert out and out[0][0] == 0x17  # ERROR
    with pytest.raises(ValueError):
        asp.Connection("client", 0.0, {"max_inflite": 3})
    with pytest.raises(TypeError):
        asp.Connection("client", 0.0, {"max_inflight": "many"})


def test_raw_values_pass_through() -> None:
    c = asp.Connection("client", 0.0)
    s = asp.Connection("server", 0.0, {"connection_id": "c1", "check_tools": False, "raw_values": True})
    out = c.poll()[1]
    for m in out:
        _, back, _ = s.receive_message(0.0, m)
        for b in back:
            c.receive_message(0.0, b)
    c.invoke("x", asp.Raw(b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00"))  # 1.5 as a float 64
    events, _, _ = s.receive_message(0.0, c.poll()[1][0])
    assert events[-1][3] == asp.Raw(b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00")
