#!/usr/bin/env python3
"""Independent reference encoder for the Agent Socket Protocol (ASP) conformance vectors.

This script does NOT use the Rust codec of this repository: payloads are produced with the
`msgpack` Python package, headers with `struct`, so the vectors cross-check `asp-proto`.

Outputs (all rewritten on every run; the script is deterministic):

  conformance/vectors/frames.json      valid frames (encoder and decoder vectors)
  conformance/vectors/rejections.json  frames a receiver must reject (frame / connection errors)
  conformance/gen/spec_examples.md     the annotated hex dumps of SPEC.md §14
  SPEC.md                              §14 examples spliced between
                                       <!-- EXAMPLES:BEGIN --> and <!-- EXAMPLES:END -->
                                       (on the first run: in place of the line <!-- EXAMPLES -->)

Before writing anything it self-checks every vector with a second, hand-written MessagePack
reader and a reference validator that follows SPEC.md §3.7 and §4.

Usage:  python3 conformance/gen/gen_vectors.py      (needs `pip install msgpack`)
Python 3.11, standard library + msgpack only.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parents[2]
VECTORS_DIR = ROOT / "conformance" / "vectors"
FRAMES_JSON = VECTORS_DIR / "frames.json"
REJECTIONS_JSON = VECTORS_DIR / "rejections.json"
EXAMPLES_MD = ROOT / "conformance" / "gen" / "spec_examples.md"
SPEC_MD = ROOT / "SPEC.md"

MARK_OLD = "<!-- EXAMPLES -->"
MARK_BEGIN = "<!-- EXAMPLES:BEGIN -->"
MARK_END = "<!-- EXAMPLES:END -->"

DEFAULT_CONFIG = {"max_frame_payload": 1048576}

U16 = 0xFFFF
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

# ---------------------------------------------------------------------------------------------
# Schema (SPEC.md §3.3, §5)
# ---------------------------------------------------------------------------------------------

TYPE_CODES = {
    "HELLO": 0x1, "INVOKE": 0x2, "STREAM": 0x3, "INTERRUPT": 0x4, "TOOL_DEF": 0x5,
    "COMPLETE": 0x6, "ERROR": 0x7, "PING": 0x8, "PONG": 0x9, "REQUEST": 0xA, "REPLY": 0xB,
    "CREDIT": 0xC, "GOAWAY": 0xD, "RESUME": 0xE,
}
TYPE_NAMES = {v: k for k, v in TYPE_CODES.items()}

ERROR_CODES = {
    "PROTOCOL_VIOLATION": 0x01, "UNSUPPORTED_VERSION": 0x02, "HANDSHAKE_TIMEOUT": 0x03,
    "HEARTBEAT_TIMEOUT": 0x04, "FLOOD": 0x05, "GOING_AWAY": 0x06, "FRAMING_ERROR": 0x07,
    "RESUME_FAILED": 0x08, "OVERLOADED": 0x09, "UNKNOWN_FRAME_TYPE": 0x10, "RESERVED_FLAGS": 0x11,
    "FRAME_TOO_LARGE": 0x12, "MALFORMED_PAYLOAD": 0x13, "MISSING_FIELD": 0x14,
    "INVALID_FIELD": 0x15, "INVALID_ID": 0x16, "UNKNOWN_TOOL": 0x20, "DUPLICATE_ID": 0x21,
    "UNKNOWN_ID": 0x22, "TOO_MANY_INFLIGHT": 0x23, "CHUNK_TOO_LARGE": 0x24,
    "FLOW_CONTROL": 0x25, "BAD_SEQUENCE": 0x26, "DEADLINE_EXCEEDED": 0x27, "DRAINING": 0x28,
    "RATE_LIMITED": 0x29, "UNSUPPORTED": 0x2A, "RESULT_TOO_LARGE": 0x2B, "TOO_MANY_TOOLS": 0x30, "TOOL_STATE": 0x31,
    "INVALID_ARGUMENTS": 0x40, "TOOL_FAILED": 0x41, "INTERNAL": 0x42, "UNAVAILABLE": 0x43,
    "UPSTREAM_TIMEOUT": 0x44,
}
ERROR_NAMES = {v: k for k, v in ERROR_CODES.items()}

# Nested maps with defined keys: key -> (name, lo, hi); all values uint.
LIMITS = {0: ("max_frame_payload", 64, U32), 1: ("max_inflight", 1, 32767),
          2: ("max_tools", 0, 65535), 3: ("max_chunk", 4, U32), 4: ("initial_window", 8, U32),
          5: ("replay_buffer", 0, U32), 6: ("resume_window_ms", 0, U32)}
METRICS = {0: ("wall_us", 0, U64), 1: ("cpu_us", 0, U64), 2: ("input_tokens", 0, U64),
           3: ("output_tokens", 0, U64)}


class F:
    """One field of a frame type: key, name, kind and constraints.

    kind: uint | bool | str | bin | binstr | any | arr_uint | arr_str | limits | metrics
    req:  "R" required, "O" optional, or a dict {"client": "R"/"O"/"-", "server": ...} giving
          the requirement per *sender* role (HELLO, RESUME).
    lo/hi: integer range (uint), length range in bytes (str/bin), entry count (arrays).
    elo/ehi: range of array elements (uint value, or str length in bytes).
    """

    def __init__(self, key, name, kind, req="O", lo=None, hi=None, elo=None, ehi=None,
                 count=None):
        self.key, self.name, self.kind, self.req = key, name, kind, req
        self.lo, self.hi, self.elo, self.ehi = lo, hi, elo, ehi
        self.count = count  # per-sender entry count range for arrays: {"client": (1,16), ...}


SCHEMA: dict[str, list[F]] = {
    "HELLO": [
        F(0, "versions", "arr_uint", {"client": "R", "server": "R"}, elo=1, ehi=15,
          count={"client": (1, 16), "server": (1, 1)}),
        F(1, "capabilities", "arr_str", lo=0, hi=32, elo=1, ehi=64),
        F(2, "limits", "limits"),
        F(3, "heartbeat_ms", "uint", lo=0, hi=U32),
        F(4, "connection_id", "str", {"client": "-", "server": "R"}, lo=1, hi=64),
        F(5, "resume_token", "bin", {"client": "-", "server": "O"}, lo=1, hi=64),
        F(6, "tools", "uint", {"client": "-", "server": "O"}, lo=0, hi=65535),
        F(7, "agent", "str", lo=0, hi=256),
    ],
    "INVOKE": [
        F(0, "tool", "str", "R", lo=1, hi=128),
        F(1, "args", "any"),
        F(2, "deadline_ms", "uint", lo=0, hi=U32),
        F(3, "meta", "any"),
    ],
    "STREAM": [
        F(0, "data", "binstr", "R"),
        F(1, "seq", "uint", "R", lo=0, hi=U32),
        F(2, "final", "bool"),
    ],
    "INTERRUPT": [F(0, "reason", "str", lo=0, hi=1024)],
    "TOOL_DEF": [
        F(0, "op", "uint", "R", lo=0, hi=2),
        F(1, "name", "str", "R", lo=1, hi=128),
        F(2, "description", "str", lo=0, hi=65535),
        F(3, "input_schema", "any"),
        F(4, "annotations", "any"),
    ],
    "COMPLETE": [
        F(0, "status", "uint", "R", lo=0, hi=2),
        F(1, "result", "any"),
        F(2, "metrics", "metrics"),
    ],
    "ERROR": [
        # §5.7 says uint 0–65535; §12.1 says code 0 is INVALID_FIELD. We follow §12.1.
        F(0, "code", "uint", "R", lo=1, hi=65535),
        F(1, "message", "str", lo=0, hi=1024),
        F(2, "retryable", "bool"),
        F(3, "frame_type", "uint", lo=0, hi=15),
    ],
    "PING": [F(0, "received", "uint", lo=0, hi=U64)],
    "PONG": [F(0, "received", "uint", lo=0, hi=U64)],
    "REQUEST": [
        F(0, "kind", "str", "R", lo=1, hi=64),
        F(1, "body", "any"),
        F(2, "invocation", "uint", lo=1, hi=32767),
    ],
    "REPLY": [
        F(0, "status", "uint", "R", lo=0, hi=2),
        F(1, "body", "any"),
    ],
    "CREDIT": [F(0, "bytes", "uint", "R", lo=1, hi=U32)],
    "GOAWAY": [
        F(0, "reason", "str", lo=0, hi=1024),
        F(1, "timeout_ms", "uint", lo=0, hi=U32),
    ],
    "RESUME": [
        F(0, "token", "bin", {"client": "R", "server": "-"}, lo=1, hi=64),
        F(1, "received", "uint", {"client": "R", "server": "R"}, lo=0, hi=U64),
    ],
}
BY_NAME = {t: {f.name: f for f in fs} for t, fs in SCHEMA.items()}
BY_KEY = {t: {f.key: f for f in fs} for t, fs in SCHEMA.items()}

# Who sends each frame type (§3.3); "either" for both directions.
DIRECTION = {
    "HELLO": "either", "INVOKE": "client", "STREAM": "server", "INTERRUPT": "either",
    "TOOL_DEF": "server", "COMPLETE": "server", "ERROR": "either", "PING": "either",
    "PONG": "either", "REQUEST": "server", "REPLY": "client", "CREDIT": "client",
    "GOAWAY": "either", "RESUME": "either",
}
OTHER_ROLE = {"client": "server", "server": "client", "either": "either"}


def id_allowed(type_name: str, rid: int) -> bool:
    """§3.5. INTERRUPT: either space, so id 0 (in neither space) is invalid."""
    if type_name in ("HELLO", "TOOL_DEF", "PING", "PONG", "GOAWAY", "RESUME"):
        return rid == 0
    if type_name in ("INVOKE", "STREAM", "COMPLETE", "CREDIT"):
        return 0x0001 <= rid <= 0x7FFF
    if type_name in ("REQUEST", "REPLY"):
        return 0x8000 <= rid <= 0xFFFF
    if type_name == "INTERRUPT":
        return rid != 0
    return True  # ERROR: 0 or any id


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def hexs(b: bytes) -> str:
    """Lowercase hex, bytes separated by single spaces."""
    return " ".join(f"{x:02x}" for x in b)


def pk(v) -> bytes:
    """The shortest MessagePack encoding of a value (msgpack-python, bin type for bytes)."""
    return msgpack.packb(v, use_bin_type=True)


def map_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x80 | n])
    if n <= U16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def header(type_code: int, rid: int, length: int, flags: int = 0, version: int = 1) -> bytes:
    return struct.pack(">BBHI", ((version & 0xF) << 4) | (type_code & 0xF), flags, rid, length)


def json_uint(v: int):
    """uint -> JSON number, or a string of digits if above 2^53."""
    return str(v) if v > 2 ** 53 else v


# ---------------------------------------------------------------------------------------------
# Annotation of MessagePack bytes (for SPEC §14)
# ---------------------------------------------------------------------------------------------

def fmt_kind(b: bytes) -> str:
    """Name of the MessagePack format of the value starting at b[0]."""
    t = b[0]
    if t <= 0x7F:
        return "positive fixint"
    if 0x80 <= t <= 0x8F:
        return "fixmap"
    if 0x90 <= t <= 0x9F:
        return "fixarray"
    if 0xA0 <= t <= 0xBF:
        return "fixstr"
    if t >= 0xE0:
        return "negative fixint"
    return {0xC0: "nil", 0xC2: "false", 0xC3: "true", 0xC4: "bin 8", 0xC5: "bin 16",
            0xC6: "bin 32", 0xCA: "float 32", 0xCB: "float 64", 0xCC: "uint 8",
            0xCD: "uint 16", 0xCE: "uint 32", 0xCF: "uint 64", 0xD0: "int 8", 0xD1: "int 16",
            0xD2: "int 32", 0xD3: "int 64", 0xD9: "str 8", 0xDA: "str 16", 0xDB: "str 32",
            0xDC: "array 16", 0xDD: "array 32", 0xDE: "map 16", 0xDF: "map 32"}.get(t, "?")


def short_text(s: str, n: int = 40) -> str:
    s = s if len(s) <= n else s[:n] + "…"
    return json.dumps(s, ensure_ascii=False)


def describe_scalar(b: bytes) -> str:
    v = msgpack.unpackb(b, raw=False)
    kind = fmt_kind(b)
    if isinstance(v, bool):
        return f"`{kind}`"
    if isinstance(v, int):
        return f"{kind}: {v}"
    if isinstance(v, str):
        n = len(v.encode())
        return f"{kind}, {n} byte{'s' if n != 1 else ''}: {short_text(v)}"
    if isinstance(v, bytes):
        return f"{kind}, {len(v)} byte{'s' if len(v) != 1 else ''}"
    return kind


def value_note(type_name: str, name: str, v) -> str:
    """Meaning of an enumerated value, for the annotated examples."""
    if name == "code" and v in ERROR_NAMES:
        return f" = `{ERROR_NAMES[v]}`"
    if name == "status":
        names = (["answered", "cancelled", "declined"] if type_name == "REPLY"
                 else ["ok", "cancelled", "failed"])
        return f" = {names[v]}"
    if name == "op":
        return f" = {['add', 'update', 'remove'][v]}"
    if name == "frame_type" and v in TYPE_NAMES:
        return f" = {TYPE_NAMES[v]}"
    if name in ("resume_token", "token"):
        return ": the resume token"
    return ""


def render_any(v) -> str:
    """Readable JSON-like rendering of an `any` value (JSON-compatible values only)."""
    def other(x):
        if isinstance(x, bytes):
            return f"<bin {hexs(x)}>"
        if isinstance(x, msgpack.ExtType):
            return f"<ext {x.code}: {hexs(x.data)}>"
        raise TypeError(type(x))

    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "), default=other)


# ---------------------------------------------------------------------------------------------
# Encoder (SPEC §4, §5): builds payload bytes, the JSON "fields", and annotated segments
# ---------------------------------------------------------------------------------------------

def encode_fields(type_name: str, fields: dict):
    """Encode the fields of one frame. Returns (payload, json_fields, segments).

    fields maps field names to Python values; absent optional fields are simply not given.
    Keys are written in ascending order; false default-false bools and None are omitted.
    segments is a list of (bytes, meaning) for the annotated example.
    """
    schema = BY_NAME[type_name]
    present = []
    for name, v in fields.items():
        f = schema[name]  # KeyError = typo in a vector
        if v is None:
            continue
        if f.kind == "bool" and v is False:
            continue
        present.append((f, v))
    present.sort(key=lambda p: p[0].key)

    if not present:  # §4.4: no fields -> payload length 0
        return b"", {}, []

    segs = [(map_header(len(present)),
             f"{fmt_kind(map_header(len(present)))}, {len(present)} "
             f"entr{'y' if len(present) == 1 else 'ies'}")]
    jf = {}
    whole = {}
    for f, v in present:
        segs.append((pk(f.key), f"key {f.key} (`{f.name}`)"))
        if f.kind in ("limits", "metrics"):
            table = LIMITS if f.kind == "limits" else METRICS
            rev = {name: (k, lo, hi) for k, (name, lo, hi) in table.items()}
            items = sorted(((rev[n][0], n, x) for n, x in v.items()))
            segs.append((map_header(len(items)),
                         f"{fmt_kind(map_header(len(items)))}, {len(items)} "
                         f"entr{'y' if len(items) == 1 else 'ies'} (`{f.name}`)"))
            sub = {}
            for k, n, x in items:
                segs.append((pk(k), f"`{f.name}` key {k} (`{n}`)"))
                segs.append((pk(x), describe_scalar(pk(x))))
                sub[k] = x
            jf[f.name] = {n: json_uint(x) for _, n, x in items}
            whole[f.key] = sub
        elif f.kind in ("arr_uint", "arr_str"):
            ah = pk(v)[:1] if len(v) < 16 else pk(v)[:3]
            segs.append((ah, f"{fmt_kind(ah)}, {len(v)} element{'s' if len(v) != 1 else ''}"))
            for x in v:
                note = " (protocol version)" if f.name == "versions" else ""
                segs.append((pk(x), describe_scalar(pk(x)) + note))
            jf[f.name] = [json_uint(x) if isinstance(x, int) else x for x in v]
            whole[f.key] = list(v)
        elif f.kind == "any":
            b = pk(v)
            segs.append((b, f"`{f.name}` (any, {len(b)} bytes): {render_any(v)}"))
            jf[f.name] = {"msgpack": hexs(b)}
            whole[f.key] = v
        else:
            b = pk(v)
            segs.append((b, describe_scalar(b) + value_note(type_name, f.name, v)))
            if f.kind == "uint":
                assert isinstance(v, int) and not isinstance(v, bool)
                jf[f.name] = json_uint(v)
            elif f.kind == "bool":
                jf[f.name] = v
            elif f.kind == "str":
                jf[f.name] = v
            elif f.kind == "bin":
                jf[f.name] = {"bin": hexs(v)}
            elif f.kind == "binstr":
                jf[f.name] = {"str": v} if isinstance(v, str) else {"bin": hexs(v)}
            whole[f.key] = v
    payload = b"".join(s for s, _ in segs)
    # Cross-check: the field-by-field bytes equal msgpack's encoding of the whole map.
    assert payload == pk(whole), (type_name, fields)
    return payload, jf, segs


# ---------------------------------------------------------------------------------------------
# Frame vectors
# ---------------------------------------------------------------------------------------------

FRAME_TESTS: list[dict] = []
EXAMPLES: dict[str, tuple] = {}  # type name -> (vector id, sentence, frame bytes, segments)


def frame(vid, spec, description, type_name, rid, fields=None, sender=None, example=None):
    """A valid frame produced by the encoder (encode: true)."""
    payload, jf, segs = encode_fields(type_name, fields or {})
    fb = header(TYPE_CODES[type_name], rid, len(payload)) + payload
    sender = sender or DIRECTION[type_name]
    FRAME_TESTS.append({
        "id": vid, "spec": spec, "description": description, "encode": True,
        "sender": sender, "hex": hexs(fb),
        "frame": {"type": type_name, "id": rid, "fields": jf},
    })
    if example:
        assert type_name not in EXAMPLES
        EXAMPLES[type_name] = (vid, example, fb, segs)


def decode_only(vid, spec, description, type_name, rid, payload: bytes, json_fields: dict,
                sender=None):
    """Bytes a decoder must accept but an encoder would not produce (encode: false)."""
    fb = header(TYPE_CODES[type_name], rid, len(payload)) + payload
    FRAME_TESTS.append({
        "id": vid, "spec": spec, "description": description, "encode": False,
        "sender": sender or DIRECTION[type_name], "hex": hexs(fb),
        "frame": {"type": type_name, "id": rid, "fields": json_fields},
    })


TOKEN16 = bytes.fromhex("9f3c2a7be1d04f5a8c6e12b7d3904a6f")
DESC300 = ("Searches the project's documentation index and returns the best matching "
           "passages with their titles and addresses. Use it for questions about APIs, "
           "configuration options and error messages; prefer exact identifiers over prose. "
           "Results are ranked by relevance; at most twenty are returned per call, newest "
           "first, deduplicated by address.")
DESC300 = (DESC300 + " " * 300)[:300]
assert len(DESC300.encode()) == 300
TOOL40 = "filesystem.read_text_file_with_encoding"  # 39
TOOL40 = TOOL40 + "s"
assert len(TOOL40) == 40
TOOL128 = ("t" * 128)


def build_frames():
    # ---- HELLO (§5.1) ----
    frame("hello/client-full", "§5.1", "Client HELLO with every client field: versions [1], "
          "capabilities requests and resume, all five limits, heartbeat_ms and agent.",
          "HELLO", 0, {
              "versions": [1], "capabilities": ["requests", "resume"],
              "limits": {"max_frame_payload": 1048576, "max_inflight": 16, "max_tools": 256,
                         "max_chunk": 65536, "initial_window": 262144},
              "heartbeat_ms": 30000, "agent": "asp-py/1.0"},
          sender="client")
    frame("hello/client", "§5.1", "Client HELLO: versions [1], capabilities requests and "
          "resume, limits.max_frame_payload, heartbeat_ms and agent.",
          "HELLO", 0, {
              "versions": [1], "capabilities": ["requests", "resume"],
              "limits": {"max_frame_payload": 65536}, "heartbeat_ms": 15000,
              "agent": "asp-py/1.0"},
          sender="client",
          example="The client's HELLO, the first frame on a connection: it speaks version 1, "
                  "can answer server requests and resume, accepts payloads up to 64 KiB and "
                  "wants a heartbeat every 15 s.")
    frame("hello/client-minimal", "§5.1", "Client HELLO with only the required field "
          "versions [1].", "HELLO", 0, {"versions": [1]}, sender="client")
    frame("hello/client-versions-multi", "§5.1", "Client HELLO offering versions 1, 2 and 15.",
          "HELLO", 0, {"versions": [1, 2, 15]}, sender="client")
    frame("hello/server-full", "§5.1", "Server HELLO with every server field: versions [1], "
          "capabilities, limits, heartbeat_ms, connection_id, a 16-byte resume_token, tools 2 "
          "and agent.",
          "HELLO", 0, {
              "versions": [1], "capabilities": ["resume"],
              "limits": {"max_frame_payload": 1048576, "max_inflight": 128},
              "heartbeat_ms": 30000, "connection_id": "conn-7f3a", "resume_token": TOKEN16,
              "tools": 2, "agent": "asp-server/0.1"},
          sender="server")
    frame("hello/server", "§5.1", "Server HELLO: versions [1], connection_id, resume_token, "
          "tools 2 and limits.",
          "HELLO", 0, {
              "versions": [1], "limits": {"max_frame_payload": 1048576},
              "connection_id": "conn-7f3a", "resume_token": TOKEN16, "tools": 2},
          sender="server")
    frame("hello/server-minimal", "§5.1", "Server HELLO with only the required fields "
          "versions [1] and connection_id.", "HELLO", 0,
          {"versions": [1], "connection_id": "c1"}, sender="server")

    # ---- INVOKE (§5.2) ----
    frame("invoke/basic", "§5.2", "INVOKE of tool \"echo\" with args {\"t\": \"hi\"}.",
          "INVOKE", 1, {"tool": "echo", "args": {"t": "hi"}},
          example="Invocation 1 calls the tool `echo` with the arguments `{\"t\": \"hi\"}`.")
    frame("invoke/minimal", "§5.2", "INVOKE with only the required field tool.",
          "INVOKE", 2, {"tool": "echo"})
    frame("invoke/full", "§5.2", "INVOKE with every field: tool, args, deadline_ms 30000 "
          "(uint 16) and meta; highest client id 0x7fff.",
          "INVOKE", 0x7FFF, {"tool": "search", "args": {"q": "rust msgpack", "limit": 10},
                             "deadline_ms": 30000, "meta": {"trace": "4bf92f35"}})
    frame("invoke/args-nested", "§4.2", "INVOKE whose args (any) is an array holding nested "
          "values of every kind: nil, bool, negative int, float 64, bin, map and an ext type.",
          "INVOKE", 3, {"tool": "echo", "args": [None, True, -5, 1.5, b"\x00\xff",
                                                 {"k": [1, 2]},
                                                 msgpack.ExtType(1, b"\x01\x02\x03\x04")]})
    frame("invoke/args-scalar", "§5.2", "INVOKE whose args (any) is the string \"hello\" "
          "rather than a map.", "INVOKE", 4, {"tool": "echo", "args": "hello"})
    frame("invoke/deadline-uint32-max", "§5.2", "INVOKE with deadline_ms 2^32-1 (uint 32, "
          "the maximum).", "INVOKE", 5, {"tool": "sleep", "deadline_ms": U32})
    frame("invoke/tool-str8", "§4.2", "INVOKE with a 40-byte tool name (str 8).",
          "INVOKE", 6, {"tool": TOOL40})
    frame("invoke/tool-128", "§5.2", "INVOKE with a tool name of 128 bytes, the maximum.",
          "INVOKE", 7, {"tool": TOOL128})
    frame("invoke/tool-utf8", "§4.2", "INVOKE with a non-ASCII UTF-8 tool name.",
          "INVOKE", 8, {"tool": "wetter-für-köln"})

    # ---- STREAM (§5.3) ----
    frame("stream/text", "§5.3", "STREAM of text data \"Hello\" with seq 0.",
          "STREAM", 1, {"data": "Hello", "seq": 0},
          example="The first chunk (seq 0) of invocation 1's output, as text.")
    frame("stream/bin-final", "§5.3", "STREAM of binary data with seq 1 and final = true.",
          "STREAM", 1, {"data": b"\x89PNG\r\n\x1a\n", "seq": 1, "final": True})
    frame("stream/seq-uint32", "§4.2", "STREAM with seq 70000, encoded as uint 32.",
          "STREAM", 2, {"data": "x", "seq": 70000})
    frame("stream/seq-max", "§5.3", "STREAM with seq 2^32-1, the maximum.",
          "STREAM", 2, {"data": "x", "seq": U32})
    frame("stream/empty-bin-final", "§5.3", "Final STREAM with zero-length binary data.",
          "STREAM", 3, {"data": b"", "seq": 3, "final": True})
    frame("stream/utf8", "§5.3", "STREAM of multi-byte UTF-8 text.",
          "STREAM", 4, {"data": "héllo ✓ 😀", "seq": 0})

    # ---- INTERRUPT (§5.4) ----
    frame("interrupt/bare", "§4.4", "INTERRUPT of invocation 1 with no fields: payload "
          "length 0.", "INTERRUPT", 1, {}, sender="client")
    frame("interrupt/reason", "§5.4", "INTERRUPT of invocation 3 with a reason.",
          "INTERRUPT", 3, {"reason": "user pressed stop"}, sender="client",
          example="The client asks the server to stop invocation 3, giving a reason for the "
                  "logs.")
    frame("interrupt/server-request", "§5.4", "Server INTERRUPT of server request 0x8001 "
          "(server id space), no fields.", "INTERRUPT", 0x8001, {}, sender="server")

    # ---- TOOL_DEF (§5.5) ----
    frame("tool_def/add-full", "§5.5", "TOOL_DEF add with every field: name, description, "
          "input_schema and annotations.",
          "TOOL_DEF", 0, {"op": 0, "name": "search", "description": "Search the docs.",
                          "input_schema": {"type": "object",
                                           "properties": {"q": {"type": "string"}},
                                           "required": ["q"]},
                          "annotations": {"readOnly": True}})
    frame("tool_def/add", "§5.5", "TOOL_DEF add of tool \"echo\" with a description and an "
          "input schema.",
          "TOOL_DEF", 0, {"op": 0, "name": "echo", "description": "Echo t.",
                          "input_schema": {"type": "object"}},
          example="The server adds the tool `echo` to the client's tool set, with a "
                  "description and a JSON Schema for its arguments.")
    frame("tool_def/add-minimal", "§5.5", "TOOL_DEF add with only the required fields op "
          "and name.", "TOOL_DEF", 0, {"op": 0, "name": "echo"})
    frame("tool_def/update-str16", "§4.2", "TOOL_DEF update with a 300-byte description "
          "(str 16).", "TOOL_DEF", 0, {"op": 1, "name": "search", "description": DESC300})
    frame("tool_def/remove", "§5.5", "TOOL_DEF remove of tool \"search\".",
          "TOOL_DEF", 0, {"op": 2, "name": "search"})

    # ---- COMPLETE (§5.6) ----
    frame("complete/ok", "§5.6", "COMPLETE ok with a result and all four metrics.",
          "COMPLETE", 1, {"status": 0, "result": {"answer": 42},
                          "metrics": {"wall_us": 1500, "cpu_us": 900, "input_tokens": 12,
                                      "output_tokens": 34}},
          example="Invocation 1 completed successfully with a result and execution metrics.")
    frame("complete/cancelled", "§5.6", "COMPLETE cancelled with metrics.",
          "COMPLETE", 3, {"status": 1, "metrics": {"wall_us": 250}})
    frame("complete/failed", "§5.6", "COMPLETE failed with a result describing the failure "
          "and metrics.", "COMPLETE", 4,
          {"status": 2, "result": "division by zero",
           "metrics": {"wall_us": 70000, "cpu_us": 65000}})
    frame("complete/minimal", "§5.6", "COMPLETE ok with only the required field status.",
          "COMPLETE", 2, {"status": 0})
    frame("complete/metrics-uint64", "§5.6", "COMPLETE whose metrics wall_us is 2^64-1 "
          "(uint 64; above 2^53, so a string in JSON) and output_tokens 2^32 (uint 64).",
          "COMPLETE", 5, {"status": 0, "metrics": {"wall_us": U64, "output_tokens": 2 ** 32}})

    # ---- ERROR (§5.7) ----
    frame("error/connection", "§5.7", "ERROR with id 0 (the connection): PROTOCOL_VIOLATION "
          "with a message.", "ERROR", 0,
          {"code": ERROR_CODES["PROTOCOL_VIOLATION"], "message": "INVOKE before HELLO"})
    frame("error/invocation", "§5.7", "ERROR for invocation 5 with every field: "
          "TOO_MANY_INFLIGHT, message, retryable = true, frame_type 2 (INVOKE).",
          "ERROR", 5, {"code": ERROR_CODES["TOO_MANY_INFLIGHT"],
                       "message": "max_inflight 128 reached", "retryable": True,
                       "frame_type": 2},
          example="The server refuses invocation 5 because too many are in flight; the "
                  "client may retry later.")
    frame("error/frame-error", "§3.7", "ERROR reporting a frame error: INVALID_FIELD for an "
          "INVOKE with id 9, frame_type 2.", "ERROR", 9,
          {"code": ERROR_CODES["INVALID_FIELD"], "message": "field 0 (tool): empty",
           "frame_type": 2})
    frame("error/minimal", "§5.7", "ERROR with only the required field code (INTERNAL), "
          "id 7.", "ERROR", 7, {"code": ERROR_CODES["INTERNAL"]})
    frame("error/app-defined-code", "§12.1", "ERROR with an application-defined code 0x1234 "
          "(uint 16).", "ERROR", 7, {"code": 0x1234})
    frame("error/server-request", "§5.7", "Client ERROR for server request 0x8000 "
          "(DRAINING).", "ERROR", 0x8000, {"code": ERROR_CODES["DRAINING"], "retryable": True},
          sender="client")

    # ---- PING / PONG (§5.8) ----
    frame("ping/empty", "§5.8", "PING: no fields, payload length 0.", "PING", 0, {},
          example="A heartbeat: PING has no fields, so its payload is empty (length 0).")
    frame("pong/empty", "§5.8", "PONG: no fields, payload length 0.", "PONG", 0, {},
          example="The answer to a PING; also no payload.")
    frame("ping/received", "§5.8, §11.1", "PING of a resumable session acknowledging 300 "
          "counted frames (uint 16).", "PING", 0, {"received": 300})
    frame("pong/received", "§5.8, §11.1", "PONG of a resumable session acknowledging 2^40 "
          "counted frames (uint 64).", "PONG", 0, {"received": 2 ** 40})

    # ---- REQUEST (§5.9) ----
    frame("request/full", "§5.9", "REQUEST with every field: kind confirm, body, invocation 1; "
          "lowest server id 0x8000.", "REQUEST", 0x8000,
          {"kind": "confirm", "body": {"question": "Delete 3 files?", "choices": ["yes", "no"]},
           "invocation": 1},
          example="The server asks the client to confirm something on behalf of invocation 1; "
                  "the request has server id 0x8000.")
    frame("request/minimal", "§5.9", "REQUEST with only kind; highest server id 0xffff.",
          "REQUEST", 0xFFFF, {"kind": "clarify"})

    # ---- REPLY (§5.10) ----
    frame("reply/answered", "§5.10", "REPLY answered with a body.", "REPLY", 0x8000,
          {"status": 0, "body": "yes"},
          example="The client answers server request 0x8000 with `\"yes\"`.")
    frame("reply/cancelled", "§5.10", "REPLY cancelled with only the required field status.",
          "REPLY", 0xFFFF, {"status": 1})
    frame("reply/declined", "§5.10", "REPLY declined with a body.", "REPLY", 0x8001,
          {"status": 2, "body": {"reason": "not allowed"}})

    # ---- CREDIT (§5.11) ----
    frame("credit/basic", "§5.11", "CREDIT of 131072 bytes (uint 32) for invocation 1.",
          "CREDIT", 1, {"bytes": 131072},
          example="The client grants invocation 1 another 128 KiB of STREAM window.")
    frame("credit/one", "§5.11", "CREDIT of 1 byte, the minimum.", "CREDIT", 2, {"bytes": 1})
    frame("credit/max", "§5.11", "CREDIT of 2^32-1 bytes, the maximum.", "CREDIT", 2,
          {"bytes": U32})

    # ---- GOAWAY (§5.12) ----
    frame("goaway/full", "§5.12", "GOAWAY with reason and timeout_ms 5000.", "GOAWAY", 0,
          {"reason": "shutting down", "timeout_ms": 5000},
          example="A side starts draining: in-flight exchanges get 5 s to finish.")
    frame("goaway/bare", "§4.4", "GOAWAY with no fields: payload length 0.", "GOAWAY", 0, {})

    # ---- RESUME (§5.13) ----
    frame("hello/client-resume-limits", "§5.1, §11", "Client HELLO offering resume with "
          "its replay buffer (64 KiB) and resume window (10 s) in limits 5 and 6.", "HELLO", 0,
          {"versions": [1], "capabilities": ["resume"],
           "limits": {"replay_buffer": 65536, "resume_window_ms": 10000}}, sender="client")
    frame("resume/client", "§5.13", "Client RESUME with a 16-byte token and received 42.",
          "RESUME", 0, {"token": TOKEN16, "received": 42}, sender="client",
          example="On a new transport, the client resumes its session: it presents the "
                  "resume token and says it received 42 counted frames.")
    frame("resume/server-uint64", "§5.13", "Server RESUME with received 2^40 (uint 64).",
          "RESUME", 0, {"received": 2 ** 40}, sender="server")
    frame("resume/client-max", "§5.13", "Client RESUME with received 2^64-1 (above 2^53: a "
          "string in JSON).", "RESUME", 0, {"token": b"\x01", "received": U64},
          sender="client")

    # ---- decode-only alternates (encode: false) ----
    decode_only("decode-only/stream-seq-uint16", "§4.2",
                "STREAM whose seq 5 is written as uint 16 (cd 00 05) instead of a fixint.",
                "STREAM", 1, b"\x82" + b"\x00" + pk("x") + b"\x01" + b"\xcd\x00\x05",
                {"data": {"str": "x"}, "seq": 5})
    decode_only("decode-only/received-uint64-small", "§4.2",
                "RESUME whose received 42 is written as uint 64.",
                "RESUME", 0, b"\x82\x00" + pk(TOKEN16) + b"\x01\xcf" + struct.pack(">Q", 42),
                {"token": {"bin": hexs(TOKEN16)}, "received": 42}, sender="client")
    decode_only("decode-only/credit-int8", "§4.2",
                "CREDIT whose bytes 5 is written as int 8 (d0 05), a non-negative signed int.",
                "CREDIT", 1, b"\x81\x00\xd0\x05", {"bytes": 5})
    decode_only("decode-only/credit-int32", "§4.2",
                "CREDIT whose bytes 65536 is written as int 32 (d2 00 01 00 00).",
                "CREDIT", 1, b"\x81\x00\xd2\x00\x01\x00\x00", {"bytes": 65536})
    decode_only("decode-only/invoke-keys-descending", "§4.1",
                "INVOKE with keys in descending order (2, 1, 0).",
                "INVOKE", 1,
                b"\x83" + b"\x02" + pk(1000) + b"\x01" + pk({"t": "hi"}) + b"\x00" + pk("echo"),
                {"tool": "echo", "args": {"msgpack": hexs(pk({"t": "hi"}))},
                 "deadline_ms": 1000})
    decode_only("decode-only/invoke-unknown-key", "§4.3",
                "INVOKE with an unknown key 100 whose value, an array, must be ignored.",
                "INVOKE", 1, b"\x82" + b"\x00" + pk("echo") + b"\x64" + pk([1, "two", [3]]),
                {"tool": "echo"})
    decode_only("decode-only/pong-unknown-key", "§5.8",
                "PONG with an unknown key 5; no fields are defined, so it decodes as empty.",
                "PONG", 0, b"\x81\x05" + pk("x"), {})
    decode_only("decode-only/ping-empty-map", "§4.4",
                "PING whose payload is an explicit empty map 80 (length 1) instead of length 0.",
                "PING", 0, b"\x80", {})
    decode_only("decode-only/invoke-args-nil", "§4.2",
                "INVOKE with args written as nil: an optional field that is nil is absent.",
                "INVOKE", 1, b"\x82\x00" + pk("echo") + b"\x01\xc0", {"tool": "echo"})
    decode_only("decode-only/interrupt-reason-nil", "§4.2",
                "INTERRUPT whose only field reason is nil: decodes as a bare INTERRUPT.",
                "INTERRUPT", 1, b"\x81\x00\xc0", {}, sender="client")
    decode_only("decode-only/invoke-map16", "§4.1",
                "INVOKE whose payload map is written as map 16 (de 00 01) instead of a fixmap.",
                "INVOKE", 1, b"\xde\x00\x01\x00" + pk("echo"), {"tool": "echo"})
    decode_only("decode-only/invoke-tool-str8", "§4.2",
                "INVOKE whose 4-byte tool name is written as str 8 (d9 04) instead of a fixstr.",
                "INVOKE", 1, b"\x81\x00\xd9\x04echo", {"tool": "echo"})
    decode_only("decode-only/hello-versions-repeated", "§4.3",
                "Client HELLO whose versions [1, 1] repeats an entry: the same as [1].",
                "HELLO", 0, b"\x81\x00\x92\x01\x01", {"versions": [1]}, sender="client")
    decode_only("decode-only/invoke-unknown-key-twice", "§4.3",
                "INVOKE with the undefined key 9 twice: ignored both times.",
                "INVOKE", 1, b"\x83\x00" + pk("echo") + b"\x09\x01\x09\x02",
                {"tool": "echo"})
    decode_only("decode-only/invoke-args-not-utf8", "§4.3",
                "INVOKE whose args (any) is a string holding the byte ff: strings inside an "
                "`any` value are not checked for UTF-8.",
                "INVOKE", 1, b"\x82\x00" + pk("echo") + b"\x01\xa2a\xff",
                {"tool": "echo", "args": {"msgpack": "a2 61 ff"}})
    decode_only("decode-only/complete-metrics-unknown-key", "§4.3",
                "COMPLETE whose metrics map has the undefined key 9 (ignored) beside wall_us.",
                "COMPLETE", 1, b"\x82\x00\x00\x02\x82\x00\x05\x09" + pk("x"),
                {"status": 0, "metrics": {"wall_us": 5}})
    decode_only("decode-only/hello-limits-unknown-key", "§4.3, §5.1",
                "Server HELLO whose limits map has the undefined key 7 (ignored) beside "
                "max_inflight.", "HELLO", 0,
                b"\x83\x00\x91\x01\x02\x82\x01\x10\x07\x90\x04" + pk("c1"),
                {"versions": [1], "limits": {"max_inflight": 16}, "connection_id": "c1"},
                sender="server")
    decode_only("decode-only/stream-data-bin16", "§4.2",
                "STREAM whose 2-byte binary data is written as bin 16 (c5 00 02).",
                "STREAM", 1, b"\x82\x00\xc5\x00\x02\xca\xfe\x01\x00",
                {"data": {"bin": "ca fe"}, "seq": 0})


# ---------------------------------------------------------------------------------------------
# Rejection vectors
# ---------------------------------------------------------------------------------------------

REJ_TESTS: list[dict] = []


def reply_id(type_code: int, rid: int, error: str) -> int:
    """The request id of the ERROR a receiver sends for a rejected frame (§3.7, §6.6).

    A connection error is sent with id 0. A frame error names the frame's id only if that id
    is allowed for the frame's type (the type is defined and the id satisfies §3.5);
    otherwise 0, so that a frame with a bad id can never end an unrelated exchange.
    """
    if ERROR_CODES[error] < 0x10:
        return 0
    tn = TYPE_NAMES.get(type_code)
    return rid if tn is not None and id_allowed(tn, rid) else 0


def rej(vid, spec, description, type_code, rid, payload: bytes, error, *, flags=0, version=1,
        receiver=None, config=None, role_dependent=False):
    """A frame (header + full payload) that a receiver must reject with `error`."""
    tn = TYPE_NAMES.get(type_code)
    if receiver is None:
        receiver = OTHER_ROLE[DIRECTION[tn]] if tn else "either"
    fb = header(type_code, rid, len(payload), flags=flags, version=version) + payload
    connection_error = ERROR_CODES[error] < 0x10
    # A receiver MUST NOT answer an ERROR frame with an ERROR frame (§3.7).
    reply = not (tn == "ERROR" and not connection_error)
    t = {"id": vid, "spec": spec, "description": description, "hex": hexs(fb),
         "error": error,
         "request_id": reply_id(type_code, rid, error),
         "frame_type": type_code, "receiver": receiver, "reply": reply}
    if role_dependent:
        # The fault exists only because of the sender's role (§5.1, §5.13): a role-agnostic
        # frame decoder accepts the frame; the receiving role's checks must reject it.
        assert receiver in ("client", "server")
        t["role_dependent"] = True
    if config:
        t["config"] = config
    REJ_TESTS.append(t)


def m(*pairs) -> bytes:
    """Payload map from (key_bytes_or_int, value_bytes) pairs, in the given order."""
    out = map_header(len(pairs))
    for k, v in pairs:
        out += pk(k) if isinstance(k, (int, str)) else k
        out += v
    return out


INV = 0x2
ECHO = pk("echo")
INVOKE_ECHO = m((0, ECHO))


def too_large_payload(n: int, tool_bytes: bytes = ECHO) -> bytes:
    """A well-formed INVOKE payload of exactly n bytes: {0: "echo", 1: "xxx…"}."""
    for pad in range(n):
        p = m((0, tool_bytes), (1, pk("x" * pad)))
        if len(p) == n:
            return p
    raise AssertionError(n)


def build_rejections():
    H = TYPE_CODES
    client_hello = m((0, pk([1])))
    # ---- §3.2 version ----
    rej("header/version-0", "§3.2", "Client HELLO with header version 0 (first byte 01).",
        H["HELLO"], 0, client_hello, "UNSUPPORTED_VERSION", version=0, receiver="server")
    rej("header/version-2", "§3.2", "Client HELLO with header version 2 (first byte 21).",
        H["HELLO"], 0, client_hello, "UNSUPPORTED_VERSION", version=2, receiver="server")
    rej("header/version-15", "§3.2", "PING with header version 15 (first byte f8).",
        H["PING"], 0, b"", "UNSUPPORTED_VERSION", version=15)
    # ---- §3.3 reserved types ----
    rej("header/type-0", "§3.3", "Frame of reserved type 0x0 (first byte 10), id 0, empty "
        "payload.", 0x0, 0, b"", "UNKNOWN_FRAME_TYPE")
    rej("header/type-15", "§3.3", "Frame of reserved type 0xF (first byte 1f), id 0, with a "
        "7-byte payload that must be skipped.", 0xF, 0, INVOKE_ECHO, "UNKNOWN_FRAME_TYPE")
    # ---- §3.4 flags ----
    for bit in range(8):
        fl = 1 << bit
        rej(f"header/flag-0x{fl:02x}", "§3.4", f"INVOKE id 1 with flag bit 0x{fl:02x} set.",
            INV, 1, INVOKE_ECHO, "RESERVED_FLAGS", flags=fl)
    # ---- §3.6 size limit ----
    rej("header/too-large", "§3.6", "INVOKE id 1 with a 65-byte payload (present in full) "
        "against max_frame_payload 64.", INV, 1, too_large_payload(65), "FRAME_TOO_LARGE",
        config={"max_frame_payload": 64})
    rej("header/too-large-1k", "§3.6", "INVOKE id 2 with a 1024-byte payload (present in full) "
        "against max_frame_payload 64.", INV, 2, too_large_payload(1024), "FRAME_TOO_LARGE",
        config={"max_frame_payload": 64})
    # ---- §3.5 ids ----
    rej("id/hello-nonzero", "§3.5", "Client HELLO with id 5.", H["HELLO"], 5, client_hello,
        "INVALID_ID", receiver="server")
    rej("id/invoke-zero", "§3.5", "INVOKE with id 0.", INV, 0, INVOKE_ECHO, "INVALID_ID")
    rej("id/invoke-server-space", "§3.5", "INVOKE with server-space id 0x8000.", INV, 0x8000,
        INVOKE_ECHO, "INVALID_ID")
    rej("id/invoke-ffff", "§3.5", "INVOKE with server-space id 0xffff.", INV, 0xFFFF,
        INVOKE_ECHO, "INVALID_ID")
    rej("id/request-client-space", "§3.5", "REQUEST with client-space id 1.", H["REQUEST"], 1,
        m((0, pk("confirm"))), "INVALID_ID")
    rej("id/request-zero", "§3.5", "REQUEST with id 0.", H["REQUEST"], 0,
        m((0, pk("confirm"))), "INVALID_ID")
    rej("id/reply-client-space", "§3.5", "REPLY with client-space id 2.", H["REPLY"], 2,
        m((0, pk(0))), "INVALID_ID")
    rej("id/credit-zero", "§3.5", "CREDIT with id 0.", H["CREDIT"], 0, m((0, pk(1024))),
        "INVALID_ID")
    rej("id/stream-server-space", "§3.5", "STREAM with server-space id 0x8001.", H["STREAM"],
        0x8001, m((0, pk("x")), (1, pk(0))), "INVALID_ID")
    rej("id/complete-zero", "§3.5", "COMPLETE with id 0.", H["COMPLETE"], 0, m((0, pk(0))),
        "INVALID_ID")
    rej("id/tool_def-nonzero", "§3.5", "TOOL_DEF with id 1.", H["TOOL_DEF"], 1,
        m((0, pk(0)), (1, ECHO)), "INVALID_ID")
    rej("id/interrupt-zero", "§3.5", "INTERRUPT with id 0, which is in neither id space.",
        H["INTERRUPT"], 0, b"", "INVALID_ID", receiver="server")
    rej("id/ping-nonzero", "§3.5", "PING with id 1.", H["PING"], 1, b"", "INVALID_ID")
    rej("id/pong-nonzero", "§3.5", "PONG with id 0x8000.", H["PONG"], 0x8000, b"",
        "INVALID_ID")
    rej("id/goaway-nonzero", "§3.5", "GOAWAY with id 3.", H["GOAWAY"], 3, b"", "INVALID_ID")
    rej("id/resume-nonzero", "§3.5", "Client RESUME with id 1.", H["RESUME"], 1,
        m((0, pk(TOKEN16)), (1, pk(0))), "INVALID_ID", receiver="server")
    # ---- §4 malformed payloads ----
    rej("payload/array", "§4.3", "INVOKE whose payload is an array [\"echo\"], not a map.",
        INV, 1, pk(["echo"]), "MALFORMED_PAYLOAD")
    rej("payload/int", "§4.3", "INVOKE whose payload is the bare integer 5.", INV, 1, b"\x05",
        "MALFORMED_PAYLOAD")
    rej("payload/ping-array", "§4.3", "PING whose payload is an empty array (90), not a map.",
        H["PING"], 0, b"\x90", "MALFORMED_PAYLOAD")
    rej("payload/truncated-map", "§4.3", "INVOKE whose map header says 2 entries but only 1 "
        "is present.", INV, 1, b"\x82\x00" + ECHO, "MALFORMED_PAYLOAD")
    rej("payload/truncated-str", "§4.3", "INVOKE whose tool string header says 4 bytes but "
        "the payload ends after 2.", INV, 1, b"\x81\x00\xa4ec", "MALFORMED_PAYLOAD")
    rej("payload/truncated-key", "§4.3", "INVOKE whose map ends after a key, without its "
        "value.", INV, 1, b"\x82\x00" + ECHO + b"\x01", "MALFORMED_PAYLOAD")
    rej("payload/string-key", "§4.3", "INVOKE with a string key \"tool\" beside key 0.",
        INV, 1, m((0, ECHO), (pk("tool"), ECHO)), "MALFORMED_PAYLOAD")
    rej("payload/negative-key", "§4.3", "INVOKE with a negative integer key -1 (ff) beside "
        "key 0.", INV, 1, m((0, ECHO), (b"\xff", pk(1))), "MALFORMED_PAYLOAD")
    rej("payload/nil-key", "§4.3", "INVOKE with a nil key beside key 0.", INV, 1,
        m((0, ECHO), (b"\xc0", pk(1))), "MALFORMED_PAYLOAD")
    rej("payload/duplicate-key", "§4.3", "INVOKE with key 0 (tool) twice.", INV, 1,
        m((0, ECHO), (0, ECHO)), "MALFORMED_PAYLOAD")
    rej("payload/trailing-byte", "§4.3", "INVOKE with one byte (c0) after the map.", INV, 1,
        INVOKE_ECHO + b"\xc0", "MALFORMED_PAYLOAD")
    rej("payload/two-maps", "§4.3", "PING whose payload is two empty maps (80 80): trailing "
        "bytes.", H["PING"], 0, b"\x80\x80", "MALFORMED_PAYLOAD")
    rej("payload/invalid-byte", "§4.3", "INVOKE whose payload is the never-used byte c1.",
        INV, 1, b"\xc1", "MALFORMED_PAYLOAD")
    rej("payload/invalid-byte-in-args", "§4.2", "INVOKE whose args value is the never-used "
        "byte c1.", INV, 1, m((0, ECHO), (1, b"\xc1")), "MALFORMED_PAYLOAD")
    rej("payload/truncated-any", "§4.2", "INVOKE whose args (any) is an array of 2 with only "
        "1 element before the payload ends.", INV, 1, b"\x82\x00" + ECHO + b"\x01\x92\x01",
        "MALFORMED_PAYLOAD")
    rej("payload/unknown-key-invalid-value", "§4.3", "INVOKE with an unknown key 100 whose "
        "value is the never-used byte c1.", INV, 1, m((0, ECHO), (100, b"\xc1")),
        "MALFORMED_PAYLOAD")
    rej("payload/limits-string-key", "§4.3", "Client HELLO whose nested limits map has the "
        "string key \"x\": nested maps follow the same rules.", H["HELLO"], 0,
        m((0, pk([1])), (2, b"\x81" + pk("x") + pk(1))), "MALFORMED_PAYLOAD",
        receiver="server")
    rej("payload/limits-duplicate-key", "§4.3", "Client HELLO whose limits map has key 0 "
        "(max_frame_payload) twice.", H["HELLO"], 0,
        m((0, pk([1])), (2, b"\x82\x00" + pk(65536) + b"\x00" + pk(65536))),
        "MALFORMED_PAYLOAD", receiver="server")
    rej("payload/metrics-negative-key", "§4.3", "COMPLETE whose metrics map has the negative "
        "key -1.", H["COMPLETE"], 1, m((0, pk(0)), (2, b"\x81\xff\x05")),
        "MALFORMED_PAYLOAD")
    rej("payload/metrics-duplicate-key", "§4.3", "COMPLETE whose metrics map has key 0 "
        "(wall_us) twice.", H["COMPLETE"], 1, m((0, pk(0)), (2, b"\x82\x00\x01\x00\x02")),
        "MALFORMED_PAYLOAD")
    # ---- MISSING_FIELD ----
    rej("missing/invoke-tool", "§5.2", "INVOKE without tool (only args).", INV, 1,
        m((1, pk({"a": 1}))), "MISSING_FIELD")
    rej("missing/invoke-tool-nil", "§4.2", "INVOKE whose required tool is nil.", INV, 1,
        m((0, b"\xc0")), "MISSING_FIELD")
    rej("missing/invoke-empty", "§4.4", "INVOKE with payload length 0 (no tool).", INV, 1, b"",
        "MISSING_FIELD")
    rej("missing/stream-seq", "§5.3", "STREAM without seq.", H["STREAM"], 1,
        m((0, pk("hi"))), "MISSING_FIELD")
    rej("missing/stream-data", "§5.3", "STREAM without data.", H["STREAM"], 1,
        m((1, pk(0))), "MISSING_FIELD")
    rej("missing/stream-data-nil", "§4.2", "STREAM whose required data is nil.", H["STREAM"],
        1, m((0, b"\xc0"), (1, pk(0))), "MISSING_FIELD")
    rej("missing/tool_def-op", "§5.5", "TOOL_DEF without op.", H["TOOL_DEF"], 0,
        m((1, ECHO)), "MISSING_FIELD")
    rej("missing/tool_def-name", "§5.5", "TOOL_DEF add without name.", H["TOOL_DEF"], 0,
        m((0, pk(0))), "MISSING_FIELD")
    rej("missing/complete-status", "§5.6", "COMPLETE without status (only result).",
        H["COMPLETE"], 1, m((1, pk("done"))), "MISSING_FIELD")
    rej("missing/error-code", "§5.7", "ERROR without code (only message). No ERROR is sent "
        "in reply (§3.7).", H["ERROR"], 1, m((1, pk("oops"))), "MISSING_FIELD")
    rej("missing/credit-bytes", "§5.11", "CREDIT whose payload is an empty map (80).",
        H["CREDIT"], 1, b"\x80", "MISSING_FIELD")
    rej("missing/request-kind", "§5.9", "REQUEST without kind (only body).", H["REQUEST"],
        0x8000, m((1, pk("Which file?"))), "MISSING_FIELD")
    rej("missing/reply-status", "§5.10", "REPLY without status (only body).", H["REPLY"],
        0x8000, m((1, pk("yes"))), "MISSING_FIELD")
    rej("missing/resume-received", "§5.13", "Client RESUME without received.", H["RESUME"],
        0, m((0, pk(TOKEN16))), "MISSING_FIELD", receiver="server")
    rej("missing/resume-token", "§5.13", "Client RESUME without token (required from a "
        "client).", H["RESUME"], 0, m((1, pk(0))), "MISSING_FIELD", receiver="server",
        role_dependent=True)
    rej("missing/hello-versions", "§5.1", "Client HELLO without versions.", H["HELLO"], 0,
        m((7, pk("asp-py/1.0"))), "MISSING_FIELD", receiver="server")
    # ---- INVALID_FIELD ----
    rej("invalid/invoke-tool-int", "§4.2", "INVOKE whose tool is the integer 5.", INV, 1,
        m((0, pk(5))), "INVALID_FIELD")
    rej("invalid/invoke-tool-bin", "§4.2", "INVOKE whose tool is bin \"echo\" instead of str.",
        INV, 1, m((0, pk(b"echo"))), "INVALID_FIELD")
    rej("invalid/invoke-tool-empty", "§5.2", "INVOKE whose tool is the empty string (range "
        "1–128 bytes).", INV, 1, m((0, pk(""))), "INVALID_FIELD")
    rej("invalid/invoke-tool-129", "§5.2", "INVOKE whose tool is 129 bytes long (maximum "
        "128).", INV, 1, m((0, pk("t" * 129))), "INVALID_FIELD")
    rej("invalid/invoke-tool-utf8", "§4.2", "INVOKE whose tool string contains the byte ff "
        "(not UTF-8).", INV, 1, m((0, b"\xa4ec\xffo")), "INVALID_FIELD")
    rej("invalid/invoke-tool-utf8-surrogate", "§4.2", "INVOKE whose tool string contains an "
        "encoded UTF-16 surrogate (ed a0 80), which is not UTF-8.", INV, 1,
        m((0, b"\xa5a\xed\xa0\x80b")), "INVALID_FIELD")
    rej("invalid/invoke-deadline-2^32", "§5.2", "INVOKE whose deadline_ms is 2^32 (uint 64), "
        "above its range.", INV, 1, m((0, ECHO), (2, b"\xcf" + struct.pack(">Q", 2 ** 32))),
        "INVALID_FIELD")
    rej("invalid/invoke-deadline-negative", "§4.2", "INVOKE whose deadline_ms is -1 (ff).",
        INV, 1, m((0, ECHO), (2, b"\xff")), "INVALID_FIELD")
    rej("invalid/stream-seq-negative", "§4.2", "STREAM whose seq is -1 (negative fixint ff).",
        H["STREAM"], 1, m((0, pk("x")), (1, b"\xff")), "INVALID_FIELD")
    rej("invalid/stream-seq-negative-int8", "§4.2", "STREAM whose seq is -1 written as int 8 "
        "(d0 ff).", H["STREAM"], 1, m((0, pk("x")), (1, b"\xd0\xff")), "INVALID_FIELD")
    rej("invalid/stream-seq-string", "§4.2", "STREAM whose seq is the string \"0\".",
        H["STREAM"], 1, m((0, pk("x")), (1, pk("0"))), "INVALID_FIELD")
    rej("invalid/stream-seq-float", "§4.2", "STREAM whose seq is the float 64 value 1.0.",
        H["STREAM"], 1, m((0, pk("x")), (1, pk(1.0))), "INVALID_FIELD")
    rej("invalid/stream-data-int", "§5.3", "STREAM whose data is the integer 7.", H["STREAM"],
        1, m((0, pk(7)), (1, pk(0))), "INVALID_FIELD")
    rej("invalid/stream-empty-not-final", "§5.3", "STREAM with zero-length text data and no "
        "final: only the final chunk may be empty.", H["STREAM"], 3, m((0, pk("")), (1, pk(2))),
        "INVALID_FIELD")
    rej("invalid/stream-final-int", "§4.2", "STREAM whose final is the integer 1, not a bool.",
        H["STREAM"], 1, m((0, pk("x")), (1, pk(0)), (2, pk(1))), "INVALID_FIELD")
    rej("invalid/interrupt-reason-1025", "§5.4", "INTERRUPT whose reason is 1025 bytes "
        "(maximum 1024).", H["INTERRUPT"], 1, m((0, pk("r" * 1025))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/tool_def-op-3", "§5.5", "TOOL_DEF with op 3 (range 0–2).", H["TOOL_DEF"], 0,
        m((0, pk(3)), (1, ECHO)), "INVALID_FIELD")
    rej("invalid/tool_def-name-bin", "§4.2", "TOOL_DEF whose name is bin instead of str.",
        H["TOOL_DEF"], 0, m((0, pk(0)), (1, pk(b"echo"))), "INVALID_FIELD")
    rej("invalid/complete-status-3", "§5.6", "COMPLETE with status 3 (range 0–2).",
        H["COMPLETE"], 1, m((0, pk(3))), "INVALID_FIELD")
    rej("invalid/complete-metrics-not-map", "§5.6", "COMPLETE whose metrics is an array.",
        H["COMPLETE"], 1, m((0, pk(0)), (2, pk([1500]))), "INVALID_FIELD")
    rej("invalid/complete-metrics-negative", "§5.6", "COMPLETE whose metrics wall_us is -1.",
        H["COMPLETE"], 1, m((0, pk(0)), (2, b"\x81\x00\xff")), "INVALID_FIELD")
    rej("invalid/error-code-0", "§12.1", "ERROR with code 0. No ERROR is sent in reply (§3.7).",
        H["ERROR"], 1, m((0, pk(0))), "INVALID_FIELD")
    rej("invalid/error-code-65536", "§5.7", "ERROR with code 65536 (uint 32; range up to "
        "65535). No ERROR is sent in reply.", H["ERROR"], 0, m((0, pk(65536))),
        "INVALID_FIELD")
    rej("invalid/error-frame-type-16", "§5.7", "ERROR with frame_type 16 (range 0–15). No "
        "ERROR is sent in reply.", H["ERROR"], 0, m((0, pk(0x13)), (3, pk(16))),
        "INVALID_FIELD")
    rej("invalid/request-kind-empty", "§5.9", "REQUEST whose kind is the empty string.",
        H["REQUEST"], 0x8000, m((0, pk(""))), "INVALID_FIELD")
    rej("invalid/request-invocation-0", "§5.9", "REQUEST whose invocation is 0 (range "
        "1–32767).", H["REQUEST"], 0x8000, m((0, pk("confirm")), (2, pk(0))), "INVALID_FIELD")
    rej("invalid/request-invocation-32768", "§5.9", "REQUEST whose invocation is 32768 "
        "(a server-space value).", H["REQUEST"], 0x8000, m((0, pk("confirm")), (2, pk(32768))),
        "INVALID_FIELD")
    rej("invalid/reply-status-3", "§5.10", "REPLY with status 3 (range 0–2).", H["REPLY"],
        0x8000, m((0, pk(3))), "INVALID_FIELD")
    rej("invalid/credit-bytes-0", "§5.11", "CREDIT of 0 bytes (range 1–2^32-1).",
        H["CREDIT"], 1, m((0, pk(0))), "INVALID_FIELD")
    rej("invalid/credit-bytes-2^32", "§5.11", "CREDIT of 2^32 bytes (uint 64), above range.",
        H["CREDIT"], 1, m((0, pk(2 ** 32))), "INVALID_FIELD")
    rej("invalid/goaway-timeout-string", "§5.12", "GOAWAY whose timeout_ms is a string.",
        H["GOAWAY"], 0, m((1, pk("5000"))), "INVALID_FIELD")
    rej("invalid/resume-token-empty", "§5.13", "Client RESUME whose token is an empty bin "
        "(range 1–64 bytes).", H["RESUME"], 0, m((0, pk(b"")), (1, pk(0))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/resume-token-str", "§5.13", "Client RESUME whose token is a str, not bin.",
        H["RESUME"], 0, m((0, pk("abc")), (1, pk(0))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-versions-empty", "§5.1", "Client HELLO whose versions is an empty "
        "array (1–16 entries).", H["HELLO"], 0, m((0, pk([]))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-versions-zero", "§5.1", "Client HELLO whose versions [1, 0] contains 0 "
        "(elements 1–15).", H["HELLO"], 0, m((0, pk([1, 0]))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-versions-16", "§5.1", "Client HELLO whose versions [16] is out of "
        "range (elements 1–15).", H["HELLO"], 0, m((0, pk([16]))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-versions-17-entries", "§5.1", "Client HELLO with 17 versions (maximum "
        "16 entries).", H["HELLO"], 0, m((0, pk([1] * 17))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-versions-not-array", "§5.1", "Client HELLO whose versions is the "
        "integer 1, not an array.", H["HELLO"], 0, m((0, pk(1))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-capability-int", "§5.1", "Client HELLO whose capabilities contains an "
        "integer.", H["HELLO"], 0, m((0, pk([1])), (1, pk(["resume", 7]))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-capability-65", "§5.1", "Client HELLO with a capability name of 65 "
        "bytes (maximum 64).", H["HELLO"], 0, m((0, pk([1])), (1, pk(["c" * 65]))),
        "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-max-frame-payload-10", "§5.1", "Client HELLO whose "
        "limits.max_frame_payload is 10 (minimum 64).", H["HELLO"], 0,
        m((0, pk([1])), (2, pk({0: 10}))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-capability-empty", "§5.1", "Client HELLO with an empty capability "
        "name (names are 1–64 bytes).", H["HELLO"], 0, m((0, pk([1])), (1, pk(["requests", ""]))),
        "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-max-chunk-3", "§5.1, §7.5", "Client HELLO whose "
        "limits.max_chunk is 3 (minimum 4: one UTF-8 character always fits a chunk).",
        H["HELLO"], 0, m((0, pk([1])), (2, pk({3: 3}))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-initial-window-7", "§5.1, §7.5", "Client HELLO whose "
        "limits.initial_window is 7 (minimum 8: twice the smallest max_chunk, since chunks "
        "are at most half the window).", H["HELLO"], 0, m((0, pk([1])), (2, pk({4: 7}))),
        "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-max-inflight-0", "§5.1", "Client HELLO whose "
        "limits.max_inflight is 0 (range 1–32767).", H["HELLO"], 0,
        m((0, pk([1])), (2, pk({1: 0}))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-not-map", "§5.1", "Client HELLO whose limits is an array.",
        H["HELLO"], 0, m((0, pk([1])), (2, pk([65536]))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-heartbeat-2^32", "§5.1", "Client HELLO whose heartbeat_ms is 2^32.",
        H["HELLO"], 0, m((0, pk([1])), (3, pk(2 ** 32))), "INVALID_FIELD", receiver="server")
    rej("invalid/hello-connection-id-empty", "§5.1", "Server HELLO whose connection_id is the "
        "empty string (range 1–64 bytes).", H["HELLO"], 0, m((0, pk([1])), (4, pk(""))),
        "INVALID_FIELD", receiver="client")
    rej("invalid/hello-client-connection-id-int", "§4.3", "Client HELLO whose connection_id "
        "(a field only a server uses) is the integer 5: still type-checked.", H["HELLO"], 0,
        m((0, pk([1])), (4, pk(5))), "INVALID_FIELD", receiver="server")
    rej("invalid/tool_def-remove-description-int", "§4.3, §5.5", "TOOL_DEF remove whose "
        "description (ignored for remove) is the integer 7: still type-checked.",
        H["TOOL_DEF"], 0, m((0, pk(2)), (1, ECHO), (2, pk(7))), "INVALID_FIELD")
    rej("invalid/resume-server-token-str", "§4.3, §5.13", "Server RESUME whose token (a field "
        "only a client uses) is a str: still type-checked.", H["RESUME"], 0,
        m((0, pk("abc")), (1, pk(0))), "INVALID_FIELD", receiver="client")
    # ---- §3.7 processing order: several faults, the first failing step decides ----
    rej("order/version-first", "§3.7", "Version 2, reserved type 0xF, all flags set and a "
        "payload over the limit: the version check comes first.", 0xF, 7,
        too_large_payload(65), "UNSUPPORTED_VERSION", version=2, flags=0xFF,
        config={"max_frame_payload": 64})
    rej("order/length-before-type", "§3.7", "Reserved type 0x0 with a payload over the "
        "limit: FRAME_TOO_LARGE (step 2) before UNKNOWN_FRAME_TYPE (step 3).", 0x0, 0,
        too_large_payload(65), "FRAME_TOO_LARGE", config={"max_frame_payload": 64})
    rej("order/length-before-flags", "§3.7", "INVOKE with flag 0x01 and a payload over the "
        "limit: FRAME_TOO_LARGE before RESERVED_FLAGS.", INV, 1, too_large_payload(65),
        "FRAME_TOO_LARGE", flags=0x01, config={"max_frame_payload": 64})
    rej("order/type-before-flags", "§3.7", "Reserved type 0xF with flag 0x80: "
        "UNKNOWN_FRAME_TYPE before RESERVED_FLAGS.", 0xF, 0, b"", "UNKNOWN_FRAME_TYPE",
        flags=0x80)
    rej("order/flags-before-id", "§3.7", "INVOKE with id 0 and flag 0x80: RESERVED_FLAGS "
        "before INVALID_ID.", INV, 0, INVOKE_ECHO, "RESERVED_FLAGS", flags=0x80)
    rej("order/id-before-payload", "§3.7", "INVOKE with id 0 and the invalid payload c1: "
        "INVALID_ID before MALFORMED_PAYLOAD.", INV, 0, b"\xc1", "INVALID_ID")


# ---------------------------------------------------------------------------------------------
# Self-check: a hand-written MessagePack reader and a reference receiver (§3.7, §4)
# ---------------------------------------------------------------------------------------------

class Truncated(Exception):
    pass


class BadByte(Exception):
    pass


class Node:
    """A decoded MessagePack value: tag, value, and its byte span in the buffer."""
    __slots__ = ("tag", "val", "start", "end")

    def __init__(self, tag, val, start, end):
        self.tag, self.val, self.start, self.end = tag, val, start, end


def read(buf: bytes, pos: int, depth: int = 0) -> Node:
    if depth > 256:
        raise BadByte("too deep")

    def need(n):
        if pos + n > len(buf):
            raise Truncated()

    start = pos
    need(1)
    t = buf[pos]
    pos += 1

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise Truncated()
        b = buf[pos:pos + n]
        pos += n
        return b

    def be(n):
        return int.from_bytes(take(n), "big")

    def sbe(n):
        return int.from_bytes(take(n), "big", signed=True)

    if t <= 0x7F:
        return Node("int", t, start, pos)
    if t >= 0xE0:
        return Node("int", t - 0x100, start, pos)
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n = t & 0x0F if t <= 0x8F else be(2 if t == 0xDE else 4)
        pairs = []
        for _ in range(n):
            k = read(buf, pos, depth + 1)
            pos = k.end
            v = read(buf, pos, depth + 1)
            pos = v.end
            pairs.append((k, v))
        return Node("map", pairs, start, pos)
    if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
        n = t & 0x0F if t <= 0x9F else be(2 if t == 0xDC else 4)
        items = []
        for _ in range(n):
            v = read(buf, pos, depth + 1)
            pos = v.end
            items.append(v)
        return Node("array", items, start, pos)
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        n = t & 0x1F if t <= 0xBF else be({0xD9: 1, 0xDA: 2, 0xDB: 4}[t])
        return Node("str", take(n), start, pos)
    if t in (0xC4, 0xC5, 0xC6):
        n = be({0xC4: 1, 0xC5: 2, 0xC6: 4}[t])
        return Node("bin", take(n), start, pos)
    if t == 0xC0:
        return Node("nil", None, start, pos)
    if t in (0xC2, 0xC3):
        return Node("bool", t == 0xC3, start, pos)
    if t in (0xCC, 0xCD, 0xCE, 0xCF):
        return Node("int", be({0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[t]), start, pos)
    if t in (0xD0, 0xD1, 0xD2, 0xD3):
        return Node("int", sbe({0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[t]), start, pos)
    if t in (0xCA, 0xCB):
        take(4 if t == 0xCA else 8)
        return Node("float", None, start, pos)
    if t in (0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
        take(1 + {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}[t])
        return Node("ext", None, start, pos)
    if t in (0xC7, 0xC8, 0xC9):
        n = be({0xC7: 1, 0xC8: 2, 0xC9: 4}[t])
        take(1 + n)
        return Node("ext", None, start, pos)
    raise BadByte(hex(t))  # 0xc1


class Reject(Exception):
    def __init__(self, error):
        super().__init__(error)
        self.error = error


def check_field(f: F, v: Node, payload: bytes, sender: str):
    """Validate one present, non-nil field; return its JSON form or raise Reject."""
    def uint_in(n: Node, lo, hi):
        if n.tag != "int" or not (lo <= n.val <= hi):
            raise Reject("INVALID_FIELD")
        return n.val

    def utf8(n: Node, lo, hi):
        if n.tag != "str":
            raise Reject("INVALID_FIELD")
        try:
            s = n.val.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject("INVALID_FIELD")
        if not (lo <= len(n.val) <= hi):
            raise Reject("INVALID_FIELD")
        return s

    k = f.kind
    if k == "uint":
        return json_uint(uint_in(v, f.lo, f.hi))
    if k == "bool":
        if v.tag != "bool":
            raise Reject("INVALID_FIELD")
        return v.val
    if k == "str":
        return utf8(v, f.lo, f.hi)
    if k == "bin":
        if v.tag != "bin" or not (f.lo <= len(v.val) <= f.hi):
            raise Reject("INVALID_FIELD")
        return {"bin": hexs(v.val)}
    if k == "binstr":
        if v.tag == "bin":
            return {"bin": hexs(v.val)}
        return {"str": utf8(v, 0, U32)}
    if k == "any":
        return {"msgpack": hexs(payload[v.start:v.end])}
    if k in ("arr_uint", "arr_str"):
        if v.tag != "array":
            raise Reject("INVALID_FIELD")
        lo, hi = f.count[sender] if f.count and sender in f.count else (f.lo, f.hi)
        if f.count and sender == "either":
            lo, hi = min(c[0] for c in f.count.values()), max(c[1] for c in f.count.values())
        if not (lo <= len(v.val) <= hi):
            raise Reject("INVALID_FIELD")
        if k == "arr_uint":
            # §4.3: repeated entries in HELLO `versions` are the same as one.
            vals = [json_uint(uint_in(x, f.elo, f.ehi)) for x in v.val]
            return list(dict.fromkeys(vals))
        return [utf8(x, f.elo, f.ehi) for x in v.val]
    if k in ("limits", "metrics"):
        table = LIMITS if k == "limits" else METRICS
        if v.tag != "map":
            raise Reject("INVALID_FIELD")
        out, seen = {}, set()
        for kn, vn in v.val:
            # §4.3: nested maps with integer keys follow the same rules as the payload map.
            if kn.tag != "int" or kn.val < 0:
                raise Reject("MALFORMED_PAYLOAD")
            if kn.val in table:
                if kn.val in seen:
                    raise Reject("MALFORMED_PAYLOAD")
                seen.add(kn.val)
                if vn.tag == "nil":
                    continue
                name, lo, hi = table[kn.val]
                out[name] = json_uint(uint_in(vn, lo, hi))
        return out
    raise AssertionError(k)


def receive(frame_bytes: bytes, config: dict, receiver: str):
    """Reference receiver for one whole frame. Returns ("ok", type, id, fields) or
    ("reject", error, request_id, frame_type)."""
    assert len(frame_bytes) >= 8
    b0, flags, rid, length = struct.unpack(">BBHI", frame_bytes[:8])
    version, tcode = b0 >> 4, b0 & 0xF
    payload = frame_bytes[8:]
    assert len(payload) == length, "header length != payload byte count"
    try:
        if version != 1:
            return ("reject", "UNSUPPORTED_VERSION", 0, tcode)
        if length > config["max_frame_payload"]:
            raise Reject("FRAME_TOO_LARGE")
        if tcode in (0x0, 0xF):
            raise Reject("UNKNOWN_FRAME_TYPE")
        if flags:
            raise Reject("RESERVED_FLAGS")
        tn = TYPE_NAMES[tcode]
        if not id_allowed(tn, rid):
            raise Reject("INVALID_ID")
        # step 6, structure first (MALFORMED_PAYLOAD) …
        if length == 0:
            pairs = []
        else:
            try:
                root = read(payload, 0)
            except (Truncated, BadByte):
                raise Reject("MALFORMED_PAYLOAD")
            if root.tag != "map" or root.end != len(payload):
                raise Reject("MALFORMED_PAYLOAD")
            pairs = root.val
        defined = BY_KEY[tn]
        seen = {}
        for kn, vn in pairs:
            if kn.tag != "int" or kn.val < 0:
                raise Reject("MALFORMED_PAYLOAD")
            if kn.val in defined:
                if kn.val in seen:
                    raise Reject("MALFORMED_PAYLOAD")
                seen[kn.val] = vn
        sender = OTHER_ROLE[receiver]
        # … then field types (INVALID_FIELD), then presence (MISSING_FIELD).
        fields = {}
        for f in SCHEMA[tn]:
            vn = seen.get(f.key)
            if vn is None or vn.tag == "nil":
                continue
            fields[f.name] = (f.key, check_field(f, vn, payload, sender))
        for f in SCHEMA[tn]:
            req = f.req if isinstance(f.req, str) else (
                f.req.get(sender) if sender != "either" else "O")
            if req == "R" and f.name not in fields:
                raise Reject("MISSING_FIELD")
        # §5.3: only the final chunk may be empty.
        if tn == "STREAM" and "data" in fields and not fields.get("final", (0, False))[1]:
            dv = fields["data"][1]
            raw = dv.get("str", dv.get("bin")) if isinstance(dv, dict) else dv
            if raw in ("", b""):
                raise Reject("INVALID_FIELD")
        out = {name: val for name, (_, val) in sorted(fields.items(), key=lambda x: x[1][0])}
        return ("ok", tn, rid, out)
    except Reject as r:
        return ("reject", r.error, reply_id(tcode, rid, r.error), tcode)


def self_check():
    stats = {"frames": 0, "encode": 0, "decode_only": 0, "rejections": 0}
    ids = set()
    for t in FRAME_TESTS:
        assert t["id"] not in ids, t["id"]
        ids.add(t["id"])
        fb = bytes.fromhex(t["hex"].replace(" ", ""))
        assert t["hex"] == hexs(fb)
        length = struct.unpack(">I", fb[4:8])[0]
        assert length == len(fb) - 8, t["id"]
        payload = fb[8:]
        # msgpack-python must parse the payload as exactly one map (or it is empty).
        if payload:
            up = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                                  unicode_errors="surrogateescape")
            up.feed(payload)
            vals = list(up)
            assert len(vals) == 1 and isinstance(vals[0], dict), t["id"]
            if t["encode"]:
                assert payload != b"\x80", t["id"]  # §4.4: senders use length 0
                keys = list(vals[0].keys())
                assert keys == sorted(keys) and all(0 <= k <= 0x7F for k in keys), t["id"]
                assert None not in vals[0].values(), t["id"]
        receiver = OTHER_ROLE[t["sender"]]
        res = receive(fb, DEFAULT_CONFIG, receiver)
        assert res[0] == "ok", (t["id"], res)
        _, tn, rid, fields = res
        assert tn == t["frame"]["type"] and rid == t["frame"]["id"], t["id"]
        assert fields == t["frame"]["fields"], (t["id"], fields, t["frame"]["fields"])
        assert json.loads(json.dumps(fields)) == t["frame"]["fields"]
        if t["encode"]:
            # Re-encode from the JSON form with msgpack and compare bytes.
            assert reencode(t["frame"]) == fb, t["id"]
            stats["encode"] += 1
        else:
            stats["decode_only"] += 1
        stats["frames"] += 1
    for t in REJ_TESTS:
        assert t["id"] not in ids, t["id"]
        ids.add(t["id"])
        fb = bytes.fromhex(t["hex"].replace(" ", ""))
        length = struct.unpack(">I", fb[4:8])[0]
        assert length == len(fb) - 8, t["id"]
        cfg = dict(DEFAULT_CONFIG, **t.get("config", {}))
        res = receive(fb, cfg, t["receiver"])
        assert res == ("reject", t["error"], t["request_id"], t["frame_type"]), (t["id"], res)
        # Exactly the intended check fails: with a raised limit, a FRAME_TOO_LARGE frame whose
        # header is otherwise fine must be accepted (or fail later for another reason only if
        # the test is an order test).
        if t["error"] == "FRAME_TOO_LARGE" and not t["id"].startswith("order/"):
            assert receive(fb, {"max_frame_payload": U32}, t["receiver"])[0] == "ok", t["id"]
        if not t["id"].startswith("order/"):
            fixed = None
            if t["error"] == "RESERVED_FLAGS":
                fixed = fb[:1] + b"\x00" + fb[2:]
            elif t["error"] == "UNSUPPORTED_VERSION":
                fixed = bytes([0x10 | (fb[0] & 0xF)]) + fb[1:]
            elif t["error"] == "INVALID_ID":
                tn = TYPE_NAMES[fb[0] & 0xF]
                good = next(i for i in (0, 1, 0x8000) if id_allowed(tn, i))
                fixed = fb[:2] + struct.pack(">H", good) + fb[4:]
            if fixed is not None:
                # Repairing the one intended fault must yield a valid frame.
                assert receive(fixed, cfg, t["receiver"])[0] == "ok", t["id"]
        stats["rejections"] += 1
    return stats


def reencode(fr: dict) -> bytes:
    """Independent re-encoding of a frame from its JSON form (msgpack.packb of the whole map)."""
    tn = fr["type"]
    d = {}
    for name, jv in fr["fields"].items():
        f = BY_NAME[tn][name]
        if f.kind == "any":
            d[f.key] = msgpack.unpackb(bytes.fromhex(jv["msgpack"].replace(" ", "")),
                                       raw=False, strict_map_key=False)
        elif f.kind in ("bin",):
            d[f.key] = bytes.fromhex(jv["bin"].replace(" ", ""))
        elif f.kind == "binstr":
            d[f.key] = jv["str"] if "str" in jv else bytes.fromhex(jv["bin"].replace(" ", ""))
        elif f.kind in ("limits", "metrics"):
            table = LIMITS if f.kind == "limits" else METRICS
            rev = {n: k for k, (n, _, _) in table.items()}
            d[f.key] = {rev[n]: int(x) for n, x in sorted(jv.items(), key=lambda i: rev[i[0]])}
        elif f.kind == "uint":
            d[f.key] = int(jv)
        else:
            d[f.key] = jv
    d = dict(sorted(d.items()))
    payload = pk(d) if d else b""
    return header(TYPE_CODES[tn], fr["id"], len(payload)) + payload


# ---------------------------------------------------------------------------------------------
# SPEC §14 markdown
# ---------------------------------------------------------------------------------------------

ORDER = ["HELLO", "INVOKE", "STREAM", "INTERRUPT", "TOOL_DEF", "COMPLETE", "ERROR", "PING",
         "PONG", "REQUEST", "REPLY", "CREDIT", "GOAWAY", "RESUME"]


def cell_hex(b: bytes) -> str:
    if len(b) <= 24:
        return f"`{hexs(b)}`"
    return f"`{hexs(b[:16])} …` ({len(b)} bytes in all)"


def examples_markdown() -> str:
    out = []
    for n, tn in enumerate(ORDER, 1):
        vid, sentence, fb, segs = EXAMPLES[tn]
        b0, flags, rid, length = struct.unpack(">BBHI", fb[:8])
        out.append(f"### 14.{n} {tn}\n")
        out.append(f"{sentence} (Conformance vector `{vid}`.)\n")
        lines = [hexs(fb[:8])] + [hexs(fb[8 + i:8 + i + 16]) for i in range(0, length, 16)]
        out.append("```text\n" + "\n".join(lines) + "\n```\n")
        out.append("| bytes | meaning |\n|---|---|")
        out.append(f"| `{fb[0]:02x}` | version 1 (high nibble), type 0x{b0 & 0xF:X} {tn} "
                   f"(low nibble) |")
        out.append(f"| `{fb[1]:02x}` | flags: none |")
        if rid == 0:
            idm = "request id 0 (the connection)"
        elif rid < 0x8000:
            idm = f"request id {rid} (client id space)"
        else:
            idm = f"request id 0x{rid:04x} (server id space)"
        out.append(f"| `{hexs(fb[2:4])}` | {idm} |")
        if length == 0:
            out.append(f"| `{hexs(fb[4:8])}` | payload length 0: no payload, the same as an "
                       f"empty map (§4.4) |")
        else:
            out.append(f"| `{hexs(fb[4:8])}` | payload length {length} |")
            for sb, meaning in segs:
                out.append(f"| {cell_hex(sb)} | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def splice_spec(md: str) -> None:
    text = SPEC_MD.read_text(encoding="utf-8")
    block = f"{MARK_BEGIN}\n\n{md}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        a = text.index(MARK_BEGIN)
        z = text.index(MARK_END) + len(MARK_END)
        new = text[:a] + block + text[z:]
    else:
        lines = text.split("\n")
        hits = [i for i, ln in enumerate(lines) if ln.strip() == MARK_OLD]
        if len(hits) != 1:
            sys.exit(f"SPEC.md: expected exactly one line {MARK_OLD!r} or the "
                     f"{MARK_BEGIN}/{MARK_END} markers")
        lines[hits[0]] = block
        new = "\n".join(lines)
    if new != text:
        SPEC_MD.write_text(new, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Session vectors: scripted exchanges for one role (SPEC §6–§11), worked out by hand from SPEC
# ---------------------------------------------------------------------------------------------
#
# Every expected frame and event below is derived from the SPEC text cited in the vector's
# `spec`, not recorded from an implementation. Frames the implementation receives are encoded
# with msgpack-python (`wire`); frames it must send are given in the JSON form of frames.json
# with wildcards (`X`). See conformance/README.md, "Session vectors".

SESSIONS_JSON = VECTORS_DIR / "sessions.json"
SESS_TESTS: list[dict] = []

# §12.2 "retryable" column.
RETRYABLE = {"HANDSHAKE_TIMEOUT", "HEARTBEAT_TIMEOUT", "GOING_AWAY", "OVERLOADED", "TOO_MANY_INFLIGHT",
             "DEADLINE_EXCEEDED", "DRAINING", "RATE_LIMITED", "INTERNAL", "UNAVAILABLE",
             "UPSTREAM_TIMEOUT"}

# §13 defaults of the limits announced in HELLO.
DEFAULT_LIMITS = {"max_frame_payload": 1048576, "max_inflight": 128, "max_tools": 256,
                  "max_chunk": 65536, "initial_window": 262144, "replay_buffer": 262144,
                  "resume_window_ms": 30000}
# Announced only by a side that lists `resume` (§5.1).
RESUME_LIMITS = ("replay_buffer", "resume_window_ms")

# The tools a server under test in live mode offers (README, "Live profile").
LIVE_TOOL_NAMES = ["ask", "chunks", "echo", "fail", "wait"]
LIVE_CONFIG = {"tools": [{"name": n} for n in LIVE_TOOL_NAMES]}

ANY_KEYS = {"args", "result", "body", "meta", "input_schema", "annotations"}


def wire(type_name: str, rid, fields=None, flags: int = 0) -> str:
    """Hex of one valid frame. `rid` may be a placeholder such as "$r1" (two id bytes)."""
    payload, _, _ = encode_fields(type_name, fields or {})
    h = header(TYPE_CODES[type_name], 0 if isinstance(rid, str) else rid, len(payload),
               flags=flags)
    parts = hexs(h).split(" ")
    if isinstance(rid, str):
        parts[2:4] = [rid]
    return " ".join(parts + ([hexs(payload)] if payload else []))


def wire_raw(type_code: int, rid: int, payload: bytes, flags: int = 0, version: int = 1) -> str:
    """Hex of an arbitrary (possibly invalid) frame."""
    return hexs(header(type_code, rid, len(payload), flags=flags, version=version) + payload)


def msg(*frames: str) -> str:
    """One WebSocket message holding several whole frames."""
    return " ".join(frames)


def json_fields(type_name: str, fields: dict) -> dict:
    """Fields in the JSON form of frames.json; "*" passes through; ERROR codes by name."""
    wild = {k: v for k, v in fields.items() if isinstance(v, str) and v == "*"}
    concrete = {k: v for k, v in fields.items() if k not in wild}
    code = None
    if type_name == "ERROR" and isinstance(concrete.get("code"), str):
        code = concrete["code"]
        concrete["code"] = ERROR_CODES[code]
    _, jf, _ = encode_fields(type_name, concrete)
    if code is not None:
        jf["code"] = code
    out = dict(jf)
    out.update(wild)
    return {k: out[k] for k in sorted(out, key=lambda n: BY_NAME[type_name][n].key)}


def X(type_name: str, rid, fields=None, may=None, optional: bool = False) -> dict:
    """An expected frame: `fields` present with these values ("*": any value), `may` absent
    or with these values, every other field absent (after SPEC defaults are applied)."""
    out = {"type": type_name, "id": rid, "fields": json_fields(type_name, fields or {})}
    if may:
        out["may"] = json_fields(type_name, may)
    if optional:
        out["optional"] = True
    return out


def XERR(rid, code, ft=None, ft_required: bool = False, message=None, optional=False) -> dict:
    """An expected ERROR. `code` is a §12.2 name (or a number); `retryable` follows the
    registry; the message is free unless given; `frame_type` is required for frame errors
    (§3.7) and otherwise may be present (§5.7 "when one did")."""
    fields = {"code": code}
    if code in RETRYABLE:
        fields["retryable"] = True
    may = {}
    if message is None:
        may["message"] = "*"
    else:
        fields["message"] = message
    if ft_required:
        fields["frame_type"] = ft
    else:
        may["frame_type"] = "*" if ft is None else ft
    return X("ERROR", rid, fields, may, optional)


def U(*frames) -> dict:
    """Frames that may be sent in any order among themselves."""
    return {"unordered": list(frames)}


def E(event: str, **kw) -> dict:
    """An expected event: the listed keys must match ("*": any value)."""
    return {"event": event, **kw}


def C(op: str, **kw) -> dict:
    """A local command (the application's action)."""
    out = {"op": op}
    for k, v in kw.items():
        if k in ANY_KEYS:
            out[k] = {"msgpack": hexs(pk(v))}
        elif k == "data":
            out[k] = {"str": v} if isinstance(v, str) else {"bin": hexs(v)}
        else:
            out[k] = v
    return out


def anyv(v) -> dict:
    """An `any` value in the JSON form (events, expected fields)."""
    return {"msgpack": hexs(pk(v))}


# SPEC §2.1: the WebSocket close code after a close, by the connection error that caused it
# (any other connection-scope code: 1002); 1000 after a graceful close.
WS_CLOSE_BY_CODE = {"FLOOD": 1008, "OVERLOADED": 1008, "HANDSHAKE_TIMEOUT": 1001, "HEARTBEAT_TIMEOUT": 1001,
                    "GOING_AWAY": 1001, "RESUME_FAILED": 1011}


def ws_close_code(events) -> int | None:
    """The close code SPEC §2.1 names for the Closed event among `events`, if one says why:
    1000 after `local` or `drained`, the code's close code after a connection error sent or
    received; none after `transport_closed` (the transport is already gone)."""
    for e in events or []:
        if e.get("event") != "Closed" or "reason" not in e:
            continue
        if e["reason"] in ("local", "drained"):
            return 1000
        if e["reason"] in ("error_sent", "error_received"):
            code = e.get("code")
            name = code if isinstance(code, str) else ERROR_NAMES.get(code)
            return WS_CLOSE_BY_CODE.get(name, 1002)
    return None


def step(at: int, *, transmit=None, events=None, state=None, closed=False, refused=False,
         **action) -> dict:
    assert len(action) == 1, action
    (k, v), = action.items()
    assert k in ("start", "recv", "recv_text", "command", "timeout", "transport_closed",
                 "peer_close"), k
    s = {"at_ms": at, k: v}
    if refused:
        assert k == "command"
        s["refused"] = True
    if transmit:
        s["transmit"] = transmit
    if events:
        s["events"] = events
    if state:
        s["state"] = state
    if closed:
        s["closed"] = True
        code = ws_close_code(events)
        if code is not None:
            s["close_code"] = code
    return s


def session(vid, spec, description, role, steps, config=None, live=False, binding=None):
    config = dict(config or {})
    if live:
        assert role == "server" and config == LIVE_CONFIG, vid
        for s in steps:
            # Live mode cannot trigger local commands other than what the profile's tools do.
            if "command" in s:
                assert s["command"]["op"] in ("complete", "stream", "fail", "request"), vid
            assert "transport_closed" not in s and "peer_close" not in s, vid
    t = {"id": vid, "spec": spec, "description": description, "role": role, "live": live}
    if binding:
        t["binding"] = binding
    t["config"] = config
    t["steps"] = steps
    SESS_TESTS.append(t)


# ---- building blocks ----

C_HELLO = {"versions": [1], "capabilities": ["requests"]}
S_HELLO = {"versions": [1], "connection_id": "c1"}
TOOLDEF_MAY = {"description": "*", "input_schema": "*", "annotations": "*"}


def server_hello_exp(ntools: int) -> dict:
    fields = {"versions": [1], "connection_id": "*"}
    may = {"capabilities": "*", "limits": "*", "heartbeat_ms": "*", "agent": "*"}
    if ntools:
        fields["tools"] = ntools
    out = X("HELLO", 0, fields, may)
    # §5.1: the server announces what is in force, defaults included; the comparison treats
    # a default as absent, so `present` names what must be on the wire all the same.
    out["present"] = ["heartbeat_ms", "limits.max_frame_payload", "limits.max_inflight"]
    return out


def server_open(config, hello=None, at=0) -> list:
    """start + the client's HELLO → the server's HELLO and its initial tool set (§6.2)."""
    tools = [t["name"] for t in config.get("tools", [])]
    exp = [server_hello_exp(len(tools))]
    tds = [X("TOOL_DEF", 0, {"op": 0, "name": n}, TOOLDEF_MAY) for n in tools]
    if len(tds) > 1:
        exp.append(U(*tds))
    else:
        exp.extend(tds)
    return [step(0, start=True, state="Handshaking"),
            step(at, recv=wire("HELLO", 0, hello or C_HELLO), transmit=exp,
                 events=[E("Connected")], state="Open")]


def client_hello_exp(config) -> dict:
    fields = {"versions": [1]}
    may = {"agent": "*"}
    caps = []
    if config.get("requests", True):
        caps.append("requests")
    if config.get("resume", False):
        caps.append("resume")
    if caps:
        fields["capabilities"] = caps
    else:
        may["capabilities"] = []
    hb = config.get("heartbeat_ms", 30000)
    if hb != 30000:
        fields["heartbeat_ms"] = hb  # §5.1: absent means 30000, so another value is sent
    lim = {k: config[k] for k in DEFAULT_LIMITS if config.get(k, DEFAULT_LIMITS[k])
           != DEFAULT_LIMITS[k] and (k not in RESUME_LIMITS or config.get("resume", False))}
    if lim:
        fields["limits"] = lim  # §6.4: each side announces what it accepts
    return X("HELLO", 0, fields, may)


def client_open(config, hello=None, events=None) -> list:
    """start → the client's HELLO (§6.2 step 1); the server's HELLO → open."""
    return [step(0, start=True, transmit=[client_hello_exp(config)], state="Handshaking"),
            step(0, recv=wire("HELLO", 0, hello or S_HELLO),
                 events=[E("Connected", connection_id="c1")] if events is None else events,
                 state="Open")]


def invoke_client(at, rid, tool="echo", args=None, **kw) -> dict:
    """Client command invoke → the INVOKE it must send."""
    cargs = {} if args is None else {"args": args}
    fields = {"tool": tool, **({"args": args} if args is not None else {})}
    opts = {k: v for k, v in kw.items() if k in ("deadline_ms", "meta")}
    fields.update(opts)
    return step(at, command=C("invoke", tool=tool, **cargs, **opts),
                transmit=[X("INVOKE", rid, fields)])


def closed_ev(reason, code=None) -> dict:
    return E("Closed", reason=reason, **({"code": code} if code else {}))


def conn_error(at, code, **action) -> dict:
    """A step after which the implementation sends the connection error `code` and closes."""
    return step(at, transmit=[XERR(0, code)], events=[closed_ev("error_sent", code)],
                state="Closed", closed=True, **action)


def with_tools(*names, **extra) -> dict:
    return {"tools": [{"name": n} for n in names], **extra}


def build_server_sessions():
    L = LIVE_CONFIG
    op = server_open(L)
    cmeta = {"may": {"metrics": "*"}}

    def complete_exp(rid, status=0, result=None, optional=False):
        f = {"status": status}
        if result is not None:
            f["result"] = result
        return X("COMPLETE", rid, f, {"metrics": "*"}, optional)

    # ---- §6.2 / §6.3 handshake ----
    session("server/handshake", "§6.2", "The client's HELLO is answered with the server's "
            "HELLO (exactly one version, a connection_id, `tools` = size of the initial tool "
            "set, no resume_token since the client did not list `resume`), then one "
            "TOOL_DEF(add) per tool.", "server", op, L, live=True)
    session("server/handshake-no-tools", "§6.2", "A server with no tools answers HELLO with "
            "HELLO only (`tools` absent or 0) and sends no TOOL_DEF.", "server",
            server_open({}), {})
    session("server/version-highest-common", "§6.3", "A client offering versions [1, 2, 15] "
            "gets the highest version both speak, 1, as the only element of `versions`.",
            "server", server_open(L, hello={"versions": [1, 2, 15]}), L, live=True)
    session("server/version-none", "§6.3", "A client offering only versions 2 and 3 gets "
            "ERROR(UNSUPPORTED_VERSION) with id 0 and the connection closes.", "server",
            [step(0, start=True),
             conn_error(0, "UNSUPPORTED_VERSION", recv=wire("HELLO", 0, {"versions": [2, 3]}))],
            L, live=True)
    session("server/first-frame-invoke", "§6.2", "An INVOKE as the first frame (before "
            "HELLO) is the connection error PROTOCOL_VIOLATION.", "server",
            [step(0, start=True),
             conn_error(0, "PROTOCOL_VIOLATION", recv=wire("INVOKE", 1, {"tool": "echo"}))],
            L, live=True)
    session("server/first-frame-ping", "§6.2", "A PING as the first frame is the connection "
            "error PROTOCOL_VIOLATION: the first frame must be HELLO or RESUME.", "server",
            [step(0, start=True), conn_error(0, "PROTOCOL_VIOLATION", recv=wire("PING", 0))],
            L, live=True)
    session("server/second-hello", "§6.2", "A second HELLO on an open connection is the "
            "connection error PROTOCOL_VIOLATION.", "server",
            op + [conn_error(0, "PROTOCOL_VIOLATION", recv=wire("HELLO", 0, C_HELLO))],
            L, live=True)
    session("server/handshake-frame-error", "§3.7, §6.2", "A frame error in the first frame "
            "(HELLO with an empty `versions`, INVALID_FIELD) is a connection error during the "
            "handshake: ERROR(INVALID_FIELD) with id 0, then close.", "server",
            [step(0, start=True),
             conn_error(0, "INVALID_FIELD", recv=wire_raw(0x1, 0, b"\x81\x00\x90"))],
            L, live=True)
    session("server/handshake-reserved-flags", "§3.4, §3.7, §6.2", "A HELLO with flag bit "
            "0x01 as the first frame: RESERVED_FLAGS, a connection error during the "
            "handshake (id 0, close).", "server",
            [step(0, start=True),
             conn_error(0, "RESERVED_FLAGS", recv=wire("HELLO", 0, C_HELLO, flags=0x01))],
            L, live=True)
    session("server/handshake-unsupported-header-version", "§3.2", "A first frame whose "
            "header version is 2 is the connection error UNSUPPORTED_VERSION.", "server",
            [step(0, start=True),
             conn_error(0, "UNSUPPORTED_VERSION",
                        recv=wire_raw(0x1, 0, pk({0: [1]}), version=2))], L, live=True)
    session("server/handshake-timeout", "§6.2", "No HELLO within the handshake timeout "
            "(default 10 s): ERROR(HANDSHAKE_TIMEOUT, retryable) with id 0, then close.",
            "server",
            [step(0, start=True),
             step(9999, timeout=True, state="Handshaking"),
             conn_error(10001, "HANDSHAKE_TIMEOUT", timeout=True)],
            {"heartbeat_ms": 0})
    session("server/handshake-timeout-configured", "§6.2, §13", "A handshake timeout "
            "configured to 500 ms: nothing at 499 ms, HANDSHAKE_TIMEOUT at 501 ms.", "server",
            [step(0, start=True), step(499, timeout=True),
             conn_error(501, "HANDSHAKE_TIMEOUT", timeout=True)],
            {"handshake_timeout_ms": 500})
    session("server/resume-not-supported", "§11.2, §12.2", "A server that does not support "
            "resume answers RESUME with ERROR(RESUME_FAILED) and id 0; the transport stays open "
            "in Handshaking and a HELLO then starts a new session.", "server",
            [step(0, start=True),
             step(0, recv=wire("RESUME", 0, {"token": TOKEN16, "received": 0}),
                  transmit=[XERR(0, "RESUME_FAILED")], state="Handshaking"),
             op[1]], L, live=True)

    session("server/version-repeated", "§4.3, §6.3", "Repeated entries in HELLO `versions` "
            "are the same as one: [1, 1] is accepted.", "server",
            server_open(L, hello={"versions": [1, 1]}), L, live=True)
    session("server/hello-unused-fields", "§4.3, §6.4", "A client HELLO carrying fields only a "
            "server uses (connection_id, tools) and an unknown capability: they are "
            "type-checked, then ignored; the handshake completes.", "server",
            server_open(L, hello={"versions": [1], "capabilities": ["requests", "x-future"],
                                  "connection_id": "ignored", "tools": 3,
                                  "agent": "asp-conformance"}), L, live=True)
    session("server/resume-without-token", "§5.13, §3.7, §6.2", "A client RESUME must carry "
            "`token`: without it the first frame fails with MISSING_FIELD, a connection error "
            "during the handshake (id 0, close).", "server",
            [step(0, start=True),
             conn_error(0, "MISSING_FIELD", recv=wire_raw(0xE, 0, m((1, pk(0)))))],
            L, live=True)
    rt = with_tools("echo", resume=True, resume_token=hexs(TOKEN16))
    session("server/resume-token-offered", "§6.4, §11.2", "Both HELLOs list `resume`: the "
            "server's HELLO carries its resume_token.", "server",
            [step(0, start=True),
             step(0, recv=wire("HELLO", 0, {"versions": [1], "capabilities": ["resume"]}),
                  transmit=[X("HELLO", 0, {"versions": [1], "connection_id": "*", "tools": 1,
                                          "capabilities": ["resume"],
                                          "resume_token": TOKEN16},
                              {"limits": "*", "heartbeat_ms": "*", "agent": "*"}),
                            X("TOOL_DEF", 0, {"op": 0, "name": "echo"}, TOOLDEF_MAY)],
                  events=[E("Connected", resumable=True)], state="Open")], rt)
    session("server/resume-token-not-offered", "§6.4", "The client did not list `resume`: "
            "the server's HELLO carries no resume_token, even though the server supports "
            "resume.", "server",
            [step(0, start=True),
             step(0, recv=wire("HELLO", 0, {"versions": [1]}),
                  transmit=[X("HELLO", 0, {"versions": [1], "connection_id": "*", "tools": 1},
                              {"capabilities": "*", "limits": "*", "heartbeat_ms": "*",
                               "agent": "*"}),
                            X("TOOL_DEF", 0, {"op": 0, "name": "echo"}, TOOLDEF_MAY)],
                  events=[E("Connected", resumable=False)], state="Open")], rt)

    # ---- §11 resume at the server (issue 25) ----
    rhello = {"versions": [1], "capabilities": ["resume"]}
    rhello_exp = lambda limits=None: X(  # noqa: E731
        "HELLO", 0, {"versions": [1], "connection_id": "*", "tools": 1,
                     "capabilities": ["resume"], "resume_token": TOKEN16,
                     **({"limits": limits} if limits else {})},
        {"heartbeat_ms": "*", "agent": "*", **({} if limits else {"limits": "*"})})
    echo_def = X("TOOL_DEF", 0, {"op": 0, "name": "echo"}, TOOLDEF_MAY)

    def r_open(config, limits=None):
        return [step(0, start=True),
                step(0, recv=wire("HELLO", 0, rhello), transmit=[rhello_exp(limits), echo_def],
                     events=[E("Connected", resumable=True)], state="Open")]

    ra = with_tools("echo", resume=True, resume_token=hexs(TOKEN16), replay_buffer=65536,
                    resume_window_ms=10000)
    session("server/resume-announces-window", "§5.1, §11, §13", "A server offering resume "
            "announces its replay buffer and resume window in HELLO limits (5 and 6).",
            "server", r_open(ra, {"replay_buffer": 65536, "resume_window_ms": 10000}), ra)
    rb = with_tools("echo", resume=True, resume_token=hexs(TOKEN16), replay_buffer=64,
                    heartbeat_ms=0)
    # TOOL_DEF(echo) is 17 bytes and a STREAM of 30 text bytes 43: both fit in 64, a
    # second STREAM does not until the client acknowledges.
    assert len(bytes.fromhex(wire("TOOL_DEF", 0, {"op": 0, "name": "echo"}))) == 17
    assert len(bytes.fromhex(wire("STREAM", 1, {"data": "x" * 30, "seq": 0}))) == 43
    session("server/stream-waits-for-replay-room", "§11.1", "With a 64-byte replay buffer, "
            "the initial TOOL_DEF (17 bytes) and one STREAM (43 bytes) unacknowledged, the "
            "next STREAM must wait; PING(received 2) acknowledges both (answered by PONG with "
            "the server's own count, 1: the INVOKE), and the STREAM goes out.", "server",
            r_open(rb, {"replay_buffer": 64}) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(0, command=C("stream", id=1, data="x" * 30),
                  transmit=[X("STREAM", 1, {"data": "x" * 30, "seq": 0})]),
             step(0, command=C("stream", id=1, data="y" * 30), refused=True),
             step(0, recv=wire("PING", 0, {"received": 2}),
                  transmit=[X("PONG", 0, {"received": 1})]),
             step(0, command=C("stream", id=1, data="y" * 30),
                  transmit=[X("STREAM", 1, {"data": "y" * 30, "seq": 1})])], rb)
    session("server/ack-above-sent", "§11.1", "A PING whose `received` (5) is more than the "
            "server sent (1, the TOOL_DEF) is the connection error PROTOCOL_VIOLATION.",
            "server",
            r_open(rb, {"replay_buffer": 64}) +
            [conn_error(0, "PROTOCOL_VIOLATION", recv=wire("PING", 0, {"received": 5}))], rb)
    rh = with_tools("echo", resume=True, resume_token=hexs(TOKEN16), heartbeat_ms=100)
    session("server/heartbeat-timeout-detaches", "§6.7, §11.3", "In a resumable session "
            "the heartbeat timeout detaches instead of failing the session: after 3 × 100 ms "
            "of silence the server sends no ERROR(HEARTBEAT_TIMEOUT), its state is Detached; "
            "its PINGs carry `received`.", "server",
            [step(0, start=True),
             step(0, recv=wire("HELLO", 0, {**rhello, "heartbeat_ms": 100}),
                  transmit=[rhello_exp(), echo_def], events=[E("Connected", resumable=True)],
                  state="Open"),
             step(101, timeout=True, transmit=[X("PING", 0, {"received": 0})]),
             step(201, timeout=True, transmit=[X("PING", 0, {"received": 0})]),
             step(301, timeout=True, events=[E("Detached")], state="Detached")], rh)
    rd = with_tools("echo", resume=True, resume_token=hexs(TOKEN16), heartbeat_ms=0)
    session("server/deadline-while-detached", "§7.4, §11.3", "Deadlines run on while a "
            "session is detached: INVOKE with deadline_ms 50, the transport drops, at 50 ms the "
            "invocation is aborted (its ERROR is queued for a resume, nothing is sent).",
            "server",
            r_open(rd) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo", "deadline_ms": 50}),
                  events=[E("Invoked", id=1, tool="echo", deadline_ms=50)]),
             step(10, transport_closed=True, events=[E("Detached")], state="Detached"),
             step(50, timeout=True, events=[E("Aborted", id=1, code="DEADLINE_EXCEEDED")],
                  state="Detached")], rd)
    session("server/peer-close-ends-resumable", "§11.3", "A WebSocket Close 1000 from the "
            "client ends a resumable session on purpose: closed, not detached.", "server",
            r_open(rd) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(10, peer_close=True, events=[closed_ev("transport_closed")],
                  state="Closed", closed=True)], rd)
    session("server/transport-loss-detaches", "§11.3", "Any other end of the transport "
            "(EOF, reset, another close status) detaches a resumable session.", "server",
            r_open(rd) +
            [step(10, transport_closed=True, events=[E("Detached")], state="Detached")], rd)
    session("server/resume-on-open-session", "§11.3, §6.2", "RESUME on a transport whose "
            "session is open is PROTOCOL_VIOLATION, like a second HELLO.", "server",
            r_open(rd) +
            [conn_error(0, "PROTOCOL_VIOLATION",
                        recv=wire("RESUME", 0, {"token": TOKEN16, "received": 0}))], rd)
    session("server/resume-again-after-failed", "§11.2, §11.3, §12.1", "After "
            "ERROR(RESUME_FAILED) the transport stays open in Handshaking: a second RESUME is "
            "answered the same way (not a connection error), then HELLO opens a session.",
            "server",
            [step(0, start=True),
             step(0, recv=wire("RESUME", 0, {"token": TOKEN16, "received": 3}),
                  transmit=[XERR(0, "RESUME_FAILED")], state="Handshaking"),
             step(0, recv=wire("RESUME", 0, {"token": b"\x01" * 16, "received": 0}),
                  transmit=[XERR(0, "RESUME_FAILED")], state="Handshaking"),
             step(0, recv=wire("HELLO", 0, C_HELLO), transmit=[server_hello_exp(0)],
                  events=[E("Connected")], state="Open")], {})

    # ---- §7 invocations ----
    inv_echo = step(0, recv=wire("INVOKE", 1, {"tool": "echo", "args": {"t": "hi"}}),
                    events=[E("Invoked", id=1, tool="echo", args=anyv({"t": "hi"}))])
    session("server/invoke-echo", "§7.1, §5.6", "INVOKE of `echo` runs; the application ends "
            "it with COMPLETE(ok) carrying the result.", "server",
            op + [inv_echo,
                  step(0, command=C("complete", id=1, status=0, result={"t": "hi"}),
                       transmit=[complete_exp(1, 0, {"t": "hi"})])], L, live=True)
    session("server/invoke-stream", "§7.1, §7.6, §5.3", "The server streams two chunks "
            "(seq 0 and 1), then COMPLETE(ok).", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "chunks", "args": ["a", "bc"]}),
                       events=[E("Invoked", id=1, tool="chunks")]),
                  step(0, command=C("stream", id=1, data="a"),
                       transmit=[X("STREAM", 1, {"data": "a", "seq": 0})]),
                  step(0, command=C("stream", id=1, data="bc"),
                       transmit=[X("STREAM", 1, {"data": "bc", "seq": 1})]),
                  step(0, command=C("complete", id=1, status=0),
                       transmit=[complete_exp(1)])], L, live=True)
    session("server/stream-final", "§5.3, §7.1", "A STREAM with `final` ends the stream: "
            "nothing more may be streamed (a STREAM after final is BAD_SEQUENCE at the "
            "client), the invocation still ends with COMPLETE.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "chunks"}),
                       events=[E("Invoked", id=1, tool="chunks")]),
                  step(0, command=C("stream", id=1, data=b"\x01\x02", final=True),
                       transmit=[X("STREAM", 1, {"data": b"\x01\x02", "seq": 0,
                                                 "final": True})]),
                  step(0, command=C("stream", id=1, data="x"), refused=True),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
                  step(0, command=C("stream", id=1, data="y"), refused=True)], L)
    session("server/id-reuse", "§3.5", "An id may be reused once its terminal frame was "
            "sent: INVOKE 1, COMPLETE 1, INVOKE 1 again runs normally.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
                  step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            L, live=True)
    session("server/unknown-key-ignored", "§4.3", "An INVOKE with an unknown key 9 (and a "
            "PING with an unknown key) is processed normally; the key is ignored.", "server",
            op + [step(0, recv=wire_raw(0x2, 1, m((0, ECHO), (9, pk([1, "x"])))),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
                  step(0, recv=wire_raw(0x8, 0, m((5, pk("x")))), transmit=[X("PONG", 0)])],
            L, live=True)
    session("server/multiple-frames-per-message", "§2.1", "One WebSocket message carrying "
            "PING, PING and INVOKE: each frame is processed, in order.", "server",
            op + [step(0, recv=msg(wire("PING", 0), wire("PING", 0),
                                   wire("INVOKE", 1, {"tool": "echo"})),
                       transmit=[X("PONG", 0), X("PONG", 0)],
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            L, live=True)

    wait1 = step(0, recv=wire("INVOKE", 1, {"tool": "wait"}),
                 events=[E("Invoked", id=1, tool="wait")])
    session("server/interrupt", "§7.3, §7.1", "INTERRUPT of a running invocation: the server "
            "must still end it, normally with COMPLETE(cancelled); an INTERRUPT or CREDIT "
            "for the id after its terminal frame is ignored silently.", "server",
            op + [wait1,
                  step(0, recv=wire("INTERRUPT", 1, {"reason": "stop"}),
                       events=[E("Interrupted", id=1, reason="stop")]),
                  step(0, command=C("complete", id=1, status=1),
                       transmit=[complete_exp(1, 1)]),
                  step(0, recv=wire("INTERRUPT", 1)),
                  step(0, recv=wire("CREDIT", 1, {"bytes": 10}))], L, live=True)
    session("server/interrupt-twice", "§7.3", "A second INTERRUPT for the same invocation has "
            "no further effect; the invocation ends once.", "server",
            op + [wait1,
                  step(0, recv=wire("INTERRUPT", 1), events=[E("Interrupted", id=1)]),
                  step(0, recv=wire("INTERRUPT", 1, {"reason": "again"})),
                  step(0, command=C("complete", id=1, status=1),
                       transmit=[complete_exp(1, 1)])], L, live=True)
    session("server/interrupt-complete-race", "§7.3, §7.1", "The server already sent "
            "COMPLETE(ok) when the client's INTERRUPT arrives: the INTERRUPT crossed the "
            "terminal frame and is ignored without error.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "echo", "args": "x"}),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0, result="x"),
                       transmit=[complete_exp(1, 0, "x")]),
                  step(0, recv=wire("INTERRUPT", 1, {"reason": "too late"}))], L, live=True)
    session("server/interrupt-unknown-id", "§7.3, §7.1", "INTERRUPT and CREDIT for an id that "
            "was never used are ignored without error.", "server",
            op + [step(0, recv=wire("INTERRUPT", 5)),
                  step(0, recv=wire("CREDIT", 5, {"bytes": 100})),
                  step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)])], L, live=True)
    session("server/duplicate-id", "§7.2", "An INVOKE for an id already in flight is "
            "answered ERROR(DUPLICATE_ID), which ends the existing invocation too: the server "
            "sends nothing more for the id.", "server",
            op + [wait1,
                  step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                       transmit=[XERR(1, "DUPLICATE_ID", 0x2)],
                       events=[E("Aborted", id=1, code="DUPLICATE_ID")]),
                  step(0, command=C("complete", id=1, status=0), refused=True),
                  step(0, recv=wire("INTERRUPT", 1))], L, live=True)
    session("server/too-many-inflight", "§7.2, §13", "With max_inflight 1, a second INVOKE is "
            "answered ERROR(TOO_MANY_INFLIGHT, retryable); once the first ends, the id is "
            "free and a new INVOKE runs.", "server",
            server_open(with_tools("echo", "wait", max_inflight=1)) +
            [wait1,
             step(0, recv=wire("INVOKE", 2, {"tool": "echo"}),
                  transmit=[XERR(2, "TOO_MANY_INFLIGHT", 0x2)]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
             step(0, recv=wire("INVOKE", 2, {"tool": "echo"}),
                  events=[E("Invoked", id=2, tool="echo")])],
            with_tools("echo", "wait", max_inflight=1))
    # §13.1: the opening frames' fields count against max_args_in_flight. Each INVOKE
    # below holds len("echo") + the args' MessagePack bytes: 4 + 2 + 100 = 106 (a str 8).
    big = {"tool": "echo", "args": "a" * 100}
    args_cfg = with_tools("echo", max_args_in_flight=250)
    session("server/too-many-inflight-args", "§7.2, §13.1", "With max_args_in_flight 250, "
            "two INVOKEs holding 106 bytes each (tool name and args) run and a third is "
            "refused with TOO_MANY_INFLIGHT (retryable); once one ends there is room again. "
            "One INVOKE is always taken when nothing runs.", "server",
            server_open(args_cfg) +
            [step(0, recv=wire("INVOKE", 1, big), events=[E("Invoked", id=1, tool="echo")]),
             step(0, recv=wire("INVOKE", 2, big), events=[E("Invoked", id=2, tool="echo")]),
             step(0, recv=wire("INVOKE", 3, big),
                  transmit=[XERR(3, "TOO_MANY_INFLIGHT", 0x2)]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
             step(0, recv=wire("INVOKE", 3, big), events=[E("Invoked", id=3, tool="echo")])],
            args_cfg)
    many = msg(*[wire("INVOKE", i, {"tool": "wait"}) for i in range(1, 129)])
    session("server/too-many-inflight-default", "§7.2, §13", "The default max_inflight is "
            "128: 128 invocations run, the 129th is refused with TOO_MANY_INFLIGHT; after one "
            "ends, a new one runs.", "server",
            op + [step(0, recv=many,
                       events=[E("Invoked", id=i, tool="wait") for i in range(1, 129)]),
                  step(0, recv=wire("INVOKE", 129, {"tool": "echo"}),
                       transmit=[XERR(129, "TOO_MANY_INFLIGHT", 0x2)]),
                  step(0, recv=wire("INTERRUPT", 1), events=[E("Interrupted", id=1)]),
                  step(0, command=C("complete", id=1, status=1),
                       transmit=[complete_exp(1, 1)]),
                  step(0, recv=wire("INVOKE", 129, {"tool": "echo"}),
                       events=[E("Invoked", id=129, tool="echo")]),
                  step(0, command=C("complete", id=129, status=0),
                       transmit=[complete_exp(129)])], L, live=True)
    session("server/unknown-tool", "§7.2", "INVOKE of a tool the server does not have is "
            "answered ERROR(UNKNOWN_TOOL); the id is then free.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "nope"}),
                       transmit=[XERR(1, "UNKNOWN_TOOL", 0x2)]),
                  step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            L, live=True)
    session("server/invoke-check-order", "§7.2", "The checks of §7.2 apply in order: with "
            "max_inflight reached, INVOKE of an unknown tool is TOO_MANY_INFLIGHT (step 3), "
            "not UNKNOWN_TOOL (step 5).", "server",
            server_open(with_tools("wait", max_inflight=1)) +
            [wait1,
             step(0, recv=wire("INVOKE", 2, {"tool": "nope"}),
                  transmit=[XERR(2, "TOO_MANY_INFLIGHT", 0x2)])],
            with_tools("wait", max_inflight=1))
    session("server/deadline", "§7.4", "INVOKE with deadline_ms 200 still running 200 ms after "
            "receipt: the server ends it with ERROR(DEADLINE_EXCEEDED, retryable); a later "
            "INTERRUPT for it is ignored.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "wait", "deadline_ms": 200}),
                       events=[E("Invoked", id=1, tool="wait", deadline_ms=200)]),
                  step(199, timeout=True),
                  step(201, timeout=True, transmit=[XERR(1, "DEADLINE_EXCEEDED")],
                       events=[E("Aborted", id=1, code="DEADLINE_EXCEEDED")]),
                  step(210, recv=wire("INTERRUPT", 1))], L, live=True)
    session("server/deadline-met", "§7.4", "An invocation that completes before its deadline "
            "is not affected by it.", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "echo", "deadline_ms": 200}),
                       events=[E("Invoked", id=1, tool="echo", deadline_ms=200)]),
                  step(100, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
                  step(300, timeout=True)], L)

    # ---- §7.5 flow control, server side ----
    fc_hello = {"versions": [1], "limits": {"max_chunk": 4, "initial_window": 8}}
    fcc = with_tools("chunks")
    session("server/flow-control-window", "§7.5", "The client announced initial_window 8 "
            "(the minimum): the server may send 8 bytes of STREAM data, then nothing until "
            "CREDIT; CREDIT(3) allows 3 more.", "server",
            server_open(fcc, hello=fc_hello) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "chunks"}),
                  events=[E("Invoked", id=1, tool="chunks")]),
             step(0, command=C("stream", id=1, data="abcd"),
                  transmit=[X("STREAM", 1, {"data": "abcd", "seq": 0})]),
             step(0, command=C("stream", id=1, data="efgh"),
                  transmit=[X("STREAM", 1, {"data": "efgh", "seq": 1})]),
             step(0, command=C("stream", id=1, data="i"), refused=True),
             step(0, recv=wire("CREDIT", 1, {"bytes": 3})),
             step(0, command=C("stream", id=1, data="ijkl"), refused=True),
             step(0, command=C("stream", id=1, data="ijk"),
                  transmit=[X("STREAM", 1, {"data": "ijk", "seq": 2})]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            fcc)
    session("server/stream-zero-length", "§5.3", "An empty chunk may be sent only as the final "
            "one (then also with the window used up); an empty non-final chunk is refused.",
            "server",
            server_open(fcc, hello=fc_hello) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "chunks"}),
                  events=[E("Invoked", id=1, tool="chunks")]),
             step(0, command=C("stream", id=1, data="abcd"),
                  transmit=[X("STREAM", 1, {"data": "abcd", "seq": 0})]),
             step(0, command=C("stream", id=1, data="efgh"),
                  transmit=[X("STREAM", 1, {"data": "efgh", "seq": 1})]),
             step(0, command=C("stream", id=1, data=""), refused=True),
             step(0, command=C("stream", id=1, data="", final=True),
                  transmit=[X("STREAM", 1, {"data": "", "seq": 2, "final": True})]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            fcc)
    def chunk_cap_4():
        # A call whose chunks the client's limits cap at 4 bytes: 5 refused, 4 sent.
        return [step(0, recv=wire("INVOKE", 1, {"tool": "chunks"}),
                     events=[E("Invoked", id=1, tool="chunks")]),
                step(0, command=C("stream", id=1, data="abcde"), refused=True),
                step(0, command=C("stream", id=1, data="abcd"),
                     transmit=[X("STREAM", 1, {"data": "abcd", "seq": 0})]),
                step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])]

    session("server/chunk-limit", "§7.5", "The client announced max_chunk 4: a 5-byte chunk "
            "may not be sent; a 4-byte one may.", "server",
            server_open(fcc, hello={"versions": [1], "limits": {"max_chunk": 4}}) +
            chunk_cap_4(), fcc)
    session("server/chunk-half-window", "§7.5", "The client announced initial_window 8 and "
            "the default max_chunk: a chunk is at most half the initial window, so 5 bytes may "
            "not be sent as one STREAM even though the window holds them; 4 may.", "server",
            server_open(fcc, hello={"versions": [1], "limits": {"initial_window": 8}}) +
            chunk_cap_4(), fcc)
    session("server/credit-overflow", "§7.5", "A CREDIT that takes the window above 2^32-1 "
            "(262144 + 4294967295) is FLOW_CONTROL, which ends the invocation.", "server",
            op + [wait1,
                  step(0, recv=wire("CREDIT", 1, {"bytes": U32}),
                       transmit=[XERR(1, "FLOW_CONTROL", 0xC)],
                       events=[E("Aborted", id=1, code="FLOW_CONTROL")]),
                  step(0, recv=wire("INTERRUPT", 1))], L, live=True)
    session("server/peer-max-frame-payload", "§3.6, §7.1", "The client announced "
            "max_frame_payload 64: a COMPLETE whose payload exceeds it is not sent; the "
            "invocation still ends, with ERROR(RESULT_TOO_LARGE) in its place, and the id is "
            "free again. (An echo of 100 bytes used to leave the invocation without an end.)",
            "server",
            server_open(L, hello={"versions": [1], "capabilities": ["requests"],
                                  "limits": {"max_frame_payload": 64}}) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo", "args": "r" * 100}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(0, command=C("complete", id=1, status=0, result="r" * 100),
                  transmit=[XERR(1, "RESULT_TOO_LARGE")],
                  events=[E("Aborted", id=1, code="RESULT_TOO_LARGE")]),
             step(0, recv=wire("INVOKE", 1, {"tool": "echo", "args": "r" * 10}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(0, command=C("complete", id=1, status=0, result="r" * 10),
                  transmit=[complete_exp(1, 0, "r" * 10)])],
            L, live=True)

    # ---- §8 server requests ----
    ask1 = step(0, recv=wire("INVOKE", 1, {"tool": "ask", "args": "Delete 3 files?"}),
                events=[E("Invoked", id=1, tool="ask")])
    req_exp = X("REQUEST", "$r1", {"kind": "confirm", "body": "Delete 3 files?",
                                   "invocation": 1})
    req_cmd = C("request", kind="confirm", body="Delete 3 files?", invocation=1)
    session("server/request-reply", "§8, §5.9, §5.10", "The client listed `requests`: the "
            "server asks (REQUEST with a server-space id, on behalf of invocation 1), the "
            "client answers REPLY(answered), and the invocation completes.", "server",
            op + [ask1, step(0, command=req_cmd, transmit=[req_exp]),
                  step(0, recv=wire("REPLY", "$r1", {"status": 0, "body": "yes"}),
                       events=[E("Ended", id="$r1", outcome="reply", status=0,
                                 body=anyv("yes"))]),
                  step(0, command=C("complete", id=1, status=0, result="yes"),
                       transmit=[complete_exp(1, 0, "yes")])], L, live=True)
    session("server/request-without-capability", "§6.4, §8", "The client did not list "
            "`requests`: the server MUST NOT send REQUEST; the tool then fails "
            "(ERROR(TOOL_FAILED), as the live profile's `ask` does).", "server",
            server_open(L, hello={"versions": [1]}) +
            [ask1, step(0, command=req_cmd, refused=True),
             step(0, command=C("fail", id=1, code="TOOL_FAILED", message="cannot ask"),
                  transmit=[XERR(1, "TOOL_FAILED")])], L, live=True)
    session("server/request-interrupt", "§8", "The server interrupts its own request; the "
            "client ends it with REPLY(cancelled).", "server",
            op + [ask1, step(0, command=req_cmd, transmit=[req_exp]),
                  step(0, command=C("interrupt", id="$r1", reason="invocation ended"),
                       transmit=[X("INTERRUPT", "$r1", {"reason": "invocation ended"})]),
                  step(0, recv=wire("REPLY", "$r1", {"status": 1}),
                       events=[E("Ended", id="$r1", outcome="reply", status=1)]),
                  step(0, command=C("interrupt", id="$r1"), refused=True)], L)
    session("server/request-error", "§8, §5.7", "The client ends requests with ERROR "
            "(DRAINING, then UNSUPPORTED): each ERROR is the request's terminal frame.",
            "server",
            op + [ask1, step(0, command=req_cmd, transmit=[req_exp]),
                  step(0, recv=wire("ERROR", "$r1", {"code": ERROR_CODES["DRAINING"],
                                                     "retryable": True}),
                       events=[E("Ended", id="$r1", outcome="error", code="DRAINING")]),
                  step(0, command=C("request", kind="input"),
                       transmit=[X("REQUEST", "$r2", {"kind": "input"})]),
                  step(0, recv=wire("ERROR", "$r2", {"code": ERROR_CODES["UNSUPPORTED"]}),
                       events=[E("Ended", id="$r2", outcome="error", code="UNSUPPORTED")])],
            L)
    session("server/request-max-inflight", "§8, §13", "The client announced max_inflight 1: "
            "the server may have only one request in flight.", "server",
            server_open(L, hello={"versions": [1], "capabilities": ["requests"],
                                  "limits": {"max_inflight": 1}}) +
            [ask1, step(0, command=req_cmd, transmit=[req_exp]),
             step(0, command=C("request", kind="input"), refused=True),
             step(0, recv=wire("REPLY", "$r1", {"status": 2}),
                  events=[E("Ended", id="$r1", outcome="reply", status=2)]),
             step(0, command=C("request", kind="input"),
                  transmit=[X("REQUEST", "$r2", {"kind": "input"})])], L)
    session("server/frame-error-ends-request", "§3.7, §8", "A REPLY for the server's request "
            "with status 3 (INVALID_FIELD): the ERROR names the request, which ends on both "
            "sides; the invocation that asked then fails (ERROR(TOOL_FAILED), as the live "
            "profile's `ask` does).", "server",
            op + [ask1, step(0, command=req_cmd, transmit=[req_exp]),
                  step(0, recv=wire_raw(0xB, 0, m((0, pk(3)))).replace("1b 00 00 00",
                                                                       "1b 00 $r1"),
                       transmit=[XERR("$r1", "INVALID_FIELD", 0xB, ft_required=True), X("PING", 0)],
                       events=[E("Ended", id="$r1", outcome="error", code="INVALID_FIELD")]),
                  step(0, command=C("fail", id=1, code="TOOL_FAILED", message="no answer"),
                       transmit=[XERR(1, "TOOL_FAILED")])], L, live=True)
    session("server/peer-max-tools", "§6.4, §9", "The client announced max_tools 1 and holds "
            "one tool: the server may not add another until it removed one.", "server",
            server_open(with_tools("echo"), hello={"versions": [1],
                                                   "limits": {"max_tools": 1}}) +
            [step(0, command=C("add_tool", name="search"), refused=True),
             step(0, command=C("remove_tool", name="echo"),
                  transmit=[X("TOOL_DEF", 0, {"op": 2, "name": "echo"}, TOOLDEF_MAY)]),
             step(0, command=C("add_tool", name="search"),
                  transmit=[X("TOOL_DEF", 0, {"op": 0, "name": "search"}, TOOLDEF_MAY)])],
            with_tools("echo"))
    # ---- found by fuzzing (fuzz/README.md, "Crashes found"): each crash input, as a vector ----
    session("server/unsupported-version-open", "§3.2, §3.7, §2.2", "One message (on a byte "
            "stream: one read) holds a PING, then a whole frame whose header version is 2: the "
            "PING is answered, then UNSUPPORTED_VERSION closes the connection. (Found by fuzzing: "
            "a decoder that panicked on a whole bad-version header in a byte-stream read.)",
            "server",
            op + [step(0, recv=msg(wire("PING", 0), wire_raw(0x8, 0, b"", version=2)),
                       transmit=[X("PONG", 0), XERR(0, "UNSUPPORTED_VERSION")],
                       events=[closed_ev("error_sent", "UNSUPPORTED_VERSION")],
                       state="Closed", closed=True)], L, live=True)
    session("server/goaway-reason-over-limit", "§3.6, §5.12", "The application gives GOAWAY "
            "a 1500-byte reason: the server still sends GOAWAY, with the reason shortened to "
            "at most 1024 bytes or omitted, never an undecodable frame. (Found by fuzzing.)",
            "server",
            server_open({}) +
            [step(0, command=C("goaway", reason="r" * 1500, timeout_ms=5000),
                  transmit=[X("GOAWAY", 0, {"timeout_ms": 5000}, {"reason": "*"})],
                  events=[closed_ev("drained")], state="Closed", closed=True)], {})
    cut_hello = {"versions": [1], "limits": {"max_tools": 0}}
    session("server/remove-tool-cut-from-initial-set", "§6.2, §9", "The client announced "
            "max_tools 0, so the server's tool `echo` is cut from the initial set (HELLO "
            "`tools` 0, no TOOL_DEF). Removing it later sends nothing: the client never held "
            "it; adding it again is refused while the client accepts no tool. (Found by "
            "fuzzing: TOOL_DEF(remove) for a tool the client never received.)", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=wire("HELLO", 0, cut_hello), transmit=[server_hello_exp(0)],
                  events=[E("Connected")], state="Open"),
             step(0, command=C("remove_tool", name="echo")),
             step(0, command=C("add_tool", name="echo"), refused=True),
             step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)])],
            with_tools("echo"))
    big = {"name": "big", "description": "d" * 100}
    small_hello = {"versions": [1], "limits": {"max_frame_payload": 64}}
    session("server/initial-tool-over-client-max-frame-payload", "§6.2, §3.6, §9", "The "
            "client accepts payloads of at most 64 bytes; the server's tool `big` (a 100-byte "
            "description) does not fit, so the initial set holds only `echo` (HELLO `tools` "
            "1). `big` is unknown to the client, so an INVOKE of it is UNKNOWN_TOOL (§7.2); "
            "re-registered with a short description it is sent as an add (and runs), then "
            "removed. (Found by fuzzing: the oversized TOOL_DEF was "
            "sent and the client never completed its initial set.)", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=wire("HELLO", 0, small_hello),
                  transmit=[server_hello_exp(1),
                            X("TOOL_DEF", 0, {"op": 0, "name": "echo"}, TOOLDEF_MAY)],
                  events=[E("Connected")], state="Open"),
             step(0, recv=wire("INVOKE", 1, {"tool": "big"}),
                  transmit=[XERR(1, "UNKNOWN_TOOL", 0x2)]),
             step(0, command=C("add_tool", name="big", description="short"),
                  transmit=[X("TOOL_DEF", 0, {"op": 0, "name": "big", "description": "short"},
                              {"input_schema": "*", "annotations": "*"})]),
             step(0, recv=wire("INVOKE", 2, {"tool": "big"}),
                  events=[E("Invoked", id=2, tool="big")]),
             step(0, command=C("remove_tool", name="big"),
                  transmit=[X("TOOL_DEF", 0, {"op": 2, "name": "big"}, TOOLDEF_MAY)])],
            {"tools": [big, {"name": "echo"}]})
    session("server/reply-unknown-id", "§12.2", "A REPLY for a request id not in flight is "
            "ERROR(UNKNOWN_ID).", "server",
            op + [step(0, recv=wire("REPLY", 0x8005, {"status": 0}),
                       transmit=[XERR(0x8005, "UNKNOWN_ID", 0xB)])], L, live=True)

    # ---- §3.7 frame errors in an open session ----
    session("server/frame-error-ends-invocation", "§3.7", "A frame error on a frame whose id "
            "names an invocation in flight (CREDIT 1 with bytes 0: INVALID_FIELD) is answered "
            "with that id and frame_type, and ends the invocation on both sides.", "server",
            op + [wait1,
                  step(0, recv=wire_raw(0xC, 1, m((0, pk(0))))
                       , transmit=[XERR(1, "INVALID_FIELD", 0xC, ft_required=True)],
                       events=[E("Aborted", id=1, code="INVALID_FIELD")]),
                  step(0, recv=wire("INTERRUPT", 1))], L, live=True)
    session("server/frame-error-flags-ends-invocation", "§3.4, §3.7", "A second INVOKE 1 with "
            "a reserved flag while invocation 1 runs: RESERVED_FLAGS with id 1 (allowed for "
            "INVOKE), which ends invocation 1.", "server",
            op + [wait1,
                  step(0, recv=wire("INVOKE", 1, {"tool": "echo"}, flags=0x40),
                       transmit=[XERR(1, "RESERVED_FLAGS", 0x2, ft_required=True)],
                       events=[E("Aborted", id=1, code="RESERVED_FLAGS")]),
                  step(0, recv=wire("INTERRUPT", 1))], L, live=True)
    session("server/frame-error-bad-id", "§3.5, §3.7", "A frame whose id is not allowed for "
            "its type (REQUEST with client-space id 1) is INVALID_ID answered with id 0, so "
            "invocation 1 is not affected and can still be interrupted.", "server",
            op + [wait1,
                  step(0, recv=wire("REQUEST", 1, {"kind": "confirm"}),
                       transmit=[XERR(0, "INVALID_ID", 0xA, ft_required=True)]),
                  step(0, recv=wire("INTERRUPT", 1), events=[E("Interrupted", id=1)]),
                  step(0, command=C("complete", id=1, status=1),
                       transmit=[complete_exp(1, 1)])], L, live=True)
    session("server/error-ends-invocation", "§5.7", "An ERROR from the client whose id is in "
            "flight is that invocation's terminal frame: the server sends nothing more for "
            "it.", "server",
            op + [wait1,
                  step(0, recv=wire("ERROR", 1, {"code": ERROR_CODES["INTERNAL"],
                                                 "retryable": True}),
                       events=[E("Aborted", id=1, code="INTERNAL")]),
                  step(0, recv=wire("INTERRUPT", 1)),
                  step(0, command=C("complete", id=1, status=0), refused=True)], L, live=True)
    session("server/error-not-answered", "§3.7, §5.7", "An invalid ERROR (code 0) is not "
            "answered with an ERROR; an ERROR for an id not in flight is informational.",
            "server",
            op + [step(0, recv=wire_raw(0x7, 0, m((0, pk(0))))),
                  step(0, recv=wire("ERROR", 9, {"code": ERROR_CODES["UNKNOWN_ID"]}),
                       events=[E("PeerError", id=9, code="UNKNOWN_ID")]),
                  step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)])], L, live=True)

    # ---- §3.3 direction ----
    for vid, tn, rid, fields in [
            ("stream", "STREAM", 1, {"data": "x", "seq": 0}),
            ("tool-def", "TOOL_DEF", 0, {"op": 0, "name": "echo"}),
            ("complete", "COMPLETE", 1, {"status": 0}),
            ("request", "REQUEST", 0x8000, {"kind": "confirm"})]:
        session(f"server/direction-{vid}", "§3.3", f"A {tn} from a client (a server → client "
                "frame) is the connection error PROTOCOL_VIOLATION.", "server",
                op + [conn_error(0, "PROTOCOL_VIOLATION", recv=wire(tn, rid, fields))],
                L, live=True)
    session("server/direction-before-payload", "§3.7, §3.3", "Direction is step 6 of §3.7, "
            "before the payload: a STREAM from a client whose payload is malformed is the "
            "connection error PROTOCOL_VIOLATION, as a well-formed one is (not the frame error "
            "MALFORMED_PAYLOAD).", "server",
            op + [conn_error(0, "PROTOCOL_VIOLATION", recv=wire_raw(0x3, 1, b"\xc1"))],
            L, live=True)
    session("server/interrupt-server-space-id", "§3.5, §3.7", "An INTERRUPT names an "
            "exchange its sender initiated: a client's INTERRUPT with a server-space id (0x8000) "
            "is the frame error INVALID_ID, answered with id 0 (the id is not allowed for a "
            "client's INTERRUPT); the connection goes on.", "server",
            op + [step(0, recv=wire("INTERRUPT", 0x8000),
                       transmit=[XERR(0, "INVALID_ID", 0x4, ft_required=True)]),
                  step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)])], L, live=True)

    # ---- §6.2 pipelining ----
    pipe_tools = [X("TOOL_DEF", 0, {"op": 0, "name": n}, TOOLDEF_MAY) for n in LIVE_TOOL_NAMES]
    session("server/pipelined-invoke", "§6.2", "A client may send INVOKE right after its HELLO, "
            "in the same message, without waiting for the server's HELLO: the server answers "
            "HELLO and its initial tool set first, then runs the INVOKE under the session's "
            "terms.", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=msg(wire("HELLO", 0, C_HELLO),
                              wire("INVOKE", 1, {"tool": "echo", "args": "hi"})),
                  transmit=[server_hello_exp(len(LIVE_TOOL_NAMES)), U(*pipe_tools)],
                  events=[E("Connected"), E("Invoked", id=1, tool="echo")], state="Open"),
             step(0, command=C("complete", id=1, status=0, result="hi"),
                  transmit=[complete_exp(1, 0, "hi")])], L, live=True)
    session("server/pipelined-invoke-unknown-tool", "§6.2, §7.2", "A pipelined INVOKE is "
            "judged by the session the HELLO exchange opened: a tool the server does not "
            "offer is UNKNOWN_TOOL.", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=msg(wire("HELLO", 0, C_HELLO),
                              wire("INVOKE", 1, {"tool": "nope"})),
                  transmit=[server_hello_exp(len(LIVE_TOOL_NAMES)), U(*pipe_tools),
                            XERR(1, "UNKNOWN_TOOL", 0x2)],
                  events=[E("Connected")], state="Open")], L, live=True)

    # §6.2: pipelined frames are judged by the session the HELLO exchange opened, limits
    # included (the server's own max_inflight and max_frame_payload).
    pipe1 = with_tools("echo", "wait", max_inflight=1)
    session("server/pipelined-invoke-too-many-inflight", "§6.2, §7.2", "With max_inflight "
            "1, a client that pipelines two INVOKEs after its HELLO gets the first run and the "
            "second refused with TOO_MANY_INFLIGHT (retryable), as it would be later.", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=msg(wire("HELLO", 0, C_HELLO),
                              wire("INVOKE", 1, {"tool": "wait"}),
                              wire("INVOKE", 2, {"tool": "echo"})),
                  transmit=[server_hello_exp(2),
                            U(*[X("TOOL_DEF", 0, {"op": 0, "name": n}, TOOLDEF_MAY)
                                for n in ("echo", "wait")]),
                            XERR(2, "TOO_MANY_INFLIGHT", 0x2)],
                  events=[E("Connected"), E("Invoked", id=1, tool="wait")], state="Open"),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            pipe1)
    pipe64 = with_tools("echo", max_frame_payload=64)
    session("server/pipelined-invoke-frame-too-large", "§6.2, §3.6", "With max_frame_payload "
            "64, a pipelined INVOKE of 65 bytes is refused with FRAME_TOO_LARGE (a frame "
            "error: the connection stays open), and the next pipelined INVOKE runs.", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=msg(wire("HELLO", 0, C_HELLO),
                              wire_raw(INV, 1, too_large_payload(65)),
                              wire("INVOKE", 2, {"tool": "echo", "args": "hi"})),
                  transmit=[server_hello_exp(1),
                            X("TOOL_DEF", 0, {"op": 0, "name": "echo"}, TOOLDEF_MAY),
                            XERR(1, "FRAME_TOO_LARGE", 0x2)],
                  events=[E("Connected"), E("Invoked", id=2, tool="echo")], state="Open"),
             step(0, command=C("complete", id=2, status=0, result="hi"),
                  transmit=[complete_exp(2, 0, "hi")])],
            pipe64)

    # ---- §5.6 `cancelled` only after INTERRUPT ----
    session("server/cancelled-only-after-interrupt", "§5.6, §7.3", "A server reports "
            "`cancelled` only for an invocation the client interrupted: an application that "
            "ends an uninterrupted invocation as cancelled (say, because output could not be "
            "sent) is reported as `failed`; after an INTERRUPT the same command sends "
            "COMPLETE(cancelled). (The server used to report `cancelled` unasked.)", "server",
            server_open(with_tools("echo")) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(0, command=C("complete", id=1, status=1), transmit=[complete_exp(1, 2)]),
             step(0, recv=wire("INVOKE", 2, {"tool": "echo"}),
                  events=[E("Invoked", id=2, tool="echo")]),
             step(0, recv=wire("INTERRUPT", 2), events=[E("Interrupted", id=2)]),
             step(0, command=C("complete", id=2, status=1), transmit=[complete_exp(2, 1)])],
            with_tools("echo"))

    # ---- §7.5 STREAM data cut to the client's frame limit ----
    small = {"versions": [1], "limits": {"max_frame_payload": 64}}
    session("server/stream-over-client-max-frame-payload", "§7.5, §3.6", "The client "
            "accepts payloads of at most 64 bytes: a 60-byte chunk (a 67-byte STREAM payload) "
            "may not be sent, the sender cuts its output to fit (at most max_frame_payload − 15 "
            "= 49 bytes a chunk); a 40-byte chunk is sent.", "server",
            server_open(with_tools("echo"), hello=small) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(0, command=C("stream", id=1, data="s" * 60), refused=True),
             step(0, command=C("stream", id=1, data="s" * 40),
                  transmit=[X("STREAM", 1, {"data": "s" * 40, "seq": 0})]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            with_tools("echo"))

    # ---- §6.5 GOAWAY from the client ----
    session("server/goaway-received-then-invoke", "§6.5", "After its own GOAWAY the client "
            "may open no new exchange either: an INVOKE sent after it is refused with "
            "DRAINING (retryable), not run.", "server",
            op + [step(0, recv=wire("GOAWAY", 0), events=[E("GoAway")], state="Draining"),
                  step(0, recv=wire("INVOKE", 1, {"tool": "echo", "args": "hi"}),
                       transmit=[XERR(1, "DRAINING", 0x2)], state="Draining")], L, live=True)

    # ---- §5.1, §7.5 minimum limits ----
    session("server/hello-initial-window-below-minimum", "§5.1, §7.5", "initial_window 4 "
            "is below the minimum of 8 (a chunk of at most half the window must hold any "
            "UTF-8 character): the client's HELLO is INVALID_FIELD, a connection error during "
            "the handshake.", "server",
            [step(0, start=True, state="Handshaking"),
             conn_error(0, "INVALID_FIELD", recv=wire_raw(0x1, 0, m(
                 (0, pk([1])), (2, pk({3: 4, 4: 4})))))], L, live=True)
    session("server/text-split-on-characters", "§7.5", "With max_chunk 4 and initial_window "
            "8 (the minimums) the text \"€😀\" (3 + 4 bytes) goes out as two chunks, each "
            "whole characters: \"€\" and \"😀\".", "server",
            server_open(L, hello={"versions": [1], "capabilities": ["requests"],
                                  "limits": {"max_chunk": 4, "initial_window": 8}}) +
            [step(0, recv=wire("INVOKE", 1, {"tool": "chunks", "args": ["€😀"]}),
                  events=[E("Invoked", id=1, tool="chunks")]),
             step(0, command=C("stream", id=1, data="€"),
                  transmit=[X("STREAM", 1, {"data": "€", "seq": 0})]),
             step(0, command=C("stream", id=1, data="😀"),
                  transmit=[X("STREAM", 1, {"data": "😀", "seq": 1})]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            L, live=True)

    # ---- §6.7 heartbeat frames, §5.1 announced interval, §2.1 close code ----
    hb_live_hello = {"versions": [1], "capabilities": ["requests"], "heartbeat_ms": 100}
    hb_hello_exp = X("HELLO", 0, {"versions": [1], "connection_id": "*",
                                  "tools": len(LIVE_TOOL_NAMES), "heartbeat_ms": 100},
                     {"capabilities": "*", "limits": "*", "agent": "*"})
    session("server/heartbeat-ping-frames", "§6.7, §5.1, §2.1", "The client asks for 100 ms "
            "heartbeats: the server's HELLO announces the session's interval (100), the "
            "heartbeat is an ASP PING frame on every binding (also WebSocket), and after 3 "
            "intervals of silence HEARTBEAT_TIMEOUT closes with WebSocket code 1001.", "server",
            [step(0, start=True, state="Handshaking"),
             step(0, recv=wire("HELLO", 0, hb_live_hello),
                  transmit=[hb_hello_exp, U(*pipe_tools)], events=[E("Connected")],
                  state="Open"),
             step(150, timeout=True, transmit=[X("PING", 0)]),
             step(250, timeout=True, transmit=[X("PING", 0)]),
             conn_error(350, "HEARTBEAT_TIMEOUT", timeout=True)], L, live=True)

    # ---- §8 requests end with their invocation ----
    session("server/request-ends-with-invocation", "§8", "When an invocation ends, the "
            "requests it asked end too: with the invocation's terminal frame (just before or "
            "right after it) the server sends INTERRUPT for each, and the client ends it with "
            "REPLY(cancelled).",
            "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "ask", "args": "Delete?"}),
                       events=[E("Invoked", id=1, tool="ask")]),
                  step(0, command=C("request", kind="confirm", body="Delete?", invocation=1),
                       transmit=[X("REQUEST", "$r1", {"kind": "confirm", "body": "Delete?",
                                                       "invocation": 1})]),
                  step(0, recv=wire("INTERRUPT", 1), events=[E("Interrupted", id=1)]),
                  step(0, command=C("complete", id=1, status=1),
                       transmit=[U(complete_exp(1, 1), X("INTERRUPT", "$r1", {},
                                                          {"reason": "*"}))]),
                  step(0, recv=wire("REPLY", "$r1", {"status": 1}),
                       events=[E("Ended", id="$r1", outcome="reply", status=1)])],
            L, live=True)

    # ---- §2.1 framing ----
    session("server/framing-truncated", "§2.1", "A binary message that ends inside a frame "
            "(PING declaring 5 payload bytes, 1 present) is ERROR(FRAMING_ERROR), then close.",
            "server", op + [conn_error(0, "FRAMING_ERROR",
                                       recv="18 00 00 00 00 00 00 05 80")],
            L, live=True, binding="websocket")
    session("server/framing-text", "§2.1", "A text WebSocket message is "
            "ERROR(FRAMING_ERROR), then close.", "server",
            op + [conn_error(0, "FRAMING_ERROR", recv_text="hello")], L, live=True,
            binding="websocket")
    session("server/framing-empty-message", "§2.1", "An empty binary WebSocket message is "
            "ERROR(FRAMING_ERROR), then close (WebSocket code 1002).", "server",
            op + [conn_error(0, "FRAMING_ERROR", recv="")], L, live=True,
            binding="websocket")

    # ---- §5.8 / §6.7 ping and heartbeat ----
    session("server/ping", "§5.8", "PING is answered with PONG (also a PING whose payload "
            "is an explicit empty map); a PONG is not answered.", "server",
            op + [step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
                  step(0, recv=wire_raw(0x8, 0, b"\x80"), transmit=[X("PONG", 0)]),
                  step(0, recv=wire("PONG", 0))], L, live=True)
    hb = with_tools("echo", heartbeat_ms=5000)
    session("server/heartbeat", "§6.7, §6.4", "Server heartbeat 5000 ms, client 1000 ms: the "
            "session uses 1000. PING after 1000 ms of silence and after each further 1000 ms; "
            "after 3000 ms ERROR(HEARTBEAT_TIMEOUT, retryable) and close.", "server",
            server_open(hb, hello={"versions": [1], "heartbeat_ms": 1000}) +
            [step(999, timeout=True),
             step(1001, timeout=True, transmit=[X("PING", 0)]),
             step(1500, timeout=True),
             step(2001, timeout=True, transmit=[X("PING", 0)]),
             step(2999, timeout=True),
             conn_error(3001, "HEARTBEAT_TIMEOUT", timeout=True)], hb)
    hb2 = with_tools("echo", heartbeat_ms=1000)
    session("server/heartbeat-reset", "§6.7", "Anything received (here a PONG at 1500 ms) "
            "restarts the silence: the next PING is due 1000 ms after it, the timeout 3000 ms "
            "after it.", "server",
            server_open(hb2, hello={"versions": [1], "heartbeat_ms": 5000}) +
            [step(1001, timeout=True, transmit=[X("PING", 0)]),
             step(1500, recv=wire("PONG", 0)),
             step(2001, timeout=True),
             step(2501, timeout=True, transmit=[X("PING", 0)]),
             step(3501, timeout=True, transmit=[X("PING", 0)]),
             step(4499, timeout=True),
             conn_error(4501, "HEARTBEAT_TIMEOUT", timeout=True)], hb2)
    hb0 = with_tools("echo", heartbeat_ms=0)
    session("server/heartbeat-off", "§6.4, §6.7", "Both sides announce heartbeat_ms 0: no "
            "heartbeat, no PING and no timeout however long the silence.", "server",
            server_open(hb0, hello={"versions": [1], "heartbeat_ms": 0}) +
            [step(100000, timeout=True), step(1000000, timeout=True),
             step(1000001, recv=wire("PING", 0), transmit=[X("PONG", 0)])], hb0)

    # ---- §6.5 GOAWAY ----
    gw = with_tools("echo", "wait")
    session("server/goaway-drain", "§6.5", "After sending GOAWAY the server refuses new "
            "INVOKEs with ERROR(DRAINING, retryable), keeps serving the one in flight, and "
            "closes once none is left.", "server",
            server_open(gw) +
            [wait1,
             step(0, command=C("goaway", reason="maintenance", timeout_ms=5000),
                  transmit=[X("GOAWAY", 0, {"reason": "maintenance", "timeout_ms": 5000})],
                  state="Draining"),
             step(10, recv=wire("INVOKE", 2, {"tool": "echo"}),
                  transmit=[XERR(2, "DRAINING", 0x2)]),
             step(20, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(30, command=C("complete", id=1, status=0), transmit=[complete_exp(1)],
                  events=[closed_ev("drained")], state="Closed", closed=True)], gw)
    session("server/goaway-order", "§7.2", "After GOAWAY, INVOKE of an unknown tool is "
            "DRAINING (step 1 of §7.2), not UNKNOWN_TOOL.", "server",
            server_open(gw) +
            [wait1,
             step(0, command=C("goaway", timeout_ms=5000),
                  transmit=[X("GOAWAY", 0, {"timeout_ms": 5000})], state="Draining"),
             step(0, recv=wire("INVOKE", 2, {"tool": "nope"}),
                  transmit=[XERR(2, "DRAINING", 0x2)])], gw)
    session("server/goaway-idle", "§6.5", "GOAWAY with nothing in flight: the server closes "
            "right after sending it.", "server",
            server_open(gw) +
            [step(0, command=C("goaway", reason="bye"),
                  transmit=[X("GOAWAY", 0, {"reason": "bye"}, {"timeout_ms": "*"})],
                  events=[closed_ev("drained")], state="Closed", closed=True)], gw)
    session("server/goaway-timeout", "§6.5", "GOAWAY with timeout_ms 5000 and an invocation "
            "that does not end: at 5000 ms the server sends ERROR(GOING_AWAY, retryable) with "
            "id 0 and closes.", "server",
            server_open(gw) +
            [wait1,
             step(0, command=C("goaway", timeout_ms=5000),
                  transmit=[X("GOAWAY", 0, {"timeout_ms": 5000})], state="Draining"),
             step(4999, timeout=True, state="Draining"),
             conn_error(5001, "GOING_AWAY", timeout=True)], gw)
    session("server/goaway-received", "§6.5", "After receiving the client's GOAWAY the server "
            "is draining: it opens no new exchange (no REQUEST) but still serves the INVOKE in "
            "flight, and it does not close (the side that sent GOAWAY does).", "server",
            op + [step(0, recv=wire("INVOKE", 1, {"tool": "echo"}),
                       events=[E("Invoked", id=1, tool="echo")]),
                  step(0, recv=wire("GOAWAY", 0, {"reason": "client leaving"}),
                       events=[E("GoAway", reason="client leaving")], state="Draining"),
                  step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)],
                       state="Draining")], L, live=True)
    session("server/goaway-received-no-request", "§6.5", "After receiving GOAWAY the server "
            "MUST NOT send REQUEST; the transport closing then ends the session.", "server",
            op + [ask1,
                  step(0, recv=wire("GOAWAY", 0), events=[E("GoAway")], state="Draining"),
                  step(0, command=req_cmd, refused=True),
                  step(0, transport_closed=True, events=[closed_ev("transport_closed")],
                       state="Closed", closed=True)], L)
    session("server/goaway-waits-for-request", "§6.5", "The server sent GOAWAY while its "
            "own REQUEST is in flight: it closes only when none is left on either side, i.e. "
            "after the REPLY.", "server",
            op + [ask1, step(0, command=req_cmd, transmit=[req_exp]),
                  step(0, command=C("complete", id=1, status=0),
                       transmit=[U(complete_exp(1), X("INTERRUPT", "$r1", {}, {"reason": "*"}))]),
                  step(0, command=C("goaway", timeout_ms=5000),
                       transmit=[X("GOAWAY", 0, {"timeout_ms": 5000})], state="Draining"),
                  step(10, recv=wire("REPLY", "$r1", {"status": 0}),
                       events=[E("Ended", id="$r1", outcome="reply", status=0),
                               closed_ev("drained")], state="Closed", closed=True)], L)
    session("server/goaway-crossing", "§6.5", "GOAWAYs cross: both sides drain; the server "
            "(which sent one) closes when its invocation ends.", "server",
            server_open(gw) +
            [wait1,
             step(0, command=C("goaway", timeout_ms=5000),
                  transmit=[X("GOAWAY", 0, {"timeout_ms": 5000})], state="Draining"),
             step(1, recv=wire("GOAWAY", 0), events=[E("GoAway")], state="Draining"),
             step(2, command=C("complete", id=1, status=0), transmit=[complete_exp(1)],
                  events=[closed_ev("drained")], state="Closed", closed=True)], gw)
    session("server/transport-closed", "§6.6", "The transport closes with an invocation in "
            "flight: the connection is closed.", "server",
            op + [wait1,
                  step(0, transport_closed=True, events=[closed_ev("transport_closed")],
                       state="Closed", closed=True)], L)

    # ---- §9 tool set ----
    session("server/tool-def-push", "§9, §5.5", "The server changes its tool set while the "
            "session is open: TOOL_DEF add, update (replaces the definition), remove; INVOKE "
            "of the removed tool is then UNKNOWN_TOOL.", "server",
            server_open(with_tools("echo")) +
            [step(0, command=C("add_tool", name="search", description="Search."),
                  transmit=[X("TOOL_DEF", 0, {"op": 0, "name": "search",
                                              "description": "Search."},
                              {"input_schema": "*", "annotations": "*"})]),
             step(0, command=C("add_tool", name="search", description="Search v2."),
                  transmit=[X("TOOL_DEF", 0, {"op": 1, "name": "search",
                                              "description": "Search v2."},
                              {"input_schema": "*", "annotations": "*"})]),
             step(0, recv=wire("INVOKE", 1, {"tool": "search"}),
                  events=[E("Invoked", id=1, tool="search")]),
             step(0, command=C("complete", id=1, status=0), transmit=[complete_exp(1)]),
             step(0, command=C("remove_tool", name="search"),
                  transmit=[X("TOOL_DEF", 0, {"op": 2, "name": "search"}, TOOLDEF_MAY)]),
             step(0, recv=wire("INVOKE", 2, {"tool": "search"}),
                  transmit=[XERR(2, "UNKNOWN_TOOL", 0x2)])], with_tools("echo"))

    # ---- §10 rate limiting ----
    rl = with_tools("echo", rate_limit=3, flood_limit=5)
    session("server/rate-limit", "§10, §7.2", "Rate limit R=3, hard limit F=5 frames per "
            "second. In a new window: 3 PINGs pass; the 4th frame, an INVOKE, is refused "
            "ERROR(RATE_LIMITED, retryable) and draws the one warning ERROR(RATE_LIMITED) "
            "with id 0; the 5th (PING) is still processed; the 6th is FLOOD: send, close.",
            "server",
            server_open(rl) +
            [step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2000, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  transmit=[U(XERR(0, "RATE_LIMITED"), XERR(1, "RATE_LIMITED", 0x2))]),
             step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             conn_error(2000, "FLOOD", recv=wire("PING", 0))], rl)
    rl2 = with_tools("echo", rate_limit=2, flood_limit=100)
    session("server/rate-limit-window", "§10", "R=2: the third frame in a window is still "
            "processed (PING → PONG) and draws one warning; a window starts with the first "
            "frame after the previous one ended, so an INVOKE 1000 ms later runs.", "server",
            server_open(rl2) +
            [step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2100, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2200, recv=wire("PING", 0), transmit=[U(XERR(0, "RATE_LIMITED"),
                                                         X("PONG", 0))]),
             step(2300, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(3000, recv=wire("INVOKE", 1, {"tool": "echo"}),
                  events=[E("Invoked", id=1, tool="echo")]),
             step(3000, command=C("complete", id=1, status=0), transmit=[complete_exp(1)])],
            rl2)

    # ---- §13.1 the hard bound on what a peer makes this side hold ----
    # 200 PINGs in one message provoke 200 empty PONGs, 8 bytes each: 1600 bytes queued by
    # one input batch, past max_buffered 1024 (which leaves room for any server HELLO).
    ov = with_tools("echo", max_buffered=1024)
    session("server/overloaded-replies", "§13.1, §12.2, §2.1", "With max_buffered 1024, one "
            "message of 200 PINGs provokes 1600 bytes of PONGs the peer has not read: once "
            "the queue passes 1024 bytes the server drops what it had queued, sends "
            "ERROR(OVERLOADED, retryable) with id 0 (no PONG before it) and closes with "
            "WebSocket code 1008.", "server",
            server_open(ov) +
            [conn_error(0, "OVERLOADED", recv=msg(*[wire("PING", 0)] * 200))], ov)

    # ---- §12.2 application codes, sent by the application (live: the `fail` tool) ----
    app_steps = []
    for i, code in enumerate(["INVALID_ARGUMENTS", "TOOL_FAILED", "INTERNAL", "UNAVAILABLE",
                              "UPSTREAM_TIMEOUT", 0x1234], 1):
        num = ERROR_CODES[code] if isinstance(code, str) else code
        app_steps += [
            step(0, recv=wire("INVOKE", i, {"tool": "fail", "args": num}),
                 events=[E("Invoked", id=i, tool="fail")]),
            step(0, command=C("fail", id=i, code=code, message="failed",
                              retryable=code in RETRYABLE),
                 transmit=[XERR(i, code)])]
    session("server/application-errors", "§12.1, §12.2", "The application ends invocations "
            "with ERROR of each application code (INVALID_ARGUMENTS, TOOL_FAILED, INTERNAL, "
            "UNAVAILABLE, UPSTREAM_TIMEOUT, and the application-defined 0x1234), retryable "
            "as the registry says.", "server", op + app_steps, L, live=True)


def build_client_sessions():
    D = {}
    op = client_open(D)

    def inv(rid=1, tool="echo", args=None, at=0, **kw):
        return invoke_client(at, rid, tool, args, **kw)

    def ended_lost(rid):
        return E("Ended", id=rid, outcome="lost")

    # ---- §6.2 / §6.3 handshake ----
    session("client/handshake", "§6.2, §5.1", "The client's first frame is its HELLO "
            "(versions [1], capabilities [requests]); the server's HELLO opens the session.",
            "client", op, D)
    lim = {"max_frame_payload": 4096, "max_inflight": 2, "max_tools": 3, "max_chunk": 4,
           "initial_window": 8, "heartbeat_ms": 0}
    session("client/handshake-limits", "§5.1, §6.4", "The client announces in HELLO what it "
            "accepts when it differs from the defaults: all five limits, and heartbeat_ms 0 "
            "(absent would mean 30000).", "client", client_open(lim), lim)
    session("client/pipelined-invoke", "§6.2", "A client may pipeline: an INVOKE right after "
            "its HELLO goes out at once, before the server's HELLO; its COMPLETE arrives after "
            "the server's HELLO.", "client",
            [op[0], step(0, command=C("invoke", tool="echo"),
                         transmit=[X("INVOKE", 1, {"tool": "echo"})], state="Handshaking"),
             op[1],
             step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                  events=[E("Ended", id=1, outcome="complete", status=0)])], D)
    session("client/initial-tools", "§6.2, §9", "Server HELLO with tools 2, then its two "
            "TOOL_DEF(add) in the same message: the initial tool set is complete.", "client",
            [op[0], step(0, recv=msg(wire("HELLO", 0, {**S_HELLO, "tools": 2}),
                                     wire("TOOL_DEF", 0, {"op": 0, "name": "a"}),
                                     wire("TOOL_DEF", 0, {"op": 0, "name": "b",
                                                          "description": "B."})),
                         events=[E("ToolAdded", name="a"), E("ToolAdded", name="b"),
                                 E("Connected", connection_id="c1")], state="Open")], D)
    session("client/initial-tools-split", "§6.2", "The client is open as soon as the server's "
            "HELLO arrives and MAY invoke at once; its initial tool set (tools 1) is complete "
            "when the announced TOOL_DEF arrives.", "client",
            [op[0], step(0, recv=wire("HELLO", 0, {**S_HELLO, "tools": 1}), state="Open"),
             inv(1),
             step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "echo"}),
                  events=[E("ToolAdded", name="echo"), E("Connected", connection_id="c1")])],
            D)
    session("client/version-not-offered", "§6.3", "A server HELLO naming a version the client "
            "did not offer (2): the client sends ERROR(UNSUPPORTED_VERSION) and closes.",
            "client",
            [op[0], conn_error(0, "UNSUPPORTED_VERSION",
                               recv=wire("HELLO", 0, {"versions": [2], "connection_id": "c1"}))],
            D)
    session("client/server-hello-two-versions", "§6.2", "A server HELLO must name exactly one "
            "version; [1, 2] is UNSUPPORTED_VERSION (a connection error).", "client",
            [op[0], conn_error(0, "UNSUPPORTED_VERSION",
                               recv=wire_raw(0x1, 0, m((0, pk([1, 2])), (4, pk("c1")))))],
            D)
    session("client/server-hello-no-connection-id", "§6.2, §3.7", "A server HELLO without "
            "connection_id is MISSING_FIELD, which during the handshake is a connection "
            "error: ERROR with id 0, then close.", "client",
            [op[0], conn_error(0, "MISSING_FIELD", recv=wire_raw(0x1, 0, m((0, pk([1])))))],
            D)
    session("client/server-refuses-version", "§6.3, §6.6", "The server answers the client's "
            "HELLO with ERROR(UNSUPPORTED_VERSION) and id 0: the client does not answer it, "
            "and the connection is closed.", "client",
            [op[0], step(0, recv=wire("ERROR", 0, {"code": ERROR_CODES["UNSUPPORTED_VERSION"],
                                                   "message": "supported versions: [2]"}),
                         events=[closed_ev("error_received", "UNSUPPORTED_VERSION")],
                         state="Closed", closed=True)], D)
    session("client/frame-before-hello", "§6.2, §12.2", "A frame other than HELLO from the "
            "server before its HELLO (a PING) is PROTOCOL_VIOLATION.", "client",
            [op[0], conn_error(0, "PROTOCOL_VIOLATION", recv=wire("PING", 0))], D)
    session("client/second-hello", "§6.2", "A second server HELLO is PROTOCOL_VIOLATION.",
            "client", op + [conn_error(0, "PROTOCOL_VIOLATION", recv=wire("HELLO", 0,
                                                                           S_HELLO))], D)
    session("client/handshake-timeout", "§6.2", "No server HELLO within the handshake timeout "
            "(10 s): the client closes (it may send ERROR(HANDSHAKE_TIMEOUT) first).",
            "client",
            [op[0], step(9999, timeout=True, state="Handshaking"),
             step(10001, timeout=True, transmit=[XERR(0, "HANDSHAKE_TIMEOUT", optional=True)],
                  events=[E("Closed")], state="Closed", closed=True)], D)

    # ---- §7 invocations ----
    session("client/invoke-complete", "§7.1, §5.2, §5.6", "invoke → INVOKE with the client's "
            "first id 1; COMPLETE(ok) ends it.", "client",
            op + [inv(1, args={"t": "hi"}),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0, "result": {"t": "hi"}}),
                       events=[E("Ended", id=1, outcome="complete", status=0,
                                 result=anyv({"t": "hi"}))])], D)
    session("client/invoke-options", "§5.2", "INVOKE carries deadline_ms and meta when the "
            "application gives them.", "client",
            op + [inv(1, tool="search", args={"q": "x"}, deadline_ms=5000,
                      meta={"trace": "4bf92f35"})], D)
    session("client/invoke-stream", "§7.1, §7.6, §5.3", "STREAM chunks (seq 0 text, seq 1 "
            "binary with final) are delivered in order; COMPLETE ends the invocation.",
            "client",
            op + [inv(1),
                  step(0, recv=wire("STREAM", 1, {"data": "Hel", "seq": 0}),
                       events=[E("Chunk", id=1, seq=0, data={"str": "Hel"}, final=False)]),
                  step(0, recv=wire("STREAM", 1, {"data": b"lo", "seq": 1, "final": True}),
                       events=[E("Chunk", id=1, seq=1, data={"bin": "6c 6f"}, final=True)]),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                       events=[E("Ended", id=1, outcome="complete", status=0)])], D)
    session("client/bad-sequence", "§7.6, §7.1, §3.5", "A first STREAM with seq 1 is "
            "BAD_SEQUENCE, which ends the invocation; the client sends PING right after its "
            "ERROR. Until the PONG, frames for id 1 crossed the ERROR on the wire and are "
            "dropped silently (the id is not reused); after it, a COMPLETE for id 1 is "
            "UNKNOWN_ID.", "client",
            op + [inv(1),
                  step(0, recv=wire("STREAM", 1, {"data": "x", "seq": 1}),
                       transmit=[XERR(1, "BAD_SEQUENCE", 0x3), X("PING", 0)],
                       events=[E("Ended", id=1, outcome="error", code="BAD_SEQUENCE")]),
                  step(0, recv=msg(wire("STREAM", 1, {"data": "y", "seq": 2}),
                                   wire("COMPLETE", 1, {"status": 0}))),
                  inv(2),
                  step(0, recv=wire("PONG", 0)),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                       transmit=[XERR(1, "UNKNOWN_ID", 0x6)])], D)
    session("client/stream-after-final", "§7.1, §7.6", "A STREAM after the one with `final` "
            "is BAD_SEQUENCE, which ends the invocation.", "client",
            op + [inv(1),
                  step(0, recv=wire("STREAM", 1, {"data": "a", "seq": 0, "final": True}),
                       events=[E("Chunk", id=1, seq=0, final=True)]),
                  step(0, recv=wire("STREAM", 1, {"data": "b", "seq": 1}),
                       transmit=[XERR(1, "BAD_SEQUENCE", 0x3), X("PING", 0)],
                       events=[E("Ended", id=1, outcome="error", code="BAD_SEQUENCE")])], D)
    mc = {"max_chunk": 4}
    session("client/chunk-too-large", "§7.5, §13", "With max_chunk 4, a STREAM of 5 bytes is "
            "CHUNK_TOO_LARGE, which ends the invocation; 4 bytes are fine.", "client",
            client_open(mc) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": "1234", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, recv=wire("STREAM", 1, {"data": "12345", "seq": 1}),
                  transmit=[XERR(1, "CHUNK_TOO_LARGE", 0x3), X("PING", 0)],
                  events=[E("Ended", id=1, outcome="error", code="CHUNK_TOO_LARGE")])], mc)
    fc = {"initial_window": 8, "auto_credit": False}
    session("client/flow-control", "§7.5", "initial_window 8 and no credit granted: after 5 "
            "bytes, a STREAM of 4 bytes exceeds the window: FLOW_CONTROL ends the invocation.",
            "client",
            client_open(fc) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": "abcde", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, recv=wire("STREAM", 1, {"data": "fghi", "seq": 1}),
                  transmit=[XERR(1, "FLOW_CONTROL", 0x3), X("PING", 0)],
                  events=[E("Ended", id=1, outcome="error", code="FLOW_CONTROL")])], fc)
    session("client/flow-control-exact", "§7.5", "STREAM data exactly filling the window is "
            "fine, and the final chunk may be empty, also with the window at 0.",
            "client",
            client_open(fc) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": "abcdefgh", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, recv=wire("STREAM", 1, {"data": b"", "seq": 1, "final": True}),
                  events=[E("Chunk", id=1, seq=1, final=True)]),
             step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                  events=[E("Ended", id=1, outcome="complete", status=0)])], fc)
    mfc = {"initial_window": 8, "auto_credit": False}
    session("client/credit-manual", "§7.5", "The application consumed the 8 bytes of its "
            "window: the client grants CREDIT(8), and the server may stream 8 more.",
            "client",
            client_open(mfc) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": "abcdefgh", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, command=C("release", id=1, len=8),
                  transmit=[X("CREDIT", 1, {"bytes": 8})]),
             step(0, recv=wire("STREAM", 1, {"data": "ijklmnop", "seq": 1}),
                  events=[E("Chunk", id=1, seq=1)])], mfc)
    acc = {"initial_window": 8}
    session("client/credit-batching", "§7.5", "SHOULD-level: with initial_window 8 the client "
            "grants CREDIT once at least half the window (4 bytes) has been consumed since the "
            "last grant: not after 3 bytes, CREDIT(4) after 4, CREDIT(8) after 8 more.",
            "client",
            client_open(acc) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": "abc", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, recv=wire("STREAM", 1, {"data": "d", "seq": 1}),
                  transmit=[X("CREDIT", 1, {"bytes": 4})], events=[E("Chunk", id=1, seq=1)]),
             step(0, recv=wire("STREAM", 1, {"data": "efghijkl", "seq": 2}),
                  transmit=[X("CREDIT", 1, {"bytes": 8})], events=[E("Chunk", id=1, seq=2)]),
             step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                  events=[E("Ended", id=1, outcome="complete", status=0)])], acc)
    session("client/unknown-id", "§7.1, §12.2", "STREAM and COMPLETE for ids never used are "
            "UNKNOWN_ID.", "client",
            op + [step(0, recv=wire("STREAM", 7, {"data": "x", "seq": 0}),
                       transmit=[XERR(7, "UNKNOWN_ID", 0x3)]),
                  step(0, recv=wire("COMPLETE", 9, {"status": 0}),
                       transmit=[XERR(9, "UNKNOWN_ID", 0x6)])], D)
    session("client/interrupt", "§7.3", "The client interrupts an invocation; a second "
            "interrupt has no further effect; COMPLETE(cancelled) ends it; after that the id "
            "cannot be interrupted.", "client",
            op + [inv(1, tool="wait"),
                  step(0, command=C("interrupt", id=1, reason="stop"),
                       transmit=[X("INTERRUPT", 1, {"reason": "stop"})]),
                  step(0, command=C("interrupt", id=1),
                       transmit=[X("INTERRUPT", 1, {}, {"reason": "*"}, optional=True)]),
                  step(0, recv=wire("COMPLETE", 1, {"status": 1}),
                       events=[E("Ended", id=1, outcome="complete", status=1)]),
                  step(0, command=C("interrupt", id=1), refused=True)], D)
    session("client/interrupt-complete-race", "§7.3", "The server completed before it saw the "
            "INTERRUPT: COMPLETE(ok) is the terminal frame the client accepts.", "client",
            op + [inv(1),
                  step(0, command=C("interrupt", id=1),
                       transmit=[X("INTERRUPT", 1)]),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0, "result": 42}),
                       events=[E("Ended", id=1, outcome="complete", status=0,
                                 result=anyv(42))])], D)
    session("client/deadline-error", "§7.4", "The server ends an invocation with "
            "ERROR(DEADLINE_EXCEEDED); the client enforces nothing itself.", "client",
            op + [inv(1, tool="wait", deadline_ms=100),
                  step(50, timeout=True),
                  step(101, recv=wire("ERROR", 1, {"code": ERROR_CODES["DEADLINE_EXCEEDED"],
                                                   "retryable": True}),
                       events=[E("Ended", id=1, outcome="error", code="DEADLINE_EXCEEDED")]),
                  step(200, timeout=True)], D)
    steps = op[:]
    codes = ["INVALID_ARGUMENTS", "TOOL_FAILED", "INTERNAL", "UNAVAILABLE", "UPSTREAM_TIMEOUT",
             0x1234]
    for i, _ in enumerate(codes, 1):
        steps.append(inv(i, tool="fail"))
    for i, code in enumerate(codes, 1):
        num = ERROR_CODES[code] if isinstance(code, str) else code
        f = {"code": num, "message": "failed"}
        if code in RETRYABLE:
            f["retryable"] = True
        steps.append(step(0, recv=wire("ERROR", i, f),
                          events=[E("Ended", id=i, outcome="error", code=code)]))
    session("client/application-errors", "§12.1, §12.2", "ERRORs with the application codes "
            "(and the application-defined 0x1234) end the invocations they name.", "client",
            steps, D)
    session("client/error-informational", "§5.7, §12.1", "ERRORs that end nothing are "
            "informational: id not in flight, the RATE_LIMITED warning (id 0), a TOOL_STATE "
            "report (id 0). No reply, no close.", "client",
            op + [step(0, recv=wire("ERROR", 7, {"code": ERROR_CODES["UNKNOWN_TOOL"]}),
                       events=[E("PeerError", id=7, code="UNKNOWN_TOOL")]),
                  step(0, recv=wire("ERROR", 0, {"code": ERROR_CODES["RATE_LIMITED"],
                                                 "retryable": True}),
                       events=[E("PeerError", id=0, code="RATE_LIMITED")]),
                  step(0, recv=wire("ERROR", 0, {"code": ERROR_CODES["TOOL_STATE"],
                                                 "frame_type": 5}),
                       events=[E("PeerError", id=0, code="TOOL_STATE")], state="Open")], D)
    session("client/unknown-error-codes", "§12.1", "Codes the client does not know are "
            "treated by their range: 0x3F with an id in flight ends that invocation; 0x2F "
            "with id 0 is informational; 0x0F (connection range) ends the session.", "client",
            op + [inv(1),
                  step(0, recv=wire("ERROR", 1, {"code": 0x3F}),
                       events=[E("Ended", id=1, outcome="error", code=0x3F)]),
                  step(0, recv=wire("ERROR", 0, {"code": 0x2F}),
                       events=[E("PeerError", id=0, code=0x2F)], state="Open"),
                  step(0, recv=wire("ERROR", 0, {"code": 0x0F}),
                       events=[closed_ev("error_received", 0x0F)], state="Closed",
                       closed=True)], D)
    session("client/peer-limits", "§3.6, §6.4", "The client respects what the server "
            "announced: max_inflight 1 (a second invoke is refused while one is in flight) "
            "and max_frame_payload 64 (an INVOKE whose payload would exceed it is refused).",
            "client",
            client_open(D, hello={**S_HELLO, "limits": {"max_inflight": 1,
                                                        "max_frame_payload": 64}}) +
            [step(0, command=C("invoke", tool="echo", args="a" * 80), refused=True),
             inv(1),
             step(0, command=C("invoke", tool="echo"), refused=True),
             step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                  events=[E("Ended", id=1, outcome="complete", status=0)]),
             inv(2)], D)
    # ---- found by fuzzing (fuzz/README.md, "Crashes found") ----
    session("client/interrupt-reason-over-peer-max-frame-payload", "§3.6, §5.4", "The server "
            "accepts payloads of at most 64 bytes; the application interrupts with a 100-byte "
            "reason: the client still sends INTERRUPT, with the reason shortened or omitted so "
            "that the frame fits. (Found by fuzzing: a 65-byte INTERRUPT the server rejected.)",
            "client",
            client_open(D, hello={**S_HELLO, "limits": {"max_frame_payload": 64}}) +
            [inv(1, tool="wait"),
             step(0, command=C("interrupt", id=1, reason="r" * 100),
                  transmit=[X("INTERRUPT", 1, {}, {"reason": "*"})]),
             step(0, recv=wire("COMPLETE", 1, {"status": 1}),
                  events=[E("Ended", id=1, outcome="complete", status=1)])], D)
    session("client/goaway-reason-over-limit", "§3.6, §5.12", "The application gives GOAWAY a "
            "1500-byte reason: the client still sends GOAWAY, with the reason shortened to at "
            "most 1024 bytes or omitted. (Found by fuzzing.)", "client",
            op + [step(0, command=C("goaway", reason="r" * 1500, timeout_ms=5000),
                       transmit=[X("GOAWAY", 0, {"timeout_ms": 5000}, {"reason": "*"})],
                       events=[closed_ev("drained")], state="Closed", closed=True)], D)
    session("client/connection-code-nonzero-id", "§12.1", "The scope of an ERROR is decided "
            "by its code: PROTOCOL_VIOLATION (connection range) fails the session even when "
            "its id names an invocation, which ends.", "client",
            op + [inv(1),
                  step(0, recv=wire("ERROR", 1, {"code": ERROR_CODES["PROTOCOL_VIOLATION"]}),
                       events=[E("Ended", id=1),
                               closed_ev("error_received", "PROTOCOL_VIOLATION")],
                       state="Closed", closed=True)], D)
    session("client/frame-error-ends-invocation", "§3.7", "A STREAM for invocation 1 whose "
            "seq is a string (INVALID_FIELD) is answered with id 1 and frame_type 3, and ends "
            "the invocation on both sides.", "client",
            op + [inv(1),
                  step(0, recv=wire_raw(0x3, 1, m((0, pk("x")), (1, pk("0")))),
                       transmit=[XERR(1, "INVALID_FIELD", 0x3, ft_required=True), X("PING", 0)],
                       events=[E("Ended", id=1, outcome="error", code="INVALID_FIELD")])], D)
    session("client/empty-nonfinal-chunk", "§5.3", "An empty STREAM chunk without final is "
            "INVALID_FIELD: answered with id 1 and frame_type 3, and it ends the invocation "
            "on both sides.", "client",
            op + [inv(1),
                  step(0, recv=wire_raw(0x3, 1, m((0, pk("")), (1, pk(0)))),
                       transmit=[XERR(1, "INVALID_FIELD", 0x3, ft_required=True), X("PING", 0)],
                       events=[E("Ended", id=1, outcome="error", code="INVALID_FIELD")])], D)
    session("client/invalid-error-ends-invocation", "§3.7", "An ERROR for invocation 1 that "
            "fails decoding (code 0: INVALID_FIELD) is not answered but still ends the "
            "invocation, with the detected code reported locally; one for an id not in "
            "flight is dropped.", "client",
            op + [inv(1),
                  step(0, recv=wire_raw(0x7, 1, m((0, pk(0))))
                       , events=[E("Ended", id=1, outcome="error", code="INVALID_FIELD")]),
                  step(0, recv=wire_raw(0x7, 5, m((0, pk(0))))), ], D)

    # ---- §8 requests at the client ----
    session("client/request-reply", "§8, §5.10", "The client listed `requests`: a REQUEST is "
            "delivered; the application answers with REPLY, exactly once.", "client",
            op + [inv(1, tool="ask"),
                  step(0, recv=wire("REQUEST", 0x8000, {"kind": "confirm", "body": "Sure?",
                                                        "invocation": 1}),
                       events=[E("Requested", id=0x8000, kind="confirm", body=anyv("Sure?"),
                                 invocation=1)]),
                  step(0, command=C("reply", id=0x8000, status=0, body="yes"),
                       transmit=[X("REPLY", 0x8000, {"status": 0, "body": "yes"})]),
                  step(0, command=C("reply", id=0x8000, status=0), refused=True)], D)
    nr = {"requests": False}
    session("client/request-unsupported", "§8, §6.4", "A client that did not list `requests` "
            "answers a REQUEST with ERROR(UNSUPPORTED), which ends it.", "client",
            client_open(nr) +
            [step(0, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                  transmit=[XERR(0x8000, "UNSUPPORTED", 0xA)])], nr)
    one = {"max_inflight": 1}
    session("client/request-too-many-inflight", "§8, §13", "With max_inflight 1, a second "
            "REQUEST in flight is TOO_MANY_INFLIGHT (retryable), which ends that request.",
            "client",
            client_open(one) +
            [step(0, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                  events=[E("Requested", id=0x8000, kind="confirm")]),
             step(0, recv=wire("REQUEST", 0x8001, {"kind": "input"}),
                  transmit=[XERR(0x8001, "TOO_MANY_INFLIGHT", 0xA)]),
             step(0, command=C("reply", id=0x8000, status=2),
                  transmit=[X("REPLY", 0x8000, {"status": 2})]),
             step(0, recv=wire("REQUEST", 0x8001, {"kind": "input"}),
                  events=[E("Requested", id=0x8001, kind="input")])], one)
    session("client/request-duplicate", "§8", "A REQUEST with an id already in flight is "
            "DUPLICATE_ID, which ends both.", "client",
            op + [step(0, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                       events=[E("Requested", id=0x8000, kind="confirm")]),
                  step(0, recv=wire("REQUEST", 0x8000, {"kind": "input"}),
                       transmit=[XERR(0x8000, "DUPLICATE_ID", 0xA)],
                       events=[E("Aborted", id=0x8000, code="DUPLICATE_ID")]),
                  step(0, command=C("reply", id=0x8000, status=0), refused=True)], D)
    session("client/request-interrupted", "§8", "The server interrupts a request: the client "
            "must still end it, normally with REPLY(cancelled); an INTERRUPT after that is "
            "ignored.", "client",
            op + [step(0, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                       events=[E("Requested", id=0x8000, kind="confirm")]),
                  step(0, recv=wire("INTERRUPT", 0x8000, {"reason": "no longer needed"}),
                       events=[E("Interrupted", id=0x8000, reason="no longer needed")]),
                  step(0, command=C("reply", id=0x8000, status=1),
                       transmit=[X("REPLY", 0x8000, {"status": 1})]),
                  step(0, recv=wire("INTERRUPT", 0x8000))], D)
    session("client/reply-error", "§8", "The application refuses a request with an ERROR "
            "(an application code) instead of REPLY.", "client",
            op + [step(0, recv=wire("REQUEST", 0x8000, {"kind": "input"}),
                       events=[E("Requested", id=0x8000, kind="input")]),
                  step(0, command=C("fail", id=0x8000, code="INVALID_ARGUMENTS",
                                    message="no"),
                       transmit=[XERR(0x8000, "INVALID_ARGUMENTS")])], D)

    # ---- §6.5 / §6.6 drain and close ----
    session("client/draining-request", "§6.5", "After sending GOAWAY the client answers a "
            "REQUEST with ERROR(DRAINING); the invocation in flight still completes, and then "
            "the client closes.", "client",
            op + [inv(1, tool="wait"),
                  step(0, command=C("goaway", reason="closing tab", timeout_ms=5000),
                       transmit=[X("GOAWAY", 0, {"reason": "closing tab", "timeout_ms": 5000})],
                       state="Draining"),
                  step(10, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                       transmit=[XERR(0x8000, "DRAINING", 0xA)]),
                  step(20, recv=wire("COMPLETE", 1, {"status": 0}),
                       events=[E("Ended", id=1, outcome="complete", status=0),
                               closed_ev("drained")], state="Closed", closed=True)], D)
    session("client/goaway-received", "§6.5", "After the server's GOAWAY the client opens no "
            "new invocation; the one in flight continues; the client does not close, the "
            "transport closing ends the session.", "client",
            op + [inv(1, tool="chunks"),
                  step(0, recv=wire("GOAWAY", 0, {"reason": "deploy", "timeout_ms": 1000}),
                       events=[E("GoAway", reason="deploy", timeout_ms=1000)],
                       state="Draining"),
                  step(0, command=C("invoke", tool="echo"), refused=True),
                  step(0, recv=wire("STREAM", 1, {"data": "x", "seq": 0}),
                       events=[E("Chunk", id=1, seq=0)]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "late"}),
                       events=[E("ToolAdded", name="late")]),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                       events=[E("Ended", id=1, outcome="complete", status=0)],
                       state="Draining"),
                  step(5, transport_closed=True, events=[closed_ev("transport_closed")],
                       state="Closed", closed=True)], D)
    session("client/going-away", "§6.5, §6.6", "The server's drain timeout elapses: "
            "ERROR(GOING_AWAY) with id 0 closes the connection; the invocation still in "
            "flight ends as lost.", "client",
            op + [inv(1, tool="wait"),
                  step(0, recv=wire("GOAWAY", 0, {"timeout_ms": 1000}),
                       events=[E("GoAway", timeout_ms=1000)]),
                  step(1000, recv=wire("ERROR", 0, {"code": ERROR_CODES["GOING_AWAY"],
                                                    "retryable": True}),
                       events=[ended_lost(1), closed_ev("error_received", "GOING_AWAY")],
                       state="Closed", closed=True)], D)
    session("client/connection-error-received", "§6.6, §12.1", "A connection error from the "
            "server (PROTOCOL_VIOLATION, id 0) is not answered; the session fails and the "
            "invocation in flight is lost.", "client",
            op + [inv(1),
                  step(0, recv=wire("ERROR", 0, {"code": ERROR_CODES["PROTOCOL_VIOLATION"]}),
                       events=[ended_lost(1),
                               closed_ev("error_received", "PROTOCOL_VIOLATION")],
                       state="Closed", closed=True)], D)
    session("client/transport-closed", "§6.6", "The transport closes with an invocation in "
            "flight (no resume): it ends with a connection-lost outcome.", "client",
            op + [inv(1),
                  step(0, transport_closed=True,
                       events=[ended_lost(1), closed_ev("transport_closed")],
                       state="Closed", closed=True)], D)
    session("client/close", "§6.6", "The application closes the connection: invocations in "
            "flight end as lost; nothing is processed after close.", "client",
            op + [inv(1),
                  step(0, command=C("close"), events=[ended_lost(1), closed_ev("local")],
                       state="Closed", closed=True),
                  step(1, recv=wire("PING", 0), state="Closed", closed=True)], D)

    # ---- §3.3 direction ----
    for vid, tn, rid, fields in [("invoke", "INVOKE", 1, {"tool": "echo"}),
                                 ("credit", "CREDIT", 1, {"bytes": 5}),
                                 ("reply", "REPLY", 0x8000, {"status": 0})]:
        session(f"client/direction-{vid}", "§3.3", f"A {tn} from a server (a client → server "
                "frame) is the connection error PROTOCOL_VIOLATION.", "client",
                op + [conn_error(0, "PROTOCOL_VIOLATION", recv=wire(tn, rid, fields))], D)

    session("client/interrupt-client-space-id", "§3.5, §3.7", "A server's INTERRUPT names "
            "one of its requests: an INTERRUPT with a client-space id (1, the client's own "
            "invocation) is the frame error INVALID_ID with id 0; the invocation goes on.",
            "client",
            op + [inv(1),
                  step(0, recv=wire("INTERRUPT", 1),
                       transmit=[XERR(0, "INVALID_ID", 0x4, ft_required=True)]),
                  step(0, recv=wire("COMPLETE", 1, {"status": 0}),
                       events=[E("Ended", id=1, outcome="complete", status=0)])], D)

    # ---- §9 tools ----
    session("client/tool-def", "§9, §5.5", "TOOL_DEF add, a second add of the same name "
            "(TOOL_STATE, id 0, ignored), update and remove of an unknown name (TOOL_STATE), "
            "update replacing the definition, remove, and add again.", "client",
            op + [step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "a", "description": "A.",
                                                    "input_schema": {"type": "object"}}),
                       events=[E("ToolAdded", name="a", description="A.")]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "a"}),
                       transmit=[XERR(0, "TOOL_STATE", 0x5)]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 1, "name": "b"}),
                       transmit=[XERR(0, "TOOL_STATE", 0x5)]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 2, "name": "b"}),
                       transmit=[XERR(0, "TOOL_STATE", 0x5)]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 1, "name": "a",
                                                    "description": "A v2."}),
                       events=[E("ToolUpdated", name="a", description="A v2.")]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 2, "name": "a",
                                                    "description": "ignored"}),
                       events=[E("ToolRemoved", name="a")]),
                  step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "a"}),
                       events=[E("ToolAdded", name="a")])], D)
    mt = {"max_tools": 1}
    session("client/too-many-tools", "§9, §13", "With max_tools 1, a second add is "
            "ERROR(TOO_MANY_TOOLS) with id 0 and the tool is not added; after a remove, the "
            "add succeeds.", "client",
            client_open(mt) +
            [step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "a"}),
                  events=[E("ToolAdded", name="a")]),
             step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "b"}),
                  transmit=[XERR(0, "TOO_MANY_TOOLS", 0x5)]),
             step(0, recv=wire("TOOL_DEF", 0, {"op": 1, "name": "b"}),
                  transmit=[XERR(0, "TOOL_STATE", 0x5)]),
             step(0, recv=wire("TOOL_DEF", 0, {"op": 2, "name": "a"}),
                  events=[E("ToolRemoved", name="a")]),
             step(0, recv=wire("TOOL_DEF", 0, {"op": 0, "name": "b"}),
                  events=[E("ToolAdded", name="b")])], mt)

    session("client/too-many-tools-initial", "§6.2, §9", "The initial tool set (tools 2) "
            "exceeds max_tools 1: the second add is TOO_MANY_TOOLS, and the initial set is "
            "still complete after the two announced TOOL_DEFs.", "client",
            [client_open(mt)[0],
             step(0, recv=msg(wire("HELLO", 0, {**S_HELLO, "tools": 2}),
                              wire("TOOL_DEF", 0, {"op": 0, "name": "a"}),
                              wire("TOOL_DEF", 0, {"op": 0, "name": "b"})),
                  transmit=[XERR(0, "TOO_MANY_TOOLS", 0x5)],
                  events=[E("ToolAdded", name="a"), E("Connected", connection_id="c1")],
                  state="Open")], mt)

    # ---- §6.7 heartbeat, §5.8 ping ----
    chb = {"heartbeat_ms": 1000}
    session("client/heartbeat", "§6.7, §6.4", "Client heartbeat 1000 ms, server 0 (none): the "
            "session uses 1000. PINGs at 1000 and 2000 ms of silence, HEARTBEAT_TIMEOUT at "
            "3000 ms.", "client",
            client_open(chb, hello={**S_HELLO, "heartbeat_ms": 0}) +
            [step(999, timeout=True),
             step(1001, timeout=True, transmit=[X("PING", 0)]),
             step(2001, timeout=True, transmit=[X("PING", 0)]),
             step(2999, timeout=True),
             conn_error(3001, "HEARTBEAT_TIMEOUT", timeout=True)], chb)
    session("client/heartbeat-negotiated", "§6.4, §6.7", "Client 1000 ms, server 400 ms: the "
            "smaller, 400, is used; a PONG at 500 ms restarts the silence.", "client",
            client_open(chb, hello={**S_HELLO, "heartbeat_ms": 400}) +
            [step(401, timeout=True, transmit=[X("PING", 0)]),
             step(500, recv=wire("PONG", 0)),
             step(850, timeout=True),
             step(901, timeout=True, transmit=[X("PING", 0)]),
             step(1301, timeout=True, transmit=[X("PING", 0)]),
             step(1699, timeout=True),
             conn_error(1701, "HEARTBEAT_TIMEOUT", timeout=True)], chb)
    session("client/ping", "§5.8", "The client answers PING with PONG.", "client",
            op + [step(0, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
                  step(0, recv=wire_raw(0x8, 0, b"\x80"), transmit=[X("PONG", 0)])], D)

    # ---- §10 rate limit at the client ----
    crl = {"rate_limit": 2, "flood_limit": 100}
    session("client/rate-limited-request", "§10", "R=2 at the client: the third frame in a "
            "window, a REQUEST, is refused with ERROR(RATE_LIMITED, retryable) and draws the "
            "warning ERROR(RATE_LIMITED) with id 0.", "client",
            client_open(crl) +
            [step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2000, recv=wire("PING", 0), transmit=[X("PONG", 0)]),
             step(2000, recv=wire("REQUEST", 0x8000, {"kind": "confirm"}),
                  transmit=[U(XERR(0, "RATE_LIMITED"), XERR(0x8000, "RATE_LIMITED", 0xA))])],
            crl)

    # ---- §13.1 the hard bound, at a client (which never stops reading) ----
    cov = {"max_buffered": 1024}
    session("client/overloaded-replies", "§13.1, §12.2, §2.1", "With max_buffered 1024, one "
            "message of 200 PINGs from the server provokes 1600 bytes of PONGs: the client "
            "drops what it had queued, sends ERROR(OVERLOADED, retryable) with id 0 (no PONG "
            "before it) and closes with WebSocket code 1008.", "client",
            client_open(cov) +
            [conn_error(0, "OVERLOADED", recv=msg(*[wire("PING", 0)] * 200))], cov)

    # ---- §11 resume ----
    rs = {"resume": True, "heartbeat_ms": 0}
    rs_hello = {**S_HELLO, "capabilities": ["resume"], "resume_token": TOKEN16,
                "heartbeat_ms": 0}
    rs_open = client_open(rs, hello=rs_hello)
    detach = step(10, transport_closed=True, events=[E("Detached")], state="Detached")
    session("client/resume-failed", "§11.1, §11.2", "A resumable session loses its transport; "
            "the client sends RESUME(token, received = 2 counted frames: the STREAM and a "
            "discarded invalid ERROR; HELLO and PING are not counted); ERROR(RESUME_FAILED) ends the old session's invocation as lost, "
            "and the client may start a new session with HELLO.", "client",
            rs_open +
            [inv(1, tool="chunks"),
             step(0, recv=wire("STREAM", 1, {"data": "a", "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)]),
             step(0, recv=wire("PING", 0), transmit=[X("PONG", 0, {"received": 1})]),
             step(0, recv=wire_raw(0x7, 9, m((0, pk(0))))),
             detach,
             step(20, command=C("resume"),
                  transmit=[X("RESUME", 0, {"token": TOKEN16, "received": 2})]),
             step(30, recv=wire("ERROR", 0, {"code": ERROR_CODES["RESUME_FAILED"]}),
                  transmit=[X("HELLO", 0, {"versions": [1]}, {"capabilities": "*",
                                                              "heartbeat_ms": "*",
                                                              "agent": "*"}, optional=True)],
                  events=[ended_lost(1), E("PeerError", id=0, code="RESUME_FAILED")],
                  state="Handshaking"),
             step(40, recv=wire("HELLO", 0, {**S_HELLO, "connection_id": "c2"}),
                  events=[E("Connected", connection_id="c2")], state="Open")], rs)
    session("client/resume-replay", "§11.2", "The server resumes and says it received 0 "
            "counted frames: the client re-sends the INVOKE it missed, and the session "
            "continues.", "client",
            rs_open +
            [inv(1),
             detach,
             step(20, command=C("resume"),
                  transmit=[X("RESUME", 0, {"token": TOKEN16, "received": 0})]),
             step(30, recv=wire("RESUME", 0, {"received": 0}),
                  transmit=[X("INVOKE", 1, {"tool": "echo"})], events=[E("Resumed")],
                  state="Open"),
             step(40, recv=wire("COMPLETE", 1, {"status": 0}),
                  events=[E("Ended", id=1, outcome="complete", status=0)])], rs)
    session("client/resume-nothing-missed", "§11.2", "The server resumes having received the "
            "INVOKE (received 1): nothing is re-sent.", "client",
            rs_open +
            [inv(1), detach,
             step(20, command=C("resume"),
                  transmit=[X("RESUME", 0, {"token": TOKEN16, "received": 0})]),
             step(30, recv=wire("RESUME", 0, {"received": 1}), events=[E("Resumed")],
                  state="Open")], rs)
    small = {**rs, "replay_buffer": 16}
    session("client/resume-replay-buffer", "§11.1, §11.2", "With a 16-byte replay buffer the "
            "client keeps only its newest frame, the 15-byte second INVOKE, not the 29-byte "
            "first one: when the server resumes with received 0, it sends ERROR(RESUME_FAILED) "
            "and closes.", "client",
            client_open(small, hello=rs_hello) +
            [inv(1, args="x" * 12), inv(2), detach,
             step(20, command=C("resume"),
                  transmit=[X("RESUME", 0, {"token": TOKEN16, "received": 0})]),
             step(30, recv=wire("RESUME", 0, {"received": 0}),
                  transmit=[XERR(0, "RESUME_FAILED")],
                  events=[ended_lost(1), ended_lost(2), closed_ev("error_sent", "RESUME_FAILED")],
                  state="Closed", closed=True)], small)
    # Issue 25: acknowledgements, heartbeat, deliberate close, RESUME_FAILED while open.
    q_hello = {**rs_hello, "limits": {"replay_buffer": 400}}
    # A STREAM of exactly 100 bytes: a quarter of the server's announced 400-byte buffer.
    data96 = "d" * (100 - len(bytes.fromhex(wire("STREAM", 1, {"data": "", "seq": 0}))) - 1)
    assert len(bytes.fromhex(wire("STREAM", 1, {"data": data96, "seq": 0}))) == 100
    session("client/acks-every-quarter", "§11.1", "The server announced a 400-byte replay "
            "buffer: after receiving 100 bytes (a quarter) the client sends PING(received), "
            "here after one 100-byte STREAM: received 1 (HELLO is not counted). The quarter "
            "is reached on the STREAM's last byte, so every binding sends the same count.",
            "client",
            client_open(rs, hello=q_hello) +
            [inv(1),
             step(0, recv=wire("STREAM", 1, {"data": data96, "seq": 0}),
                  events=[E("Chunk", id=1, seq=0)],
                  transmit=[X("PING", 0, {"received": 1})])], rs)
    rsh = {"resume": True, "heartbeat_ms": 100}
    session("client/heartbeat-timeout-detaches", "§6.7, §11.3", "In a resumable session the "
            "client's heartbeat timeout detaches (no ERROR(HEARTBEAT_TIMEOUT), which would fail "
            "the session at the server); the invocation stays in flight for a resume.",
            "client",
            client_open(rsh, hello={**rs_hello, "heartbeat_ms": 100}) +
            [inv(1),
             step(101, timeout=True, transmit=[X("PING", 0, {"received": 0})]),
             step(201, timeout=True, transmit=[X("PING", 0, {"received": 0})]),
             step(301, timeout=True, events=[E("Detached")], state="Detached"),
             step(310, command=C("resume"),
                  transmit=[X("RESUME", 0, {"token": TOKEN16, "received": 0})])], rsh)
    session("client/peer-close-ends-resumable", "§11.3", "A WebSocket Close 1000 from the "
            "server ends a resumable session: the invocation is lost, no resume.", "client",
            rs_open +
            [inv(1),
             step(10, peer_close=True,
                  events=[ended_lost(1), closed_ev("transport_closed")],
                  state="Closed", closed=True)], rs)
    session("client/resume-failed-while-open", "§11.3, §12.1", "ERROR(RESUME_FAILED) outside a "
            "resume is an ordinary connection error: the session fails and closes.", "client",
            rs_open +
            [inv(1),
             step(10, recv=wire("ERROR", 0, {"code": ERROR_CODES["RESUME_FAILED"]}),
                  events=[ended_lost(1), closed_ev("error_received", "RESUME_FAILED")],
                  state="Closed", closed=True)], rs)
    session("client/resume-window", "§11.2, §13", "A detached session is kept for the resume "
            "window (30 s); when it passes without a resume, the invocation is lost and the "
            "connection closed.", "client",
            rs_open +
            [inv(1), detach,
             step(30009, timeout=True, state="Detached"),
             step(30011, timeout=True, events=[ended_lost(1), closed_ev("transport_closed")],
                  state="Closed", closed=True)], rs)


# ---------------------------------------------------------------------------------------------
# Coverage (README "Coverage"): SPEC rule → vectors. Every id listed must exist; every
# §12.2 code must appear in some vector (checked in `coverage_markdown`).
# ---------------------------------------------------------------------------------------------

COVERAGE = [
    # (section, rule, [vector ids or id prefixes ending in "/"])
    ("§2.1", "one message carries one or more whole frames", [
        "server/multiple-frames-per-message", "client/initial-tools"]),
    ("§2.1", "WebSocket close codes: 1000 graceful, 1001 timeouts, 1002 protocol errors, "
             "1008 FLOOD, 1011 RESUME_FAILED (`close_code` of closing steps; live mode reads "
             "the server's Close)", [
        "server/heartbeat-ping-frames", "server/framing-empty-message",
        "server/direction-before-payload", "server/rate-limit", "server/goaway-drain",
        "client/resume-replay-buffer", "(every closing step)"]),
    ("§2.1", "text message, empty message or message ending inside a frame → FRAMING_ERROR, "
             "close", ["server/framing-empty-message",
        "server/framing-text", "server/framing-truncated"]),
    ("§2.1", "subprotocol `asp-v1` offered and selected", ["(live mode: every live vector)"]),
    ("§2.2", "byte stream: frames in any chunking, skipped payloads keep the framing", [
        "frames.json (Decoder, one byte at a time)",
        "rejections.json (byte-stream runs: byte by byte, and each frame as one read)",
        "sessions.json (both byte-stream runs of every non-websocket vector)"]),
    ("§3.1", "header layout, big-endian id and length", ["frames.json: all"]),
    ("§3.2", "header version ≠ 1 → UNSUPPORTED_VERSION, connection error", [
        "header/version-0", "header/version-2", "header/version-15", "order/version-first",
        "server/handshake-unsupported-header-version", "server/unsupported-version-open"]),
    ("§3.3", "every frame type 0x1–0xE encodes and decodes", [
        "hello/", "invoke/", "stream/", "interrupt/", "tool_def/", "complete/", "error/",
        "ping/", "pong/", "request/", "reply/", "credit/", "goaway/", "resume/"]),
    ("§3.3", "reserved types 0x0, 0xF → UNKNOWN_FRAME_TYPE", [
        "header/type-0", "header/type-15", "order/type-before-flags"]),
    ("§3.7", "direction (step 6) before the payload; INTERRUPT names an exchange its sender "
             "initiated, else INVALID_ID", [
        "server/direction-before-payload", "server/interrupt-server-space-id",
        "client/interrupt-client-space-id"]),
    ("§3.6, §7.1", "a terminal frame over the peer's limit becomes ERROR(RESULT_TOO_LARGE)", [
        "server/peer-max-frame-payload"]),
    ("§3.5", "an id ended by the initiator's own ERROR is quarantined until the PONG of the "
             "PING sent after it", ["client/bad-sequence", "client/stream-after-final"]),
    ("§5.1, §7.5", "minimum max_chunk 4 and initial_window 8; chunks of at most half the "
                   "initial window; text in whole characters", [
        "invalid/hello-limits-max-chunk-3", "invalid/hello-limits-initial-window-7",
        "server/hello-initial-window-below-minimum", "server/chunk-half-window",
        "server/text-split-on-characters"]),
    ("§5.1", "capability names are 1–64 bytes", ["invalid/hello-capability-empty"]),
    ("§5.1, §6.7", "the server's HELLO announces the session heartbeat; heartbeats are PING "
                   "frames on WebSocket too", ["server/heartbeat-ping-frames"]),
    ("§6.5, §7.2", "after GOAWAY in either direction an opening frame is DRAINING", [
        "server/goaway-received-then-invoke"]),
    ("§8", "a request ends with its invocation (INTERRUPT with the terminal frame)", [
        "server/request-ends-with-invocation", "server/goaway-waits-for-request"]),
    ("§3.3", "known type in the wrong direction → PROTOCOL_VIOLATION", [
        "server/direction-stream", "server/direction-tool-def", "server/direction-complete",
        "server/direction-request", "client/direction-invoke", "client/direction-credit",
        "client/direction-reply"]),
    ("§3.4", "each of the 8 flag bits → RESERVED_FLAGS", [
        "header/flag-0x01", "header/flag-0x02", "header/flag-0x04", "header/flag-0x08",
        "header/flag-0x10", "header/flag-0x20", "header/flag-0x40", "header/flag-0x80",
        "server/handshake-reserved-flags", "server/frame-error-flags-ends-invocation"]),
    ("§3.5", "id rules per type → INVALID_ID", ["id/"]),
    ("§3.5", "an id may be reused after its terminal frame", [
        "server/id-reuse", "server/unknown-tool", "server/too-many-inflight"]),
    ("§3.6", "declared length above max_frame_payload → FRAME_TOO_LARGE, payload skipped", [
        "header/too-large", "header/too-large-1k", "order/length-before-type",
        "order/length-before-flags"]),
    ("§3.6", "a sender respects the peer's max_frame_payload", [
        "server/peer-max-frame-payload"]),
    ("§3.6, §4.4", "payload length 0 is an empty map", [
        "ping/empty", "pong/empty", "interrupt/bare", "goaway/bare",
        "decode-only/ping-empty-map"]),
    ("§3.7", "processing order: the first failing step decides", ["order/"]),
    ("§3.7", "frame error: ERROR with code, frame_type, reply id = frame id if allowed else 0;"
             " carry on", ["rejections.json: all (run through a Connection)",
                           "server/frame-error-bad-id"]),
    ("§3.7", "a frame error on an id in flight ends that exchange on both sides", [
        "server/frame-error-ends-invocation", "server/frame-error-flags-ends-invocation",
        "server/frame-error-ends-request", "client/frame-error-ends-invocation"]),
    ("§3.7", "a frame error during the handshake is a connection error (id 0, close)", [
        "server/handshake-frame-error", "server/handshake-reserved-flags",
        "client/server-hello-no-connection-id"]),
    ("§3.7", "ERROR is never answered with ERROR; an invalid ERROR still ends its exchange", [
        "missing/error-code", "invalid/error-code-0", "invalid/error-code-65536",
        "invalid/error-frame-type-16", "server/error-not-answered",
        "client/invalid-error-ends-invocation"]),
    ("§4.1", "keys in any unsigned encoding and order; map 16", [
        "decode-only/invoke-keys-descending", "decode-only/invoke-map16"]),
    ("§4.2", "value types and ranges; non-shortest and signed encodings accepted", [
        "decode-only/", "invalid/", "missing/"]),
    ("§4.3", "unknown keys ignored; bad keys, duplicates, trailing bytes → MALFORMED_PAYLOAD", [
        "decode-only/invoke-unknown-key", "decode-only/pong-unknown-key", "payload/",
        "server/unknown-key-ignored"]),
    ("§4.3", "fields the receiving role does not use are type-checked, then ignored; "
             "role-dependent requirements", [
        "invalid/hello-connection-id-empty", "invalid/hello-client-connection-id-int",
        "invalid/tool_def-remove-description-int", "invalid/resume-server-token-str",
        "missing/resume-token", "server/hello-unused-fields", "server/resume-without-token"]),
    ("§4.3", "repeated HELLO versions are the same as one", [
        "server/version-repeated", "decode-only/hello-versions-repeated"]),
    ("§4.3", "nested maps follow the payload rules; undefined keys ignored (also twice); "
             "strings inside `any` not checked for UTF-8", [
        "payload/limits-string-key", "payload/limits-duplicate-key",
        "payload/metrics-negative-key", "payload/metrics-duplicate-key",
        "decode-only/complete-metrics-unknown-key", "decode-only/hello-limits-unknown-key",
        "decode-only/invoke-unknown-key-twice", "decode-only/invoke-args-not-utf8"]),
    ("§5.1–§5.13", "every field of every frame type", ["frames.json: *-full, *-minimal"]),
    ("§6.1", "states Handshaking → Open → Draining → Closed", [
        "server/handshake", "server/goaway-drain", "client/draining-request",
        "client/goaway-received"]),
    ("§6.1, §11", "detached state", ["client/resume-failed", "client/resume-window"]),
    ("§6.2", "client HELLO first; nothing else before the server's HELLO", [
        "client/handshake", "client/pipelined-invoke", "server/pipelined-invoke",
        "server/pipelined-invoke-unknown-tool", "server/pipelined-invoke-too-many-inflight",
        "server/pipelined-invoke-frame-too-large"]),
    ("§6.2", "server: first frame not HELLO/RESUME, or a second HELLO → PROTOCOL_VIOLATION", [
        "server/first-frame-invoke", "server/first-frame-ping", "server/second-hello",
        "client/second-hello", "client/frame-before-hello"]),
    ("§6.2", "server HELLO then its initial tool set; client open at HELLO", [
        "server/handshake", "server/handshake-no-tools", "client/initial-tools",
        "client/initial-tools-split"]),
    ("§6.2", "server HELLO: exactly one offered version, connection_id required", [
        "client/version-not-offered", "client/server-hello-two-versions",
        "client/server-hello-no-connection-id"]),
    ("§6.2", "handshake timeout", ["server/handshake-timeout",
                                   "server/handshake-timeout-configured",
                                   "client/handshake-timeout"]),
    ("§6.3", "version negotiation: highest common; none → UNSUPPORTED_VERSION", [
        "server/version-highest-common", "server/version-none",
        "client/server-refuses-version"]),
    ("§6.4", "capabilities: `requests` gates REQUEST; `resume` gates resume_token; unknown "
             "names ignored", [
        "server/request-without-capability", "client/request-unsupported",
        "server/resume-token-offered", "server/resume-token-not-offered",
        "server/hello-unused-fields"]),
    ("§3.6, §6.4", "each side respects the limits its peer announced", [
        "client/peer-limits", "server/peer-max-frame-payload", "server/chunk-limit",
        "server/flow-control-window", "server/request-max-inflight", "server/peer-max-tools"]),
    ("§6.4", "limits announced in HELLO; heartbeat = smaller non-zero value", [
        "client/handshake-limits", "server/heartbeat", "server/heartbeat-reset",
        "client/heartbeat-negotiated", "server/heartbeat-off"]),
    ("§6.5", "after sending GOAWAY: new exchanges refused with DRAINING", [
        "server/goaway-drain", "server/goaway-order", "client/draining-request"]),
    ("§6.5", "after receiving GOAWAY: open no new exchange; in-flight ones continue", [
        "server/goaway-received", "server/goaway-received-no-request",
        "client/goaway-received"]),
    ("§6.5", "drain completion (nothing in flight on either side) closes; drain timeout → "
             "GOING_AWAY", [
        "server/goaway-drain", "server/goaway-idle", "server/goaway-waits-for-request",
        "server/goaway-timeout", "client/going-away"]),
    ("§6.5", "GOAWAYs may cross", ["server/goaway-crossing"]),
    ("§6.6", "close: exchanges in flight end as lost; connection errors sent with id 0", [
        "client/transport-closed", "client/connection-error-received", "client/close",
        "server/transport-closed"]),
    ("§6.7", "PING after H of silence and every further H; HEARTBEAT_TIMEOUT after 3H", [
        "server/heartbeat", "server/heartbeat-reset", "client/heartbeat",
        "client/heartbeat-negotiated"]),
    ("§5.8, §6.7", "PING is answered with PONG", ["server/ping", "client/ping"]),
    ("§7.1", "invocation lifecycle: Running → (Finishing) → ended by COMPLETE or ERROR", [
        "server/invoke-echo", "server/invoke-stream", "server/stream-final",
        "client/invoke-complete", "client/invoke-stream"]),
    ("§7.1", "ended id: INTERRUPT/CREDIT ignored; STREAM/COMPLETE → UNKNOWN_ID", [
        "server/interrupt", "server/interrupt-unknown-id", "client/bad-sequence",
        "client/unknown-id"]),
    ("§7.2", "INVOKE refusals in order: DRAINING, DUPLICATE_ID, TOO_MANY_INFLIGHT, "
             "RATE_LIMITED, UNKNOWN_TOOL", [
        "server/goaway-order", "server/duplicate-id", "server/too-many-inflight",
        "server/too-many-inflight-default", "server/rate-limit", "server/unknown-tool",
        "server/invoke-check-order"]),
    ("§7.3", "interrupt; interrupt twice; interrupt/COMPLETE race", [
        "server/interrupt", "server/interrupt-twice", "server/interrupt-complete-race",
        "client/interrupt", "client/interrupt-complete-race"]),
    ("§7.4", "deadline → DEADLINE_EXCEEDED", [
        "server/deadline", "server/deadline-met", "client/deadline-error"]),
    ("§7.5", "window, CREDIT, zero-length data, CHUNK_TOO_LARGE, FLOW_CONTROL, overflow", [
        "server/flow-control-window", "server/stream-zero-length", "server/chunk-limit",
        "server/credit-overflow", "client/flow-control", "client/flow-control-exact",
        "client/chunk-too-large", "client/credit-manual", "client/credit-batching"]),
    ("§7.5, §3.6", "STREAM data cut to fit the client's max_frame_payload", [
        "server/stream-over-client-max-frame-payload"]),
    ("§5.6, §7.3", "`cancelled` only for an invocation the client interrupted", [
        "server/cancelled-only-after-interrupt"]),
    ("§7.6", "seq starts at 0, +1 each; otherwise BAD_SEQUENCE", [
        "server/invoke-stream", "client/bad-sequence", "client/stream-after-final"]),
    ("§8", "REQUEST/REPLY, interrupt, ERROR ends a request, UNSUPPORTED, max_inflight, "
           "DUPLICATE_ID", [
        "server/request-reply", "server/request-interrupt", "server/request-error",
        "server/request-max-inflight", "server/reply-unknown-id", "client/request-reply",
        "client/request-unsupported", "client/request-too-many-inflight",
        "client/request-duplicate", "client/request-interrupted", "client/reply-error"]),
    ("§9", "TOOL_DEF add/update/remove, TOOL_STATE, TOO_MANY_TOOLS", [
        "server/tool-def-push", "client/tool-def", "client/too-many-tools",
        "client/too-many-tools-initial", "server/peer-max-tools"]),
    ("§10", "rate limit R: INVOKE/REQUEST refused, one warning; hard limit F → FLOOD", [
        "server/rate-limit", "server/rate-limit-window", "client/rate-limited-request"]),
    ("§13.1, §2.1", "replies the peer provokes past the hard bound (`max_buffered`): what was "
                    "queued is dropped, ERROR(OVERLOADED) with id 0, close 1008", [
        "server/overloaded-replies", "client/overloaded-replies"]),
    ("§11.1", "counted frames (HELLO, RESUME, PING, PONG not counted); replay buffer bound", [
        "client/resume-failed", "client/resume-replay-buffer"]),
    ("§11.1", "PING/PONG `received` acknowledgements, every quarter of the peer's buffer", [
        "ping/received", "pong/received", "client/acks-every-quarter",
        "server/stream-waits-for-replay-room", "server/ack-above-sent"]),
    ("§11.1", "STREAM waits while the replay buffer is full", [
        "server/stream-waits-for-replay-room"]),
    ("§5.1, §11", "replay_buffer and resume_window_ms announced in HELLO limits", [
        "hello/client-resume-limits", "server/resume-announces-window"]),
    ("§11.3", "heartbeat timeout detaches a resumable session", [
        "server/heartbeat-timeout-detaches", "client/heartbeat-timeout-detaches"]),
    ("§11.3", "Close 1000 ends a resumable session; other ends detach", [
        "server/peer-close-ends-resumable", "client/peer-close-ends-resumable",
        "server/transport-loss-detaches"]),
    ("§11.3", "deadlines run while detached", ["server/deadline-while-detached"]),
    ("§11.3", "RESUME on an open session; RESUME again after RESUME_FAILED; RESUME_FAILED "
              "outside a resume", [
        "server/resume-on-open-session", "server/resume-again-after-failed",
        "client/resume-failed-while-open"]),
    ("§11.2", "RESUME refused → RESUME_FAILED, transport stays open for HELLO", [
        "server/resume-not-supported", "client/resume-failed"]),
    ("§11.2", "resume accepted: missed frames re-sent; resume window", [
        "client/resume-replay", "client/resume-nothing-missed", "client/resume-window"]),
    ("§12.1", "codes by range; unknown codes treated by their range", [
        "server/application-errors", "client/application-errors", "error/app-defined-code",
        "client/unknown-error-codes", "client/connection-code-nonzero-id"]),
    ("§9", "TOOL_DEF while draining", ["client/goaway-received"]),
    ("§6.6", "after close no frame is processed", ["client/close"]),
    ("§3.6", "optional text is shortened or omitted so that ERROR, INTERRUPT and GOAWAY are "
             "still sent, within the peer's max_frame_payload and the 1024-byte limit", [
        "client/interrupt-reason-over-peer-max-frame-payload", "server/goaway-reason-over-limit",
        "client/goaway-reason-over-limit"]),
    ("§6.2", "initial tool set cut to the client's max_tools and max_frame_payload; a tool "
             "left out is unknown to the client", [
        "server/initial-tool-over-client-max-frame-payload",
        "server/remove-tool-cut-from-initial-set"]),
]

# Limits of §13 → vectors.
LIMIT_COVERAGE = [
    ("max_frame_payload", ["header/too-large", "header/too-large-1k",
                           "server/peer-max-frame-payload", "client/handshake-limits",
                           "server/initial-tool-over-client-max-frame-payload",
                           "client/interrupt-reason-over-peer-max-frame-payload"]),
    ("max_inflight", ["server/too-many-inflight", "server/too-many-inflight-default",
                      "server/request-max-inflight", "client/request-too-many-inflight"]),
    ("max_tools", ["client/too-many-tools", "client/too-many-tools-initial",
                   "server/peer-max-tools", "server/remove-tool-cut-from-initial-set"]),
    ("max_chunk", ["client/chunk-too-large", "server/chunk-limit"]),
    ("initial_window", ["client/flow-control", "client/credit-batching",
                        "server/flow-control-window"]),
    ("heartbeat interval", ["server/heartbeat", "client/heartbeat", "server/heartbeat-off"]),
    ("handshake timeout", ["server/handshake-timeout", "server/handshake-timeout-configured",
                           "client/handshake-timeout"]),
    ("rate limit R / hard limit F", ["server/rate-limit", "server/rate-limit-window",
                                     "client/rate-limited-request",
                                     "(configured small; the defaults are not exercised)"]),
    ("replay buffer", ["client/resume-replay-buffer"]),
    ("resume window", ["client/resume-window"]),
    ("outgoing queue, hard (`max_buffered`)", ["server/overloaded-replies",
                                              "client/overloaded-replies"]),
]

NOT_COVERED = [
    ("§2.1", "HTTP-level upgrade rules (400/426 without `asp-v1`, 401, 403)", "below the "
             "frame layer; live mode checks only that `asp-v1` is selected (the adapters' "
             "`adapter-tests` check the refusals)"),
    ("§2.1, §6.7", "answering WebSocket pings with pongs", "the WebSocket library's job; the "
                   "vectors use PING frames"),
    ("§11.2", "server side of a successful resume (token lookup, replay to the client)",
     "needs the server application to route a RESUME to the detached session's connection; "
     "only the refusal is a vector"),
    ("§11.3", "take-over of a transport that still looks alive; what arrives on it afterwards "
              "is not counted; `connection_id` kept", "two transports at once: checked by "
              "`adapter-tests` (resume_over_half_open, heartbeat_timeout_then_resume, "
              "resume_after_reset_with_invoke_in_flight) on every runtime pair"),
    ("§13, §13.1", "outgoing queue: the soft bound (`max_queued_bytes`: a server stops "
                   "reading, STREAM data is refused locally); the hard bound's other paths (an "
                   "answer queued behind a full queue, the pending-events bound, a WebSocket "
                   "message above the message limit)", "the soft bound is transport "
                   "backpressure, not a frame; the session model transmits everything after "
                   "each step, so no command meets a non-empty queue; the event backlog and "
                   "the message limit depend on how the application polls and on the "
                   "WebSocket library. Checked by `adapter-tests` (flood_that_never_reads, "
                   "overloaded_results_end_with_error, oversized_message_is_overloaded) on "
                   "every runtime pair, and a stale overload flag found by fuzzing by "
                   "`asp-proto/tests/fuzz_regressions.rs`. The hard bound on replies the peer "
                   "provokes is a vector: `server/overloaded-replies`, "
                   "`client/overloaded-replies`"),
    ("§13", "the default rate limits (100 000 / 200 000 frames per second)", "a vector would "
            "need 200 001 frames; the rules are checked with small configured limits"),
    ("§3.5", "sequential id allocation, wrapping, skipping ids in flight", "SHOULD; the client "
             "vectors only assume the first ids are 1, 2, 3"),
    ("§13.1", "resume token randomness and constant-time comparison", "not observable"),
]


def expected_codes(t) -> set:
    """§12.2 names of the ERROR codes a vector sends or expects."""
    out = set()

    def visit(x):
        if isinstance(x, dict):
            c = x.get("code")
            if isinstance(c, str) and c in ERROR_CODES:
                out.add(c)
            elif isinstance(c, int) and c in ERROR_NAMES:
                out.add(ERROR_NAMES[c])
            for v in x.values():
                visit(v)
        elif isinstance(x, list):
            for v in x:
                visit(v)
    if "error" in t:
        out.add(t["error"])
    visit(t.get("steps", []))
    for s in t.get("steps", []):
        if "recv" in s and "$" not in s["recv"]:
            for fb in split_frames(bytes.fromhex(s["recv"].replace(" ", ""))):
                if fb[0] == 0x17:
                    try:
                        d = msgpack.unpackb(fb[8:], strict_map_key=False)
                        if isinstance(d, dict) and d.get(0) in ERROR_NAMES:
                            out.add(ERROR_NAMES[d[0]])
                    except Exception:
                        pass
    return out


def split_frames(b: bytes) -> list:
    out, pos = [], 0
    while pos + 8 <= len(b):
        n = struct.unpack(">I", b[pos + 4:pos + 8])[0]
        out.append(b[pos:pos + 8 + n])
        pos += 8 + n
    return out


def coverage_markdown() -> str:
    all_ids = ([t["id"] for t in FRAME_TESTS] + [t["id"] for t in REJ_TESTS]
               + [t["id"] for t in SESS_TESTS])

    def resolve(ref):
        if " " in ref or "(" in ref or ref.endswith(".json") or ":" in ref:
            return [ref], ref  # a prose reference
        if ref.endswith("/"):
            hits = [i for i in all_ids if i.startswith(ref)]
            assert hits, ref
            return hits, f"`{ref}*` ({len(hits)})"
        assert ref in all_ids, ref
        return [ref], f"`{ref}`"

    lines = ["| § | rule | vectors |", "|---|---|---|"]
    for sec, rule, refs in COVERAGE:
        lines.append(f"| {sec} | {rule} | {', '.join(resolve(r)[1] for r in refs)} |")
    out = ["### SPEC rules", "", *lines, ""]

    # Error codes: computed from the vectors themselves.
    by_code: dict[str, list] = {c: [] for c in ERROR_CODES}
    for t in FRAME_TESTS:
        f = t["frame"]
        if f["type"] == "ERROR":
            code = f["fields"].get("code")
            if code in ERROR_NAMES:
                by_code[ERROR_NAMES[code]].append(t["id"])
    for t in REJ_TESTS + SESS_TESTS:
        for c in expected_codes(t):
            by_code[c].append(t["id"])
    missing = [c for c, v in by_code.items() if not v]
    assert not missing, f"error codes without a vector: {missing}"
    out += ["### Error codes (§12.2)", "", "| code | name | vectors |", "|---|---|---|"]
    for c, ids in sorted(by_code.items(), key=lambda x: ERROR_CODES[x[0]]):
        shown = ", ".join(f"`{i}`" for i in ids[:4])
        more = f" and {len(ids) - 4} more" if len(ids) > 4 else ""
        out.append(f"| `0x{ERROR_CODES[c]:02X}` | `{c}` | {shown}{more} |")
    out += ["", "### Limits (§13)", "", "| limit | vectors |", "|---|---|"]
    for name, refs in LIMIT_COVERAGE:
        out.append(f"| {name} | {', '.join(resolve(r)[1] for r in refs)} |")
    out += ["", "### Not covered", "", "| § | rule | why |", "|---|---|---|"]
    for sec, rule, why in NOT_COVERED:
        out.append(f"| {sec} | {rule} | {why} |")
    return "\n".join(out) + "\n"


README_MD = ROOT / "conformance" / "README.md"
COV_BEGIN = "<!-- COVERAGE:BEGIN -->"
COV_END = "<!-- COVERAGE:END -->"


def splice_readme(md: str) -> None:
    text = README_MD.read_text(encoding="utf-8")
    # The markers count only on lines of their own.
    b, e = f"\n{COV_BEGIN}\n", f"\n{COV_END}"
    if text.count(b) != 1 or text.count(e) != 1:
        sys.exit(f"README.md: expected one line {COV_BEGIN} and one line {COV_END}")
    a = text.index(b) + 1
    z = text.index(e) + len(e)
    new = text[:a] + f"{COV_BEGIN}\n\n{md}\n{COV_END}" + text[z:]
    if new != text:
        README_MD.write_text(new, encoding="utf-8")


def check_sessions(ids: set) -> dict:
    """Structural self-check of the session vectors."""
    stats = {"sessions": 0, "live": 0, "server": 0, "client": 0, "steps": 0}
    for t in SESS_TESTS:
        assert t["id"] not in ids, t["id"]
        ids.add(t["id"])
        assert t["steps"] and "start" in t["steps"][0], t["id"]
        last = -1
        for s in t["steps"]:
            assert s["at_ms"] >= last, t["id"]
            last = s["at_ms"]
            if "recv" in s:
                hx = " ".join("00 00" if p.startswith("$") else p
                              for p in s["recv"].split(" "))
                b = bytes.fromhex(hx.replace(" ", ""))
                frames = split_frames(b)
                whole = sum(len(f) for f in frames) == len(b)
                assert whole or t.get("binding") == "websocket", t["id"]
        stats["sessions"] += 1
        stats["steps"] += len(t["steps"])
        stats["live"] += t["live"]
        stats[t["role"]] += 1
    return stats


# ---------------------------------------------------------------------------------------------

def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    build_frames()
    build_rejections()
    build_server_sessions()
    build_client_sessions()
    assert set(EXAMPLES) == set(ORDER), set(ORDER) - set(EXAMPLES)
    covered = {t["frame"]["type"] for t in FRAME_TESTS}
    assert covered == set(TYPE_CODES), set(TYPE_CODES) - covered
    stats = self_check()
    sstats = check_sessions({t["id"] for t in FRAME_TESTS} | {t["id"] for t in REJ_TESTS})
    cov = coverage_markdown()

    write_json(FRAMES_JSON, {"suite": "asp-conformance", "schema_version": 1,
                             "kind": "frames", "tests": FRAME_TESTS})
    write_json(REJECTIONS_JSON, {
        "suite": "asp-conformance", "schema_version": 1, "kind": "rejections",
        "config": DEFAULT_CONFIG,
        # Bytes that open a session for a receiver of each role (README, "Rejection vectors").
        "handshake": {"server": wire("HELLO", 0, C_HELLO), "client": wire("HELLO", 0, S_HELLO)},
        "tests": REJ_TESTS})
    write_json(SESSIONS_JSON, {
        "suite": "asp-conformance", "schema_version": 1, "kind": "sessions",
        "live_profile": {"tools": LIVE_TOOL_NAMES},
        "tests": SESS_TESTS})
    md = examples_markdown()
    EXAMPLES_MD.write_text(md, encoding="utf-8")
    splice_spec(md)
    splice_readme(cov)

    by_err: dict[str, int] = {}
    for t in REJ_TESTS:
        by_err[t["error"]] = by_err.get(t["error"], 0) + 1
    print(f"frames.json:     {stats['frames']} vectors "
          f"({stats['encode']} encode, {stats['decode_only']} decode-only)")
    print(f"rejections.json: {stats['rejections']} vectors")
    for e, c in sorted(by_err.items(), key=lambda x: ERROR_CODES[x[0]]):
        print(f"  {e:22} {c}")
    print(f"sessions.json:   {sstats['sessions']} vectors ({sstats['server']} server, "
          f"{sstats['client']} client; {sstats['live']} live; {sstats['steps']} steps)")
    print(f"spec examples:   {len(EXAMPLES)} frame types -> {EXAMPLES_MD.relative_to(ROOT)}, "
          f"SPEC.md §14")
    print("coverage:        conformance/README.md")
    print("self-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
