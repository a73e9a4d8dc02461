//! A connection's settings from a Python dict: the names of the conformance vectors' `config`
//! (conformance/README.md), every one optional, defaults from SPEC §13 (`asp_proto::Config`).

use core::time::Duration;

use asp_proto::{Bytes, Config, ServerParams, Text};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// What a dict may name, besides the server parameters.
pub const KEYS: &[&str] = &[
    "max_frame_payload",
    "max_inflight",
    "max_tools",
    "max_chunk",
    "initial_window",
    "heartbeat_ms",
    "handshake_timeout_ms",
    "rate_limit",
    "flood_limit",
    "max_queued_bytes",
    "max_buffered",
    "max_queued_per_invocation",
    "max_pending_events",
    "max_args_in_flight",
    "requests",
    "resume",
    "replay_buffer",
    "resume_window_ms",
    "auto_credit",
    "check_tools",
    "agent",
    "connection_id",
    "resume_token",
    "raw_values",
];

/// The parsed dict.
pub struct Parsed {
    pub config: Config,
    pub params: ServerParams,
    pub raw_values: bool,
}

fn get<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.extract::<T>().map(Some).map_err(|e| {
            let e: PyErr = e.into();
            PyTypeError::new_err(format!("config `{key}`: {e}"))
        }),
    }
}

/// Reads `d` (None: all defaults). Unknown keys are refused so that a misspelt limit is not
/// silently ignored.
pub fn parse(d: Option<&Bound<'_, PyDict>>) -> PyResult<Parsed> {
    let mut c = Config::default();
    // A Python process names itself.
    c.agent = Some(Text::from_static(concat!(
        "agentsocket-python/",
        env!("CARGO_PKG_VERSION")
    )));
    let mut params = ServerParams::new(Text::from_static("c1"));
    let mut raw_values = false;
    let Some(d) = d else {
        return Ok(Parsed {
            config: c,
            params,
            raw_values,
        });
    };
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KEYS.contains(&k.as_str()) {
            return Err(PyValueError::new_err(format!("unknown config key `{k}`")));
        }
    }
    let l = &mut c.limits;
    if let Some(v) = get(d, "max_frame_payload")? {
        l.max_frame_payload = v;
    }
    if let Some(v) = get(d, "max_inflight")? {
        l.max_inflight = v;
    }
    if let Some(v) = get(d, "max_tools")? {
        l.max_tools = v;
    }
    if let Some(v) = get(d, "max_chunk")? {
        l.max_chunk = v;
    }
    if let Some(v) = get(d, "initial_window")? {
        l.initial_window = v;
    }
    if let Some(v) = get::<u64>(d, "heartbeat_ms")? {
        c.heartbeat = (v > 0).then(|| Duration::from_millis(v));
    }
    if let Some(v) = get(d, "handshake_timeout_ms")? {
        c.handshake_timeout = Duration::from_millis(v);
    }
    if let Some(v) = get(d, "rate_limit")? {
        c.rate_limit = v;
    }
    if let Some(v) = get(d, "flood_limit")? {
        c.flood_limit = v;
    }
    if let Some(v) = get(d, "max_queued_bytes")? {
        c.max_queued_bytes = v;
    }
    if let Some(v) = get(d, "max_buffered")? {
        c.max_buffered = v;
    }
    if let Some(v) = get(d, "max_queued_per_invocation")? {
        c.max_queued_per_invocation = v;
    }
    if let Some(v) = get(d, "max_pending_events")? {
        c.max_pending_events = v;
    }
    if let Some(v) = get(d, "max_args_in_flight")? {
        c.max_args_in_flight = v;
    }
    if let Some(v) = get(d, "requests")? {
        c.accept_requests = v;
    }
    if let Some(v) = get(d, "resume")? {
        c.resume = v;
    }
    if let Some(v) = get(d, "replay_buffer")? {
        c.replay_buffer = v;
    }
    if let Some(v) = get(d, "resume_window_ms")? {
        c.resume_window = Duration::from_millis(v);
    }
    if let Some(v) = get(d, "auto_credit")? {
        c.auto_credit = v;
    }
    if let Some(v) = get(d, "check_tools")? {
        c.check_tools = v;
    }
    if let Some(v) = get::<String>(d, "agent")? {
        c.agent = Some(Text::from(v));
    }
    if let Some(v) = get::<String>(d, "connection_id")? {
        // SPEC §5.1: 1–64 bytes.
        if v.is_empty() || v.len() > 64 {
            return Err(PyValueError::new_err("connection_id must be 1-64 bytes"));
        }
        params.connection_id = Text::from(v);
    }
    if let Some(v) = get::<Vec<u8>>(d, "resume_token")? {
        if v.is_empty() || v.len() > 64 {
            return Err(PyValueError::new_err("resume_token must be 1-64 bytes"));
        }
        params.resume_token = Some(Bytes::from(v));
    }
    if let Some(v) = get(d, "raw_values")? {
        raw_values = v;
    }
    Ok(Parsed {
        config: c,
        params,
        raw_values,
    })
}
