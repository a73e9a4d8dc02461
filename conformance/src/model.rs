//! The JSON forms of the vector files (README "Frame vectors", "Session vectors"): frames as
//! `{type, id, fields}`, events as `{"event": …}`, and the conversions between them and
//! `asp-proto`'s types.

use asp_proto::frame::{
    Complete, Credit, ErrorFrame, GoAway, Hello, HelloLimits, Interrupt, Invoke, Metrics, RawValue,
    Reply, ReplyStatus, Request, RequestId, Resume, Status, Stream, Text, ToolDef, ToolOp,
    Versions,
};
use asp_proto::{
    Bytes, CloseReason, ErrorCode, Event, Frame, FrameType, InvocationOutcome, RequestOutcome,
    ToolChange,
};
use serde_json::{json, Map, Value};

use crate::hex;

/// JSON object.
pub type Obj = Map<String, Value>;

/// Largest integer a JSON number carries exactly; above it the vectors use strings.
const JSON_SAFE: u64 = 1 << 53;

/// A `uint` in the vectors' JSON form.
pub fn json_uint(v: u64) -> Value {
    if v > JSON_SAFE {
        Value::String(v.to_string())
    } else {
        Value::from(v)
    }
}

/// A JSON `uint` (number or string of digits).
pub fn uint_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Frame type by SPEC name.
pub fn frame_type_by_name(name: &str) -> Option<FrameType> {
    FrameType::ALL.iter().copied().find(|t| t.name() == name)
}

/// An error code given by §12.2 name or as a number.
pub fn code_of(v: &Value) -> Option<u16> {
    match v {
        Value::String(s) => ErrorCode::from_name(s).map(|c| c.0),
        _ => uint_of(v).and_then(|n| u16::try_from(n).ok()),
    }
}

/// A code as the events show it: the §12.2 name, or the number for other codes.
pub fn code_json(c: ErrorCode) -> Value {
    match c.name() {
        Some(n) => Value::from(n),
        None => Value::from(c.0),
    }
}

fn any(v: &RawValue) -> Value {
    json!({ "msgpack": hex::format(v.as_bytes()) })
}

fn text(t: &Text) -> Value {
    Value::from(t.as_str())
}

fn bin(b: &[u8]) -> Value {
    json!({ "bin": hex::format(b) })
}

fn data(b: &[u8], is_text: bool) -> Value {
    if is_text {
        json!({ "str": core::str::from_utf8(b).unwrap_or("\u{fffd}") })
    } else {
        bin(b)
    }
}

/// The fields of a decoded frame, in the JSON form of frames.json. Values equal to the SPEC
/// default are included where `asp-proto` cannot tell them from absent; [`normalize`]
/// removes them on both sides before comparing.
pub fn frame_fields(f: &Frame) -> Obj {
    let mut o = Obj::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_owned(), v);
    };
    match f {
        Frame::Hello(h) => {
            put(
                "versions",
                Value::Array(h.versions.iter().map(Value::from).collect()),
            );
            if !h.capabilities.is_empty() {
                put(
                    "capabilities",
                    Value::Array(h.capabilities.iter().map(text).collect()),
                );
            }
            let l = &h.limits;
            let mut lim = Obj::new();
            let mut li = |k: &str, v: Option<u64>| {
                if let Some(v) = v {
                    lim.insert(k.to_owned(), json_uint(v));
                }
            };
            li("max_frame_payload", l.max_frame_payload.map(u64::from));
            li("max_inflight", l.max_inflight.map(u64::from));
            li("max_tools", l.max_tools.map(u64::from));
            li("max_chunk", l.max_chunk.map(u64::from));
            li("initial_window", l.initial_window.map(u64::from));
            li("replay_buffer", l.replay_buffer.map(u64::from));
            li("resume_window_ms", l.resume_window_ms.map(u64::from));
            if !lim.is_empty() {
                put("limits", Value::Object(lim));
            }
            if let Some(v) = h.heartbeat_ms {
                put("heartbeat_ms", Value::from(v));
            }
            if let Some(c) = &h.connection_id {
                put("connection_id", text(c));
            }
            if let Some(t) = &h.resume_token {
                put("resume_token", bin(t));
            }
            put("tools", Value::from(h.tools));
            if let Some(a) = &h.agent {
                put("agent", text(a));
            }
        }
        Frame::Invoke(i) => {
            put("tool", text(&i.tool));
            if let Some(a) = &i.args {
                put("args", any(a));
            }
            put("deadline_ms", Value::from(i.deadline_ms));
            if let Some(m) = &i.meta {
                put("meta", any(m));
            }
        }
        Frame::Stream(s) => {
            put("data", data(&s.data, s.text));
            put("seq", Value::from(s.seq));
            put("final", Value::from(s.fin));
        }
        Frame::Interrupt(i) => {
            if let Some(r) = &i.reason {
                put("reason", text(r));
            }
        }
        Frame::ToolDef(t) => {
            put("op", Value::from(t.op as u8));
            put("name", text(&t.name));
            put("description", text(&t.description));
            if let Some(s) = &t.input_schema {
                put("input_schema", any(s));
            }
            if let Some(a) = &t.annotations {
                put("annotations", any(a));
            }
        }
        Frame::Complete(c) => {
            put("status", Value::from(c.status as u8));
            if let Some(r) = &c.result {
                put("result", any(r));
            }
            let m = &c.metrics;
            let mut mo = Obj::new();
            for (k, v) in [
                ("wall_us", m.wall_us),
                ("cpu_us", m.cpu_us),
                ("input_tokens", m.input_tokens),
                ("output_tokens", m.output_tokens),
            ] {
                if let Some(v) = v {
                    mo.insert(k.to_owned(), json_uint(v));
                }
            }
            if !mo.is_empty() {
                put("metrics", Value::Object(mo));
            }
        }
        Frame::Error(e) => {
            put("code", Value::from(e.code.0));
            if let Some(m) = &e.message {
                put("message", text(m));
            }
            put("retryable", Value::from(e.retryable));
            if let Some(t) = e.frame_type {
                put("frame_type", Value::from(t));
            }
        }
        Frame::Ping(h) | Frame::Pong(h) => {
            if let Some(r) = h.received {
                put("received", json_uint(r));
            }
        }
        Frame::Request(r) => {
            put("kind", text(&r.kind));
            if let Some(b) = &r.body {
                put("body", any(b));
            }
            if let Some(i) = r.invocation {
                put("invocation", Value::from(i.0));
            }
        }
        Frame::Reply(r) => {
            put("status", Value::from(r.status as u8));
            if let Some(b) = &r.body {
                put("body", any(b));
            }
        }
        Frame::Credit(c) => put("bytes", Value::from(c.bytes)),
        Frame::GoAway(g) => {
            if let Some(r) = &g.reason {
                put("reason", text(r));
            }
            put("timeout_ms", Value::from(g.timeout_ms));
        }
        Frame::Resume(r) => {
            if let Some(t) = &r.token {
                put("token", bin(t));
            }
            put("received", json_uint(r.received));
        }
    }
    o
}

/// Fields whose SPEC default equals absence (§4.2 "absent optional fields take the stated
/// default"), as (field, default).
fn default_of(field: &str) -> Option<Value> {
    Some(match field {
        "final" | "retryable" => Value::from(false),
        "deadline_ms" | "timeout_ms" | "tools" => Value::from(0),
        "description" => Value::from(""),
        "heartbeat_ms" => Value::from(30000),
        "capabilities" => Value::Array(Vec::new()),
        _ => return None,
    })
}

fn limit_default(k: &str) -> Option<u64> {
    Some(match k {
        "max_frame_payload" => 1 << 20,
        "max_inflight" => 128,
        "max_tools" => 256,
        "max_chunk" => 64 << 10,
        "initial_window" => 256 << 10,
        "replay_buffer" => 256 << 10,
        "resume_window_ms" => 30_000,
        _ => return None,
    })
}

const UINT_FIELDS: &[&str] = &[
    "deadline_ms",
    "seq",
    "op",
    "status",
    "frame_type",
    "invocation",
    "bytes",
    "timeout_ms",
    "received",
    "heartbeat_ms",
    "tools",
];

/// Canonical form for comparison: uints as numbers, codes as numbers, capabilities as a
/// sorted set, limits without default entries, and fields equal to their SPEC default
/// dropped (absent and default mean the same, §4.2). `"*"` wildcards are kept.
pub fn normalize(fields: &Obj) -> Obj {
    let mut out = Obj::new();
    for (k, v) in fields {
        if is_wild(v) {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let mut v = v.clone();
        if UINT_FIELDS.contains(&k.as_str()) {
            if let Some(n) = uint_of(&v) {
                v = Value::from(n);
            }
        }
        if k == "code" {
            if let Some(n) = code_of(&v) {
                v = Value::from(n);
            }
        }
        if k == "capabilities" {
            if let Value::Array(a) = &mut v {
                a.sort_by_key(|x| x.to_string());
                a.dedup();
            }
        }
        if k == "versions" {
            if let Value::Array(a) = &mut v {
                a.sort_by_key(uint_of);
                a.dedup();
            }
        }
        if k == "limits" || k == "metrics" {
            if let Value::Object(m) = &v {
                let mut n = Obj::new();
                for (mk, mv) in m {
                    if is_wild(mv) {
                        n.insert(mk.clone(), mv.clone());
                        continue;
                    }
                    let x = uint_of(mv);
                    if k == "limits" && x.is_some() && x == limit_default(mk) {
                        continue;
                    }
                    n.insert(mk.clone(), x.map_or_else(|| mv.clone(), Value::from));
                }
                if n.is_empty() {
                    continue;
                }
                v = Value::Object(n);
            }
        }
        if default_of(k).is_some_and(|d| d == v) {
            continue;
        }
        out.insert(k.clone(), v);
    }
    out
}

/// `"*"`: any value.
pub fn is_wild(v: &Value) -> bool {
    v.as_str() == Some("*")
}

// ───────────────────────── JSON → Frame (encoder vectors) ─────────────────────────

fn get<'a>(o: &'a Obj, k: &str) -> Option<&'a Value> {
    o.get(k)
}

fn s_text(o: &Obj, k: &str) -> Result<Option<Text>, String> {
    match get(o, k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Text::from(s.as_str()))),
        Some(v) => Err(format!("field {k}: expected a string, got {v}")),
    }
}

fn req<T>(v: Option<T>, k: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("field {k} missing"))
}

fn s_uint(o: &Obj, k: &str) -> Result<Option<u64>, String> {
    match get(o, k) {
        None => Ok(None),
        Some(v) => uint_of(v)
            .map(Some)
            .ok_or_else(|| format!("field {k}: expected a uint, got {v}")),
    }
}

fn narrow<T: TryFrom<u64>>(v: Option<u64>, k: &str) -> Result<Option<T>, String> {
    v.map(|x| T::try_from(x).map_err(|_| format!("field {k}: {x} out of range")))
        .transpose()
}

fn hex_of(v: &Value, key: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("expected {{\"{key}\": hex}}, got {v}"))?;
    hex::parse_plain(s)
}

/// An `any` value from its `{"msgpack": hex}` form.
pub fn raw_of(v: &Value) -> Result<RawValue, String> {
    RawValue::new(Bytes::from(hex_of(v, "msgpack")?))
        .map_err(|e| format!("not one MessagePack value: {e:?}"))
}

fn s_any(o: &Obj, k: &str) -> Result<Option<RawValue>, String> {
    get(o, k).map(raw_of).transpose()
}

fn s_bin(o: &Obj, k: &str) -> Result<Option<Bytes>, String> {
    get(o, k)
        .map(|v| hex_of(v, "bin").map(Bytes::from))
        .transpose()
}

fn s_bool(o: &Obj, k: &str) -> Result<bool, String> {
    match get(o, k) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("field {k}: expected a bool, got {v}")),
    }
}

/// STREAM `data` from `{"str": …}` or `{"bin": hex}`: (bytes, is text).
pub fn data_of(v: &Value) -> Result<(Bytes, bool), String> {
    if let Some(s) = v.get("str").and_then(Value::as_str) {
        return Ok((Bytes::copy_from_slice(s.as_bytes()), true));
    }
    Ok((Bytes::from(hex_of(v, "bin")?), false))
}

/// Builds a frame from the JSON form (the encoder half of frames.json).
pub fn frame_from_json(ty: FrameType, id: u16, o: &Obj) -> Result<Frame, String> {
    let id = RequestId(id);
    Ok(match ty {
        FrameType::Hello => {
            let mut versions = Versions::default();
            if let Some(Value::Array(a)) = get(o, "versions") {
                for v in a {
                    let n = uint_of(v).ok_or("versions: not a uint")?;
                    versions.insert(u8::try_from(n).map_err(|_| "versions: out of range")?);
                }
            }
            let capabilities = match get(o, "capabilities") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|c| c.as_str().map(Text::from).ok_or("capability: not a string"))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            let mut limits = HelloLimits::default();
            if let Some(Value::Object(l)) = get(o, "limits") {
                limits.max_frame_payload =
                    narrow(s_uint(l, "max_frame_payload")?, "max_frame_payload")?;
                limits.max_inflight = narrow(s_uint(l, "max_inflight")?, "max_inflight")?;
                limits.max_tools = narrow(s_uint(l, "max_tools")?, "max_tools")?;
                limits.max_chunk = narrow(s_uint(l, "max_chunk")?, "max_chunk")?;
                limits.initial_window = narrow(s_uint(l, "initial_window")?, "initial_window")?;
                limits.replay_buffer = narrow(s_uint(l, "replay_buffer")?, "replay_buffer")?;
                limits.resume_window_ms =
                    narrow(s_uint(l, "resume_window_ms")?, "resume_window_ms")?;
            }
            Frame::Hello(Hello {
                versions,
                capabilities,
                limits,
                heartbeat_ms: narrow(s_uint(o, "heartbeat_ms")?, "heartbeat_ms")?,
                connection_id: s_text(o, "connection_id")?,
                resume_token: s_bin(o, "resume_token")?,
                tools: narrow(s_uint(o, "tools")?, "tools")?.unwrap_or(0),
                agent: s_text(o, "agent")?,
            })
        }
        FrameType::Invoke => Frame::Invoke(Invoke {
            id,
            tool: req(s_text(o, "tool")?, "tool")?,
            args: s_any(o, "args")?,
            deadline_ms: narrow(s_uint(o, "deadline_ms")?, "deadline_ms")?.unwrap_or(0),
            meta: s_any(o, "meta")?,
        }),
        FrameType::Stream => {
            let (data, text) = data_of(req(get(o, "data"), "data")?)?;
            Frame::Stream(Stream {
                id,
                data,
                text,
                seq: req(narrow(s_uint(o, "seq")?, "seq")?, "seq")?,
                fin: s_bool(o, "final")?,
            })
        }
        FrameType::Interrupt => Frame::Interrupt(Interrupt {
            id,
            reason: s_text(o, "reason")?,
        }),
        FrameType::ToolDef => Frame::ToolDef(ToolDef {
            op: match req(s_uint(o, "op")?, "op")? {
                0 => ToolOp::Add,
                1 => ToolOp::Update,
                2 => ToolOp::Remove,
                n => return Err(format!("op {n}")),
            },
            name: req(s_text(o, "name")?, "name")?,
            description: s_text(o, "description")?.unwrap_or_default(),
            input_schema: s_any(o, "input_schema")?,
            annotations: s_any(o, "annotations")?,
        }),
        FrameType::Complete => {
            let mut metrics = Metrics::default();
            if let Some(Value::Object(m)) = get(o, "metrics") {
                metrics.wall_us = s_uint(m, "wall_us")?;
                metrics.cpu_us = s_uint(m, "cpu_us")?;
                metrics.input_tokens = s_uint(m, "input_tokens")?;
                metrics.output_tokens = s_uint(m, "output_tokens")?;
            }
            Frame::Complete(Complete {
                id,
                status: status_of(req(s_uint(o, "status")?, "status")?)?,
                result: s_any(o, "result")?,
                metrics,
            })
        }
        FrameType::Error => Frame::Error(ErrorFrame {
            id,
            code: ErrorCode(req(get(o, "code").and_then(code_of), "code")?),
            message: s_text(o, "message")?,
            retryable: s_bool(o, "retryable")?,
            frame_type: narrow(s_uint(o, "frame_type")?, "frame_type")?,
        }),
        FrameType::Ping => Frame::Ping(asp_proto::frame::Heartbeat {
            received: s_uint(o, "received")?,
        }),
        FrameType::Pong => Frame::Pong(asp_proto::frame::Heartbeat {
            received: s_uint(o, "received")?,
        }),
        FrameType::Request => Frame::Request(Request {
            id,
            kind: req(s_text(o, "kind")?, "kind")?,
            body: s_any(o, "body")?,
            invocation: narrow::<u16>(s_uint(o, "invocation")?, "invocation")?.map(RequestId),
        }),
        FrameType::Reply => Frame::Reply(Reply {
            id,
            status: reply_status_of(req(s_uint(o, "status")?, "status")?)?,
            body: s_any(o, "body")?,
        }),
        FrameType::Credit => Frame::Credit(Credit {
            id,
            bytes: req(narrow(s_uint(o, "bytes")?, "bytes")?, "bytes")?,
        }),
        FrameType::GoAway => Frame::GoAway(GoAway {
            reason: s_text(o, "reason")?,
            timeout_ms: narrow(s_uint(o, "timeout_ms")?, "timeout_ms")?.unwrap_or(0),
        }),
        FrameType::Resume => Frame::Resume(Resume {
            token: s_bin(o, "token")?,
            received: req(s_uint(o, "received")?, "received")?,
        }),
    })
}

/// COMPLETE status 0–2.
pub fn status_of(n: u64) -> Result<Status, String> {
    Ok(match n {
        0 => Status::Ok,
        1 => Status::Cancelled,
        2 => Status::Failed,
        _ => return Err(format!("status {n}")),
    })
}

/// REPLY status 0–2.
pub fn reply_status_of(n: u64) -> Result<ReplyStatus, String> {
    Ok(match n {
        0 => ReplyStatus::Answered,
        1 => ReplyStatus::Cancelled,
        2 => ReplyStatus::Declined,
        _ => return Err(format!("status {n}")),
    })
}

// ───────────────────────── events ─────────────────────────

/// The event vocabulary of the session vectors (README "Events"), or `None` for
/// notifications of our API that SPEC does not define (`Violation`: the ERROR we sent is
/// compared as a frame; `Writable`: local back-pressure).
pub fn event_json(ev: &Event) -> Option<Value> {
    let mut o = Obj::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_owned(), v);
    };
    let name = match ev {
        Event::Connected(s) => {
            put("connection_id", text(&s.connection_id));
            put("version", Value::from(s.version));
            put("heartbeat_ms", Value::from(s.heartbeat_ms));
            put("resumable", Value::from(s.resumable));
            "Connected"
        }
        Event::Invoked(i) => {
            put("id", Value::from(i.id.0));
            put("tool", text(&i.tool));
            if let Some(a) = &i.args {
                put("args", any(a));
            }
            put("deadline_ms", Value::from(i.deadline_ms));
            if let Some(m) = &i.meta {
                put("meta", any(m));
            }
            "Invoked"
        }
        Event::Interrupted { id, reason } => {
            put("id", Value::from(id.0));
            if let Some(r) = reason {
                put("reason", text(r));
            }
            "Interrupted"
        }
        Event::Aborted { id, error } => {
            put("id", Value::from(id.0));
            put("code", code_json(error.code));
            "Aborted"
        }
        Event::Chunk(s) => {
            put("id", Value::from(s.id.0));
            put("seq", Value::from(s.seq));
            put("data", data(&s.data, s.text));
            put("final", Value::from(s.fin));
            "Chunk"
        }
        // The vectors name both `*Ended` events `Ended` (the role says which it is).
        Event::InvocationEnded { id, outcome } => {
            put("id", Value::from(id.0));
            match outcome {
                InvocationOutcome::Complete(c) => {
                    put("outcome", Value::from("complete"));
                    put("status", Value::from(c.status as u8));
                    if let Some(r) = &c.result {
                        put("result", any(r));
                    }
                }
                InvocationOutcome::Error(e) => {
                    put("outcome", Value::from("error"));
                    put("code", code_json(e.code));
                }
                _ => put("outcome", Value::from("lost")),
            }
            "Ended"
        }
        Event::RequestEnded { id, outcome } => {
            put("id", Value::from(id.0));
            match outcome {
                RequestOutcome::Reply(r) => {
                    put("outcome", Value::from("reply"));
                    put("status", Value::from(r.status as u8));
                    if let Some(b) = &r.body {
                        put("body", any(b));
                    }
                }
                RequestOutcome::Error(e) => {
                    put("outcome", Value::from("error"));
                    put("code", code_json(e.code));
                }
                _ => put("outcome", Value::from("lost")),
            }
            "Ended"
        }
        Event::ToolsChanged(c) => match &**c {
            ToolChange::Added(d) | ToolChange::Updated(d) => {
                put("name", text(&d.name));
                put("description", text(&d.description));
                if matches!(**c, ToolChange::Added(_)) {
                    "ToolAdded"
                } else {
                    "ToolUpdated"
                }
            }
            ToolChange::Removed(n) => {
                put("name", text(n));
                "ToolRemoved"
            }
            other => {
                put("debug", Value::from(format!("{other:?}")));
                "Unknown"
            }
        },
        Event::Requested(r) => {
            put("id", Value::from(r.id.0));
            put("kind", text(&r.kind));
            if let Some(b) = &r.body {
                put("body", any(b));
            }
            if let Some(i) = r.invocation {
                put("invocation", Value::from(i.0));
            }
            "Requested"
        }
        Event::GoAway(g) => {
            if let Some(r) = &g.reason {
                put("reason", text(r));
            }
            put("timeout_ms", Value::from(g.timeout_ms));
            "GoAway"
        }
        Event::PeerError(e) => {
            put("id", Value::from(e.id.0));
            put("code", code_json(e.code));
            "PeerError"
        }
        Event::Detached => "Detached",
        Event::ResumeRequested { token, received } => {
            put("token", bin(token));
            put("received", json_uint(*received));
            "ResumeRequested"
        }
        Event::Resumed => "Resumed",
        Event::Closed(r) => {
            let (reason, code) = match r {
                CloseReason::Local => ("local", None),
                CloseReason::Drained => ("drained", None),
                CloseReason::PeerError { code, .. } => ("error_received", Some(*code)),
                CloseReason::ProtocolError { code, .. } => ("error_sent", Some(*code)),
                CloseReason::TransportClosed => ("transport_closed", None),
                _ => ("unknown", None),
            };
            put("reason", Value::from(reason));
            if let Some(c) = code {
                put("code", code_json(c));
            }
            "Closed"
        }
        Event::Violation(_) | Event::Writable { .. } => return None,
        other => {
            put("debug", Value::from(format!("{other:?}")));
            "Unknown"
        }
    };
    let mut out = Obj::new();
    out.insert("event".into(), Value::from(name));
    out.extend(o);
    Some(Value::Object(out))
}
