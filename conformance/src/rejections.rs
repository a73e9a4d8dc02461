//! Rejection vectors (README "Rejection vectors"): the codec must detect the error, and a
//! connection that completed its handshake must answer it as SPEC §3.7 says and carry on
//! (frame errors) or close (connection errors).

use asp_proto::{codec, Bytes, Decoder, ErrorCode, Instant};
use serde_json::{json, Value};

use crate::harness::{Binding, Harness, RoleName};
use crate::hex;
use crate::matcher::{transmit_matches, Sent};
use crate::model::{self, Obj};

/// File-level settings of rejections.json.
pub struct Context<'a> {
    /// Top-level `config`.
    pub config: &'a Obj,
    /// Top-level `handshake`: bytes that open a session, per receiving role.
    pub handshake: &'a Obj,
}

/// Runs one rejection vector.
pub fn run(t: &Value, cx: &Context<'_>) -> Result<(), String> {
    let wire = hex::parse_plain(t["hex"].as_str().ok_or("no hex")?)?;
    let mut config = cx.config.clone();
    if let Some(Value::Object(o)) = t.get("config") {
        config.extend(o.clone());
    }
    let max = config
        .get("max_frame_payload")
        .and_then(model::uint_of)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1 << 20);
    let error = t["error"].as_str().ok_or("no error")?;
    let code = ErrorCode::from_name(error).ok_or_else(|| format!("unknown code {error}"))?;
    let frame_type = model::uint_of(&t["frame_type"]).ok_or("no frame_type")?;
    let request_id = model::uint_of(&t["request_id"]).ok_or("no request_id")?;
    let reply = t["reply"].as_bool().unwrap_or(true);
    let connection_error = code.0 < 0x10;

    // 1. The codec alone (skipped for faults that depend on the sender's role, which a
    //    role-agnostic decoder cannot see).
    if t["role_dependent"].as_bool() != Some(true) {
        let mut buf = Bytes::from(wire.clone());
        match codec::decode_frame(&mut buf, max) {
            Some(Err(e))
                if e.code().name() == Some(error) && u64::from(e.frame_type) == frame_type => {}
            Some(Err(e)) => return Err(format!("decode_frame: {} ({e})", show(e.code()))),
            Some(Ok(f)) => return Err(format!("decode_frame accepted it as {f:?}")),
            None => return Err("decode_frame: nothing".into()),
        }
        let mut dec = Decoder::new(max);
        let mut first = None;
        for b in &wire {
            dec.feed_slice(&[*b]);
            if let Some(r) = dec.next_frame() {
                first.get_or_insert(r);
            }
        }
        match first {
            Some(Err(e)) if e.code().name() == Some(error) => {}
            Some(Err(e)) => return Err(format!("Decoder: {} ({e})", show(e.code()))),
            other => return Err(format!("Decoder (byte by byte): {other:?}")),
        }
    }

    // 2. A connection of the receiving role, after its handshake.
    let roles: &[RoleName] = match t["receiver"].as_str() {
        Some("client") => &[RoleName::Client],
        Some("server") => &[RoleName::Server],
        _ => &[RoleName::Server, RoleName::Client],
    };
    let mut expected = Vec::new();
    if reply {
        let mut fields = json!({ "code": error });
        let mut may = json!({ "message": "*" });
        if code.default_retryable() {
            fields["retryable"] = json!(true);
        }
        // §3.7: a frame error names the frame's type; a connection error may.
        if connection_error {
            may["frame_type"] = json!(frame_type);
        } else {
            fields["frame_type"] = json!(frame_type);
        }
        expected.push(json!({ "type": "ERROR", "id": request_id, "fields": fields, "may": may }));
    }
    let ping = hex::parse_plain("18 00 00 00 00 00 00 00")?;
    let pong = [json!({ "type": "PONG", "id": 0 })];
    for role in roles {
        for binding in Binding::ALL {
            let at = |what: &str| format!("{what} ({:?} receiver, {})", role, binding.name());
            let mut h = open(*role, &config, binding, cx)?;
            let now = Instant::from_millis(1);
            h.feed(now, &wire);
            let (sent, _) = h.drain().map_err(|e| at(&e))?;
            transmit_matches(&expected, &sent, &mut Default::default()).map_err(|e| at(&e))?;
            if connection_error {
                if !h.conn.is_closed() {
                    return Err(at("connection error, but the connection did not close"));
                }
                continue;
            }
            if h.conn.is_closed() {
                return Err(at("frame error, but the connection closed"));
            }
            // The framing is intact: the next frame is processed.
            h.feed(now, &ping);
            let (sent, _) = h.drain().map_err(|e| at(&e))?;
            transmit_matches(&pong, &sent, &mut Default::default())
                .map_err(|e| at(&format!("after the rejected frame, PING: {e}")))?;
        }
    }
    Ok(())
}

fn open(
    role: RoleName,
    config: &Obj,
    binding: Binding,
    cx: &Context<'_>,
) -> Result<Harness, String> {
    let mut c = Obj::new();
    if let Some(v) = config.get("max_frame_payload") {
        c.insert("max_frame_payload".into(), v.clone());
    }
    let mut h = Harness::start(role, &c, binding, Instant::ZERO)?;
    let key = match role {
        RoleName::Client => "client",
        RoleName::Server => "server",
    };
    let hello = cx
        .handshake
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("rejections.json: no handshake.{key}"))?;
    h.drain()?;
    h.feed(Instant::ZERO, &hex::parse_plain(hello)?);
    let (sent, _) = h.drain()?;
    if h.state_name() != "Open" {
        return Err(format!(
            "handshake prelude did not open the {key} (sent {})",
            sent.iter()
                .map(Sent::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(h)
}

fn show(c: ErrorCode) -> String {
    c.name().map_or_else(|| format!("{c:?}"), str::to_owned)
}
