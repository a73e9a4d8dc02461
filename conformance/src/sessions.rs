//! Session vectors run in process (README "Session vectors"): each step drives a
//! `Connection` of the vector's role; afterwards what it sent, what it reported, its state
//! and whether it closed are compared with the step's expectations.

use core::time::Duration;

use asp_proto::frame::{Metrics, RequestId, Text};
use asp_proto::{CloseReason, ErrorCode, Instant, InvokeOptions, StreamOptions};
use serde_json::Value;

use crate::harness::{tool_def_of, Binding, Harness, RoleName};
use crate::hex::{self, Captures};
use crate::matcher::{events_match, transmit_matches};
use crate::model::{self, Obj};

/// Runs one session vector in every binding (only the WebSocket one for vectors marked
/// `"binding": "websocket"`).
pub fn run(t: &Value) -> Result<(), String> {
    let ws_only = t["binding"].as_str() == Some("websocket");
    for binding in Binding::ALL {
        if ws_only && binding.is_stream() {
            continue;
        }
        run_binding(t, binding).map_err(|e| format!("{e} [{}]", binding.name()))?;
    }
    Ok(())
}

fn run_binding(t: &Value, binding: Binding) -> Result<(), String> {
    let role = RoleName::parse(t["role"].as_str().unwrap_or(""))?;
    let empty = Obj::new();
    let config = t["config"].as_object().unwrap_or(&empty);
    let steps = t["steps"].as_array().ok_or("no steps")?;
    let mut caps = Captures::new();
    let mut h: Option<Harness> = None;
    for (n, s) in steps.iter().enumerate() {
        let at_ms = model::uint_of(&s["at_ms"]).ok_or_else(|| format!("step {n}: no at_ms"))?;
        let now = Instant::from_millis(at_ms);
        let fail = |e: String| format!("step {n} (at {at_ms} ms, {}): {e}", describe(s));
        if s.get("start").is_some() {
            h = Some(Harness::start(role, config, binding, now).map_err(fail)?);
        } else {
            // After close, input is still given: nothing may come of it (SPEC §6.6).
            let h = h.as_mut().ok_or_else(|| fail("no start step".into()))?;
            act(h, s, now, &caps).map_err(fail)?;
        }
        let h = h.as_mut().ok_or_else(|| fail("no start step".into()))?;
        let (sent, events) = h.drain().map_err(fail)?;
        let none = Vec::new();
        let exp_tx = s["transmit"].as_array().unwrap_or(&none);
        transmit_matches(exp_tx, &sent, &mut caps).map_err(|e| fail(format!("transmit: {e}")))?;
        let exp_ev = s["events"].as_array().unwrap_or(&none);
        events_match(exp_ev, &events, &mut caps).map_err(|e| fail(format!("events: {e}")))?;
        if let Some(st) = s["state"].as_str() {
            if h.state_name() != st {
                return Err(fail(format!("state {}, expected {st}", h.state_name())));
            }
        }
        let closed = s["closed"].as_bool() == Some(true);
        if closed != h.conn.is_closed() {
            return Err(fail(if closed {
                "expected the connection to close".into()
            } else {
                "the connection closed".into()
            }));
        }
        // README "Steps": `close_code`, the WebSocket close code that follows (SPEC §2.1).
        if let Some(want) = s["close_code"].as_u64() {
            if h.close_code != Some(want as u16) {
                return Err(fail(format!(
                    "close code {:?}, expected {want}",
                    h.close_code
                )));
            }
        }
    }
    Ok(())
}

fn describe(s: &Value) -> String {
    for k in [
        "start",
        "recv",
        "recv_text",
        "timeout",
        "transport_closed",
        "peer_close",
    ] {
        if s.get(k).is_some() {
            return k.to_owned();
        }
    }
    match s["command"]["op"].as_str() {
        Some(op) => format!("command {op}"),
        None => "?".into(),
    }
}

fn act(h: &mut Harness, s: &Value, now: Instant, caps: &Captures) -> Result<(), String> {
    if let Some(x) = s["recv"].as_str() {
        h.feed(now, &hex::parse(x, caps)?);
    } else if s.get("recv_text").is_some() {
        h.conn.handle_text_message(now);
    } else if s.get("timeout").is_some() {
        h.conn.handle_timeout(now);
    } else if s.get("transport_closed").is_some() {
        h.conn.handle_transport_closed(now);
    } else if s.get("peer_close").is_some() {
        h.conn.handle_peer_close(now);
    } else if let Some(c) = s["command"].as_object() {
        let refused = s["refused"].as_bool() == Some(true);
        match command(h, c, now, caps) {
            Ok(()) if refused => return Err("the command was accepted; SPEC forbids it".into()),
            Err(e) if !refused => return Err(format!("command refused: {e}")),
            _ => {}
        }
    } else {
        return Err(format!("unknown step {s}"));
    }
    Ok(())
}

fn id_of(c: &Obj, caps: &Captures) -> Result<RequestId, String> {
    match c.get("id") {
        Some(Value::String(s)) => caps
            .get(s)
            .map(|v| RequestId(*v))
            .ok_or_else(|| format!("{s} not captured")),
        Some(v) => model::uint_of(v)
            .and_then(|n| u16::try_from(n).ok())
            .map(RequestId)
            .ok_or_else(|| format!("bad id {v}")),
        None => Err("command without id".into()),
    }
}

fn opt_text(c: &Obj, k: &str) -> Option<Text> {
    c.get(k).and_then(Value::as_str).map(Text::from)
}

fn opt_any(c: &Obj, k: &str) -> Result<Option<asp_proto::RawValue>, String> {
    c.get(k).map(model::raw_of).transpose()
}

fn uint(c: &Obj, k: &str) -> Option<u64> {
    c.get(k).and_then(model::uint_of)
}

/// Performs one command; `Err` if the implementation refused it.
fn command(h: &mut Harness, c: &Obj, now: Instant, caps: &Captures) -> Result<(), String> {
    let conn = &mut h.conn;
    let op = c.get("op").and_then(Value::as_str).unwrap_or("");
    let e = |e: asp_proto::SendError| e.to_string();
    match op {
        "invoke" => {
            let tool = c
                .get("tool")
                .and_then(Value::as_str)
                .ok_or("invoke: no tool")?;
            let mut opts = InvokeOptions::default();
            opts.deadline_ms = uint(c, "deadline_ms")
                .map_or(Ok(0), u32::try_from)
                .map_err(|_| "deadline_ms")?;
            opts.meta = opt_any(c, "meta")?;
            conn.invoke(tool, opt_any(c, "args")?, opts)
                .map(drop)
                .map_err(e)
        }
        "reply" => {
            let status = model::reply_status_of(uint(c, "status").unwrap_or(0))?;
            conn.reply(id_of(c, caps)?, status, opt_any(c, "body")?)
                .map_err(e)
        }
        "interrupt" => conn
            .interrupt(id_of(c, caps)?, opt_text(c, "reason"))
            .map_err(e),
        "release" => {
            let len = uint(c, "len").ok_or("release: no len")?;
            conn.release(id_of(c, caps)?, usize::try_from(len).map_err(|_| "len")?);
            Ok(())
        }
        "stream" => {
            let (data, text) = model::data_of(c.get("data").ok_or("stream: no data")?)?;
            let fin = c.get("final").and_then(Value::as_bool).unwrap_or(false);
            let options = StreamOptions::BINARY.text(text).fin(fin);
            conn.stream(id_of(c, caps)?, data, options).map_err(e)
        }
        "complete" => {
            let status = model::status_of(uint(c, "status").unwrap_or(0))?;
            let mut metrics = Metrics::default();
            if let Some(Value::Object(m)) = c.get("metrics") {
                metrics.wall_us = uint(m, "wall_us");
                metrics.cpu_us = uint(m, "cpu_us");
                metrics.input_tokens = uint(m, "input_tokens");
                metrics.output_tokens = uint(m, "output_tokens");
            }
            conn.complete(id_of(c, caps)?, status, opt_any(c, "result")?, metrics)
                .map_err(e)
        }
        "fail" => {
            let code = c
                .get("code")
                .and_then(model::code_of)
                .ok_or("fail: no code")?;
            let message = c.get("message").and_then(Value::as_str).unwrap_or("");
            let retryable = c.get("retryable").and_then(Value::as_bool).unwrap_or(false);
            conn.fail(id_of(c, caps)?, ErrorCode(code), message, retryable)
                .map_err(e)
        }
        "request" => {
            let kind = c
                .get("kind")
                .and_then(Value::as_str)
                .ok_or("request: no kind")?;
            let inv = uint(c, "invocation")
                .map(|n| u16::try_from(n).map(RequestId))
                .transpose()
                .map_err(|_| "invocation")?;
            conn.request(kind, opt_any(c, "body")?, inv)
                .map(drop)
                .map_err(e)
        }
        "add_tool" => conn
            .add_tool(tool_def_of(&Value::Object(c.clone()))?)
            .map_err(e),
        "remove_tool" => {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or("remove_tool: no name")?;
            match conn.remove_tool(name) {
                Ok(true) => Ok(()),
                Ok(false) => Err("no such tool".into()),
                Err(x) => Err(e(x)),
            }
        }
        "goaway" => {
            // timeout_ms absent: "unspecified" (§5.12); we give 30 s.
            let ms = uint(c, "timeout_ms").unwrap_or(30_000);
            conn.goaway(now, opt_text(c, "reason"), Duration::from_millis(ms));
            Ok(())
        }
        "close" => {
            conn.close(CloseReason::Local);
            Ok(())
        }
        "resume" => conn.resume(now).map_err(e),
        other => Err(format!("unknown command {other:?}")),
    }
}
