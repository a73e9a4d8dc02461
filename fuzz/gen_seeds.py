#!/usr/bin/env python3
"""Writes the fuzz seed corpus fuzz/seeds/<target>/<name>.bin from the conformance vectors.

Standard library only. Run from anywhere: `python3 fuzz/gen_seeds.py`. It rewrites the
generated seeds (names starting with `v-` or `s-`) and leaves every other file alone, so
the named crash regressions (`regress-*.bin`) stay.

Each target reads its input in its own layout (documented on the harness functions in
asp-proto/src/fuzzing.rs); the encoders below mirror those layouts:

- decode:          sel byte (max_payload selector | number of chunk-size bytes << 4),
                   chunk-size bytes, then the wire bytes.
- roundtrip:       an `arbitrary` byte string; the vector bytes only give it variety.
- server_session / client_session:
                   4 config bytes, then operations: tag byte and fields.
- pair:            4 client config bytes, 4 server config bytes, transport byte, then
                   operations (tag, side byte, fields).
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "conformance", "vectors")
SEEDS = os.path.join(HERE, "seeds")


def load(name):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)["tests"]


def wire(test):
    return bytes.fromhex(test["hex"].replace(" ", ""))


def slug(prefix, test):
    return prefix + "-" + test["id"].replace("/", "_")


# ── decode ──────────────────────────────────────────────────────────────────
# sel & 7 selects max_payload from [1 MiB, 0, 1, 8, 16, 64, 255, 1024].
MAXP_DEFAULT, MAXP_64 = 0, 5


def decode_seed(data, maxp=MAXP_DEFAULT, chunks=()):
    assert len(chunks) < 16
    return bytes([maxp | (len(chunks) << 4)]) + bytes(chunks) + data


# ── sessions ────────────────────────────────────────────────────────────────
# Config byte 0 bits 0-1: max_frame_payload [256, 64, 128, 1 MiB]; byte 3 bit 4: WebSocket.
def session_config(maxp64=False, messages=False):
    b0 = 1 if maxp64 else 3
    return bytes([b0, 0, 0, 0x10 if messages else 0])


def op_peer_hello(b=0, split=0):
    return bytes([0, b, split])


def op_raw(data, split=0):
    assert len(data) < 65536
    return bytes([3]) + struct.pack("<H", len(data)) + bytes([split]) + data


def op_tick(step):
    return bytes([9, step])


OP_TRANSMIT_ALL = bytes([10, 0])
OP_POLL_ALL = bytes([11, 0])
# Client: invoke "echo", no args, no deadline, no meta (ids 1, 2, ...).
OP_INVOKE = bytes([13, 0, 0, 0])


def op_add_tool(word_index):
    # Server: add tool WORDS[word_index] ("echo", "sleep", ...), no description or schema.
    return bytes([18, word_index << 1, 0, 0])


def session_seed(role, test, data, maxp64=False, messages=False):
    """A session that completes the handshake (unless the vector is itself a HELLO or
    RESUME), opens exchanges the vector may refer to, then receives the vector."""
    ops = bytearray(session_config(maxp64, messages))
    handshake = test.get("frame", {}).get("type") in ("HELLO", "RESUME") or test[
        "id"
    ].startswith(("hello/", "handshake/", "resume/"))
    if role == "server":
        ops += op_add_tool(0) + op_add_tool(1)
    if not handshake:
        ops += op_peer_hello()
        if role == "client":
            ops += OP_INVOKE + OP_INVOKE
    ops += op_raw(data) + OP_TRANSMIT_ALL + OP_POLL_ALL + op_tick(7) + OP_TRANSMIT_ALL
    return bytes(ops)


# ── pair ────────────────────────────────────────────────────────────────────
CLIENT, SERVER = 0, 1


def p_transmit(side):
    return bytes([0, side])


def p_deliver(side):  # what `side` sent, all of it
    return bytes([1, side])


def p_poll(side):
    return bytes([3, side])


def p_exchange():
    """Both sides transmit, deliver and poll, twice (a round trip)."""
    out = b""
    for _ in range(2):
        for side in (CLIENT, SERVER):
            out += p_transmit(side) + p_deliver(side) + p_poll(1 - side)
    return out


def p_invoke(word=0, deadline_index=0):
    return bytes([4, (word << 4) | (deadline_index << 1), 0])


def p_add_tool(word=0):
    return bytes([11, word << 2, 0])


def p_stream(slot=0, length=10, text=False, fin=False):
    b = (2 if text else 0) | (4 if fin else 0) | SERVER
    return bytes([5, b, slot]) + struct.pack("<H", length)


def p_complete(slot=0, status=0):
    return bytes([6, (status << 1) | SERVER, slot, 0])


def p_request(word=5, slot=0):
    return bytes([9, (word << 2) | SERVER, slot, 0])


def p_reply(slot=0, status=0):
    return bytes([10, status << 1, slot, 0])


def p_goaway(side, step=7):
    return bytes([12, (step << 1) | side])


def p_tick(step):
    return bytes([2, step << 1])


def pair_seeds():
    cfg = bytes(8)
    s = {}
    base = p_add_tool(0) + p_add_tool(1) + p_exchange()
    s["invoke-stream-complete"] = (
        base
        + p_invoke()
        + p_exchange()
        + p_stream(0, 40)
        + p_stream(0, 30, fin=True)
        + p_complete(0)
        + p_exchange()
    )
    s["request-reply"] = (
        base + p_invoke() + p_exchange() + p_request() + p_exchange() + p_reply() + p_exchange()
    )
    s["goaway-drain"] = (
        base + p_invoke() + p_exchange() + p_goaway(SERVER) + p_exchange() + p_complete(0) + p_exchange()
    )
    s["deadline"] = base + p_invoke(0, 4) + p_exchange() + p_tick(7) + p_exchange()
    s["heartbeat"] = base + p_tick(7) + p_exchange() + p_tick(12) + p_exchange()
    s["flow-control"] = (
        base + p_invoke() + p_exchange() + b"".join(p_stream(0, 60) for _ in range(4)) + p_exchange() * 3
    )
    out = {}
    for name, ops in s.items():
        out["s-" + name] = cfg + b"\x00" + ops
        out["s-" + name + "-ws"] = cfg + b"\x01" + ops
    return out


# ── main ────────────────────────────────────────────────────────────────────
# ── relay_frames, relay_push, relay_headers (asp_relay::fuzzing) ────────────
def relay_seeds(frames):
    """Seeds for the relay's parsers of function output, from the frame vectors."""
    by_id = {t["id"]: wire(t) for t in frames}
    streams = [by_id[i] for i in ("stream/text", "stream/utf8", "stream/seq-uint32")]
    completes = [by_id[i] for i in ("complete/ok", "complete/failed", "complete/metrics-uint64")]
    errors = [by_id[i] for i in ("error/invocation", "error/connection", "error/minimal")]
    out = {"relay_frames": {}, "relay_push": {}, "relay_headers": {}}
    # frames body: config [max_chunk, max_frame_payload, seed hi, seed lo], then the body.
    body = b"".join(streams) + completes[0]
    for name, cfg in (("whole", b"\x00\x00\x00\x00"), ("chunk3-split", b"\x03\x00\x12\x34"),
                      ("chunk1-bytewise", b"\x01\x00\x00\x01"), ("maxp16", b"\x00\x10\x00\x07")):
        out["relay_frames"]["s-streams-complete-" + name] = cfg + body
    for i, end in enumerate(completes + errors):
        out["relay_frames"][f"s-stream-end-{i}"] = b"\x08\x00\x00\x05" + streams[0] + end
    out["relay_frames"]["s-final-then-stream"] = b"\x00\x00\x00\x00" + by_id["stream/bin-final"] + streams[0]
    out["relay_frames"]["s-no-ending"] = b"\x00\x00\x00\x00" + streams[1]
    out["relay_frames"]["s-other-frame"] = b"\x00\x00\x00\x00" + by_id["ping/empty"]
    # push body: config [max_payload, max_chunk], then frames.
    allowed = [by_id[i] for i in ("tool_def/add", "tool_def/remove", "stream/utf8", "stream/bin-final",
                                  "request/full", "request/minimal")]
    out["relay_push"]["s-allowed"] = b"\x00\x00" + b"".join(allowed)
    out["relay_push"]["s-utf8-chunk2"] = b"\x00\x02" + by_id["stream/utf8"]
    out["relay_push"]["s-refused-complete"] = b"\x00\x00" + allowed[0] + completes[0]
    out["relay_push"]["s-maxp8"] = b"\x08\x00" + b"".join(allowed)
    out["relay_push"]["s-empty"] = b"\x00\x00"

    # head and trailers: [status hi, lo, max_chunk, max_state, seed hi, lo, #headers, #trailers],
    # fields (name byte, length byte, value), then the body.
    def field(name, value):
        return bytes([name, len(value)]) + value

    def head(status, max_chunk, max_state, seed, headers, trailers, body):
        return (bytes([status >> 8, status & 0xFF, max_chunk, max_state, seed >> 8, seed & 0xFF,
                       len(headers), len(trailers)]) + b"".join(headers) + b"".join(trailers) + body)

    ct_text, ct_bin, ct_json = field(0, b"\x00"), field(0, b"\x02"), field(0, b"\x01")
    metrics = [field(1, b"12.345"), field(2, b"17"), field(3, b" 42 ")]
    state = field(4, b"aGVsbG8=")
    out["relay_headers"]["s-text-metrics-state"] = head(
        200, 0, 64, 0x1234, [ct_text] + metrics + [state], [], "héllo wörld 👋".encode())
    out["relay_headers"]["s-text-trailers-win"] = head(
        200, 3, 64, 0x0101, [ct_text, field(1, b"1")], [field(0x81, b"2.5"), field(0x84, b"")],
        "split ✓ utf-8".encode() + b"\xf0\x9f")
    out["relay_headers"]["s-json-invalid-utf8"] = head(
        200, 0, 8, 0x0042, [ct_json, field(4, b"not base64!")], [], b"{\"a\": \"\xff\xfe\"}")
    out["relay_headers"]["s-bin"] = head(200, 5, 2, 0x0003, [ct_bin, state], [], bytes(range(40)))
    out["relay_headers"]["s-404"] = head(404, 0, 0, 0, [ct_text], [], b"no such tool")
    out["relay_headers"]["s-503-empty"] = head(503, 0, 0, 0, [], [], b"")
    out["relay_headers"]["s-500-long"] = head(500, 0, 0, 0x0777, [], [], b"x" * 1500)
    return out


def main():
    frames = load("frames.json")
    rejections = load("rejections.json")
    seeds = {t: {} for t in ("decode", "roundtrip", "server_session", "client_session", "pair")}

    for t in frames:
        data, name = wire(t), slug("v-frame", t)
        seeds["decode"][name] = decode_seed(data)
        seeds["roundtrip"][name] = data
        sender = t.get("sender", "either")
        if sender in ("client", "either"):
            seeds["server_session"][name] = session_seed("server", t, data)
        if sender in ("server", "either"):
            seeds["client_session"][name] = session_seed("client", t, data)

    for t in rejections:
        data, name = wire(t), slug("v-reject", t)
        maxp64 = (t.get("config") or {}).get("max_frame_payload") == 64
        seeds["decode"][name] = decode_seed(data, MAXP_64 if maxp64 else MAXP_DEFAULT)
        receiver = t.get("receiver", "either")
        for role, target in (("server", "server_session"), ("client", "client_session")):
            if receiver in (role, "either"):
                seeds[target][name] = session_seed(role, t, data, maxp64)
                seeds[target][name + "-ws"] = session_seed(role, t, data, maxp64, True)

    # Every frame vector in one stream: whole, byte by byte, and in mixed chunks.
    stream = b"".join(wire(t) for t in frames)
    seeds["decode"]["s-all-frames-whole"] = decode_seed(stream)
    seeds["decode"]["s-all-frames-bytewise"] = decode_seed(stream, chunks=[0x00])
    seeds["decode"]["s-all-frames-mixed"] = decode_seed(stream, chunks=[0x06, 0x82, 0x1F, 0x80, 0x00])
    seeds["decode"]["s-all-frames-max64"] = decode_seed(stream, MAXP_64, chunks=[0x0F])

    seeds["pair"].update(pair_seeds())
    seeds.update(relay_seeds(frames))

    total = 0
    for target, items in seeds.items():
        d = os.path.join(SEEDS, target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith(("v-", "s-")):
                os.remove(os.path.join(d, f))
        for name, data in sorted(items.items()):
            with open(os.path.join(d, name + ".bin"), "wb") as f:
                f.write(data)
        total += len(items)
        print(f"{target}: {len(items)} seeds")
    print(f"{total} seeds in {os.path.relpath(SEEDS)}")


if __name__ == "__main__":
    main()
