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
    "RESUME_FAILED": 0x08, "UNKNOWN_FRAME_TYPE": 0x10, "RESERVED_FLAGS": 0x11,
    "FRAME_TOO_LARGE": 0x12, "MALFORMED_PAYLOAD": 0x13, "MISSING_FIELD": 0x14,
    "INVALID_FIELD": 0x15, "INVALID_ID": 0x16, "UNKNOWN_TOOL": 0x20, "DUPLICATE_ID": 0x21,
    "UNKNOWN_ID": 0x22, "TOO_MANY_INFLIGHT": 0x23, "CHUNK_TOO_LARGE": 0x24,
    "FLOW_CONTROL": 0x25, "BAD_SEQUENCE": 0x26, "DEADLINE_EXCEEDED": 0x27, "DRAINING": 0x28,
    "RATE_LIMITED": 0x29, "TOO_MANY_TOOLS": 0x30, "TOOL_STATE": 0x31,
    "INVALID_ARGUMENTS": 0x40, "TOOL_FAILED": 0x41, "INTERNAL": 0x42, "UNAVAILABLE": 0x43,
    "UPSTREAM_TIMEOUT": 0x44,
}
ERROR_NAMES = {v: k for k, v in ERROR_CODES.items()}

# Nested maps with defined keys: key -> (name, lo, hi); all values uint.
LIMITS = {0: ("max_frame_payload", 64, U32), 1: ("max_inflight", 1, 32767),
          2: ("max_tools", 0, 65535), 3: ("max_chunk", 1, U32), 4: ("initial_window", 1, U32)}
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
        F(1, "capabilities", "arr_str", lo=0, hi=32, elo=0, ehi=64),
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
    "PING": [],
    "PONG": [],
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
    frame("stream/empty-text", "§7.5", "STREAM with zero-length text data.",
          "STREAM", 3, {"data": "", "seq": 2})
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
    decode_only("decode-only/stream-data-bin16", "§4.2",
                "STREAM whose 2-byte binary data is written as bin 16 (c5 00 02).",
                "STREAM", 1, b"\x82\x00\xc5\x00\x02\xca\xfe\x01\x00",
                {"data": {"bin": "ca fe"}, "seq": 0})


# ---------------------------------------------------------------------------------------------
# Rejection vectors
# ---------------------------------------------------------------------------------------------

REJ_TESTS: list[dict] = []


def rej(vid, spec, description, type_code, rid, payload: bytes, error, *, flags=0, version=1,
        receiver=None, config=None):
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
         "request_id": 0 if connection_error else rid,  # §6.6: connection errors use id 0
         "frame_type": type_code, "receiver": receiver, "reply": reply}
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
        "client).", H["RESUME"], 0, m((1, pk(0))), "MISSING_FIELD", receiver="server")
    rej("missing/hello-versions", "§5.1", "Client HELLO without versions.", H["HELLO"], 0,
        m((7, pk("asp-py/1.0"))), "MISSING_FIELD", receiver="server")
    rej("missing/hello-server-connection-id", "§5.1", "Server HELLO without connection_id "
        "(required from a server).", H["HELLO"], 0, m((0, pk([1]))), "MISSING_FIELD",
        receiver="client")
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
    rej("invalid/hello-server-two-versions", "§5.1", "Server HELLO whose versions has 2 "
        "entries (a server sends exactly 1).", H["HELLO"], 0,
        m((0, pk([1, 2])), (4, pk("c1"))), "INVALID_FIELD", receiver="client")
    rej("invalid/hello-capability-int", "§5.1", "Client HELLO whose capabilities contains an "
        "integer.", H["HELLO"], 0, m((0, pk([1])), (1, pk(["resume", 7]))), "INVALID_FIELD",
        receiver="server")
    rej("invalid/hello-capability-65", "§5.1", "Client HELLO with a capability name of 65 "
        "bytes (maximum 64).", H["HELLO"], 0, m((0, pk([1])), (1, pk(["c" * 65]))),
        "INVALID_FIELD", receiver="server")
    rej("invalid/hello-limits-max-frame-payload-10", "§5.1", "Client HELLO whose "
        "limits.max_frame_payload is 10 (minimum 64).", H["HELLO"], 0,
        m((0, pk([1])), (2, pk({0: 10}))), "INVALID_FIELD", receiver="server")
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
            return [json_uint(uint_in(x, f.elo, f.ehi)) for x in v.val]
        return [utf8(x, f.elo, f.ehi) for x in v.val]
    if k in ("limits", "metrics"):
        table = LIMITS if k == "limits" else METRICS
        if v.tag != "map":
            raise Reject("INVALID_FIELD")
        out, seen = {}, set()
        for kn, vn in v.val:
            if kn.tag != "int" or kn.val < 0:
                raise Reject("INVALID_FIELD")  # not tested: see README (open questions)
            if kn.val in table:
                if kn.val in seen:
                    raise Reject("INVALID_FIELD")  # not tested
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
        out = {name: val for name, (_, val) in sorted(fields.items(), key=lambda x: x[1][0])}
        return ("ok", tn, rid, out)
    except Reject as r:
        return ("reject", r.error, rid, tcode)


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
            up = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True)
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

def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> int:
    build_frames()
    build_rejections()
    assert set(EXAMPLES) == set(ORDER), set(ORDER) - set(EXAMPLES)
    covered = {t["frame"]["type"] for t in FRAME_TESTS}
    assert covered == set(TYPE_CODES), set(TYPE_CODES) - covered
    stats = self_check()

    write_json(FRAMES_JSON, {"suite": "asp-conformance", "schema_version": 1,
                             "kind": "frames", "tests": FRAME_TESTS})
    write_json(REJECTIONS_JSON, {"suite": "asp-conformance", "schema_version": 1,
                                 "kind": "rejections", "config": DEFAULT_CONFIG,
                                 "tests": REJ_TESTS})
    md = examples_markdown()
    EXAMPLES_MD.write_text(md, encoding="utf-8")
    splice_spec(md)

    by_err: dict[str, int] = {}
    for t in REJ_TESTS:
        by_err[t["error"]] = by_err.get(t["error"], 0) + 1
    print(f"frames.json:     {stats['frames']} vectors "
          f"({stats['encode']} encode, {stats['decode_only']} decode-only)")
    print(f"rejections.json: {stats['rejections']} vectors")
    for e, c in sorted(by_err.items(), key=lambda x: ERROR_CODES[x[0]]):
        print(f"  {e:22} {c}")
    print(f"spec examples:   {len(EXAMPLES)} frame types -> {EXAMPLES_MD.relative_to(ROOT)}, "
          f"SPEC.md §14")
    print("self-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
