"""The conformance session vectors (conformance/vectors/sessions.json, both roles) run in
process against the binding: `agentsocket.Connection` driven step by step on the vectors'
clock, in the WebSocket binding, its frames decoded by `decode_frames` and compared the way
conformance/README.md "Session vectors" says. Vectors listed in conformance/expected-failures.json
are expected to fail (and reported if they pass)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import agentsocket as asp
from agentsocket import _core
from conftest import REPO

VECTORS = json.loads((REPO / "conformance/vectors/sessions.json").read_text())["tests"]
XFAIL = {k for k in json.loads((REPO / "conformance/expected-failures.json").read_text()) if not k.startswith("_")}

UINT_FIELDS = {"deadline_ms", "seq", "op", "status", "frame_type", "invocation", "bytes", "timeout_ms", "received", "heartbeat_ms", "tools"}
DEFAULTS: dict[str, Any] = {"final": False, "retryable": False, "deadline_ms": 0, "timeout_ms": 0, "tools": 0, "description": "", "heartbeat_ms": 30000, "capabilities": []}
LIMIT_DEFAULTS = {"max_frame_payload": 1 << 20, "max_inflight": 128, "max_tools": 256, "max_chunk": 64 << 10, "initial_window": 256 << 10, "replay_buffer": 256 << 10, "resume_window_ms": 30000}
STATUS = {0: "ok", 1: "cancelled", 2: "failed"}
REPLY_STATUS = {0: "answered", 1: "cancelled", 2: "declined"}


def xfailed(vid: str) -> bool:
    return any(vid == k or (k.endswith("*") and vid.startswith(k[:-1])) for k in XFAIL)


def wild(v: Any) -> bool:
    return v == "*"


def uint(v: Any) -> Any:
    return int(v) if isinstance(v, str) and v.isdigit() else v


def code(v: Any) -> Any:
    return _core.ERROR_CODES.get(v, v) if isinstance(v, str) else v


def normalize(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if wild(v):
            out[k] = v
            continue
        if k in UINT_FIELDS:
            v = uint(v)
        if k == "code":
            v = code(v)
        if k == "capabilities" and isinstance(v, list):
            v = sorted(set(v))
        if k == "versions" and isinstance(v, list):
            v = sorted(set(uint(x) for x in v))
        if k in ("limits", "metrics") and isinstance(v, dict):
            n = {}
            for mk, mv in v.items():
                if wild(mv):
                    n[mk] = mv
                    continue
                x = uint(mv)
                if k == "limits" and x == LIMIT_DEFAULTS.get(mk):
                    continue
                n[mk] = x
            if not n:
                continue
            v = n
        if k in DEFAULTS and DEFAULTS[k] == v:
            continue
        out[k] = v
    return out


def value_matches(e: Any, a: Any) -> bool:
    if wild(e):
        return True
    if isinstance(e, dict) and isinstance(a, dict):
        return len(e) == len(a) and all(k in a and value_matches(v, a[k]) for k, v in e.items())
    return bool(e == a)


class Caps(dict):  # "$name" -> id
    pass


def id_matches(e: Any, actual: int, caps: Caps) -> bool:
    if isinstance(e, str) and e.startswith("$"):
        if e in caps:
            return bool(caps[e] == actual)
        caps[e] = actual
        return True
    if e == "*":
        return True
    return bool(uint(e) == actual)


def frame_matches(exp: dict[str, Any], sent: tuple[str, int, dict[str, Any], dict[str, Any]], caps: Caps) -> str | None:
    ty, sid, sfields, raw = sent
    if exp.get("type") != ty:
        return f"expected {exp.get('type')}, got {sent}"
    trial = Caps(caps)
    if not id_matches(exp.get("id"), sid, trial):
        return f"expected {ty} id {exp.get('id')}, got {sent}"
    fields = normalize(exp.get("fields", {}))
    may = normalize(exp.get("may", {}))
    for k, ev in fields.items():
        if k not in sfields or not value_matches(ev, sfields[k]):
            return f"{ty}: field {k}: expected {ev}, got {sent}"
    for k, av in sfields.items():
        if k in fields:
            continue
        if k not in may or not value_matches(may[k], av):
            return f"{ty}: unexpected field {k} in {sent}"
    # `present`: fields ("a" or "a.b") that must be on the wire even at their SPEC default,
    # which the comparison above treats as absent (§5.1: a server announces what is in force).
    for p in exp.get("present", []):
        at: Any = raw
        for part in p.split("."):
            at = at.get(part) if isinstance(at, dict) else None
        if at is None:
            return f"{ty}: {p} not sent (it must be, even at its default): {sent}"
    caps.clear()
    caps.update(trial)
    return None


def transmit_matches(expected: list[dict[str, Any]], sent: list[Any], caps: Caps) -> str | None:
    i = 0
    for exp in expected:
        group = exp.get("unordered")
        if group is not None:
            chunk = sent[i : i + len(group)]
            if len(chunk) < len(group):
                return f"expected {len(group)} frames in any order, got {chunk}"
            used = [False] * len(group)
            for g in group:
                for j, s in enumerate(chunk):
                    if not used[j] and frame_matches(g, s, caps) is None:
                        used[j] = True
                        break
                else:
                    return f"no frame matches {g} among {chunk}"
            i += len(group)
            continue
        if i < len(sent):
            err = frame_matches(exp, sent[i], caps)
            if err is None:
                i += 1
            elif not exp.get("optional"):
                return err
        elif not exp.get("optional"):
            return f"expected {exp.get('type')} id {exp.get('id')}, nothing more was sent"
    if sent[i:]:
        return f"unexpected frames sent: {sent[i:]}"
    return None


def raw_json(v: Any) -> Any:
    return {"msgpack": " ".join(f"{b:02x}" for b in v.data)} if isinstance(v, asp.Raw) else v


def data_json(d: Any) -> Any:
    return {"str": d} if isinstance(d, str) else {"bin": " ".join(f"{b:02x}" for b in d)}


def event_json(ev: tuple[Any, ...]) -> dict[str, Any] | None:
    """Our event tuples in the vectors' event form (None: not compared)."""
    tag = ev[0]
    if tag == "connected":
        s = ev[1]
        return {"event": "Connected", "connection_id": s["connection_id"], "version": s["version"], "heartbeat_ms": s["heartbeat_ms"], "resumable": s["resumable"]}
    if tag == "invoked":
        e = {"event": "Invoked", "id": ev[1], "tool": ev[2], "deadline_ms": ev[4]}
        if ev[3] is not None:
            e["args"] = raw_json(ev[3])
        if ev[5] is not None:
            e["meta"] = raw_json(ev[5])
        return e
    if tag == "interrupted":
        e = {"event": "Interrupted", "id": ev[1]}
        if ev[2] is not None:
            e["reason"] = ev[2]
        return e
    if tag == "aborted":
        return {"event": "Aborted", "id": ev[1], "code": ev[2][0]}
    if tag == "chunk":
        return {"event": "Chunk", "id": ev[1], "seq": ev[3], "data": data_json(ev[2]), "final": ev[4]}
    if tag == "ended":
        o = ev[2]
        e = {"event": "Ended", "id": ev[1], "outcome": o[0]}
        if o[0] == "complete":
            e["status"] = {v: k for k, v in STATUS.items()}[o[1]]
            if o[2] is not None:
                e["result"] = raw_json(o[2])
        elif o[0] == "reply":
            e["status"] = {v: k for k, v in REPLY_STATUS.items()}[o[1]]
            if o[2] is not None:
                e["body"] = raw_json(o[2])
        elif o[0] == "error":
            e["code"] = o[1][0]
        return e
    if tag in ("tool_added", "tool_updated"):
        return {"event": "ToolAdded" if tag == "tool_added" else "ToolUpdated", "name": ev[1]["name"], "description": ev[1]["description"]}
    if tag == "tool_removed":
        return {"event": "ToolRemoved", "name": ev[1]}
    if tag == "requested":
        e = {"event": "Requested", "id": ev[1], "kind": ev[2]}
        if ev[3] is not None:
            e["body"] = raw_json(ev[3])
        if ev[4] is not None:
            e["invocation"] = ev[4]
        return e
    if tag == "goaway":
        e = {"event": "GoAway", "timeout_ms": ev[2]}
        if ev[1] is not None:
            e["reason"] = ev[1]
        return e
    if tag == "peer_error":
        return {"event": "PeerError", "id": ev[1], "code": ev[2][0]}
    if tag == "detached":
        return {"event": "Detached"}
    if tag == "resumed":
        return {"event": "Resumed"}
    if tag == "closed":
        kind, c, _ = ev[1]
        e = {"event": "Closed", "reason": kind}
        if c is not None:
            e["code"] = c
        return e
    return None  # violation, writable, resume_requested: not compared


def event_value_matches(k: str, e: Any, a: Any, caps: Caps) -> bool:
    if k == "id":
        return isinstance(a, int) and id_matches(e, a, caps)
    if k == "code":
        return wild(e) or code(e) == code(a)
    return value_matches(e, a)


def events_match(expected: list[dict[str, Any]], actual: list[dict[str, Any]], caps: Caps) -> str | None:
    if len(expected) != len(actual):
        return f"expected events {expected}, got {actual}"
    for e, a in zip(expected, actual):
        for k, ev in e.items():
            if k not in a or not event_value_matches(k, ev, a[k], caps):
                return f"event {e}: {k} differs in {a}"
    return None


def unhex(s: str, caps: Caps) -> bytes:
    out = bytearray()
    for tok in s.split():
        if tok.startswith("$"):
            out += caps[tok].to_bytes(2, "big")
        else:
            out.append(int(tok, 16))
    return bytes(out)


def any_value(v: Any) -> Any:
    return asp.Raw(bytes.fromhex(v["msgpack"].replace(" ", ""))) if isinstance(v, dict) and "msgpack" in v else v


def conn_config(role: str, cfg: dict[str, Any]) -> dict[str, Any]:
    c = {k: v for k, v in cfg.items() if k in _core.CONFIG_KEYS and k != "resume_token"}
    for k in ("max_frame_payload", "max_inflight", "max_tools", "max_chunk", "initial_window", "rate_limit", "flood_limit", "replay_buffer"):
        if k in c:
            c[k] = uint(c[k])
    if "resume_token" in cfg:
        c["resume_token"] = bytes.fromhex(cfg["resume_token"].replace(" ", ""))
    c["raw_values"] = True
    c["agent"] = "asp-conformance"
    if role == "client":
        c.pop("connection_id", None)
    return c


def command(conn: _core.Connection, now: float, cmd: dict[str, Any], caps: Caps) -> None:
    op = cmd["op"]

    def rid() -> int:
        v = cmd["id"]
        return caps[v] if isinstance(v, str) else int(v)

    if op == "invoke":
        conn.invoke(cmd["tool"], any_value(cmd.get("args")), uint(cmd.get("deadline_ms", 0)), any_value(cmd.get("meta")))
    elif op == "reply":
        conn.reply(rid(), REPLY_STATUS[uint(cmd["status"])], any_value(cmd.get("body")))
    elif op == "release":
        conn.release(rid(), uint(cmd["len"]))
    elif op == "stream":
        d = cmd["data"]
        data: Any = d["str"] if "str" in d else bytes.fromhex(d["bin"].replace(" ", ""))
        if not conn.stream(rid(), data, bool(cmd.get("final", False))):
            raise asp.LocalError("full", "no room")
    elif op == "complete":
        conn.complete(rid(), STATUS[uint(cmd["status"])], any_value(cmd.get("result")), {k: uint(v) for k, v in cmd.get("metrics", {}).items()} or None)
    elif op == "fail":
        conn.fail(rid(), code(cmd["code"]), cmd.get("message", ""), cmd.get("retryable"))
    elif op == "request":
        inv = cmd.get("invocation")
        conn.request(cmd["kind"], any_value(cmd.get("body")), caps[inv] if isinstance(inv, str) else inv)
    elif op == "add_tool":
        conn.add_tool(cmd["name"], cmd.get("description", ""), any_value(cmd.get("input_schema")), any_value(cmd.get("annotations")))
    elif op == "remove_tool":
        conn.remove_tool(cmd["name"])
    elif op == "interrupt":
        conn.interrupt(rid(), cmd.get("reason"))
    elif op == "goaway":
        conn.goaway(now, cmd.get("reason"), uint(cmd.get("timeout_ms", 0)))
    elif op == "close":
        conn.close()
    elif op == "resume":
        conn.resume(now)
    else:
        raise AssertionError(f"unknown command {op}")


def run_vector(t: dict[str, Any]) -> str | None:
    """Plays one vector; the first difference, or None."""
    role = t["role"]
    cfg = t.get("config", {})
    caps = Caps()
    conn: _core.Connection | None = None
    peer_max = 1 << 20
    for n, step in enumerate(t["steps"]):
        now = step["at_ms"] / 1000.0
        events: list[Any] = []
        out: list[bytes] = []

        def take(batch: Any) -> None:
            events.extend(batch[0])
            out.extend(batch[1])

        refused = False
        if step.get("start"):
            conn = _core.Connection(role, now, conn_config(role, cfg))
            for tool in cfg.get("tools", []):
                conn.add_tool(tool["name"], tool.get("description", ""), any_value(tool.get("input_schema")), any_value(tool.get("annotations")))
        assert conn is not None
        if "recv" in step:
            data = unhex(step["recv"], caps)
            try:  # the peer's announced limit bounds what we may send it (§3.6)
                for ty, _, f in _core.decode_frames(data):
                    if ty == "HELLO":
                        peer_max = uint(f.get("limits", {}).get("max_frame_payload", 1 << 20))
            except ValueError:
                pass  # a vector of bad input: the implementation's reaction is what is checked
            take(conn.receive_message(now, data))
        elif "recv_text" in step:
            take(conn.receive_text(now))
        elif "command" in step:
            try:
                command(conn, now, step["command"], caps)
            except (asp.LocalError, ValueError):
                refused = True
        elif step.get("timeout"):
            take(conn.timeout(now))
        elif step.get("transport_closed"):
            take(conn.transport_closed(now))
        elif step.get("peer_close"):
            take(conn.peer_close(now))
        while True:  # everything the step causes (events first, then transmit)
            ev, o, _ = conn.poll()
            if not ev and not o:
                break
            events.extend(ev)
            out.extend(o)
        where = f"step {n} (at {step['at_ms']} ms)"
        if refused != bool(step.get("refused")):
            return f"{where}: command {'refused' if refused else 'accepted'}, expected the opposite"
        sent = []
        for m in out:
            try:
                sent.extend((ty, i, normalize(f), f) for ty, i, f in _core.decode_frames(m, peer_max))
            except ValueError as e:
                return f"{where}: sent an invalid frame: {e}"
        err = transmit_matches(step.get("transmit", []), sent, caps)
        if err:
            return f"{where}: {err}"
        got = [e for e in (event_json(x) for x in events) if e is not None]
        err = events_match(step.get("events", []), got, caps)
        if err:
            return f"{where}: {err}"
        if "state" in step:
            state = "Handshaking" if conn.state == "Resuming" else conn.state
            if state != step["state"]:
                return f"{where}: state {state}, expected {step['state']}"
        if bool(step.get("closed")) != conn.is_closed:
            return f"{where}: closed is {conn.is_closed}"
    return None


@pytest.mark.parametrize("vector", VECTORS, ids=[t["id"] for t in VECTORS])
def test_session_vector(vector: dict[str, Any]) -> None:
    err = run_vector(vector)
    if xfailed(vector["id"]):
        if err is None:
            pytest.fail(f"{vector['id']} passes but is listed in expected-failures.json")
        pytest.xfail(err)
    assert err is None, err
