//! The relay binding (SPEC §15): how a relay turns ASP invocations into HTTP calls to a
//! *function*, and the function's response back into STREAM, COMPLETE and ERROR. No IO and
//! no clock, written like `asp-proto`: the IO half of this crate (`upstream.rs`, `admin.rs`)
//! sends the requests, reads the bodies and passes the time in; every mapping decision is
//! made here.
//!
//! - [`InvokeRequest`]: headers and body of `POST {upstream}/invoke` (SPEC §15.2).
//! - [`UpstreamCall`]: one response. Feed it with [`UpstreamCall::handle_body`] and
//!   [`UpstreamCall::handle_end`] and drain [`UpstreamCall::poll_output`]: chunks to stream,
//!   then exactly one [`Ending`] (SPEC §15.3); [`UpstreamCall::take_state_update`] says
//!   what the response did to the connection's state (SPEC §15.4).
//! - [`Ending::unreachable`], [`Ending::timed_out`]: failures the adapter detects itself (no
//!   connection, no status line, a body that stalls).
//! - [`parse_push`]: the frames a function pushes through the admin API (SPEC §15.5), and
//!   [`ReplyRequest`], the `POST {upstream}/reply` that delivers a client's answer.
//!
//! The adapter's loop for one invocation is the test `tests::the_adapter_loop`.

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use core::time::Duration;
use rmp::Marker;

use asp_proto::codec::{decode_frame, Decoder};
use asp_proto::error::{ErrorCode, ErrorScope};
use asp_proto::frame::{
    Frame, Invoke, Metrics, RawValue, ReplyStatus, RequestId, Status, Text, ToolDef,
};
use asp_proto::{Instant, RequestOutcome};

use crate::msgpack::Writer;

/// `Content-Type` of a body made of ASP frames (SPEC §15.3, §15.5).
pub const FRAMES_CONTENT_TYPE: &str = "application/vnd.asp.frames";

/// `Accept` of every `/invoke` request (SPEC §15.2).
pub const ACCEPT: &str = "application/vnd.asp.frames, */*";

/// Header names of the relay binding, lower case (HTTP names are case-insensitive).
pub mod header {
    /// The connection id (SPEC §15.2).
    pub const CONNECTION_ID: &str = "x-asp-connection-id";
    /// The invocation's request id, decimal (SPEC §15.2).
    pub const REQUEST_ID: &str = "x-asp-request-id";
    /// The tool name, percent-encoded where needed (SPEC §15.2).
    pub const TOOL: &str = "x-asp-tool";
    /// The connection's new state, base64 (response header or trailer, SPEC §15.4).
    pub const STATE: &str = "x-asp-state";
    /// CPU time in milliseconds, decimals allowed (response header or trailer, SPEC §15.3).
    pub const CPU_TIME: &str = "x-cpu-time";
    /// Input tokens (response header or trailer).
    pub const INPUT_TOKENS: &str = "x-input-tokens";
    /// Output tokens (response header or trailer).
    pub const OUTPUT_TOKENS: &str = "x-output-tokens";
}

/// Encoding of the bodies the relay sends to a function (SPEC §15.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/msgpack` (the default).
    #[default]
    MsgPack,
    /// `application/json`.
    Json,
}

impl BodyFormat {
    /// The `Content-Type` value.
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::MsgPack => "application/msgpack",
            BodyFormat::Json => "application/json",
        }
    }
}

/// The relay's two timeouts towards a function (SPEC §15.3). The adapter runs the timers and
/// reports expiry to the binding, which ends the call with `UPSTREAM_TIMEOUT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From sending the request to the status line. Default 300 s.
    pub upstream: Duration,
    /// Between two reads of the body that find no bytes (time spent waiting for the client's
    /// flow-control window does not count). Default 60 s.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            upstream: Duration::from_secs(300),
            idle: Duration::from_secs(60),
        }
    }
}

/// Which timeout expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// No status line within [`Timeouts::upstream`].
    Head,
    /// No body bytes within [`Timeouts::idle`].
    Body,
}

// ───────────────────────────── §15.2 invoke request ─────────────────────────────

/// `POST {upstream}/invoke` for one INVOKE (SPEC §15.2): headers and body. The adapter adds
/// `Authorization` when it forwards the client's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeRequest {
    /// Header names (lower case) and values, all visible ASCII.
    pub headers: Vec<(&'static str, String)>,
    /// The encoded body.
    pub body: Bytes,
}

impl InvokeRequest {
    /// Encodes the request for `invoke` on connection `connection_id`, carrying `state` if
    /// the connection has one (an empty state is "not set"). Fails, with the ERROR that ends
    /// the invocation, only for JSON when `args` or `meta` cannot be expressed in JSON.
    pub fn new(
        format: BodyFormat,
        connection_id: &str,
        invoke: &Invoke,
        state: Option<&[u8]>,
    ) -> Result<InvokeRequest, Ending> {
        let state = state.filter(|s| !s.is_empty());
        let body = match format {
            BodyFormat::MsgPack => {
                let mut b = BytesMut::with_capacity(
                    96 + connection_id.len()
                        + invoke.tool.len()
                        + invoke.args.as_ref().map_or(1, |a| a.as_bytes().len())
                        + invoke.meta.as_ref().map_or(0, |a| a.as_bytes().len())
                        + state.map_or(0, |s| s.len()),
                );
                let mut w = Writer(&mut b);
                let fields = 4
                    + u32::from(invoke.deadline_ms > 0)
                    + u32::from(invoke.meta.is_some())
                    + u32::from(state.is_some());
                w.map_len(fields);
                w.str(b"connection_id");
                w.str(connection_id.as_bytes());
                w.str(b"request_id");
                w.uint(u64::from(invoke.id.0));
                w.str(b"tool");
                w.str(invoke.tool.as_str().as_bytes());
                w.str(b"args");
                match &invoke.args {
                    Some(a) => w.raw(a.as_bytes()),
                    None => w.raw(&[0xc0]),
                }
                if invoke.deadline_ms > 0 {
                    w.str(b"deadline_ms");
                    w.uint(u64::from(invoke.deadline_ms));
                }
                if let Some(m) = &invoke.meta {
                    w.str(b"meta");
                    w.raw(m.as_bytes());
                }
                if let Some(s) = state {
                    w.str(b"state");
                    w.bin(s);
                }
                b.freeze()
            }
            BodyFormat::Json => {
                let invalid = |what: &str, e: JsonError| Ending::Error {
                    code: ErrorCode::INVALID_ARGUMENTS,
                    message: format!("{what} cannot be sent to the function as JSON: {e}"),
                    retryable: false,
                };
                let mut s = String::with_capacity(128);
                s.push_str("{\"connection_id\":");
                json_string(&mut s, connection_id.as_bytes());
                let _ = write!(s, ",\"request_id\":{}", invoke.id.0);
                s.push_str(",\"tool\":");
                json_string(&mut s, invoke.tool.as_str().as_bytes());
                s.push_str(",\"args\":");
                match &invoke.args {
                    Some(a) => {
                        msgpack_to_json(a.as_bytes(), &mut s).map_err(|e| invalid("args", e))?
                    }
                    None => s.push_str("null"),
                }
                if invoke.deadline_ms > 0 {
                    let _ = write!(s, ",\"deadline_ms\":{}", invoke.deadline_ms);
                }
                if let Some(m) = &invoke.meta {
                    s.push_str(",\"meta\":");
                    msgpack_to_json(m.as_bytes(), &mut s).map_err(|e| invalid("meta", e))?;
                }
                if let Some(st) = state {
                    s.push_str(",\"state\":\"");
                    base64_encode(st, &mut s);
                    s.push('"');
                }
                s.push('}');
                Bytes::from(s)
            }
        };
        let headers = vec![
            ("content-type", format.content_type().to_owned()),
            ("accept", ACCEPT.to_owned()),
            // Hyper (and other servers) send trailers only to clients that ask (RFC 9110
            // §10.1.4); `X-Cpu-Time` of a streamed body is known only at its end. `TE` is a
            // hop-by-hop field, so RFC 9110 §10.1.4 requires naming it in `Connection` too.
            ("te", "trailers".to_owned()),
            ("connection", "te".to_owned()),
            (header::CONNECTION_ID, percent_encode(connection_id)),
            (header::REQUEST_ID, invoke.id.0.to_string()),
            (header::TOOL, percent_encode(invoke.tool.as_str())),
        ];
        Ok(InvokeRequest { headers, body })
    }
}

/// `POST {upstream}/reply`: a client's answer to a pushed REQUEST (SPEC §15.5). The body is
/// `{connection_id, request_id, status, body}` with `status` one of `"answered"`,
/// `"cancelled"`, `"declined"` (the REPLY's), `"error"` (the client refused the request with
/// ERROR; `body` is `{code, message}`) or `"lost"` (the connection closed first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyRequest {
    /// Header names (lower case) and values.
    pub headers: Vec<(&'static str, String)>,
    /// The encoded body.
    pub body: Bytes,
}

impl ReplyRequest {
    /// Encodes the outcome of request `id` on `connection_id`. A body that JSON cannot
    /// express is sent as `null` (the answer is then logged, not lost silently, by the
    /// adapter).
    pub fn new(
        format: BodyFormat,
        connection_id: &str,
        id: RequestId,
        outcome: &RequestOutcome,
    ) -> ReplyRequest {
        let (status, body): (&str, Option<ReplyBody<'_>>) = match outcome {
            RequestOutcome::Reply(r) => (
                match r.status {
                    ReplyStatus::Answered => "answered",
                    ReplyStatus::Cancelled => "cancelled",
                    ReplyStatus::Declined => "declined",
                },
                r.body.as_ref().map(ReplyBody::Value),
            ),
            RequestOutcome::Error(e) => (
                "error",
                Some(ReplyBody::Error(
                    e.code,
                    e.message.as_ref().map_or("", |m| m.as_str()),
                )),
            ),
            _ => ("lost", None),
        };
        let body = match format {
            BodyFormat::MsgPack => {
                let mut b = BytesMut::with_capacity(96);
                let mut w = Writer(&mut b);
                w.map_len(4);
                w.str(b"connection_id");
                w.str(connection_id.as_bytes());
                w.str(b"request_id");
                w.uint(u64::from(id.0));
                w.str(b"status");
                w.str(status.as_bytes());
                w.str(b"body");
                match body {
                    None => w.raw(&[0xc0]),
                    Some(ReplyBody::Value(v)) => w.raw(v.as_bytes()),
                    Some(ReplyBody::Error(code, message)) => {
                        w.map_len(2);
                        w.str(b"code");
                        w.uint(u64::from(code.0));
                        w.str(b"message");
                        w.str(message.as_bytes());
                    }
                }
                b.freeze()
            }
            BodyFormat::Json => {
                let mut s = String::with_capacity(96);
                s.push_str("{\"connection_id\":");
                json_string(&mut s, connection_id.as_bytes());
                let _ = write!(
                    s,
                    ",\"request_id\":{},\"status\":\"{status}\",\"body\":",
                    id.0
                );
                match body {
                    None => s.push_str("null"),
                    Some(ReplyBody::Value(v)) => {
                        let mark = s.len();
                        if msgpack_to_json(v.as_bytes(), &mut s).is_err() {
                            s.truncate(mark);
                            s.push_str("null");
                        }
                    }
                    Some(ReplyBody::Error(code, message)) => {
                        let _ = write!(s, "{{\"code\":{},\"message\":", code.0);
                        json_string(&mut s, message.as_bytes());
                        s.push('}');
                    }
                }
                s.push('}');
                Bytes::from(s)
            }
        };
        ReplyRequest {
            headers: vec![
                ("content-type", format.content_type().to_owned()),
                (header::CONNECTION_ID, percent_encode(connection_id)),
                (header::REQUEST_ID, id.0.to_string()),
            ],
            body,
        }
    }
}

enum ReplyBody<'a> {
    Value(&'a RawValue),
    Error(ErrorCode, &'a str),
}

// ───────────────────────────── §15.3 invoke response ─────────────────────────────

/// How an invocation served by a function ends (SPEC §15.3): the terminal frame to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// COMPLETE.
    Complete {
        /// ok, or what a frames body's COMPLETE said.
        status: Status,
        /// The result (frames body only).
        result: Option<RawValue>,
        /// The relay's `wall_us` and the function's report.
        metrics: Metrics,
    },
    /// ERROR with this code (never a connection-scope code, SPEC §12.1).
    Error {
        /// The code.
        code: ErrorCode,
        /// At most 1024 bytes (SPEC §5.7).
        message: String,
        /// Retrying may help.
        retryable: bool,
    },
}

impl Ending {
    /// The request failed before a status line arrived (connection refused, reset, DNS…):
    /// `UNAVAILABLE`, retryable, since the function never answered (SPEC §15.3).
    pub fn unreachable(detail: &str) -> Ending {
        Ending::error(
            ErrorCode::UNAVAILABLE,
            &format!("function unreachable: {detail}"),
            true,
        )
    }

    /// A timeout expired: `UPSTREAM_TIMEOUT` (SPEC §15.3), retryable only before the status
    /// line: once the function has answered it may have acted, so a retry could act twice.
    pub fn timed_out(phase: TimeoutPhase, after: Duration) -> Ending {
        let (what, retryable) = match phase {
            TimeoutPhase::Head => ("no response from the function", true),
            TimeoutPhase::Body => ("no body bytes from the function", false),
        };
        Ending::error(
            ErrorCode::UPSTREAM_TIMEOUT,
            &format!("{what} within {} ms", after.as_millis()),
            retryable,
        )
    }

    fn error(code: ErrorCode, message: &str, retryable: bool) -> Ending {
        Ending::Error {
            code,
            message: truncate(message, MAX_MESSAGE).to_owned(),
            retryable,
        }
    }
}

/// ERROR `message` limit (SPEC §5.7), also how much of an error body is kept (SPEC §15.3).
const MAX_MESSAGE: usize = 1024;

/// The ERROR for a non-2xx status (SPEC §15.3), without its message.
pub fn status_error(status: u16) -> (ErrorCode, bool) {
    match status {
        404 => (ErrorCode::UNKNOWN_TOOL, false),
        400 | 422 => (ErrorCode::INVALID_ARGUMENTS, false),
        429 | 502 | 503 => (ErrorCode::UNAVAILABLE, true),
        504 => (ErrorCode::UPSTREAM_TIMEOUT, true),
        400..=499 => (ErrorCode::TOOL_FAILED, false),
        500..=599 => (ErrorCode::INTERNAL, true),
        // 1xx are handled by the HTTP client; 3xx (redirects are not followed) and anything
        // else mean a misconfigured upstream, not a tool failure.
        _ => (ErrorCode::UNAVAILABLE, false),
    }
}

/// What the adapter does next, pulled with [`UpstreamCall::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayOut {
    /// Send a STREAM with this data (already cut to the client's `max_chunk`; the core numbers
    /// `seq`, so a frames body's `seq` values are renumbered by construction).
    Chunk {
        /// At most `max_chunk` bytes; empty only when `fin`.
        data: Bytes,
        /// Text (`str`, valid UTF-8) or bytes (`bin`).
        text: bool,
        /// The function marked this the last STREAM.
        fin: bool,
    },
    /// The invocation's terminal frame. Nothing follows it.
    End(Ending),
}

/// What a response did to the connection's state blob (SPEC §15.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateUpdate {
    /// No `X-Asp-State` header or trailer.
    Unchanged,
    /// Replace the state with these bytes.
    Set(Bytes),
    /// An empty `X-Asp-State`: clear the state.
    Clear,
    /// Larger than `max_state`: ignored (log it).
    TooLarge {
        /// Decoded size.
        len: usize,
    },
    /// Not base64: ignored (log it).
    Invalid,
}

/// Limits that shape one call's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Largest STREAM data the client accepts (its `max_chunk`, capped by the adapter's own
    /// policy, e.g. half the initial window). At least 1.
    pub max_chunk: usize,
    /// Largest state blob kept (SPEC §15.4). Default 64 KiB.
    pub max_state: usize,
    /// Largest frame payload accepted in a frames body. Default 1 MiB.
    pub max_frame_payload: u32,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_chunk: 64 << 10,
            max_state: 64 << 10,
            max_frame_payload: 1 << 20,
        }
    }
}

/// The function's own report: metrics from headers, trailers or a COMPLETE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Report {
    cpu_us: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl Report {
    fn from_headers(headers: &[(&str, &[u8])]) -> Report {
        Report {
            cpu_us: find(headers, header::CPU_TIME).and_then(parse_millis),
            input_tokens: find(headers, header::INPUT_TOKENS).and_then(parse_uint),
            output_tokens: find(headers, header::OUTPUT_TOKENS).and_then(parse_uint),
        }
    }

    /// `self` where set, else `other`.
    fn or(self, other: Report) -> Report {
        Report {
            cpu_us: self.cpu_us.or(other.cpu_us),
            input_tokens: self.input_tokens.or(other.input_tokens),
            output_tokens: self.output_tokens.or(other.output_tokens),
        }
    }
}

#[derive(Debug)]
enum Mode {
    /// Non-2xx: keep the first 1024 body bytes for the message.
    Failed { status: u16, message: Vec<u8> },
    /// Any body but frames: stream it as it comes.
    Plain {
        text: bool,
        /// The start of a UTF-8 character cut by a read boundary (≤ 3 bytes).
        carry: Vec<u8>,
    },
    /// `application/vnd.asp.frames`.
    Frames { decoder: Decoder, fin: bool },
    /// The ending was produced.
    Done,
}

/// One function response, from status line to end (SPEC §15.3, §15.4).
///
/// Inputs: [`UpstreamCall::start`] with the head, then [`UpstreamCall::handle_body`] for each
/// piece of body as it is read, then [`UpstreamCall::handle_end`] with the trailers (or
/// [`UpstreamCall::handle_error`] if reading failed). After each input drain
/// [`UpstreamCall::poll_output`]. Once it has returned [`RelayOut::End`] the call is over and
/// further input is ignored: the adapter stops reading the body.
#[derive(Debug)]
pub struct UpstreamCall {
    mode: Mode,
    limits: CallLimits,
    started: Instant,
    headers: Report,
    state: StateUpdate,
    out: VecDeque<RelayOut>,
}

impl UpstreamCall {
    /// A response arrived: `status` and its header fields (names in any case). `started` is
    /// when the relay received the INVOKE (for `wall_us`).
    pub fn start(
        status: u16,
        headers: &[(&str, &[u8])],
        limits: CallLimits,
        started: Instant,
    ) -> UpstreamCall {
        let limits = CallLimits {
            max_chunk: limits.max_chunk.max(1),
            ..limits
        };
        let media = find(headers, "content-type")
            .and_then(|v| core::str::from_utf8(v).ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let mode = if !(200..300).contains(&status) {
            Mode::Failed {
                status,
                message: Vec::new(),
            }
        } else if media == FRAMES_CONTENT_TYPE {
            Mode::Frames {
                decoder: Decoder::new(limits.max_frame_payload),
                fin: false,
            }
        } else {
            Mode::Plain {
                text: is_text(&media),
                carry: Vec::new(),
            }
        };
        UpstreamCall {
            mode,
            limits,
            started,
            headers: Report::from_headers(headers),
            state: state_from(headers, limits.max_state),
            out: VecDeque::new(),
        }
    }

    /// A piece of the body, as read.
    pub fn handle_body(&mut self, data: Bytes, now: Instant) {
        match &mut self.mode {
            Mode::Done => {}
            Mode::Failed { status, message } => {
                let room = MAX_MESSAGE.saturating_sub(message.len());
                message.extend_from_slice(data.get(..room.min(data.len())).unwrap_or(&[]));
                if message.len() >= MAX_MESSAGE {
                    // The message is complete: no need to read the rest.
                    let end = failed_ending(*status, message);
                    self.end(end);
                }
            }
            Mode::Plain { text: false, .. } => {
                push_bin(&mut self.out, data, self.limits.max_chunk, false);
            }
            Mode::Plain { text: true, carry } => {
                let text = utf8_prefix(carry, data);
                push_text(&mut self.out, text, self.limits.max_chunk, false);
            }
            Mode::Frames { decoder, .. } => {
                decoder.feed(data);
                self.drain_frames(now);
            }
        }
    }

    /// The body ended normally, with these trailer fields (empty if none).
    pub fn handle_end(&mut self, trailers: &[(&str, &[u8])], now: Instant) {
        if matches!(self.mode, Mode::Done) {
            return;
        }
        // SPEC §15.3, §15.4: a trailer wins over a header.
        let report = Report::from_headers(trailers).or(self.headers);
        let trailer = state_from(trailers, self.limits.max_state);
        if trailer != StateUpdate::Unchanged {
            self.state = trailer;
        }
        let ending = match &mut self.mode {
            Mode::Done => return,
            Mode::Failed { status, message } => failed_ending(*status, message),
            Mode::Plain { text, carry } => {
                if *text && !carry.is_empty() {
                    // The body ended inside a character: replace it (lossy, like the rest of
                    // the invalid UTF-8 a text body may hold).
                    carry.clear();
                    let max = self.limits.max_chunk;
                    let replacement = Bytes::from_static("\u{FFFD}".as_bytes());
                    push_text(&mut self.out, replacement, max, false);
                }
                Ending::Complete {
                    status: Status::Ok,
                    result: None,
                    metrics: self.metrics(report, Metrics::default(), now),
                }
            }
            Mode::Frames { decoder, .. } => {
                let detail = if decoder.buffered() > 0 {
                    "the function's body ended inside a frame"
                } else {
                    "the function's body ended without COMPLETE or ERROR"
                };
                // SPEC §15.3: the function died mid-stream; it may have acted.
                Ending::error(ErrorCode::UNAVAILABLE, detail, false)
            }
        };
        self.end(ending);
    }

    /// Reading the body failed (connection reset, malformed chunking…). The function had
    /// answered, so it may have acted: `UNAVAILABLE`, not retryable (SPEC §15.3).
    pub fn handle_error(&mut self, detail: &str) {
        if matches!(self.mode, Mode::Done) {
            return;
        }
        let e = Ending::error(
            ErrorCode::UNAVAILABLE,
            &format!("reading the function's response failed: {detail}"),
            false,
        );
        self.end(e);
    }

    /// The next output: chunks in order, then the ending.
    pub fn poll_output(&mut self) -> Option<RelayOut> {
        self.out.pop_front()
    }

    /// Whether the ending has been produced (it may still wait in `poll_output`).
    #[cfg_attr(not(any(test, fuzzing)), allow(dead_code))]
    pub fn is_ended(&self) -> bool {
        matches!(self.mode, Mode::Done)
    }

    /// What this response does to the connection's state (SPEC §15.4), once: the
    /// `X-Asp-State` header after [`UpstreamCall::start`], a trailer after
    /// [`UpstreamCall::handle_end`]; [`StateUpdate::Unchanged`] otherwise. Apply it at once,
    /// whatever the ending.
    pub fn take_state_update(&mut self) -> StateUpdate {
        core::mem::replace(&mut self.state, StateUpdate::Unchanged)
    }

    fn end(&mut self, ending: Ending) {
        self.mode = Mode::Done;
        self.out.push_back(RelayOut::End(ending));
    }

    fn metrics(&self, report: Report, complete: Metrics, now: Instant) -> Metrics {
        Metrics {
            // SPEC §15.3: the relay measures wall time itself.
            wall_us: Some(now.saturating_duration_since(self.started).as_micros() as u64),
            cpu_us: complete.cpu_us.or(report.cpu_us),
            input_tokens: complete.input_tokens.or(report.input_tokens),
            output_tokens: complete.output_tokens.or(report.output_tokens),
        }
    }

    /// Frames of a frames body (SPEC §15.3): STREAM passes, the first COMPLETE or ERROR ends
    /// the call, anything else ends it with an error.
    fn drain_frames(&mut self, now: Instant) {
        loop {
            let Mode::Frames { decoder, fin } = &mut self.mode else {
                return;
            };
            let Some(next) = decoder.next_frame() else {
                return;
            };
            let ending = match next {
                Ok(Frame::Stream(s)) => {
                    if *fin {
                        Ending::error(
                            ErrorCode::BAD_SEQUENCE,
                            "the function sent STREAM after the final one",
                            false,
                        )
                    } else {
                        *fin = s.fin;
                        if s.text {
                            push_text(&mut self.out, s.data, self.limits.max_chunk, s.fin);
                        } else {
                            push_bin(&mut self.out, s.data, self.limits.max_chunk, s.fin);
                        }
                        continue;
                    }
                }
                Ok(Frame::Complete(c)) => Ending::Complete {
                    status: c.status,
                    result: c.result,
                    metrics: self.metrics(self.headers, c.metrics, now),
                },
                Ok(Frame::Error(e)) => {
                    let message = e.message.as_ref().map_or("", |m| m.as_str());
                    // A connection-scope code would close the client's whole connection
                    // (SPEC §12.1): one function's failure must not.
                    if e.code.scope() == ErrorScope::Connection {
                        Ending::error(
                            ErrorCode::INTERNAL,
                            &format!("the function sent connection error {}: {message}", e.code),
                            false,
                        )
                    } else {
                        Ending::error(e.code, message, e.retryable)
                    }
                }
                Ok(other) => Ending::error(
                    ErrorCode::INTERNAL,
                    &format!(
                        "the function sent {}; only STREAM, COMPLETE and ERROR are allowed",
                        other.frame_type().name()
                    ),
                    false,
                ),
                Err(e) => {
                    let code = if e.code().scope() == ErrorScope::Frame {
                        e.code()
                    } else {
                        ErrorCode::INTERNAL
                    };
                    Ending::error(code, &format!("the function sent a bad frame: {e}"), false)
                }
            };
            self.end(ending);
            return;
        }
    }
}

/// Whether a plain body of this media type (lower case, without parameters) streams as text
/// (SPEC §15.3): `text/*` and the JSON family, which is UTF-8 by definition (RFC 8259 §8.1):
/// `application/json`, any `application/*+json` (RFC 6839 §3.1) and newline-delimited JSON.
/// A `charset` parameter is not consulted: text is read as UTF-8.
fn is_text(media: &str) -> bool {
    media.starts_with("text/")
        || media == "application/json"
        || media == "application/x-ndjson"
        || media == "application/ndjson"
        || (media.starts_with("application/") && media.ends_with("+json"))
}

/// The ERROR for a non-2xx status (SPEC §15.3). `body` holds at most the first 1024 bytes of
/// the body; when it is full, a character cut at byte 1024 is left out (not replaced), so the
/// message is the longest whole-character prefix. Other invalid UTF-8 becomes U+FFFD, then
/// surrounding whitespace is trimmed and the text cut on a character boundary to 1024 bytes.
fn failed_ending(status: u16, body: &[u8]) -> Ending {
    let (code, retryable) = status_error(status);
    let body = if body.len() >= MAX_MESSAGE {
        without_cut_character(body)
    } else {
        body
    };
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("the function answered HTTP {status}")
    } else {
        text.to_owned()
    };
    Ending::error(code, &message, retryable)
}

/// `b` without an incomplete UTF-8 sequence at its end (a character cut by a length limit).
fn without_cut_character(b: &[u8]) -> &[u8] {
    let tail = b.len().saturating_sub(3);
    for start in (tail..b.len()).rev() {
        if is_char_start(b.get(start).copied()) {
            let rest = b.get(start..).unwrap_or(&[]);
            return match core::str::from_utf8(rest) {
                Err(e) if e.error_len().is_none() => b.get(..start).unwrap_or(b),
                _ => b,
            };
        }
    }
    b
}

/// `carry` + `data`, as the longest valid UTF-8 prefix (invalid sequences replaced by
/// U+FFFD); an incomplete character at the end stays in `carry` for the next read.
fn utf8_prefix(carry: &mut Vec<u8>, data: Bytes) -> Bytes {
    let joined = if carry.is_empty() {
        data
    } else {
        let mut j = core::mem::take(carry);
        j.extend_from_slice(&data);
        Bytes::from(j)
    };
    match core::str::from_utf8(&joined) {
        Ok(_) => joined,
        Err(e) if e.error_len().is_none() => {
            let cut = e.valid_up_to();
            carry.extend_from_slice(joined.get(cut..).unwrap_or(&[]));
            joined.slice(..cut)
        }
        Err(_) => {
            // Invalid bytes inside: rebuild lossily, keeping an incomplete tail.
            let mut s = String::with_capacity(joined.len() + 8);
            let mut rest: &[u8] = &joined;
            loop {
                match core::str::from_utf8(rest) {
                    Ok(v) => {
                        s.push_str(v);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        s.push_str(core::str::from_utf8(good).unwrap_or(""));
                        match e.error_len() {
                            Some(n) => {
                                s.push('\u{FFFD}');
                                rest = bad.get(n..).unwrap_or(&[]);
                            }
                            None => {
                                carry.extend_from_slice(bad);
                                break;
                            }
                        }
                    }
                }
            }
            Bytes::from(s)
        }
    }
}

/// Cuts one chunk of output into STREAM-sized pieces of at most `max_chunk` bytes (text on
/// character boundaries), `fin` on the last: for chunks that do not come from an
/// [`UpstreamCall`], such as pushed STREAM frames (SPEC §15.5). `data` must be UTF-8 if
/// `text`.
pub fn cut_chunks(data: Bytes, text: bool, fin: bool, max_chunk: usize) -> Vec<RelayOut> {
    let mut out = VecDeque::new();
    if text {
        push_text(&mut out, data, max_chunk.max(1), fin);
    } else {
        push_bin(&mut out, data, max_chunk.max(1), fin);
    }
    out.into()
}

/// Cuts valid UTF-8 into chunks of at most `max` bytes on character boundaries.
fn push_text(out: &mut VecDeque<RelayOut>, mut data: Bytes, max: usize, fin: bool) {
    if data.is_empty() {
        if fin {
            out.push_back(RelayOut::Chunk {
                data,
                text: true,
                fin,
            });
        }
        return;
    }
    while !data.is_empty() {
        let mut cut = data.len().min(max);
        while cut > 0 && cut < data.len() && !is_char_start(data.get(cut).copied()) {
            cut -= 1;
        }
        if cut == 0 {
            // One character longer than `max` (a client with `max_chunk` < 4): send its
            // bytes as `bin`, the only way to stay within the limit.
            let mut len = 1;
            while len < data.len() && !is_char_start(data.get(len).copied()) {
                len += 1;
            }
            let ch = data.split_to(len);
            push_bin(out, ch, max, fin && data.is_empty());
            continue;
        }
        let piece = data.split_to(cut);
        out.push_back(RelayOut::Chunk {
            data: piece,
            text: true,
            fin: fin && data.is_empty(),
        });
    }
}

fn is_char_start(b: Option<u8>) -> bool {
    b.is_none_or(|b| (b as i8) >= -0x40)
}

fn push_bin(out: &mut VecDeque<RelayOut>, mut data: Bytes, max: usize, fin: bool) {
    if data.is_empty() {
        if fin {
            out.push_back(RelayOut::Chunk {
                data,
                text: false,
                fin,
            });
        }
        return;
    }
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(max));
        out.push_back(RelayOut::Chunk {
            data: piece,
            text: false,
            fin: fin && data.is_empty(),
        });
    }
}

/// The first header field named `name` (ASCII case-insensitive).
fn find<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn state_from(headers: &[(&str, &[u8])], max_state: usize) -> StateUpdate {
    let Some(v) = find(headers, header::STATE) else {
        return StateUpdate::Unchanged;
    };
    let v = v.trim_ascii();
    if v.is_empty() {
        return StateUpdate::Clear;
    }
    match base64_decode(v) {
        Some(b) if b.len() > max_state => StateUpdate::TooLarge { len: b.len() },
        Some(b) => StateUpdate::Set(Bytes::from(b)),
        None => StateUpdate::Invalid,
    }
}

/// `X-Cpu-Time` (SPEC §15.3): milliseconds as an unsigned decimal number, with optional
/// fraction and exponent (`"12"`, `"0.25"`, `".5"`, `"3."`, `"1e3"`, `"2.5E-1"`: the JSON
/// number syntax without a sign, plus a bare leading or trailing point, so Python's
/// `str(float)` and JavaScript's `String(number)` are read as written) → µs, rounded to the
/// nearest µs, halves up. Computed in decimal, so `"0.0015"` is exactly 1.5 µs → 2. `None`
/// for anything else (a sign, `inf`, hex, …) or a value over 2⁶⁴−1 µs.
pub fn parse_millis(v: &[u8]) -> Option<u64> {
    let v = core::str::from_utf8(v).ok()?.trim();
    let (mantissa, exp) = match v.find(['e', 'E']) {
        Some(i) => {
            let e = v.get(i + 1..)?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (v.get(..i)?, e.parse::<i32>().ok()?)
        }
        None => (v, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // value = digits × 10^scale µs, where digits are the mantissa's without the point.
    let digits = int.bytes().chain(frac.bytes()).skip_while(|b| *b == b'0');
    let mut n: u128 = 0;
    // Significant digits beyond ~30 are dropped (value rounded down there), and counted.
    let mut dropped = 0i32;
    for d in digits {
        if dropped == 0 && n < 1 << 96 {
            n = n * 10 + u128::from(d - b'0');
        } else {
            dropped += 1;
        }
    }
    let scale = exp + 3 - i32::try_from(frac.len()).ok()? + dropped;
    let us = if n == 0 {
        0
    } else if scale >= 0 {
        n.checked_mul(10u128.checked_pow(scale.unsigned_abs())?)?
    } else {
        match 10u128.checked_pow(scale.unsigned_abs()) {
            Some(div) => (n + div / 2) / div,
            None => 0, // below half a µs
        }
    };
    u64::try_from(us).ok()
}

/// `X-Input-Tokens`, `X-Output-Tokens`: ASCII digits only (no sign), at most 2⁶⁴−1.
fn parse_uint(v: &[u8]) -> Option<u64> {
    let v = core::str::from_utf8(v).ok()?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.get(..cut).unwrap_or("")
}

/// Percent-encodes bytes that may not appear in a header value as is (controls, space,
/// `%`, DEL and non-ASCII), so any tool name fits in `X-Asp-Tool`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ───────────────────────────── §15.5 push API ─────────────────────────────

/// One frame pushed through the admin API (SPEC §15.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushFrame {
    /// TOOL_DEF for this connection.
    ToolDef(ToolDef),
    /// STREAM for the invocation `id`, in flight; its `seq` is renumbered.
    Stream {
        /// The invocation.
        id: RequestId,
        /// The chunk (the adapter cuts it to the client's `max_chunk`).
        data: Bytes,
        /// Text or bytes.
        text: bool,
        /// Last STREAM of the invocation.
        fin: bool,
    },
    /// REQUEST; the relay allocates its id.
    Request {
        /// What is asked.
        kind: Text,
        /// The question.
        body: Option<RawValue>,
        /// The invocation it belongs to.
        invocation: Option<RequestId>,
    },
}

/// Why a push body was refused (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushError {
    /// Index of the offending frame in the body.
    pub index: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a push body: whole ASP frames, back to back (SPEC §15.5). Only TOOL_DEF, STREAM and
/// REQUEST are allowed; each must pass SPEC §3.7 with `max_payload` as the limit (ids valid
/// for their type, §3.5; a REQUEST's id is then ignored). All or nothing: an empty body or
/// any bad frame refuses the whole body.
pub fn parse_push(body: Bytes, max_payload: u32) -> Result<Vec<PushFrame>, PushError> {
    let mut buf = body;
    let mut frames = Vec::new();
    while let Some(next) = decode_frame(&mut buf, max_payload) {
        let index = frames.len();
        let bad = |message: String| PushError { index, message };
        match next {
            Ok(Frame::ToolDef(d)) => frames.push(PushFrame::ToolDef(d)),
            Ok(Frame::Stream(s)) => frames.push(PushFrame::Stream {
                id: s.id,
                data: s.data,
                text: s.text,
                fin: s.fin,
            }),
            Ok(Frame::Request(r)) => frames.push(PushFrame::Request {
                kind: r.kind,
                body: r.body,
                invocation: r.invocation,
            }),
            Ok(other) => {
                return Err(bad(format!(
                    "{} cannot be pushed; only TOOL_DEF, STREAM and REQUEST",
                    other.frame_type().name()
                )))
            }
            Err(e) => return Err(bad(format!("{e}"))),
        }
    }
    if frames.is_empty() {
        return Err(PushError {
            index: 0,
            message: "no frames in the body".into(),
        });
    }
    Ok(frames)
}

// ───────────────────────────── base64 and JSON ─────────────────────────────

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), appended to `out`.
pub fn base64_encode(data: &[u8], out: &mut String) {
    let sym = |i: u32| char::from(B64.get((i & 63) as usize).copied().unwrap_or(b'A'));
    for c in data.chunks(3) {
        let b = |i: usize| u32::from(c.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if c.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if c.len() > 2 { sym(n) } else { '=' });
    }
}

/// Decodes base64 in the standard alphabet (RFC 4648 §4) or the URL-safe one (§5: `-` and `_`
/// for `+` and `/`; the two never clash, so a value is read whichever it uses); padding
/// optional (SPEC §15.4). `None` if malformed.
pub fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let s = match s {
        [rest @ .., b'=', b'='] | [rest @ .., b'='] => rest,
        _ => s,
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    for c in s.chunks(4) {
        let mut n = 0u32;
        for (i, b) in c.iter().enumerate() {
            n |= val(*b)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if c.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if c.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Why a MessagePack value has no JSON form (SPEC §15.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// An ext value.
    Ext,
    /// More than [`MAX_JSON_DEPTH`] arrays and maps nested in one another.
    TooDeep,
    /// Two keys of one map that are the same JSON name once converted (`1` and `"1"`).
    DuplicateKey,
    /// Not well-formed MessagePack.
    Malformed,
}

impl core::fmt::Display for JsonError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JsonError::Ext => "it holds a MessagePack ext value",
            JsonError::TooDeep => "it nests more than 126 arrays and maps",
            JsonError::DuplicateKey => "a map has two keys that are the same JSON name",
            JsonError::Malformed => "it is not well-formed MessagePack",
        })
    }
}

/// Most arrays and maps nested in one another in a value converted to JSON (SPEC §15.2),
/// map keys included: `[[1]]` nests 2. A JSON body puts the value one level down (`"args"`
/// in the body object), so the deepest body nests 127, the most serde_json accepts by
/// default (its limit rejects 128; Python's and JavaScript's parsers accept more).
pub const MAX_JSON_DEPTH: usize = 126;

/// Converts one MessagePack value to JSON text (SPEC §15.2): `bin` becomes a base64 string,
/// a map key that is a string or `bin` becomes that string, any other key the text of its
/// JSON value (`1` → `"1"`, `[1]` → `"[1]"`), a float that is not finite becomes `null`, a
/// `str` that is not UTF-8 is repaired with U+FFFD. Refused: ext values, nesting deeper than
/// [`MAX_JSON_DEPTH`], and a map whose keys give one JSON name twice (JSON parsers would keep
/// one silently, RFC 8259 §4). Bytes after the value are an error.
pub fn msgpack_to_json(value: &[u8], out: &mut String) -> Result<(), JsonError> {
    let mut c = Cursor { b: value, pos: 0 };
    json_value(&mut c, out, 0)?;
    if c.pos != value.len() {
        return Err(JsonError::Malformed);
    }
    Ok(())
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], JsonError> {
        let end = self.pos.checked_add(n).ok_or(JsonError::Malformed)?;
        let s = self.b.get(self.pos..end).ok_or(JsonError::Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, JsonError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, JsonError> {
        usize::try_from(self.be(n)?).map_err(|_| JsonError::Malformed)
    }
}

fn json_value(c: &mut Cursor<'_>, out: &mut String, depth: usize) -> Result<(), JsonError> {
    let m = Marker::from_u8(c.take(1)?.first().copied().ok_or(JsonError::Malformed)?);
    match m {
        Marker::Null => out.push_str("null"),
        Marker::True => out.push_str("true"),
        Marker::False => out.push_str("false"),
        Marker::FixPos(n) => {
            let _ = write!(out, "{n}");
        }
        Marker::FixNeg(n) => {
            let _ = write!(out, "{n}");
        }
        Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
            let n = match m {
                Marker::U8 => 1,
                Marker::U16 => 2,
                Marker::U32 => 4,
                _ => 8,
            };
            let _ = write!(out, "{}", c.be(n)?);
        }
        Marker::I8 => {
            let _ = write!(out, "{}", c.be(1)? as u8 as i8);
        }
        Marker::I16 => {
            let _ = write!(out, "{}", c.be(2)? as u16 as i16);
        }
        Marker::I32 => {
            let _ = write!(out, "{}", c.be(4)? as u32 as i32);
        }
        Marker::I64 => {
            let _ = write!(out, "{}", c.be(8)? as i64);
        }
        Marker::F32 => json_float(out, f64::from(f32::from_bits(c.be(4)? as u32))),
        Marker::F64 => json_float(out, f64::from_bits(c.be(8)?)),
        Marker::FixStr(n) => json_string(out, c.take(usize::from(n))?),
        Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let n = c.len(width(m))?;
            json_string(out, c.take(n)?);
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            let n = c.len(width(m))?;
            out.push('"');
            base64_encode(c.take(n)?, out);
            out.push('"');
        }
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let n = match m {
                Marker::FixArray(n) => usize::from(n),
                _ => c.len(width(m))?,
            };
            if depth >= MAX_JSON_DEPTH {
                return Err(JsonError::TooDeep);
            }
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                json_value(c, out, depth + 1)?;
            }
            out.push(']');
        }
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let n = match m {
                Marker::FixMap(n) => usize::from(n),
                _ => c.len(width(m))?,
            };
            if depth >= MAX_JSON_DEPTH {
                return Err(JsonError::TooDeep);
            }
            out.push('{');
            // The keys as written (JSON string literals): equal literals are equal names,
            // since a name has one literal here. Bounded by the input's size.
            let mut names = std::collections::BTreeSet::new();
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let start = out.len();
                json_key(c, out, depth + 1)?;
                if n > 1 && !names.insert(out.get(start..).unwrap_or("").to_owned()) {
                    return Err(JsonError::DuplicateKey);
                }
                out.push(':');
                json_value(c, out, depth + 1)?;
            }
            out.push('}');
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => return Err(JsonError::Ext),
        Marker::Reserved => return Err(JsonError::Malformed),
    }
    Ok(())
}

/// A map key: a string as itself, `bin` as its base64 string (as a value), anything else
/// as its JSON text, quoted.
fn json_key(c: &mut Cursor<'_>, out: &mut String, depth: usize) -> Result<(), JsonError> {
    let first = c.b.get(c.pos).copied().ok_or(JsonError::Malformed)?;
    if matches!(
        Marker::from_u8(first),
        Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32
    ) {
        return json_value(c, out, depth);
    }
    let mut key = String::new();
    json_value(c, &mut key, depth)?;
    json_string(out, key.as_bytes());
    Ok(())
}

fn width(m: Marker) -> usize {
    match m {
        Marker::Str8 | Marker::Bin8 => 1,
        Marker::Str16 | Marker::Bin16 | Marker::Array16 | Marker::Map16 => 2,
        _ => 4,
    }
}

fn json_float(out: &mut String, f: f64) {
    if f.is_finite() {
        // `{:?}` is the shortest round-trip form and valid JSON (`1.0`, `1e300`, `-0.5`).
        let _ = write!(out, "{f:?}");
    } else {
        out.push_str("null");
    }
}

/// A JSON string literal of `s` (lossy UTF-8).
fn json_string(out: &mut String, s: &[u8]) {
    out.push('"');
    for ch in String::from_utf8_lossy(s).chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use asp_proto::codec::encode;
    use asp_proto::frame::{Complete, ErrorFrame, Reply, Request, Stream, ToolOp};

    fn invoke(args: Option<&[u8]>) -> Invoke {
        Invoke {
            id: RequestId(7),
            tool: "echo".into(),
            args: args.map(|a| RawValue::new(Bytes::copy_from_slice(a)).unwrap()),
            deadline_ms: 0,
            meta: None,
        }
    }

    fn drain(call: &mut UpstreamCall) -> Vec<RelayOut> {
        core::iter::from_fn(|| call.poll_output()).collect()
    }

    fn frames(fs: &[Frame]) -> Bytes {
        let mut b = BytesMut::new();
        for f in fs {
            encode(f, &mut b);
        }
        b.freeze()
    }

    fn text(s: &str) -> RelayOut {
        RelayOut::Chunk {
            data: Bytes::copy_from_slice(s.as_bytes()),
            text: true,
            fin: false,
        }
    }

    const T0: Instant = Instant::ZERO;

    // ── §15.2 ──

    #[test]
    fn msgpack_body_has_the_string_keyed_fields() {
        let mut inv = invoke(Some(&[0x81, 0xa1, b't', 0xa2, b'h', b'i']));
        inv.deadline_ms = 500;
        inv.meta = Some(RawValue::string("m"));
        let r = InvokeRequest::new(BodyFormat::MsgPack, "c1", &inv, Some(b"\x01\x02")).unwrap();
        let mut expected = vec![0x87];
        for (k, v) in [
            (&b"connection_id"[..], &b"\xa2c1"[..]),
            (b"request_id", b"\x07"),
            (b"tool", b"\xa4echo"),
            (b"args", b"\x81\xa1t\xa2hi"),
            (b"deadline_ms", b"\xcd\x01\xf4"),
            (b"meta", b"\xa1m"),
            (b"state", b"\xc4\x02\x01\x02"),
        ] {
            expected.push(0xa0 | k.len() as u8);
            expected.extend_from_slice(k);
            expected.extend_from_slice(v);
        }
        assert_eq!(&r.body[..], &expected[..]);
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-type"), Some("application/msgpack"));
        assert_eq!(h("accept"), Some(ACCEPT));
        assert_eq!(h("te"), Some("trailers"));
        assert_eq!(h("connection"), Some("te"), "RFC 9110 §10.1.4");
        assert_eq!(h("x-asp-connection-id"), Some("c1"));
        assert_eq!(h("x-asp-request-id"), Some("7"));
        assert_eq!(h("x-asp-tool"), Some("echo"));
    }

    #[test]
    fn msgpack_body_without_optional_fields() {
        let r = InvokeRequest::new(BodyFormat::MsgPack, "c", &invoke(None), Some(b"")).unwrap();
        assert_eq!(
            r.body[0], 0x84,
            "empty state and no deadline/meta are left out"
        );
        assert!(r.body.ends_with(b"\xa4args\xc0"));
    }

    #[test]
    fn json_body_converts_values() {
        // {"t": "hi", 1: bin[0xff], "f": 1.5, "n": -3, "a": [nil, true]}
        let args = b"\x85\xa1t\xa2hi\x01\xc4\x01\xff\xa1f\xcb\x3f\xf8\0\0\0\0\0\0\xa1n\xfd\xa1a\x92\xc0\xc3";
        let mut inv = invoke(Some(args));
        inv.deadline_ms = 9;
        let r = InvokeRequest::new(BodyFormat::Json, "c\"1", &inv, Some(&[1, 2, 3, 4])).unwrap();
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"connection_id":"c\"1","request_id":7,"tool":"echo","args":{"t":"hi","1":"/w==","f":1.5,"n":-3,"a":[null,true]},"deadline_ms":9,"state":"AQIDBA=="}"#
        );
        assert_eq!(r.headers[0].1, "application/json");
        assert_eq!(
            r.headers
                .iter()
                .find(|(k, _)| *k == header::CONNECTION_ID)
                .unwrap()
                .1,
            "c\"1"
        );
    }

    #[test]
    fn json_refuses_ext_and_deep_values() {
        let e = InvokeRequest::new(BodyFormat::Json, "c", &invoke(Some(b"\xd4\x01\x02")), None);
        assert!(matches!(
            e,
            Err(Ending::Error {
                code: ErrorCode::INVALID_ARGUMENTS,
                ..
            })
        ));
        let mut deep = vec![0x91u8; 200];
        deep.push(0xc0);
        let mut s = String::new();
        assert_eq!(msgpack_to_json(&deep, &mut s), Err(JsonError::TooDeep));
        // The boundary: MAX_JSON_DEPTH (126) nested arrays pass, one more does not.
        let mut ok = vec![0x91u8; MAX_JSON_DEPTH];
        ok.push(0xc0);
        s.clear();
        msgpack_to_json(&ok, &mut s).unwrap();
        assert!(s.starts_with("[[[") && s.contains("null"));
        let mut over = vec![0x91u8; MAX_JSON_DEPTH + 1];
        over.push(0xc0);
        assert_eq!(msgpack_to_json(&over, &mut s), Err(JsonError::TooDeep));
        // Maps count too, and a key that is a map nests one more.
        let mut maps = vec![];
        for _ in 0..MAX_JSON_DEPTH - 1 {
            maps.extend_from_slice(b"\x81\xa1k");
        }
        maps.extend_from_slice(b"\x81\x81\x01\x02\x03"); // {{1: 2}: 3} at the last level
        assert_eq!(msgpack_to_json(&maps, &mut s), Err(JsonError::TooDeep));
        // Non-finite floats, control characters, nested map keys, truncation.
        s.clear();
        msgpack_to_json(b"\x92\xcb\x7f\xf8\0\0\0\0\0\0\xa2\x01\n", &mut s).unwrap();
        assert_eq!(s, r#"[null,"\u0001\n"]"#);
        s.clear();
        msgpack_to_json(b"\x81\x81\x01\x02\x03", &mut s).unwrap();
        assert_eq!(s, r#"{"{\"1\":2}":3}"#);
        // A bin key is its base64 string, as a bin value is (not that string's JSON text).
        s.clear();
        msgpack_to_json(b"\x82\xc4\x01\x01\x01\xc0\x02", &mut s).unwrap();
        assert_eq!(s, r#"{"AQ==":1,"null":2}"#);
        // Keys that convert to one JSON name are refused, whatever their MessagePack types.
        for dup in [
            &b"\x82\x01\x01\xa11\x02"[..],       // {1: 1, "1": 2}
            b"\x82\xa1a\x01\xa1a\x02",           // {"a": 1, "a": 2}
            b"\x82\xc4\x01\x01\x01\xa4AQ==\x02", // {bin[1]: 1, "AQ==": 2}
            b"\x82\xc0\x01\xa4null\x02",         // {nil: 1, "null": 2}
        ] {
            assert_eq!(
                msgpack_to_json(dup, &mut s),
                Err(JsonError::DuplicateKey),
                "{dup:?}"
            );
        }
        s.clear();
        msgpack_to_json(b"\x82\x01\x01\xa2\x311\x02", &mut s).unwrap();
        assert_eq!(s, r#"{"1":1,"11":2}"#);
        assert_eq!(
            msgpack_to_json(b"\x92\x01", &mut s),
            Err(JsonError::Malformed)
        );
        assert_eq!(
            msgpack_to_json(b"\x01\x02", &mut s),
            Err(JsonError::Malformed)
        );
    }

    #[test]
    fn tool_names_are_percent_encoded_in_the_header() {
        assert_eq!(percent_encode("a b%é\n"), "a%20b%25%C3%A9%0A");
        assert_eq!(percent_encode("read_file"), "read_file");
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..20 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            let mut s = String::new();
            base64_encode(&data, &mut s);
            assert_eq!(base64_decode(s.as_bytes()).unwrap(), data);
            assert_eq!(
                base64_decode(s.trim_end_matches('=').as_bytes()).unwrap(),
                data
            );
        }
        let mut s = String::new();
        base64_encode(b"hello", &mut s);
        assert_eq!(s, "aGVsbG8=");
        assert_eq!(base64_decode(b"a"), None);
        assert_eq!(base64_decode(b"aGV*"), None);
        // The URL-safe alphabet (RFC 4648 §5) too, padded or not.
        assert_eq!(base64_decode(b"-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode(b"-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode(b"+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode(b"aGV sbG8="), None, "no whitespace inside");
    }

    // ── §15.3 ──

    #[test]
    fn status_mapping() {
        let cases = [
            (404, ErrorCode::UNKNOWN_TOOL, false),
            (400, ErrorCode::INVALID_ARGUMENTS, false),
            (422, ErrorCode::INVALID_ARGUMENTS, false),
            (429, ErrorCode::UNAVAILABLE, true),
            (502, ErrorCode::UNAVAILABLE, true),
            (503, ErrorCode::UNAVAILABLE, true),
            (504, ErrorCode::UPSTREAM_TIMEOUT, true),
            (403, ErrorCode::TOOL_FAILED, false),
            (500, ErrorCode::INTERNAL, true),
            (301, ErrorCode::UNAVAILABLE, false),
        ];
        for (status, code, retryable) in cases {
            assert_eq!(status_error(status), (code, retryable), "{status}");
        }
    }

    #[test]
    fn error_status_takes_the_first_1024_body_bytes() {
        let mut call = UpstreamCall::start(500, &[], CallLimits::default(), T0);
        call.handle_body(Bytes::from(vec![b'x'; 1000]), T0);
        assert!(drain(&mut call).is_empty());
        call.handle_body(Bytes::from(vec![b'y'; 1000]), T0);
        let out = drain(&mut call);
        let [RelayOut::End(Ending::Error {
            code,
            message,
            retryable,
        })] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!((*code, *retryable), (ErrorCode::INTERNAL, true));
        assert_eq!(message.len(), 1024);
        assert!(message.ends_with("yyyy"));
        assert!(call.is_ended());
        call.handle_end(&[], T0);
        assert!(drain(&mut call).is_empty(), "nothing after the ending");

        let mut call = UpstreamCall::start(404, &[], CallLimits::default(), T0);
        call.handle_end(&[], T0);
        assert_eq!(
            drain(&mut call),
            vec![RelayOut::End(Ending::Error {
                code: ErrorCode::UNKNOWN_TOOL,
                message: "the function answered HTTP 404".into(),
                retryable: false
            })]
        );
    }

    #[test]
    fn error_message_is_the_whole_characters_of_the_first_1024_bytes() {
        let message = |body: &[u8]| {
            let mut call = UpstreamCall::start(500, &[], CallLimits::default(), T0);
            call.handle_body(Bytes::copy_from_slice(body), T0);
            call.handle_end(&[], T0);
            match drain(&mut call).pop() {
                Some(RelayOut::End(Ending::Error { message, .. })) => message,
                o => panic!("{o:?}"),
            }
        };
        // "€" (3 bytes) crosses byte 1024: it is left out, not replaced.
        let mut body = vec![b'a'; 1023];
        body.extend_from_slice("€tail".as_bytes());
        assert_eq!(message(&body), "a".repeat(1023));
        // Exactly at the boundary it is kept.
        let mut body = vec![b'a'; 1021];
        body.extend_from_slice("€tail".as_bytes());
        assert_eq!(message(&body), format!("{}€", "a".repeat(1021)));
        // Invalid bytes inside become U+FFFD (3 bytes each); the result is cut to 1024
        // bytes on a character boundary.
        let mut body = vec![b'b'; 1020];
        body.extend_from_slice(&[0xff, 0xfe]);
        let m = message(&body);
        assert_eq!(m, format!("{}\u{FFFD}", "b".repeat(1020)));
        assert_eq!(m.len(), 1023);
        // Surrounding whitespace is trimmed; a short body's cut character is invalid UTF-8.
        assert_eq!(message(b"  no \r\n"), "no");
        assert_eq!(message(b"x\xe2\x82"), "x\u{FFFD}");
    }

    #[test]
    fn text_media_types() {
        for t in [
            "text/plain",
            "text/event-stream",
            "application/json",
            "application/problem+json",
            "application/vnd.api+json",
            "application/x-ndjson",
            "application/ndjson",
        ] {
            assert!(is_text(t), "{t}");
        }
        for b in [
            "application/octet-stream",
            "application/jsonl",
            "application/xml",
            "image/svg+json",
            "application/json-seq",
            "",
        ] {
            assert!(!is_text(b), "{b}");
        }
        // Case and parameters do not matter.
        let mut call = UpstreamCall::start(
            200,
            &[("Content-Type", b"Application/Problem+JSON; charset=utf-8")],
            CallLimits::default(),
            T0,
        );
        call.handle_body("{}".into(), T0);
        assert_eq!(drain(&mut call), vec![text("{}")]);
        let mut call = UpstreamCall::start(
            200,
            &[("content-type", b"APPLICATION/VND.ASP.FRAMES ; v=1")],
            CallLimits::default(),
            T0,
        );
        call.handle_end(&[], T0);
        assert!(matches!(
            drain(&mut call).pop(),
            Some(RelayOut::End(Ending::Error {
                code: ErrorCode::UNAVAILABLE,
                ..
            }))
        ));
    }

    #[test]
    fn plain_text_streams_and_completes_with_metrics() {
        let head = [
            ("Content-Type", &b"text/plain; charset=utf-8"[..]),
            ("X-Cpu-Time", b"12.5"),
            ("X-Input-Tokens", b"3"),
        ];
        let mut call =
            UpstreamCall::start(200, &head, CallLimits::default(), Instant::from_millis(10));
        call.handle_body("Hel".into(), T0);
        call.handle_body("lo".into(), T0);
        call.handle_end(
            &[("x-output-tokens", b"2"), ("x-cpu-time", b"20")],
            Instant::from_millis(35),
        );
        assert_eq!(
            drain(&mut call),
            vec![
                text("Hel"),
                text("lo"),
                RelayOut::End(Ending::Complete {
                    status: Status::Ok,
                    result: None,
                    metrics: Metrics {
                        wall_us: Some(25_000),
                        cpu_us: Some(20_000), // the trailer wins
                        input_tokens: Some(3),
                        output_tokens: Some(2),
                    }
                })
            ]
        );
    }

    #[test]
    fn text_cut_inside_a_character_is_carried() {
        let head = [("content-type", &b"application/json"[..])];
        let mut call = UpstreamCall::start(200, &head, CallLimits::default(), T0);
        let euro = "€".as_bytes(); // e2 82 ac
        call.handle_body(Bytes::from(vec![b'a', euro[0]]), T0);
        call.handle_body(Bytes::copy_from_slice(&euro[1..2]), T0);
        call.handle_body(Bytes::from(vec![euro[2], b'b', 0xff, b'c', euro[0]]), T0);
        call.handle_end(&[], T0);
        let out = drain(&mut call);
        assert_eq!(out[0], text("a"));
        assert_eq!(out[1], text("€b\u{FFFD}c"));
        assert_eq!(
            out[2],
            text("\u{FFFD}"),
            "a character cut by the end of the body"
        );
        assert!(matches!(out[3], RelayOut::End(Ending::Complete { .. })));
    }

    #[test]
    fn chunks_respect_max_chunk() {
        let limits = CallLimits {
            max_chunk: 4,
            ..CallLimits::default()
        };
        let mut call = UpstreamCall::start(200, &[("content-type", b"text/plain")], limits, T0);
        call.handle_body("ab€€x".into(), T0); // 2 + 3 + 3 + 1 bytes
        let out = drain(&mut call);
        assert_eq!(out, vec![text("ab"), text("€"), text("€x")]);

        let mut call = UpstreamCall::start(200, &[], limits, T0);
        call.handle_body(Bytes::from_static(b"0123456789"), T0);
        let lens: Vec<usize> = drain(&mut call)
            .iter()
            .map(|o| match o {
                RelayOut::Chunk {
                    data, text: false, ..
                } => data.len(),
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(lens, [4, 4, 2]);

        // A character longer than max_chunk goes out as bytes.
        let limits = CallLimits {
            max_chunk: 2,
            ..CallLimits::default()
        };
        let mut call = UpstreamCall::start(200, &[("content-type", b"text/plain")], limits, T0);
        call.handle_body("€a".into(), T0);
        let out = drain(&mut call);
        assert_eq!(out.len(), 3);
        assert!(matches!(&out[0], RelayOut::Chunk { text: false, data, .. } if data.len() == 2));
        assert!(matches!(&out[1], RelayOut::Chunk { text: false, data, .. } if data.len() == 1));
        assert_eq!(out[2], text("a"));
    }

    #[test]
    fn frames_body_streams_renumbers_and_completes() {
        let head = [
            ("content-type", &b"application/vnd.asp.frames"[..]),
            ("x-cpu-time", b"1"),
        ];
        let body = frames(&[
            Frame::Stream(Stream {
                id: RequestId(1),
                data: "to".into(),
                text: true,
                seq: 40,
                fin: false,
            }),
            Frame::Stream(Stream {
                id: RequestId(9),
                data: Bytes::from_static(b"\x00"),
                text: false,
                seq: 3,
                fin: true,
            }),
            Frame::Complete(Complete {
                id: RequestId(1),
                status: Status::Failed,
                result: Some(RawValue::uint(5)),
                metrics: Metrics {
                    input_tokens: Some(4),
                    wall_us: Some(1),
                    ..Metrics::default()
                },
            }),
            Frame::Stream(Stream {
                id: RequestId(1),
                data: "ignored".into(),
                text: true,
                seq: 0,
                fin: false,
            }),
        ]);
        let mut call = UpstreamCall::start(200, &head, CallLimits::default(), T0);
        // One byte at a time: the decoder reassembles.
        for b in body.iter() {
            call.handle_body(Bytes::copy_from_slice(&[*b]), Instant::from_micros(700));
        }
        call.handle_end(&[("x-cpu-time", b"99")], Instant::from_micros(900));
        assert_eq!(
            drain(&mut call),
            vec![
                text("to"),
                RelayOut::Chunk {
                    data: Bytes::from_static(b"\x00"),
                    text: false,
                    fin: true
                },
                RelayOut::End(Ending::Complete {
                    status: Status::Failed,
                    result: Some(RawValue::uint(5)),
                    metrics: Metrics {
                        wall_us: Some(700),  // the relay's, not the function's
                        cpu_us: Some(1_000), // header (the call ended before the trailer)
                        input_tokens: Some(4),
                        output_tokens: None,
                    }
                }),
            ]
        );
    }

    #[test]
    fn frames_body_errors() {
        let head = [("content-type", &b"application/vnd.asp.frames"[..])];
        let run = |body: Bytes| {
            let mut call = UpstreamCall::start(200, &head, CallLimits::default(), T0);
            call.handle_body(body, T0);
            call.handle_end(&[], T0);
            match drain(&mut call).pop() {
                Some(RelayOut::End(Ending::Error {
                    code, retryable, ..
                })) => (code, retryable),
                o => panic!("{o:?}"),
            }
        };
        let err = |code, retryable| {
            frames(&[Frame::Error(ErrorFrame {
                id: RequestId(1),
                code,
                message: Some("m".into()),
                retryable,
                frame_type: None,
            })])
        };
        assert_eq!(
            run(err(ErrorCode::TOOL_FAILED, true)),
            (ErrorCode::TOOL_FAILED, true)
        );
        assert_eq!(
            run(err(ErrorCode::FLOOD, false)),
            (ErrorCode::INTERNAL, false)
        );
        assert_eq!(run(frames(&[Frame::PING])), (ErrorCode::INTERNAL, false));
        assert_eq!(
            run(Bytes::new()),
            (ErrorCode::UNAVAILABLE, false),
            "no terminal frame"
        );
        assert_eq!(
            run(frames(&[Frame::PING]).slice(..4)),
            (ErrorCode::UNAVAILABLE, false)
        );
        // A reserved flag: the frame error's code.
        let mut b = BytesMut::from(&frames(&[Frame::PONG])[..]);
        b[1] = 1;
        assert_eq!(run(b.freeze()), (ErrorCode::RESERVED_FLAGS, false));
        // Version 2: not a connection error for the client.
        assert_eq!(
            run(Bytes::from_static(&[0x26, 0, 0, 1, 0, 0, 0, 0])),
            (ErrorCode::INTERNAL, false)
        );
        let two_finals = frames(&[
            Frame::Stream(Stream {
                id: RequestId(1),
                data: "a".into(),
                text: true,
                seq: 0,
                fin: true,
            }),
            Frame::Stream(Stream {
                id: RequestId(1),
                data: "b".into(),
                text: true,
                seq: 1,
                fin: false,
            }),
        ]);
        assert_eq!(run(two_finals), (ErrorCode::BAD_SEQUENCE, false));
        // SPEC §15.3: ids must be valid for the type (§3.5), whatever their value.
        let stream = |id| {
            Frame::Stream(Stream {
                id: RequestId(id),
                data: "a".into(),
                text: true,
                seq: 0,
                fin: false,
            })
        };
        let complete = |id| {
            Frame::Complete(Complete {
                id: RequestId(id),
                status: Status::Ok,
                result: None,
                metrics: Metrics::default(),
            })
        };
        assert_eq!(run(frames(&[stream(0)])), (ErrorCode::INVALID_ID, false));
        assert_eq!(
            run(frames(&[stream(1), complete(0x8001)])),
            (ErrorCode::INVALID_ID, false)
        );
        let mut call = UpstreamCall::start(200, &head, CallLimits::default(), T0);
        call.handle_body(frames(&[stream(0x7fff), complete(42)]), T0);
        let out = drain(&mut call);
        assert_eq!(out[0], text("a"), "any client-space id: replaced");
        assert!(matches!(
            out[1],
            RelayOut::End(Ending::Complete {
                status: Status::Ok,
                ..
            })
        ));
    }

    #[test]
    fn read_failure_is_not_retryable() {
        let mut call = UpstreamCall::start(200, &[], CallLimits::default(), T0);
        call.handle_error("reset");
        assert!(matches!(
            drain(&mut call)[..],
            [RelayOut::End(Ending::Error {
                code: ErrorCode::UNAVAILABLE,
                retryable: false,
                ..
            })]
        ));
        assert!(matches!(
            Ending::unreachable("refused"),
            Ending::Error {
                code: ErrorCode::UNAVAILABLE,
                retryable: true,
                ..
            }
        ));
        // SPEC §15.3: before the status line a retry is safe; after it the function may
        // have acted.
        assert!(matches!(
            Ending::timed_out(TimeoutPhase::Head, Duration::from_secs(1)),
            Ending::Error {
                code: ErrorCode::UPSTREAM_TIMEOUT,
                retryable: true,
                ..
            }
        ));
        assert!(matches!(
            Ending::timed_out(TimeoutPhase::Body, Duration::from_secs(1)),
            Ending::Error {
                code: ErrorCode::UPSTREAM_TIMEOUT,
                retryable: false,
                ..
            }
        ));
    }

    #[test]
    fn millis_parse() {
        assert_eq!(parse_millis(b"12"), Some(12_000));
        assert_eq!(parse_millis(b" 0.25 "), Some(250));
        assert_eq!(
            parse_millis(b"1.23456"),
            Some(1_235),
            "rounded to the nearest µs"
        );
        assert_eq!(parse_millis(b"1.2344"), Some(1_234));
        assert_eq!(
            parse_millis(b"0.0015"),
            Some(2),
            "1.5 µs, exactly: halves up"
        );
        assert_eq!(parse_millis(b"0.0014999"), Some(1));
        assert_eq!(parse_millis(b"0.0004"), Some(0));
        assert_eq!(parse_millis(b".5"), Some(500));
        assert_eq!(parse_millis(b"3."), Some(3_000));
        // Exponents, as Python's str(float) and JavaScript's String(number) write them.
        assert_eq!(parse_millis(b"1e3"), Some(1_000_000));
        assert_eq!(parse_millis(b"2.5E-1"), Some(250));
        assert_eq!(parse_millis(b"1e-05"), Some(0));
        assert_eq!(parse_millis(b"1.5e-3"), Some(2));
        assert_eq!(parse_millis(b"1e+21"), None, "over 2^64-1 µs");
        assert_eq!(parse_millis(b"0e9999"), Some(0));
        assert_eq!(parse_millis(b"1e-9999"), Some(0));
        assert_eq!(parse_millis(b"18446744073709551.615"), Some(u64::MAX));
        assert_eq!(parse_millis(b"18446744073709551.616"), None);
        assert_eq!(
            parse_millis(b"0.000000000000000000000000000000000000000000001234e45"),
            Some(1_234),
            "leading zeros of a long fraction are not significant digits"
        );
        for bad in [
            &b""[..],
            b".",
            b"-1",
            b"+1",
            b"1e",
            b"e3",
            b"1e+",
            b"1e99999",
            b"abc",
            b"1.2.3",
            b"inf",
            b"NaN",
            b"0x10",
            b"1,5",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_millis(b"1234567890123456789012345678901234567890e-30"),
            Some(1_234_567_890_123),
            "digits beyond ~30 significant ones do not matter"
        );
        assert_eq!(parse_uint(b" 42 "), Some(42));
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"5.0",
            b"1e3",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_uint(bad), None, "{bad:?}");
        }
    }

    // ── §15.4 ──

    #[test]
    fn state_from_header_or_trailer() {
        let limits = CallLimits {
            max_state: 4,
            ..CallLimits::default()
        };
        let mut call = UpstreamCall::start(200, &[("X-Asp-State", b"AQID")], limits, T0);
        let set = StateUpdate::Set(Bytes::from_static(&[1, 2, 3]));
        assert_eq!(call.take_state_update(), set);
        assert_eq!(call.take_state_update(), StateUpdate::Unchanged, "once");
        call.handle_end(&[("x-asp-state", b"")], T0);
        assert_eq!(
            call.take_state_update(),
            StateUpdate::Clear,
            "then the trailer"
        );
        let mut call = UpstreamCall::start(200, &[("x-asp-state", b"AQID")], limits, T0);
        call.handle_end(&[], T0);
        assert_eq!(
            call.take_state_update(),
            set,
            "no trailer: the header stays"
        );
        let mut call = UpstreamCall::start(200, &[("x-asp-state", b"AQIDBAU=")], limits, T0);
        assert_eq!(call.take_state_update(), StateUpdate::TooLarge { len: 5 });
        let mut call = UpstreamCall::start(200, &[("x-asp-state", b"!!")], limits, T0);
        assert_eq!(call.take_state_update(), StateUpdate::Invalid);
        let mut call = UpstreamCall::start(500, &[], limits, T0);
        call.handle_end(&[("x-asp-state", b"AQ==")], T0);
        assert_eq!(
            call.take_state_update(),
            StateUpdate::Set(Bytes::from_static(&[1])),
            "any status may set it"
        );
    }

    // ── §15.5 ──

    #[test]
    fn push_bodies() {
        let def = ToolDef {
            op: ToolOp::Add,
            name: "late".into(),
            description: "d".into(),
            input_schema: None,
            annotations: None,
        };
        let body = frames(&[
            Frame::ToolDef(def.clone()),
            Frame::Stream(Stream {
                id: RequestId(3),
                data: "x".into(),
                text: true,
                seq: 9,
                fin: false,
            }),
            Frame::Request(Request {
                id: RequestId(0x8000),
                kind: "confirm".into(),
                body: None,
                invocation: Some(RequestId(3)),
            }),
        ]);
        let got = parse_push(body, 1 << 20).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], PushFrame::ToolDef(def));
        assert!(matches!(
            &got[1],
            PushFrame::Stream {
                id: RequestId(3),
                fin: false,
                ..
            }
        ));
        assert!(matches!(
            &got[2],
            PushFrame::Request {
                invocation: Some(RequestId(3)),
                ..
            }
        ));

        assert_eq!(parse_push(Bytes::new(), 1 << 20).unwrap_err().index, 0);
        let e = parse_push(frames(&[Frame::PING]), 1 << 20).unwrap_err();
        assert!(e.message.contains("PING"), "{e:?}");
        let mut truncated = BytesMut::from(&frames(&[Frame::PING, Frame::PING])[..]);
        truncated.extend_from_slice(&[0x18]);
        assert!(parse_push(truncated.freeze(), 1 << 20).is_err());
    }

    #[test]
    fn reply_bodies() {
        let reply = RequestOutcome::Reply(Reply {
            id: RequestId(0x8001),
            status: ReplyStatus::Answered,
            body: Some(RawValue::string("yes")),
        });
        let r = ReplyRequest::new(BodyFormat::Json, "c1", RequestId(0x8001), &reply);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"connection_id":"c1","request_id":32769,"status":"answered","body":"yes"}"#
        );
        let err = RequestOutcome::Error(ErrorFrame {
            id: RequestId(0x8001),
            code: ErrorCode::UNSUPPORTED,
            message: Some("no".into()),
            retryable: false,
            frame_type: None,
        });
        let r = ReplyRequest::new(BodyFormat::Json, "c1", RequestId(0x8001), &err);
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .ends_with(r#""status":"error","body":{"code":42,"message":"no"}}"#));
        let r = ReplyRequest::new(BodyFormat::MsgPack, "c1", RequestId(0x8001), &reply);
        assert!(r.body.ends_with(b"\xa6status\xa8answered\xa4body\xa3yes"));
        assert_eq!(r.body[0], 0x84);
    }

    #[test]
    fn no_input_panics() {
        // Arbitrary bytes through every mode and the JSON converter.
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let len = (next() % 64) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut s = String::new();
            let _ = msgpack_to_json(&data, &mut s);
            let _ = base64_decode(&data);
            let _ = parse_push(Bytes::from(data.clone()), 64);
            let ct: &[u8] = match round % 3 {
                0 => b"application/vnd.asp.frames",
                1 => b"text/plain",
                _ => b"application/octet-stream",
            };
            let limits = CallLimits {
                max_chunk: 1 + (next() % 8) as usize,
                ..CallLimits::default()
            };
            let mut call = UpstreamCall::start(
                200,
                &[("content-type", ct), ("x-asp-state", &data)],
                limits,
                T0,
            );
            call.handle_body(Bytes::from(data), T0);
            call.handle_end(&[], T0);
            let out = drain(&mut call);
            assert!(matches!(out.last(), Some(RelayOut::End(_))));
            for o in &out {
                if let RelayOut::Chunk { data, text, .. } = o {
                    assert!(data.len() <= limits.max_chunk);
                    assert!(!text || std::str::from_utf8(data).is_ok());
                }
            }
        }
    }
    /// The adapter's loop for one invocation (what `upstream.rs` does with IO).
    #[test]
    fn the_adapter_loop() {
        let inv = Invoke {
            id: RequestId(1),
            tool: "echo".into(),
            args: None,
            deadline_ms: 0,
            meta: None,
        };
        let req = InvokeRequest::new(BodyFormat::MsgPack, "c1", &inv, None).unwrap();
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| *k == "x-asp-tool" && v == "echo"));
        // … POST req.body with req.headers; when the head arrives:
        let head = [("content-type", &b"text/plain"[..]), ("x-cpu-time", b"1.5")];
        let mut call = UpstreamCall::start(200, &head, CallLimits::default(), Instant::ZERO);
        call.handle_body("Hello".into(), Instant::from_millis(3));
        call.handle_end(&[], Instant::from_millis(4));
        let mut streamed = Vec::new();
        while let Some(out) = call.poll_output() {
            match out {
                // ctx.stream(data, StreamOptions::BINARY.text(text).fin(fin))
                RelayOut::Chunk { data, text, .. } => streamed.push((data, text)),
                // complete or fail the invocation
                RelayOut::End(ending) => assert!(matches!(
                    ending,
                    Ending::Complete { metrics, .. }
                        if metrics.cpu_us == Some(1500) && metrics.wall_us == Some(4000)
                )),
            }
        }
        assert_eq!(streamed, [(Bytes::from("Hello"), true)]);
    }
}
