//! `decode_frames`: frames as the conformance vectors write them (conformance/README.md,
//! "Frame vectors"), so that the vectors can be run against this binding from Python.

use asp_proto::codec::decode_frame;
use asp_proto::{Bytes, Frame};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tagged<'py>(py: Python<'py>, tag: &str, v: String) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(tag, v)?;
    Ok(d)
}

fn fields<'py>(py: Python<'py>, f: &Frame) -> PyResult<Bound<'py, PyDict>> {
    let o = PyDict::new(py);
    let any = |v: &asp_proto::RawValue| tagged(py, "msgpack", hex(v.as_bytes()));
    match f {
        Frame::Hello(h) => {
            let versions: Vec<u16> = h.versions.iter().map(u16::from).collect();
            o.set_item("versions", versions)?;
            if !h.capabilities.is_empty() {
                let c: Vec<&str> = h.capabilities.iter().map(|c| c.as_str()).collect();
                o.set_item("capabilities", c)?;
            }
            let l = &h.limits;
            let lim = PyDict::new(py);
            for (k, v) in [
                ("max_frame_payload", l.max_frame_payload.map(u64::from)),
                ("max_inflight", l.max_inflight.map(u64::from)),
                ("max_tools", l.max_tools.map(u64::from)),
                ("max_chunk", l.max_chunk.map(u64::from)),
                ("initial_window", l.initial_window.map(u64::from)),
            ] {
                if let Some(v) = v {
                    lim.set_item(k, v)?;
                }
            }
            if !lim.is_empty() {
                o.set_item("limits", lim)?;
            }
            if let Some(v) = h.heartbeat_ms {
                o.set_item("heartbeat_ms", v)?;
            }
            if let Some(c) = &h.connection_id {
                o.set_item("connection_id", c.as_str())?;
            }
            if let Some(t) = &h.resume_token {
                o.set_item("resume_token", tagged(py, "bin", hex(t))?)?;
            }
            o.set_item("tools", h.tools)?;
            if let Some(a) = &h.agent {
                o.set_item("agent", a.as_str())?;
            }
        }
        Frame::Invoke(i) => {
            o.set_item("tool", i.tool.as_str())?;
            if let Some(a) = &i.args {
                o.set_item("args", any(a)?)?;
            }
            o.set_item("deadline_ms", i.deadline_ms)?;
            if let Some(m) = &i.meta {
                o.set_item("meta", any(m)?)?;
            }
        }
        Frame::Stream(s) => {
            let d = if s.text {
                tagged(py, "str", String::from_utf8_lossy(&s.data).into_owned())?
            } else {
                tagged(py, "bin", hex(&s.data))?
            };
            o.set_item("data", d)?;
            o.set_item("seq", s.seq)?;
            o.set_item("final", s.fin)?;
        }
        Frame::Interrupt(i) => {
            if let Some(r) = &i.reason {
                o.set_item("reason", r.as_str())?;
            }
        }
        Frame::ToolDef(t) => {
            o.set_item("op", t.op as u8)?;
            o.set_item("name", t.name.as_str())?;
            o.set_item("description", t.description.as_str())?;
            if let Some(s) = &t.input_schema {
                o.set_item("input_schema", any(s)?)?;
            }
            if let Some(a) = &t.annotations {
                o.set_item("annotations", any(a)?)?;
            }
        }
        Frame::Complete(c) => {
            o.set_item("status", c.status as u8)?;
            if let Some(r) = &c.result {
                o.set_item("result", any(r)?)?;
            }
            let m = crate::event::metrics(py, &c.metrics)?;
            if !m.is_empty() {
                o.set_item("metrics", m)?;
            }
        }
        Frame::Error(e) => {
            o.set_item("code", e.code.0)?;
            if let Some(m) = &e.message {
                o.set_item("message", m.as_str())?;
            }
            o.set_item("retryable", e.retryable)?;
            if let Some(t) = e.frame_type {
                o.set_item("frame_type", t)?;
            }
        }
        Frame::Request(r) => {
            o.set_item("kind", r.kind.as_str())?;
            if let Some(b) = &r.body {
                o.set_item("body", any(b)?)?;
            }
            if let Some(i) = r.invocation {
                o.set_item("invocation", i.0)?;
            }
        }
        Frame::Reply(r) => {
            o.set_item("status", r.status as u8)?;
            if let Some(b) = &r.body {
                o.set_item("body", any(b)?)?;
            }
        }
        Frame::Credit(c) => o.set_item("bytes", c.bytes)?,
        Frame::GoAway(g) => {
            if let Some(r) = &g.reason {
                o.set_item("reason", r.as_str())?;
            }
            o.set_item("timeout_ms", g.timeout_ms)?;
        }
        Frame::Resume(r) => {
            if let Some(t) = &r.token {
                o.set_item("token", tagged(py, "bin", hex(t))?)?;
            }
            o.set_item("received", r.received)?;
        }
        // PING, PONG, and frame types this binding does not know yet: no fields.
        #[allow(unreachable_patterns)]
        _ => {}
    }
    Ok(o)
}

/// Decodes the whole frames of one message (as the core's decoder reads them, with
/// `max_payload` as the receiver's limit) into `(type name, request id, fields)` tuples in
/// the conformance vectors' JSON form (`any` values as `{"msgpack": hex}`, `bin` as
/// `{"bin": hex}`). Raises ValueError at the first invalid frame.
#[pyfunction]
#[pyo3(signature = (data, max_payload=u32::MAX))]
pub fn decode_frames<'py>(
    py: Python<'py>,
    data: &[u8],
    max_payload: u32,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    let mut rest = Bytes::copy_from_slice(data);
    while let Some(r) = decode_frame(&mut rest, max_payload) {
        let f = r.map_err(|e| PyValueError::new_err(e.to_string()))?;
        out.append((f.frame_type().name(), f.request_id().0, fields(py, &f)?))?;
    }
    Ok(out)
}
