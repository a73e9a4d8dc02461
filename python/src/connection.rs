//! `agentsocket._core.Connection`: the `asp-proto` state machine for Python.
//!
//! Every input (`receive_message`, `receive_bytes`, `timeout`, …) returns one batch
//! `(events, transmit, deadline)` so that a driver crosses the FFI boundary once per input:
//! events first (the application consumes them, which may queue CREDIT), then the bytes to
//! send (one WebSocket message each), then when to call `timeout` next. Commands (`invoke`,
//! `stream`, `complete`, …) only queue; `poll()` returns the batch they produced.
//!
//! Time is a float number of seconds on any monotonic clock the caller chooses (asyncio's
//! `loop.time()`), converted to the core's microseconds.

use asp_proto::frame::{Metrics, ReplyStatus, Status, ToolDef, ToolOp};
use asp_proto::{Bytes, CloseReason, Connection as Core, ErrorCode, Instant, InvokeOptions};
use asp_proto::{RequestId, Role, SendError, State, StreamOptions, Text};
use bytes::BytesMut;
use core::time::Duration;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::config;
use crate::event;
use crate::value::encode_opt;
use crate::LocalError;

/// One batch of output: events, messages to send, next deadline (seconds).
type Batch<'py> = (Bound<'py, PyList>, Bound<'py, PyList>, Option<f64>);

fn instant(now: f64) -> Instant {
    // Negative or NaN times clamp to the epoch; the core never lets time go backwards.
    if now.is_nan() || now <= 0.0 {
        Instant::ZERO
    } else {
        Instant::from_micros((now * 1e6) as u64)
    }
}

fn seconds(i: Instant) -> f64 {
    i.as_micros() as f64 / 1e6
}

/// A local misuse (SPEC-forbidden command) as `LocalError(kind, message)`. `kind` is a
/// stable name a driver can branch on.
pub fn local_error(e: SendError) -> PyErr {
    let kind = match &e {
        SendError::NotOpen => "not_open",
        SendError::Closed => "closed",
        SendError::Draining => "draining",
        SendError::WrongRole => "wrong_role",
        SendError::NotInFlight => "not_in_flight",
        SendError::TooManyInflight => "too_many_inflight",
        SendError::Full => "full",
        SendError::TooLarge { .. } => "too_large",
        SendError::InvalidField(_) => "invalid_field",
        SendError::StreamFinished => "stream_finished",
        SendError::Unsupported(_) => "unsupported",
        #[allow(unreachable_patterns)]
        _ => "other",
    };
    LocalError::new_err((kind, e.to_string()))
}

fn status(s: &str) -> PyResult<Status> {
    match s {
        "ok" => Ok(Status::Ok),
        "cancelled" => Ok(Status::Cancelled),
        "failed" => Ok(Status::Failed),
        _ => Err(PyValueError::new_err(format!(
            "status must be ok, cancelled or failed, not {s:?}"
        ))),
    }
}

fn reply_status(s: &str) -> PyResult<ReplyStatus> {
    match s {
        "answered" => Ok(ReplyStatus::Answered),
        "cancelled" => Ok(ReplyStatus::Cancelled),
        "declined" => Ok(ReplyStatus::Declined),
        _ => Err(PyValueError::new_err(format!(
            "status must be answered, cancelled or declined, not {s:?}"
        ))),
    }
}

fn metrics(d: Option<&Bound<'_, PyDict>>) -> PyResult<Metrics> {
    let mut m = Metrics::default();
    let Some(d) = d else { return Ok(m) };
    for (k, v) in d.iter() {
        let k: String = k.extract()?;
        let v: Option<u64> = if v.is_none() {
            None
        } else {
            Some(v.extract()?)
        };
        match k.as_str() {
            "wall_us" => m.wall_us = v,
            "cpu_us" => m.cpu_us = v,
            "input_tokens" => m.input_tokens = v,
            "output_tokens" => m.output_tokens = v,
            _ => return Err(PyValueError::new_err(format!("unknown metric `{k}`"))),
        }
    }
    Ok(m)
}

fn id(v: u16) -> RequestId {
    RequestId(v)
}

/// An Agent Socket Protocol connection (client or server) with no IO: the `asp-proto` core.
///
/// `Connection("client", now, config)` queues the client's HELLO at once;
/// `Connection("server", now, config)` waits for one. `config` is a dict of the settings
/// named in the conformance vectors (`max_inflight`, `heartbeat_ms`, `resume`, …, and for a
/// server `connection_id` and `resume_token`); absent keys take the SPEC §13 defaults.
#[pyclass(module = "agentsocket._core")]
pub struct Connection {
    core: Core,
    buf: BytesMut,
    raw: bool,
    /// While true, batches leave the core's transmit queue alone: a driver whose own send
    /// buffer is full sets it, so the core's queue bound (SPEC §13) and `Full` push back on
    /// the tools instead of a Python list growing.
    #[pyo3(get, set)]
    hold_transmit: bool,
}

impl Connection {
    fn batch<'py>(&mut self, py: Python<'py>) -> PyResult<Batch<'py>> {
        let events = PyList::empty(py);
        while let Some(ev) = self.core.poll_event() {
            events.append(event::to_py(py, ev, self.raw)?)?;
        }
        let out = PyList::empty(py);
        while !self.hold_transmit {
            let n = self.core.poll_transmit(&mut self.buf);
            if n == 0 {
                break;
            }
            let msg = self.buf.split();
            out.append(PyBytes::new(py, &msg))?;
        }
        Ok((events, out, self.core.poll_timeout().map(seconds)))
    }
}

#[pymethods]
impl Connection {
    #[new]
    #[pyo3(signature = (role, now, config=None))]
    fn py_new(role: &str, now: f64, config: Option<&Bound<'_, PyDict>>) -> PyResult<Connection> {
        let p = config::parse(config)?;
        let now = instant(now);
        let core = match role {
            "client" => Core::client(p.config, now),
            "server" => Core::server(p.config, p.params, now),
            _ => return Err(PyValueError::new_err("role must be 'client' or 'server'")),
        };
        Ok(Connection {
            core,
            buf: BytesMut::with_capacity(4096),
            raw: p.raw_values,
            hold_transmit: false,
        })
    }

    // ───────────── inputs: each returns (events, transmit, deadline) ─────────────

    /// One binary WebSocket message (one or more whole frames, SPEC §2.1).
    fn receive_message<'py>(
        &mut self,
        py: Python<'py>,
        now: f64,
        data: &[u8],
    ) -> PyResult<Batch<'py>> {
        self.core
            .handle_message(instant(now), Bytes::copy_from_slice(data));
        self.batch(py)
    }

    /// A text WebSocket message: FRAMING_ERROR (SPEC §2.1).
    fn receive_text<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<Batch<'py>> {
        self.core.handle_text_message(instant(now));
        self.batch(py)
    }

    /// Bytes of a byte-stream transport, in any chunking (SPEC §2.2).
    fn receive_bytes<'py>(
        &mut self,
        py: Python<'py>,
        now: f64,
        data: &[u8],
    ) -> PyResult<Batch<'py>> {
        self.core
            .handle_bytes(instant(now), Bytes::copy_from_slice(data));
        self.batch(py)
    }

    /// The transport ended (EOF, reset, WebSocket close).
    fn transport_closed<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<Batch<'py>> {
        self.core.handle_transport_closed(instant(now));
        self.batch(py)
    }

    /// The peer ended the transport on purpose (WebSocket Close 1000 or no status, SPEC
    /// §11.3): a resumable session ends instead of detaching.
    fn peer_close<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<Batch<'py>> {
        self.core.handle_peer_close(instant(now));
        self.batch(py)
    }

    /// Timers; safe to call early.
    fn timeout<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<Batch<'py>> {
        self.core.handle_timeout(instant(now));
        self.batch(py)
    }

    /// What the commands since the last batch produced.
    fn poll<'py>(&mut self, py: Python<'py>) -> PyResult<Batch<'py>> {
        self.batch(py)
    }

    // ───────────── commands: client ─────────────

    /// Client: invoke `tool` (SPEC §5.2). Returns the invocation id.
    #[pyo3(signature = (tool, args=None, deadline_ms=0, meta=None))]
    #[allow(clippy::field_reassign_with_default)]
    fn invoke(
        &mut self,
        tool: &str,
        args: Option<&Bound<'_, PyAny>>,
        deadline_ms: u32,
        meta: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u16> {
        // Field by field: the options may grow (`#[non_exhaustive]`).
        let mut opts = InvokeOptions::default();
        opts.deadline_ms = deadline_ms;
        opts.meta = encode_opt(meta)?;
        self.core
            .invoke(tool, encode_opt(args)?, opts)
            .map(|i| i.0)
            .map_err(local_error)
    }

    /// Client: answer a server request (`answered`, `cancelled` or `declined`).
    #[pyo3(signature = (id, status="answered", body=None))]
    fn reply(&mut self, id: u16, status: &str, body: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let s = reply_status(status)?;
        self.core
            .reply(self::id(id), s, encode_opt(body)?)
            .map_err(local_error)
    }

    /// Client with `auto_credit` off: the application consumed `n` bytes of chunk data.
    fn release(&mut self, id: u16, n: usize) {
        self.core.release(self::id(id), n);
    }

    // ───────────── commands: server ─────────────

    /// Server: send a chunk (str: text, bytes: binary). Returns False when the window or
    /// queue has no room (a `("writable", id)` event follows when there is).
    #[pyo3(signature = (id, data, fin=false))]
    fn stream(&mut self, id: u16, data: &Bound<'_, PyAny>, fin: bool) -> PyResult<bool> {
        let (bytes, text) = if let Ok(s) = data.cast::<PyString>() {
            (Bytes::copy_from_slice(s.to_str()?.as_bytes()), true)
        } else if let Ok(b) = data.cast::<PyBytes>() {
            (Bytes::copy_from_slice(b.as_bytes()), false)
        } else {
            return Err(PyTypeError::new_err("a chunk is str or bytes"));
        };
        let options = StreamOptions::BINARY.text(text).fin(fin);
        match self.core.stream(self::id(id), bytes, options) {
            Ok(()) => Ok(true),
            Err(SendError::Full) => Ok(false),
            Err(e) => Err(local_error(e)),
        }
    }

    /// Whether `stream` of `n` bytes would be accepted now.
    fn can_stream(&self, id: u16, n: usize) -> bool {
        self.core.can_stream(self::id(id), n)
    }

    /// Server: end an invocation with COMPLETE (SPEC §5.6).
    #[pyo3(signature = (id, status="ok", result=None, metrics=None))]
    fn complete(
        &mut self,
        id: u16,
        status: &str,
        result: Option<&Bound<'_, PyAny>>,
        metrics: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let s = self::status(status)?;
        let m = self::metrics(metrics)?;
        self.core
            .complete(self::id(id), s, encode_opt(result)?, m)
            .map_err(local_error)
    }

    /// End an exchange the peer opened with ERROR (SPEC §5.7). `retryable` defaults to the
    /// SPEC §12.2 registry.
    #[pyo3(signature = (id, code, message="", retryable=None))]
    fn fail(&mut self, id: u16, code: u16, message: &str, retryable: Option<bool>) -> PyResult<()> {
        let c = ErrorCode(code);
        let r = retryable.unwrap_or_else(|| c.default_retryable());
        self.core
            .fail(self::id(id), c, message, r)
            .map_err(local_error)
    }

    /// Server: ask the client (SPEC §8). Returns the request id.
    #[pyo3(signature = (kind, body=None, invocation=None))]
    fn request(
        &mut self,
        kind: &str,
        body: Option<&Bound<'_, PyAny>>,
        invocation: Option<u16>,
    ) -> PyResult<u16> {
        self.core
            .request(kind, encode_opt(body)?, invocation.map(id))
            .map(|i| i.0)
            .map_err(local_error)
    }

    /// Server: add a tool or replace one of the same name (SPEC §9).
    #[pyo3(signature = (name, description="", input_schema=None, annotations=None))]
    fn add_tool(
        &mut self,
        name: &str,
        description: &str,
        input_schema: Option<&Bound<'_, PyAny>>,
        annotations: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let def = ToolDef {
            op: ToolOp::Add,
            name: Text::from(name),
            description: Text::from(description),
            input_schema: encode_opt(input_schema)?,
            annotations: encode_opt(annotations)?,
        };
        self.core.add_tool(def).map_err(local_error)
    }

    /// Server: remove a tool; whether it existed.
    fn remove_tool(&mut self, name: &str) -> PyResult<bool> {
        self.core.remove_tool(name).map_err(local_error)
    }

    // ───────────── commands: both ─────────────

    /// Interrupt an exchange this side opened (SPEC §7.3).
    #[pyo3(signature = (id, reason=None))]
    fn interrupt(&mut self, id: u16, reason: Option<&str>) -> PyResult<()> {
        self.core
            .interrupt(self::id(id), reason.map(Text::from))
            .map_err(local_error)
    }

    /// Start draining (SPEC §6.5); `timeout_ms` 0 closes at once if anything is in flight.
    #[pyo3(signature = (now, reason=None, timeout_ms=30_000))]
    fn goaway(&mut self, now: f64, reason: Option<&str>, timeout_ms: u64) {
        self.core.goaway(
            instant(now),
            reason.map(Text::from),
            Duration::from_millis(timeout_ms),
        );
    }

    /// Close at once; exchanges in flight end as lost.
    fn close(&mut self) {
        self.core.close(CloseReason::Local);
    }

    /// Client: after `("detached",)`, once a new transport is up (SPEC §11.2).
    fn resume(&mut self, now: f64) -> PyResult<()> {
        self.core.resume(instant(now)).map_err(local_error)
    }

    /// Server: on the detached connection whose token matched a `resume_requested` event.
    fn accept_resume(&mut self, now: f64, received: u64) -> PyResult<()> {
        self.core
            .accept_resume(instant(now), received)
            .map_err(local_error)
    }

    /// Server: refuse the resume this new connection was asked for.
    fn reject_resume(&mut self, now: f64) {
        self.core.reject_resume(instant(now));
    }

    // ───────────── getters ─────────────

    /// `client` or `server`.
    #[getter]
    fn role(&self) -> &'static str {
        match self.core.role() {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// `Handshaking`, `Resuming`, `Open`, `Draining`, `Detached` or `Closed` (SPEC §6.1).
    #[getter]
    fn state(&self) -> &'static str {
        match self.core.state() {
            State::Handshaking => "Handshaking",
            State::Resuming => "Resuming",
            State::Open => "Open",
            State::Draining => "Draining",
            State::Detached => "Detached",
            State::Closed => "Closed",
            _ => "Unknown",
        }
    }

    /// Whether the connection is closed.
    #[getter]
    fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The negotiated session (a dict), once the handshake is done.
    #[getter]
    fn session<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.core
            .session()
            .map(|s| event::session(py, s))
            .transpose()
    }

    /// Server: this session's resume token, if resumable.
    #[getter]
    fn resume_token<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.core.resume_token().map(|t| PyBytes::new(py, t))
    }

    /// Client: the mirrored tool set; server: the registry. A list of dicts.
    #[getter]
    fn tools<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let l = PyList::empty(py);
        for t in self.core.tools() {
            l.append(event::tool_def(py, t, self.raw)?)?;
        }
        Ok(l)
    }

    /// Exchanges in flight.
    #[getter]
    fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Encoded bytes waiting to be sent.
    #[getter]
    fn queued_bytes(&self) -> usize {
        self.core.queued_bytes()
    }

    /// Whether the driver should read more input now (SPEC §13.1): a server stops reading
    /// while its transmit queue is full (the peer does not read what it asked for), so that
    /// the peer meets TCP backpressure instead of a growing queue; always true for a client.
    #[getter]
    fn wants_input(&self) -> bool {
        self.core.wants_input()
    }

    /// The largest chunk `stream` accepts in one call (SPEC §7.5: the client's `max_chunk`,
    /// half its initial window, its frame limit); larger data is split by the caller.
    #[getter]
    fn chunk_cap(&self) -> usize {
        self.core.chunk_cap()
    }

    /// Encoded bytes of sent frames kept for a resume (SPEC §11.1).
    #[getter]
    fn replay_bytes(&self) -> usize {
        self.core.replay_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "<Connection {} {} in_flight={}>",
            self.role(),
            self.state(),
            self.core.in_flight()
        )
    }
}
