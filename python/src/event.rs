//! Core events as Python tuples: `(tag, fields…)`. Tuples with an interned string tag are the
//! cheapest objects to build and to dispatch on in Python; `agentsocket/_core.pyi` types them.

use asp_proto::error::ErrorScope;
use asp_proto::frame::{ErrorFrame, Metrics, ReplyStatus, Status, ToolDef};
use asp_proto::{
    CloseReason, ErrorCode, Event, InvocationOutcome, RequestOutcome, Session, ToolChange,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use pyo3::{intern, IntoPyObjectExt};

use crate::value::decode_opt;

type Obj = Py<PyAny>;

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Cancelled => "cancelled",
        Status::Failed => "failed",
    }
}

pub fn reply_status_name(s: ReplyStatus) -> &'static str {
    match s {
        ReplyStatus::Answered => "answered",
        ReplyStatus::Cancelled => "cancelled",
        ReplyStatus::Declined => "declined",
    }
}

fn text(t: &Option<asp_proto::Text>) -> Option<&str> {
    t.as_ref().map(|t| t.as_str())
}

/// `(code, message, retryable)`.
fn error_fields<'py>(py: Python<'py>, e: &ErrorFrame) -> PyResult<Bound<'py, PyAny>> {
    (e.code.0, text(&e.message), e.retryable).into_bound_py_any(py)
}

pub fn metrics<'py>(py: Python<'py>, m: &Metrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in [
        ("wall_us", m.wall_us),
        ("cpu_us", m.cpu_us),
        ("input_tokens", m.input_tokens),
        ("output_tokens", m.output_tokens),
    ] {
        if let Some(v) = v {
            d.set_item(k, v)?;
        }
    }
    Ok(d)
}

pub fn tool_def<'py>(py: Python<'py>, t: &ToolDef, raw: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", t.name.as_str())?;
    d.set_item("description", t.description.as_str())?;
    d.set_item(
        "input_schema",
        decode_opt(py, t.input_schema.as_ref(), raw)?,
    )?;
    d.set_item("annotations", decode_opt(py, t.annotations.as_ref(), raw)?)?;
    Ok(d)
}

pub fn session<'py>(py: Python<'py>, s: &Session) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("connection_id", s.connection_id.as_str())?;
    d.set_item("version", s.version)?;
    d.set_item("heartbeat_ms", s.heartbeat_ms)?;
    d.set_item("resumable", s.resumable)?;
    d.set_item("peer_agent", text(&s.peer_agent))?;
    let caps: Vec<&str> = s.peer_capabilities.iter().map(|c| c.as_str()).collect();
    d.set_item("peer_capabilities", caps)?;
    let l = &s.peer_limits;
    let limits = PyDict::new(py);
    limits.set_item("max_frame_payload", l.max_frame_payload)?;
    limits.set_item("max_inflight", l.max_inflight)?;
    limits.set_item("max_tools", l.max_tools)?;
    limits.set_item("max_chunk", l.max_chunk)?;
    limits.set_item("initial_window", l.initial_window)?;
    d.set_item("peer_limits", limits)?;
    Ok(d)
}

/// `(kind, code, message)`: kind is `local`, `drained`, `error_sent`, `error_received`,
/// or `transport_closed` (the names of the conformance vectors; a local bound is `error_sent`
/// with OVERLOADED).
pub fn close_reason<'py>(py: Python<'py>, r: &CloseReason) -> PyResult<Bound<'py, PyAny>> {
    let none: Option<u16> = None;
    match r {
        CloseReason::Local => ("local", none, None::<&str>).into_bound_py_any(py),
        CloseReason::Drained => ("drained", none, None::<&str>).into_bound_py_any(py),
        CloseReason::PeerError { code, message } => {
            ("error_received", Some(code.0), message.as_deref()).into_bound_py_any(py)
        }
        CloseReason::ProtocolError { code, message } => {
            ("error_sent", Some(code.0), Some(message.as_str())).into_bound_py_any(py)
        }
        CloseReason::TransportClosed => {
            ("transport_closed", none, None::<&str>).into_bound_py_any(py)
        }
        other => ("unknown", none, Some(other_text(other).as_str())).into_bound_py_any(py),
    }
}

/// A value the core added after this binding was written, as text.
fn other_text(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}")
}

/// `Event::InvocationEnded`'s outcome (`complete`, `error`, `lost`).
fn invocation_outcome<'py>(
    py: Python<'py>,
    o: &InvocationOutcome,
    raw: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match o {
        InvocationOutcome::Complete(c) => (
            intern!(py, "complete"),
            status_name(c.status),
            decode_opt(py, c.result.as_ref(), raw)?,
            metrics(py, &c.metrics)?,
        )
            .into_bound_py_any(py),
        InvocationOutcome::Error(e) => {
            (intern!(py, "error"), error_fields(py, e)?).into_bound_py_any(py)
        }
        InvocationOutcome::Lost(r) => {
            (intern!(py, "lost"), close_reason(py, r)?).into_bound_py_any(py)
        }
        other => (intern!(py, "unknown"), other_text(other)).into_bound_py_any(py),
    }
}

/// `Event::RequestEnded`'s outcome (`reply`, `error`, `lost`).
fn request_outcome<'py>(
    py: Python<'py>,
    o: &RequestOutcome,
    raw: bool,
) -> PyResult<Bound<'py, PyAny>> {
    match o {
        RequestOutcome::Reply(r) => (
            intern!(py, "reply"),
            reply_status_name(r.status),
            decode_opt(py, r.body.as_ref(), raw)?,
        )
            .into_bound_py_any(py),
        RequestOutcome::Error(e) => {
            (intern!(py, "error"), error_fields(py, e)?).into_bound_py_any(py)
        }
        RequestOutcome::Lost(r) => {
            (intern!(py, "lost"), close_reason(py, r)?).into_bound_py_any(py)
        }
        other => (intern!(py, "unknown"), other_text(other)).into_bound_py_any(py),
    }
}

/// One event as a tuple.
pub fn to_py(py: Python<'_>, ev: Event, raw: bool) -> PyResult<Obj> {
    let t = match ev {
        Event::Chunk(s) => {
            // The hot path: `(tag, id, data, seq, final)`, text as str.
            let data: Bound<'_, PyAny> = if s.text {
                match std::str::from_utf8(&s.data) {
                    Ok(t) => PyString::new(py, t).into_any(),
                    Err(_) => PyBytes::new(py, &s.data).into_any(),
                }
            } else {
                PyBytes::new(py, &s.data).into_any()
            };
            (intern!(py, "chunk"), s.id.0, data, s.seq, s.fin).into_bound_py_any(py)?
        }
        // Both as `ended`: the Python side knows which kind an id is.
        Event::InvocationEnded { id, outcome: o } => {
            (intern!(py, "ended"), id.0, invocation_outcome(py, &o, raw)?).into_bound_py_any(py)?
        }
        Event::RequestEnded { id, outcome: o } => {
            (intern!(py, "ended"), id.0, request_outcome(py, &o, raw)?).into_bound_py_any(py)?
        }
        Event::Invoked(inv) => (
            intern!(py, "invoked"),
            inv.id.0,
            inv.tool.as_str(),
            decode_opt(py, inv.args.as_ref(), raw)?,
            inv.deadline_ms,
            decode_opt(py, inv.meta.as_ref(), raw)?,
        )
            .into_bound_py_any(py)?,
        Event::Writable { id } => (intern!(py, "writable"), id.0).into_bound_py_any(py)?,
        Event::Connected(s) => {
            (intern!(py, "connected"), session(py, &s)?).into_bound_py_any(py)?
        }
        Event::Interrupted { id, reason } => {
            (intern!(py, "interrupted"), id.0, text(&reason)).into_bound_py_any(py)?
        }
        Event::Aborted { id, error } => {
            (intern!(py, "aborted"), id.0, error_fields(py, &error)?).into_bound_py_any(py)?
        }
        Event::ToolsChanged(c) => match *c {
            ToolChange::Added(t) => {
                (intern!(py, "tool_added"), tool_def(py, &t, raw)?).into_bound_py_any(py)?
            }
            ToolChange::Updated(t) => {
                (intern!(py, "tool_updated"), tool_def(py, &t, raw)?).into_bound_py_any(py)?
            }
            ToolChange::Removed(n) => {
                (intern!(py, "tool_removed"), n.as_str()).into_bound_py_any(py)?
            }
            other => (intern!(py, "unknown"), other_text(&other)).into_bound_py_any(py)?,
        },
        Event::Requested(r) => (
            intern!(py, "requested"),
            r.id.0,
            r.kind.as_str(),
            decode_opt(py, r.body.as_ref(), raw)?,
            r.invocation.map(|i| i.0),
        )
            .into_bound_py_any(py)?,
        Event::GoAway(g) => {
            (intern!(py, "goaway"), text(&g.reason), g.timeout_ms).into_bound_py_any(py)?
        }
        Event::PeerError(e) => {
            (intern!(py, "peer_error"), e.id.0, error_fields(py, &e)?).into_bound_py_any(py)?
        }
        Event::Violation(e) => {
            (intern!(py, "violation"), e.id.0, error_fields(py, &e)?).into_bound_py_any(py)?
        }
        Event::Detached => (intern!(py, "detached"),).into_bound_py_any(py)?,
        Event::ResumeRequested { token, received } => (
            intern!(py, "resume_requested"),
            PyBytes::new(py, &token),
            received,
        )
            .into_bound_py_any(py)?,
        Event::Resumed => (intern!(py, "resumed"),).into_bound_py_any(py)?,
        Event::Closed(r) => (intern!(py, "closed"), close_reason(py, &r)?).into_bound_py_any(py)?,
        // A new event kind this binding does not know yet: reported by name, never dropped
        // silently.
        #[allow(unreachable_patterns)]
        other => (intern!(py, "unknown"), format!("{other:?}")).into_bound_py_any(py)?,
    };
    Ok(t.unbind())
}

/// SPEC §12.1 scope of a code, by name.
pub fn scope_name(c: ErrorCode) -> &'static str {
    match c.scope() {
        ErrorScope::Connection => "connection",
        ErrorScope::Frame => "frame",
        ErrorScope::Exchange => "exchange",
        ErrorScope::Application => "application",
        ErrorScope::Invalid => "invalid",
    }
}
