//! The connection state machine (SPEC §6–§11): a Sans-IO `Connection` that a caller drives
//! from any event loop.
//!
//! The driving contract (getters, `handle_*` inputs, commands, `poll_*` outputs and their
//! order) is documented on [`Connection`] itself, where rustdoc shows it.
//!
//! Local misuse returns [`SendError`]; peer violations never return an error: they produce
//! an ERROR frame for the peer and an [`Event::Violation`].

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use core::time::Duration;

use crate::codec::{self, decode_frame, encoded_len, take_stream, Decoder, HEADER_LEN};
use crate::config::{Config, HeartbeatMode, Limits};
use crate::error::{CloseReason, DecodeError, DecodeErrorKind, ErrorCode, ErrorScope, SendError};
use crate::event::{Event, InvocationOutcome, RequestOutcome, Session, ToolChange};
use crate::exchange::{Exchange, Kind};
use crate::frame::*;
use crate::outbox::Outbox;
use crate::rate::{RateVerdict, RateWindow};
use crate::replay::Replay;
use crate::time::Instant;

mod batch;
mod snapshot;
pub use batch::{BatchError, Command};
pub use snapshot::{Snapshot, SnapshotError};

/// Which end of the connection this is. Exhaustive on purpose: a connection has two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens the connection and invokes tools.
    Client,
    /// Accepts connections, runs tools, may ask the client questions.
    Server,
}

/// Connection state (SPEC §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Waiting for the peer's HELLO (or, when resuming, its RESUME).
    Handshaking,
    /// Client: RESUME sent, waiting for the server's. Server: RESUME received, waiting for
    /// the application to accept or reject it.
    Resuming,
    /// Normal operation.
    Open,
    /// GOAWAY sent or received (SPEC §6.5).
    Draining,
    /// The transport is gone but the session may be resumed (SPEC §11).
    Detached,
    /// Final.
    Closed,
}

/// Server-side parameters chosen by the application: the identity of the connection and,
/// when resume is enabled, a secret token from a secure random source (SPEC §13.1). The
/// core has no randomness of its own.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServerParams {
    /// HELLO `connection_id`, 1–64 bytes.
    pub connection_id: Text,
    /// HELLO `resume_token`, 1–64 bytes; used only if both sides offer `resume`.
    pub resume_token: Option<Bytes>,
}

impl ServerParams {
    /// Parameters with this `connection_id` and no resume token.
    pub fn new(connection_id: impl Into<Text>) -> ServerParams {
        ServerParams {
            connection_id: connection_id.into(),
            resume_token: None,
        }
    }

    /// With this resume token (SPEC §11; from a secure random source).
    #[must_use]
    pub fn resume_token(self, token: Bytes) -> ServerParams {
        ServerParams {
            resume_token: Some(token),
            ..self
        }
    }
}

/// Options of one invocation (SPEC §5.2).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct InvokeOptions {
    /// Deadline in ms (0 = none).
    pub deadline_ms: u32,
    /// Opaque context.
    pub meta: Option<RawValue>,
}

impl InvokeOptions {
    /// With this deadline in ms (0 = none).
    #[must_use]
    pub fn deadline_ms(self, deadline_ms: u32) -> InvokeOptions {
        InvokeOptions {
            deadline_ms,
            ..self
        }
    }

    /// With this opaque context.
    #[must_use]
    pub fn meta(self, meta: RawValue) -> InvokeOptions {
        InvokeOptions {
            meta: Some(meta),
            ..self
        }
    }
}

/// How one STREAM chunk is sent (SPEC §5.3): its data type and whether it is the last.
/// [`Connection::stream`] takes it.
///
/// ```
/// use asp_proto::StreamOptions;
///
/// let last_text = StreamOptions::TEXT.fin(true);
/// assert!(last_text.text && last_text.fin);
/// assert_eq!(StreamOptions::default(), StreamOptions::BINARY);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// The data is text (`str`, valid UTF-8); else binary (`bin`). Default binary.
    pub text: bool,
    /// The final chunk of the invocation (`final`); the invocation still ends with COMPLETE.
    /// Default false.
    pub fin: bool,
}

impl StreamOptions {
    /// A binary chunk, not the last.
    pub const BINARY: StreamOptions = StreamOptions {
        text: false,
        fin: false,
    };
    /// A text chunk, not the last.
    pub const TEXT: StreamOptions = StreamOptions {
        text: true,
        fin: false,
    };

    /// With `text` set as given.
    #[must_use]
    pub const fn text(self, text: bool) -> StreamOptions {
        StreamOptions { text, ..self }
    }

    /// With `fin` (the final chunk) set as given.
    #[must_use]
    pub const fn fin(self, fin: bool) -> StreamOptions {
        StreamOptions { fin, ..self }
    }
}

const CAP_REQUESTS: &str = "requests";
/// SPEC §13: the replay buffer a peer keeps when its HELLO does not say.
const DEFAULT_REPLAY_BUFFER: usize = 256 << 10;
const CAP_RESUME: &str = "resume";

/// Soft size of one `poll_transmit` batch (one WebSocket message).
const MAX_TRANSMIT: usize = 64 << 10;

/// Bytes of STREAM framing beyond the data: header, map, keys, seq, final. Used to keep a
/// chunk within the peer's `max_frame_payload`.
const STREAM_OVERHEAD: usize = 24;

/// An opening frame whose fields are this much smaller than the input they were decoded
/// from gets its own copy of them (SPEC §13.1: a running exchange holds what is counted
/// for it, not the rest of a large message). Coalesced small frames stay shared.
const UNSHARE_SLACK: usize = 1024;

/// A Sans-IO ASP connection, client or server.
///
/// # Driving it
///
/// A `Connection` never does IO, never reads a clock and never blocks: the caller's loop
/// (any runtime, or none) moves bytes and time in and out. The contract, in four parts:
///
/// 1. **Getters** ([`state`](Connection::state), [`session`](Connection::session),
///    [`tools`](Connection::tools), [`in_flight`](Connection::in_flight),
///    [`queued_bytes`](Connection::queued_bytes), [`wants_transmit`](Connection::wants_transmit),
///    [`can_stream`](Connection::can_stream), [`check_batch`](Connection::check_batch)) only
///    look.
/// 2. **Inputs**, `handle_*`, each with the current time: what the transport delivered
///    ([`handle_message`](Connection::handle_message) for one WebSocket binary message,
///    [`handle_bytes`](Connection::handle_bytes) for a byte stream,
///    [`handle_text_message`](Connection::handle_text_message),
///    [`handle_transport_pong`](Connection::handle_transport_pong),
///    [`handle_transport_closed`](Connection::handle_transport_closed)) and
///    [`handle_timeout`](Connection::handle_timeout) when the deadline from `poll_timeout`
///    has passed. Peer violations never return an error: they queue the ERROR frame the
///    SPEC names and report [`Event::Violation`] / [`Event::Closed`].
/// 3. **Commands** from the application (`invoke`, `stream`, `complete`, `fail`, `request`,
///    `reply`, `interrupt`, `release`, `add_tool`, `remove_tool`, `goaway`, `close`,
///    `resume`…) return `Err(`[`SendError`]`)` only for local misuse or a full window;
///    they queue frames and never block.
/// 4. **Outputs**, pulled after every input or command, in this order:
///    [`poll_transmit`](Connection::poll_transmit) until it returns 0 (bytes to write; on
///    WebSocket one binary message per call), [`poll_ping`](Connection::poll_ping) (send a
///    transport-level ping if `true`), [`poll_event`](Connection::poll_event) until `None`
///    (what the application must know; commands issued while handling events queue more
///    output, so loop back to `poll_transmit`), then [`poll_timeout`](Connection::poll_timeout):
///    wait for input until that instant, and call `handle_timeout` if none came.
///
/// The whole loop over a blocking byte stream, as a function (compiled; the repository's
/// `asp-proto/examples/blocking_tcp.rs` runs it over TCP):
///
/// ```
/// use asp_proto::{Bytes, Connection, Event, Instant};
/// use bytes::BytesMut;
///
/// /// What a transport offers the loop: write bytes, ping, and read with a deadline.
/// trait Transport {
///     fn write(&mut self, bytes: &[u8]);
///     fn ping(&mut self);
///     /// Bytes read before `deadline`, `Some(empty)` at end of stream, `None` on timeout.
///     fn read(&mut self, deadline: Option<Instant>) -> Option<Bytes>;
///     fn now(&self) -> Instant;
/// }
///
/// fn drive(
///     conn: &mut Connection,
///     io: &mut impl Transport,
///     mut on_event: impl FnMut(&mut Connection, Event),
/// ) {
///     let mut out = BytesMut::new();
///     while !conn.is_closed() {
///         // Outputs, in order, until quiet (handling an event may queue more).
///         loop {
///             while conn.poll_transmit(&mut out) > 0 {
///                 io.write(&out.split());
///             }
///             if conn.poll_ping() {
///                 io.ping();
///             }
///             let Some(event) = conn.poll_event() else { break };
///             on_event(conn, event);
///         }
///         if conn.is_closed() {
///             break;
///         }
///         // Input, or the deadline.
///         match io.read(conn.poll_timeout()) {
///             Some(bytes) if bytes.is_empty() => conn.handle_transport_closed(io.now()),
///             Some(bytes) => conn.handle_bytes(io.now(), bytes),
///             None => conn.handle_timeout(io.now()),
///         }
///     }
/// }
/// # struct Nothing;
/// # impl Transport for Nothing {
/// #     fn write(&mut self, _: &[u8]) {}
/// #     fn ping(&mut self) {}
/// #     fn read(&mut self, _: Option<Instant>) -> Option<Bytes> { Some(Bytes::new()) }
/// #     fn now(&self) -> Instant { Instant::ZERO }
/// # }
/// # let mut c = Connection::client(asp_proto::Config::default(), Instant::ZERO);
/// # drive(&mut c, &mut Nothing, |_, _| {});
/// # assert!(c.is_closed());
/// ```
///
/// Two connections wired back to back, in memory:
///
/// ```
/// use asp_proto::{Config, Connection, Event, Instant, ServerParams};
/// use bytes::BytesMut;
///
/// let now = Instant::ZERO;
/// let mut client = Connection::client(Config::default(), now);
/// let mut server = Connection::server(
///     Config::default(),
///     ServerParams::new("c1"),
///     now,
/// );
/// // Shuttle bytes until both sides are quiet (a real loop would use sockets).
/// let mut buf = BytesMut::new();
/// for _ in 0..4 {
///     while client.poll_transmit(&mut buf) > 0 {
///         server.handle_bytes(now, buf.split().freeze());
///     }
///     while server.poll_transmit(&mut buf) > 0 {
///         client.handle_bytes(now, buf.split().freeze());
///     }
/// }
/// assert!(matches!(client.poll_event(), Some(Event::Connected(_))));
/// let id = client.invoke("echo", None, Default::default()).unwrap();
/// # let _ = id;
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    now: Instant,

    // Session (SPEC §6.3–§6.4).
    connection_id: Option<Text>,
    peer_limits: Limits,
    peer_requests: bool,
    heartbeat: Option<Duration>,
    resume_token: Option<Bytes>,
    resumable: bool,
    /// Client: TOOL_DEF frames still expected before `Connected` (SPEC §6.2 step 4).
    initial_tools: u16,
    session: Option<Session>,

    // Input.
    decoder: Decoder,
    last_recv: Instant,
    pings_sent: u32,
    ping_due: bool,
    rate: RateWindow,

    // Exchanges (SPEC §7, §8), keyed by request id; spaces are disjoint.
    exchanges: BTreeMap<u16, Exchange>,
    invocations: usize,
    requests: usize,
    /// Bytes of the opening frames (tool or kind, `args` or `body`, `meta`) of the running
    /// exchanges the peer opened: what their handlers may still hold (SPEC §13.1,
    /// `Config::max_args_in_flight`).
    args_in_flight: usize,
    /// Length of the input the frames being decoded come from (the WebSocket message, the
    /// byte-stream chunk): an opening frame's fields are slices of it.
    input_len: usize,
    /// Exchanges in flight with a deadline (SPEC §7.4): `poll_timeout` runs on every pump
    /// of every adapter, so it skips the scan when there are none (the common case).
    with_deadline: usize,
    next_id: u16,

    /// Server: the registry; client: the mirror (SPEC §9). Boxed: a B-tree leaf has room
    /// for 11 entries whatever the count, and every connection of a server holds the same
    /// few definitions, so a pointer per slot keeps an idle connection small.
    tools: BTreeMap<Text, Box<ToolDef>>,
    /// Server: registry entries the client never received (cut from the initial set by its
    /// `max_tools` or `max_frame_payload`); later updates and removals of them send nothing.
    unannounced: std::collections::BTreeSet<Text>,

    // Output.
    out: Outbox,
    events: VecDeque<Event>,

    // Lifecycle timers.
    handshake_deadline: Option<Instant>,
    goaway_sent: bool,
    goaway_received: bool,
    drain_deadline: Option<Instant>,
    detached_until: Option<Instant>,

    // Ids we ended by sending ERROR (SPEC §3.5): id → number of the PING queued after it.
    // Frames for them are stale and dropped silently until that PING's PONG arrives.
    quarantined: BTreeMap<u16, u64>,
    /// PING frames queued so far, and PONGs received (each answers the oldest PING).
    pings_queued: u64,
    pongs_received: u64,

    // Resume (SPEC §11).
    sent_count: u64,
    recv_count: u64,
    replay: Replay,
    /// The peer's replay buffer (HELLO `limits.replay_buffer`): we acknowledge what we
    /// received at least every quarter of it (SPEC §11.1).
    peer_replay_buffer: usize,
    /// The peer's resume window (HELLO `limits.resume_window_ms`), if announced.
    peer_resume_window: Option<Duration>,
    /// Input bytes since we last told the peer our `received` count.
    unacked_in: usize,
    /// Server holding output until a snapshot covers it (SPEC §11.4): the mark of the last
    /// stored snapshot; `None` when not holding.
    persisted: Option<u64>,
}

impl Connection {
    fn new(role: Role, mut config: Config, now: Instant) -> Connection {
        // SPEC §5.1: what HELLO may announce; smaller local settings are raised to the
        // minimums (announcing them would be INVALID_FIELD at the peer).
        let l = &mut config.limits;
        l.max_chunk = l.max_chunk.max(crate::codec::MIN_MAX_CHUNK);
        l.initial_window = l.initial_window.max(crate::codec::MIN_INITIAL_WINDOW);
        let max = config.limits.max_frame_payload;
        Connection {
            role,
            state: State::Handshaking,
            now,
            connection_id: None,
            peer_limits: Limits::default(),
            peer_requests: false,
            heartbeat: None,
            resume_token: None,
            resumable: false,
            initial_tools: 0,
            session: None,
            decoder: Decoder::new(max),
            last_recv: now,
            pings_sent: 0,
            ping_due: false,
            rate: RateWindow::new(now),
            exchanges: BTreeMap::new(),
            invocations: 0,
            requests: 0,
            args_in_flight: 0,
            input_len: 0,
            with_deadline: 0,
            next_id: 0,
            tools: BTreeMap::new(),
            unannounced: std::collections::BTreeSet::new(),
            out: Outbox::default(),
            events: VecDeque::new(),
            handshake_deadline: Some(now + config.handshake_timeout),
            goaway_sent: false,
            goaway_received: false,
            drain_deadline: None,
            detached_until: None,
            quarantined: BTreeMap::new(),
            pings_queued: 0,
            pongs_received: 0,
            sent_count: 0,
            recv_count: 0,
            replay: Replay::new(config.replay_buffer),
            peer_replay_buffer: DEFAULT_REPLAY_BUFFER,
            peer_resume_window: None,
            unacked_in: 0,
            persisted: None,
            config,
        }
    }

    /// A client connection. Its HELLO is queued at once (SPEC §6.2 step 1).
    pub fn client(config: Config, now: Instant) -> Connection {
        let mut c = Connection::new(Role::Client, config, now);
        c.queue_client_hello();
        c
    }

    /// A server connection, waiting for the client's HELLO.
    pub fn server(config: Config, params: ServerParams, now: Instant) -> Connection {
        let mut c = Connection::new(Role::Server, config, now);
        c.connection_id = Some(params.connection_id);
        c.resume_token = params.resume_token;
        c
    }

    fn queue_client_hello(&mut self) {
        let mut capabilities = Vec::new();
        if self.config.accept_requests {
            capabilities.push(Text::from_static(CAP_REQUESTS));
        }
        if self.config.resume {
            capabilities.push(Text::from_static(CAP_RESUME));
        }
        let hello = Hello {
            versions: Versions::V1,
            capabilities,
            limits: self.hello_limits(),
            heartbeat_ms: self.heartbeat_ms(),
            agent: self.config.agent.clone(),
            ..Hello::default()
        };
        self.queue(Frame::Hello(hello));
    }

    /// HELLO `limits`: what we accept and, when we offer resume, what we keep for it (SPEC
    /// §5.1, §11: announced so that the peer knows how often to acknowledge and how long it
    /// has to come back).
    fn hello_limits(&self) -> HelloLimits {
        let mut l = self.config.limits.to_hello();
        if self.config.resume {
            l.replay_buffer = Some(u32::try_from(self.config.replay_buffer).unwrap_or(u32::MAX));
            l.resume_window_ms =
                Some(u32::try_from(self.config.resume_window.as_millis()).unwrap_or(u32::MAX));
        }
        l
    }

    fn heartbeat_ms(&self) -> Option<u32> {
        match self.config.heartbeat {
            Some(d) if d == Duration::from_secs(30) => None, // the default: not sent
            Some(d) => Some(u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)),
            None => Some(0),
        }
    }

    // ───────────────────────── getters ─────────────────────────

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Closed? Once closed and [`Connection::poll_transmit`] returns 0, the adapter closes
    /// the transport.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The negotiated session, once the handshake is done.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// The server's resume token for this session, if resumable.
    pub fn resume_token(&self) -> Option<&Bytes> {
        self.resume_token.as_ref().filter(|_| self.resumable)
    }

    /// Client: the current tool set; server: the registry.
    pub fn tools(&self) -> impl Iterator<Item = &ToolDef> {
        self.tools.values().map(|d| &**d)
    }

    /// Number of exchanges in flight (invocations and requests).
    pub fn in_flight(&self) -> usize {
        self.exchanges.len()
    }

    /// Number of invocations in flight (either role).
    pub fn invocations_in_flight(&self) -> usize {
        self.invocations
    }

    /// Number of server requests in flight (either role, SPEC §8).
    pub fn requests_in_flight(&self) -> usize {
        self.requests
    }

    /// Encoded bytes waiting in the transmit queue.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Encoded bytes of sent frames kept for a resume (SPEC §11.1): at most
    /// [`Config::replay_buffer`], or one frame if a single frame is larger.
    pub fn replay_bytes(&self) -> usize {
        self.replay.bytes()
    }

    /// Whether the transmit queue holds anything.
    pub fn wants_transmit(&self) -> bool {
        match self.state {
            State::Detached => false,
            // A resuming client holds everything but its RESUME (SPEC §11.2).
            State::Resuming if self.role == Role::Client => self
                .out
                .records()
                .next()
                .is_some_and(|q| q.ty == FrameType::Resume),
            _ => self.out.frames() > self.held(),
        }
    }

    /// Whether the adapter should read more input now (SPEC §13.1). A server stops
    /// reading while its transmit queue is at or above `max_queued_bytes`: the peer is not
    /// reading what it asked for, and not reading its input pushes back on it through the
    /// transport (TCP backpressure) instead of growing the queue. Read again once
    /// `poll_transmit` has taken the queue below the mark. A client always reads: if both
    /// sides paused, two peers each waiting for the other to read would deadlock.
    pub fn wants_input(&self) -> bool {
        self.role == Role::Client
            || self.state == State::Closed
            || self.out.len() < self.config.max_queued_bytes
    }

    // ───────────────────────── inputs ─────────────────────────

    /// The transport refused a WebSocket message of `len` bytes as larger than this
    /// receiver accepts (the adapter's message limit, which bounds buffered input, SPEC
    /// §13.1): the connection error OVERLOADED, sent before the close.
    pub fn handle_oversized_message(&mut self, now: Instant, len: usize) {
        self.tick(now);
        if self.accepts_input() {
            self.fatal(
                ErrorCode::OVERLOADED,
                format!("a WebSocket message of {len} bytes is above this receiver's limit"),
            );
        }
    }

    /// One WebSocket binary message: one or more whole frames (SPEC §2.1). Payloads of
    /// the resulting events are slices of `msg`.
    pub fn handle_message(&mut self, now: Instant, mut msg: Bytes) {
        self.tick(now);
        if !self.accepts_input() {
            return;
        }
        let mark = self.input_mark();
        self.input_len = msg.len();
        self.unacked_in = self.unacked_in.saturating_add(msg.len());
        if msg.is_empty() {
            self.fatal(ErrorCode::FRAMING_ERROR, "empty WebSocket message".into());
        }
        let max = self.config.limits.max_frame_payload;
        loop {
            // The hot path (token streaming): a well-formed STREAM to an open client goes
            // from the message straight to its event, without a `Frame` in between.
            // Anything else, or a STREAM the fast decoder does not take, goes the general
            // way, which applies every check of SPEC §3.7 and names what is wrong.
            if self.role == Role::Client && self.is_open() {
                if let Some(s) = take_stream(&mut msg, max) {
                    self.on_stream_received(s);
                    if !self.accepts_input() {
                        break;
                    }
                    continue;
                }
            }
            let Some(r) = decode_frame(&mut msg, max) else {
                break;
            };
            self.on_decoded(r);
            self.check_input_bounds(mark);
            if !self.accepts_input() {
                break;
            }
        }
        self.after_input(mark);
    }

    /// A text WebSocket message: not allowed (SPEC §2.1).
    pub fn handle_text_message(&mut self, now: Instant) {
        self.tick(now);
        if self.accepts_input() {
            self.fatal(ErrorCode::FRAMING_ERROR, "text WebSocket message".into());
        }
    }

    /// Bytes from a byte-stream transport, in any chunking (SPEC §2.2).
    pub fn handle_bytes(&mut self, now: Instant, data: Bytes) {
        self.tick(now);
        if !self.accepts_input() {
            return;
        }
        let mark = self.input_mark();
        self.input_len = data.len();
        self.unacked_in = self.unacked_in.saturating_add(data.len());
        self.decoder.feed(data);
        while let Some(r) = self.decoder.next_frame() {
            self.on_decoded(r);
            self.check_input_bounds(mark);
            if !self.accepts_input() {
                break;
            }
        }
        self.after_input(mark);
    }

    /// A transport-level pong (WebSocket) arrived: the peer is alive (SPEC §6.7).
    pub fn handle_transport_pong(&mut self, now: Instant) {
        self.tick(now);
        self.last_recv = self.now;
        self.pings_sent = 0;
    }

    /// The transport ended (EOF, reset, WebSocket close).
    pub fn handle_transport_closed(&mut self, now: Instant) {
        self.tick(now);
        match self.state {
            State::Closed | State::Detached => {}
            // SPEC §6.5: a draining session with nothing in flight has nothing left to
            // resume (the GOAWAY sender closes exactly then): the EOF ends it.
            State::Draining if self.exchanges.is_empty() => {
                self.close(CloseReason::TransportClosed)
            }
            State::Open | State::Draining if self.resumable => self.detach(),
            // SPEC §11.2 step 1: a client whose RESUME was not answered yet still holds the
            // session: the new transport failed, not the session.
            State::Resuming if self.resumable && self.role == Role::Client => self.detach(),
            _ => self.close(CloseReason::TransportClosed),
        }
    }

    /// The peer ended the transport on purpose: a WebSocket Close frame with status 1000 or
    /// without a status (SPEC §11.3). The session ends, resumable or not; any other end of
    /// the transport is [`handle_transport_closed`](Self::handle_transport_closed).
    pub fn handle_peer_close(&mut self, now: Instant) {
        self.tick(now);
        self.close(CloseReason::TransportClosed);
    }

    /// SPEC §11.2 step 1: keep the session for the resume window (the smaller of the two
    /// announced, counted from now: each side from its own detection, §11.3).
    fn detach(&mut self) {
        self.state = State::Detached;
        let window = self
            .peer_resume_window
            .map_or(self.config.resume_window, |p| {
                p.min(self.config.resume_window)
            });
        self.detached_until = Some(self.now + window);
        self.unacked_in = 0;
        self.decoder = Decoder::new(self.config.limits.max_frame_payload);
        // A RESUME not sent on the lost transport would be stale on the next one (the next
        // `resume`/`accept_resume` queues a fresh one).
        self.out.remove_type(FrameType::Resume);
        self.emit(Event::Detached);
    }

    /// Timers: heartbeat, handshake, deadlines, drain, resume window. Safe to call early or
    /// spuriously.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let now = self.now;
        match self.state {
            State::Closed => return,
            State::Detached => {
                if self.detached_until.is_some_and(|t| now >= t) {
                    self.close(CloseReason::TransportClosed);
                    return;
                }
                // SPEC §11.3: deadlines and the drain timeout run on while detached; their
                // frames wait for the resume. The heartbeat does not (no transport).
            }
            State::Handshaking | State::Resuming => {
                if self.handshake_deadline.is_some_and(|t| now >= t) {
                    self.fatal(ErrorCode::HANDSHAKE_TIMEOUT, "no HELLO in time".into());
                    return;
                }
            }
            State::Open | State::Draining => {}
        }
        if let Some(h) = self.heartbeat.filter(|_| self.is_open()) {
            // SPEC §6.7: ping after H of silence, then every H; dead after 3H.
            if now >= self.last_recv + h * 3 {
                if self.resumable {
                    // SPEC §6.7, §11.3: a silent link is what resume is for. Drop the
                    // transport without an ERROR (which would fail the session at the peer)
                    // and keep the session for the resume window.
                    self.detach();
                    return;
                }
                self.fatal(
                    ErrorCode::HEARTBEAT_TIMEOUT,
                    "no frame from the peer for three heartbeat intervals".into(),
                );
                return;
            }
            if now >= self.last_recv + h * (self.pings_sent + 1) {
                self.pings_sent += 1;
                match self.config.heartbeat_mode {
                    HeartbeatMode::Frames => self.queue_ping(),
                    HeartbeatMode::Transport => self.ping_due = true,
                }
            }
        }
        // SPEC §7.4: deadlines of invocations we serve.
        let expired: Vec<u16> = if self.with_deadline == 0 {
            Vec::new()
        } else {
            self.exchanges
                .iter()
                .filter(|(_, e)| e.deadline.is_some_and(|d| now >= d))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in expired {
            let err = error_frame(
                RequestId(id),
                ErrorCode::DEADLINE_EXCEEDED,
                "deadline_ms elapsed".into(),
                None,
            );
            self.queue(Frame::Error(err.clone()));
            self.remove(id);
            self.emit(Event::Aborted {
                id: RequestId(id),
                error: err,
            });
        }
        if self.drain_deadline.is_some_and(|t| now >= t) {
            self.fatal(
                ErrorCode::GOING_AWAY,
                format!(
                    "drain timeout with {} exchanges in flight",
                    self.exchanges.len()
                ),
            );
            return;
        }
        self.check_drained();
    }

    // ───────────────────────── outputs ─────────────────────────

    /// Encodes queued frames into `buf` (appending) and returns the number of bytes written,
    /// 0 if there is nothing to send. Each call yields at most about 64 KiB, and at least one
    /// whole frame: on WebSocket, send each call's bytes as one binary message.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> usize {
        if self.state == State::Detached {
            return 0;
        }
        // Pick whole frames up to about MAX_TRANSMIT bytes.
        let resuming_client = self.state == State::Resuming && self.role == Role::Client;
        // SPEC §11.4: frames a stored snapshot does not cover yet stay queued.
        let sendable = self.out.frames() - self.held();
        let (mut n, mut total) = (0, 0usize);
        for q in self.out.records() {
            if total >= MAX_TRANSMIT || n >= sendable {
                break;
            }
            // While resuming, only RESUME itself may go out (SPEC §11.2).
            if resuming_client && q.ty != FrameType::Resume {
                break;
            }
            n += 1;
            total += q.len as usize;
        }
        if n == 0 {
            return 0;
        }
        let (chunk, records) = self.out.take(n, total);
        let mut replayable = Vec::new();
        let mut offset = 0;
        for q in records {
            if q.ty == FrameType::Stream && q.data > 0 {
                if let Some(e) = self.exchanges.get_mut(&q.id) {
                    e.queued = e.queued.saturating_sub(q.data as usize);
                }
            }
            if counted(q.ty as u8) {
                self.sent_count += 1;
                if self.resumable {
                    replayable.push((offset, q.len as usize, q.ty));
                }
            }
            offset += q.len as usize;
        }
        if replayable.is_empty() {
            // Zero-copy when the caller's buffer is empty (the usual case).
            buf.unsplit(chunk);
        } else {
            // SPEC §11.1: keep what was sent, as slices of the transmitted bytes.
            let frozen = chunk.freeze();
            for (at, len, ty) in replayable {
                self.replay.push(frozen.slice(at..at + len), ty);
            }
            buf.extend_from_slice(&frozen);
        }
        let written = total;

        if written > 0 {
            self.wake_blocked();
        }
        written
    }

    /// SPEC §13 (outgoing queue): an invocation refused with `Full` learns when it may
    /// stream again, whether its own data or another invocation's left the queue (a
    /// `stream` refused because the connection-wide queue was full has nothing of its own
    /// queued to wake it).
    fn wake_blocked(&mut self) {
        if self.out.len() + STREAM_OVERHEAD + 1 > self.config.max_queued_bytes {
            return;
        }
        if !self.replay_has_room(STREAM_OVERHEAD + 1) {
            return;
        }
        let per_inv = self.config.max_queued_per_invocation;
        for (id, e) in self.exchanges.iter_mut() {
            if e.blocked && e.has_room(1, per_inv) {
                e.blocked = false;
                self.events
                    .push_back(Event::Writable { id: RequestId(*id) });
            }
        }
    }

    /// `true` once each time a transport-level ping should be sent
    /// ([`HeartbeatMode::Transport`]).
    #[must_use]
    pub fn poll_ping(&mut self) -> bool {
        core::mem::take(&mut self.ping_due)
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        // Looked at in place, then popped straight into the return value: popping first and
        // inspecting the copy made the compiler stage the event on the stack, and reading
        // it back stalled on store forwarding (most of this function's time per chunk).
        if let (true, Some(Event::Chunk(s))) = (self.config.auto_credit, self.events.front()) {
            let (id, len) = (s.id, s.data.len());
            self.consumed(id, len);
        }
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] should next be called, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            State::Closed => return None,
            State::Detached => min(self.detached_until),
            State::Handshaking | State::Resuming => min(self.handshake_deadline),
            State::Open | State::Draining => {}
        }
        if let Some(h) = self.heartbeat.filter(|_| self.is_open()) {
            // The next PING is due one interval after the last input plus one per PING
            // already sent, and the peer is dead after three (SPEC §6.7): the earlier of the
            // two, in integer microseconds (this runs on every adapter pump).
            let h = u64::try_from(h.as_micros()).unwrap_or(u64::MAX);
            let n = u64::from(self.pings_sent.saturating_add(1).min(3));
            let due = self
                .last_recv
                .as_micros()
                .saturating_add(h.saturating_mul(n));
            min(Some(Instant::from_micros(due)));
        }
        if self.with_deadline > 0 {
            for e in self.exchanges.values() {
                min(e.deadline);
            }
        }
        min(self.drain_deadline);
        t
    }

    // ───────────────────────── commands: client ─────────────────────────

    /// Client: invokes `tool` (SPEC §5.2). Returns the invocation's id; its chunks arrive as
    /// [`Event::Chunk`] and its end as [`Event::InvocationEnded`].
    pub fn invoke(
        &mut self,
        tool: impl Into<Text>,
        args: Option<RawValue>,
        opts: InvokeOptions,
    ) -> Result<RequestId, SendError> {
        self.require(Role::Client)?;
        // SPEC §6.2 step 1: a client may pipeline INVOKEs after its HELLO, before the
        // server's arrives (not while resuming: only RESUME goes out then).
        if self.state != State::Handshaking {
            self.require_open()?;
        }
        if self.goaway_received || self.goaway_sent {
            return Err(SendError::Draining);
        }
        let tool = tool.into();
        if tool.is_empty() || tool.len() > 128 {
            return Err(SendError::InvalidField("tool"));
        }
        if self.invocations >= usize::from(self.peer_limits.max_inflight) {
            return Err(SendError::TooManyInflight);
        }
        let prev_id = self.next_id;
        let id = self.alloc_id(1, 0x7fff)?;
        let frame = Frame::Invoke(Invoke {
            id,
            tool,
            args,
            deadline_ms: opts.deadline_ms,
            meta: opts.meta,
        });
        if let Err(e) = self.check_frame_size(&frame) {
            // Refused before sending: the id was not used (SPEC §3.5, sequential ids).
            self.next_id = prev_id;
            return Err(e);
        }
        self.queue(frame);
        self.insert(
            id,
            Exchange::new(Kind::Invocation, self.config.limits.initial_window),
        );
        Ok(id)
    }

    /// Client: answers a server request (SPEC §5.10). Ends it; a REPLY that would exceed the
    /// server's `max_frame_payload` becomes ERROR(RESULT_TOO_LARGE), reported as
    /// [`Event::Aborted`] (SPEC §3.6).
    pub fn reply(
        &mut self,
        id: RequestId,
        status: ReplyStatus,
        body: Option<RawValue>,
    ) -> Result<(), SendError> {
        self.require(Role::Client)?;
        self.require_live()?;
        self.require_exchange(id, Kind::Request)?;
        let frame = Frame::Reply(Reply { id, status, body });
        if let Err(e) = self.check_frame_size(&frame) {
            self.end_too_large(id, &e);
            return Ok(());
        }
        let before = self.out.len();
        self.queue(frame);
        self.remove(id.0);
        self.check_drained();
        self.check_answer_bound(before);
        Ok(())
    }

    /// Client with `auto_credit` off: the application consumed `len` bytes of chunk data of
    /// invocation `id`; credit is granted in batches of half the initial window (SPEC §7.5).
    /// Harmless for an invocation that already ended.
    pub fn release(&mut self, id: RequestId, len: usize) {
        self.consumed(id, len);
    }

    // ───────────────────────── commands: server ─────────────────────────

    /// Server: sends a chunk of an invocation's output (SPEC §5.3, §7.5). Refuses with
    /// [`SendError::Full`] when the window or queue has no room; [`Event::Writable`] follows
    /// when it does.
    pub fn stream(
        &mut self,
        id: RequestId,
        data: Bytes,
        options: StreamOptions,
    ) -> Result<(), SendError> {
        let StreamOptions { text, fin } = options;
        self.require(Role::Server)?;
        self.require_live()?;
        self.check_chunk(&data, text, fin)?;
        let frame_len = data.len() + STREAM_OVERHEAD;
        let queue_full = self.out.len() + frame_len > self.config.max_queued_bytes;
        // SPEC §11.1: in a resumable session STREAM data also waits while the replay buffer
        // is full of frames the peer has not acknowledged, so that whatever a cut loses can
        // be replayed (judged on the frame's exact length: the SPEC's rule is in bytes).
        let replay_room = self.exchanges.get(&id.0).is_none_or(|e| {
            self.replay_has_room(codec::stream_len(data.len(), text, e.next_seq, fin))
        });
        let per_inv = self.config.max_queued_per_invocation;
        let e = self.exchange_mut(id, Kind::Invocation)?;
        if e.finished {
            return Err(SendError::StreamFinished);
        }
        if queue_full || !replay_room || !e.has_room(data.len(), per_inv) {
            e.blocked = true;
            return Err(SendError::Full);
        }
        e.window -= data.len() as u64;
        e.queued += data.len();
        let seq = e.next_seq;
        e.next_seq = e.next_seq.wrapping_add(1);
        e.finished = fin;
        // Encoded straight into the queue (`queue` has nothing to shorten in a STREAM).
        self.out.push_stream(id, &data, text, seq, fin);
        Ok(())
    }

    /// The largest STREAM data [`Connection::stream`] accepts in one chunk (SPEC §7.5): at
    /// most the client's `max_chunk`, half its initial window (up to half a window can stay
    /// unreturned for good, so a larger chunk might never fit) and what fits its frame limit
    /// (§3.6). The minimums of §5.1 keep this at 4 bytes or more, so any character fits.
    pub fn chunk_cap(&self) -> usize {
        (self.peer_limits.max_chunk as usize)
            .min((self.peer_limits.initial_window / 2) as usize)
            .min((self.peer_limits.max_frame_payload as usize).saturating_sub(STREAM_OVERHEAD))
    }

    /// Whether the window and queues have room for `len` more bytes of STREAM data of `id`
    /// now (in chunks of at most [`Connection::chunk_cap`]).
    pub fn can_stream(&self, id: RequestId, len: usize) -> bool {
        self.exchanges.get(&id.0).is_some_and(|e| {
            e.kind == Kind::Invocation
                && !e.finished
                && e.has_room(len, self.config.max_queued_per_invocation)
                && self.out.len() + len + STREAM_OVERHEAD <= self.config.max_queued_bytes
                && self.replay_has_room(len + STREAM_OVERHEAD)
        })
    }

    /// Server: ends an invocation with COMPLETE (SPEC §5.6). A COMPLETE that would exceed
    /// the client's `max_frame_payload` is replaced by ERROR(RESULT_TOO_LARGE) (SPEC §3.6,
    /// §7.1), reported as [`Event::Aborted`]: the invocation ends either way.
    ///
    /// [`Status::Cancelled`] is sent only for an invocation the client interrupted; for any
    /// other the COMPLETE goes out as [`Status::Failed`] (SPEC §5.6: a server never reports
    /// `cancelled` unasked, since the client would take its own INTERRUPT for the cause).
    pub fn complete(
        &mut self,
        id: RequestId,
        status: Status,
        result: Option<RawValue>,
        metrics: Metrics,
    ) -> Result<(), SendError> {
        self.require(Role::Server)?;
        self.require_live()?;
        self.require_exchange(id, Kind::Invocation)?;
        let interrupted = self.exchanges.get(&id.0).is_some_and(|e| e.interrupted);
        let status = match status {
            Status::Cancelled if !interrupted => Status::Failed,
            s => s,
        };
        let frame = Frame::Complete(Complete {
            id,
            status,
            result,
            metrics,
        });
        if let Err(e) = self.check_frame_size(&frame) {
            self.end_too_large(id, &e);
            return Ok(());
        }
        let before = self.out.len();
        self.queue(frame);
        self.remove(id.0);
        self.check_drained();
        self.check_answer_bound(before);
        Ok(())
    }

    /// Ends an exchange the peer initiated with ERROR (SPEC §5.7): a server failing an
    /// invocation, a client refusing a request.
    pub fn fail(
        &mut self,
        id: RequestId,
        code: ErrorCode,
        message: impl Into<Text>,
        retryable: bool,
    ) -> Result<(), SendError> {
        self.require_live()?;
        let kind = match self.role {
            Role::Server => Kind::Invocation,
            Role::Client => Kind::Request,
        };
        self.require_exchange(id, kind)?;
        if code.0 == 0 || code.scope() == ErrorScope::Connection {
            return Err(SendError::InvalidField("code"));
        }
        let message = message.into();
        if message.len() > 1024 {
            return Err(SendError::InvalidField("message"));
        }
        let before = self.out.len();
        self.queue(Frame::Error(ErrorFrame {
            id,
            code,
            message: Some(message),
            retryable,
            frame_type: None,
        }));
        self.remove(id.0);
        self.check_drained();
        self.check_answer_bound(before);
        Ok(())
    }

    /// Server: asks the client a question (SPEC §8). The answer arrives as
    /// [`Event::RequestEnded`] with [`RequestOutcome::Reply`].
    pub fn request(
        &mut self,
        kind: impl Into<Text>,
        body: Option<RawValue>,
        invocation: Option<RequestId>,
    ) -> Result<RequestId, SendError> {
        self.require(Role::Server)?;
        self.require_open()?;
        if self.goaway_received || self.goaway_sent {
            return Err(SendError::Draining);
        }
        if !self.peer_requests {
            return Err(SendError::Unsupported(CAP_REQUESTS));
        }
        let kind = kind.into();
        if kind.is_empty() || kind.len() > 64 {
            return Err(SendError::InvalidField("kind"));
        }
        if self.requests >= usize::from(self.peer_limits.max_inflight) {
            return Err(SendError::TooManyInflight);
        }
        let prev_id = self.next_id;
        let id = self.alloc_id(0x8000, 0xffff)?;
        let parent = invocation.map_or(0, |i| i.0);
        let frame = Frame::Request(Request {
            id,
            kind,
            body,
            invocation,
        });
        if let Err(e) = self.check_frame_size(&frame) {
            self.next_id = prev_id;
            return Err(e);
        }
        let before = self.out.len();
        self.queue(frame);
        let mut e = Exchange::new(Kind::Request, 0);
        // SPEC §8: the request ends with its invocation.
        e.parent = parent;
        self.insert(id, e);
        self.check_answer_bound(before);
        Ok(id)
    }

    /// Server: adds a tool or replaces one with the same name, pushing TOOL_DEF to the
    /// client if connected (SPEC §9).
    pub fn add_tool(&mut self, def: ToolDef) -> Result<(), SendError> {
        self.require(Role::Server)?;
        if self.state == State::Closed {
            return Err(SendError::Closed);
        }
        if def.name.is_empty() || def.name.len() > 128 {
            return Err(SendError::InvalidField("name"));
        }
        if def.description.len() > 65535 {
            return Err(SendError::InvalidField("description"));
        }
        // SPEC §9: the client knows a tool if it was announced to it.
        let known = self.tools.contains_key(&def.name) && !self.unannounced.contains(&def.name);
        let op = if known { ToolOp::Update } else { ToolOp::Add };
        let limit = usize::from(self.peer_limits.max_tools);
        let announced = self.tools.len() - self.unannounced.len();
        if op == ToolOp::Add && self.session.is_some() && announced >= limit {
            return Err(SendError::TooLarge {
                len: announced + 1,
                max: limit,
            });
        }
        let frame = Frame::ToolDef(ToolDef { op, ..def.clone() });
        self.check_frame_size(&frame)?;
        self.unannounced.remove(&def.name);
        self.tools.insert(def.name.clone(), Box::new(def));
        if self.session.is_some() {
            let before = self.out.len();
            self.queue(frame);
            self.check_answer_bound(before);
        }
        Ok(())
    }

    /// Server: removes a tool, pushing TOOL_DEF(remove) if connected. Returns whether it
    /// existed.
    pub fn remove_tool(&mut self, name: &str) -> Result<bool, SendError> {
        self.require(Role::Server)?;
        let key = Text::from(name);
        let Some(def) = self.tools.remove(&key) else {
            return Ok(false);
        };
        let announced = !self.unannounced.remove(&key);
        if announced && self.session.is_some() && self.state != State::Closed {
            let before = self.out.len();
            self.queue(Frame::ToolDef(ToolDef {
                op: ToolOp::Remove,
                name: def.name,
                description: Text::default(),
                input_schema: None,
                annotations: None,
            }));
            self.check_answer_bound(before);
        }
        Ok(true)
    }

    // ───────────────────────── commands: both ─────────────────────────

    /// Interrupts an exchange we initiated (client: an invocation; server: a request). The
    /// peer still ends it; its terminal frame arrives as [`Event::InvocationEnded`] or
    /// [`Event::RequestEnded`] (SPEC §7.3).
    /// Interrupting twice is harmless.
    pub fn interrupt(&mut self, id: RequestId, reason: Option<Text>) -> Result<(), SendError> {
        self.require_live()?;
        let kind = match self.role {
            Role::Client => Kind::Invocation,
            Role::Server => Kind::Request,
        };
        let handshaking = self.state == State::Handshaking;
        let e = self.exchange_mut(id, kind)?;
        if e.interrupted {
            return Ok(());
        }
        if reason.as_ref().is_some_and(|r| r.len() > 1024) {
            return Err(SendError::InvalidField("reason"));
        }
        e.interrupted = true;
        if handshaking {
            // SPEC §6.2 step 1: only INVOKE is pipelined; the INTERRUPT of a pipelined
            // invocation waits for the server's HELLO (and its limits, §3.6).
            e.deferred_interrupt = Some(reason);
            return Ok(());
        }
        self.queue(Frame::Interrupt(Interrupt { id, reason }));
        Ok(())
    }

    /// Starts a graceful shutdown (SPEC §6.5): sends GOAWAY; new exchanges from the peer are
    /// refused; the connection closes when none are in flight, or with GOING_AWAY after
    /// `timeout` (so `Duration::ZERO` closes at once with GOING_AWAY if anything is in
    /// flight; on the wire, GOAWAY `timeout_ms` 0 means "unspecified").
    pub fn goaway(&mut self, now: Instant, reason: Option<Text>, timeout: Duration) {
        self.tick(now);
        if self.goaway_sent || !matches!(self.state, State::Open | State::Draining) {
            return;
        }
        self.goaway_sent = true;
        self.state = State::Draining;
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        self.drain_deadline = Some(self.now + timeout);
        // SPEC §5.12: at most 1024 bytes; `goaway` cannot fail, so a longer reason is cut.
        let reason = reason.map(|r| Text::from(truncated(r.as_str(), 1024)));
        self.queue(Frame::GoAway(GoAway { reason, timeout_ms }));
        self.check_drained();
    }

    /// Closes at once: every exchange in flight ends as lost. Queued frames are still
    /// handed out by `poll_transmit`; then close the transport.
    pub fn close(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        let ids: Vec<(u16, Kind)> = self.exchanges.iter().map(|(i, e)| (*i, e.kind)).collect();
        for (id, kind) in ids {
            self.remove(id);
            if self.initiated(kind) {
                self.events
                    .push_back(ended_lost(kind, RequestId(id), reason.clone()));
            }
        }
        self.events.push_back(Event::Closed(reason));
    }

    // ───────────────────────── resume (SPEC §11) ─────────────────────────

    /// Client: after [`Event::Detached`], call this once a new transport is up. Queues
    /// RESUME; the session continues with [`Event::Resumed`], or restarts with a new HELLO
    /// if the server cannot resume.
    pub fn resume(&mut self, now: Instant) -> Result<(), SendError> {
        self.require(Role::Client)?;
        self.tick(now);
        if self.state != State::Detached {
            return Err(SendError::NotOpen);
        }
        let token = self
            .resume_token
            .clone()
            .ok_or(SendError::Unsupported(CAP_RESUME))?;
        self.state = State::Resuming;
        self.detached_until = None;
        self.handshake_deadline = Some(self.now + self.config.handshake_timeout);
        self.last_recv = self.now;
        self.queue_front(Frame::Resume(Resume {
            token: Some(token),
            received: self.recv_count,
        }));
        Ok(())
    }

    /// Server: on the *detached* connection whose token matched an
    /// [`Event::ResumeRequested`], continue the session on the new transport. On success
    /// this connection answers RESUME and replays what the client missed; drive it with the
    /// new transport and drop the connection that received the request. On failure this
    /// session is closed; call `reject_resume` on the new one.
    pub fn accept_resume(&mut self, now: Instant, received: u64) -> Result<(), SendError> {
        self.require(Role::Server)?;
        self.tick(now);
        if self.state != State::Detached {
            return Err(SendError::NotOpen);
        }
        if !self.replay_from(received) {
            self.close(CloseReason::TransportClosed);
            return Err(SendError::Closed);
        }
        self.queue_front(Frame::Resume(Resume {
            token: None,
            received: self.recv_count,
        }));
        self.state = if self.goaway_sent || self.goaway_received {
            State::Draining
        } else {
            State::Open
        };
        self.detached_until = None;
        self.last_recv = self.now;
        self.pings_sent = 0;
        self.emit(Event::Resumed);
        Ok(())
    }

    /// Server: refuse the resume this new connection was asked for (SPEC §11.2 step 3). It
    /// answers `ERROR(RESUME_FAILED)` and waits for a HELLO.
    pub fn reject_resume(&mut self, now: Instant) {
        self.tick(now);
        if self.state == State::Resuming && self.role == Role::Server {
            self.state = State::Handshaking;
            self.queue(Frame::Error(error_frame(
                RequestId::CONNECTION,
                ErrorCode::RESUME_FAILED,
                "unknown or expired session".into(),
                None,
            )));
        }
    }

    /// Moves sent frames the peer did not receive back to the front of the queue. `false`
    /// if some were already dropped from the replay buffer (SPEC §11.2 step 3).
    fn replay_from(&mut self, received: u64) -> bool {
        match self.replay.take_from(received, self.sent_count) {
            Some(frames) => {
                self.sent_count = received;
                self.out.push_front_encoded(frames);
                true
            }
            None => false,
        }
    }

    /// SPEC §11.1: whether `len` more bytes of STREAM may be queued in a resumable session
    /// (always in one that is not).
    fn replay_has_room(&self, len: usize) -> bool {
        !self.resumable || self.replay.has_room(self.out.len(), len)
    }

    /// The `received` count our PING or PONG carries: in a resumable session, every one
    /// acknowledges (SPEC §11.1).
    fn heartbeat_ack(&mut self) -> Heartbeat {
        if self.resumable {
            self.unacked_in = 0;
            Heartbeat {
                received: Some(self.recv_count),
            }
        } else {
            Heartbeat::NONE
        }
    }

    /// SPEC §11.1: acknowledge at least every quarter of the peer's replay buffer of input,
    /// so that an honest sender never waits on a full buffer for long.
    fn maybe_ack(&mut self) {
        if self.resumable
            && self.is_open()
            && self.unacked_in >= (self.peer_replay_buffer / 4).max(1)
        {
            let ping = Frame::Ping(self.heartbeat_ack());
            self.queue(ping);
        }
    }

    /// The peer's `received` count on a PING or PONG (SPEC §11.1): its frames up to there
    /// leave the replay buffer, and STREAM data waiting for room may go on. `false` if it
    /// claims more frames than were sent (the connection is then closed).
    fn on_ack(&mut self, h: Heartbeat) -> bool {
        let Some(received) = h.received.filter(|_| self.resumable) else {
            return true;
        };
        if !self.replay.ack(received, self.sent_count) {
            self.fatal(
                ErrorCode::PROTOCOL_VIOLATION,
                format!(
                    "received {received} acknowledges more than the {} frames sent",
                    self.sent_count
                ),
            );
            return false;
        }
        self.wake_blocked();
        true
    }

    // ───────────────────────── inbound dispatch ─────────────────────────

    fn tick(&mut self, now: Instant) {
        // Time never goes backwards, whatever the caller passes.
        self.now = self.now.max(now);
    }

    fn accepts_input(&self) -> bool {
        !matches!(self.state, State::Closed | State::Detached)
    }

    fn is_open(&self) -> bool {
        matches!(self.state, State::Open | State::Draining)
    }

    /// SPEC §13.1: the connection error OVERLOADED. What was queued is dropped first: the
    /// peer is not reading it, the connection is ending, and the ERROR then comes right
    /// after what the transport already holds instead of behind the backlog that caused it.
    fn overloaded(&mut self, message: String) {
        self.out.clear();
        self.fatal(ErrorCode::OVERLOADED, message);
    }

    /// SPEC §13.1: the bounds on replies and events exist because a peer can provoke them
    /// faster than they drain. They are judged on what the current input batch added, after
    /// every frame (so one batch cannot grow the queue far past the bound), and only growth
    /// counts, so a large frame the application itself queued never closes a healthy
    /// connection later. Reaching one is the connection error OVERLOADED: named, not a
    /// silent cut.
    fn check_input_bounds(&mut self, before: (usize, usize)) {
        if self.state == State::Closed {
            return;
        }
        let (out, events) = (self.out.len(), self.events.len());
        if out > before.0 && out > self.config.max_buffered {
            self.overloaded(format!(
                "{out} bytes queued for a peer that does not read (bound {})",
                self.config.max_buffered
            ));
        } else if events > before.1 && events > self.config.max_pending_events {
            self.overloaded(format!(
                "{events} events the application did not take (bound {})",
                self.config.max_pending_events
            ));
        }
    }

    fn after_input(&mut self, before: (usize, usize)) {
        self.maybe_ack();
        self.check_input_bounds(before);
    }

    /// SPEC §13.1: an answer (COMPLETE, ERROR, REPLY) or a server's own frame (REQUEST,
    /// TOOL_DEF) that takes the queue past `max_buffered` ends the connection with
    /// OVERLOADED: the peer is not reading, and what it does not read is held here. A frame
    /// queued into an empty queue never does (one frame is bounded by the peer's own
    /// `max_frame_payload`).
    fn check_answer_bound(&mut self, before: usize) {
        let out = self.out.len();
        if before > 0 && out > self.config.max_buffered && self.state != State::Closed {
            self.overloaded(format!(
                "{out} bytes queued for a peer that does not read (bound {})",
                self.config.max_buffered
            ));
        }
    }

    fn input_mark(&self) -> (usize, usize) {
        (self.out.len(), self.events.len())
    }

    /// What `on_decoded` and `on_frame` do for a STREAM that reached an open client: it is
    /// input (SPEC §6.7), counted for resume (§11.1), exempt from the rate limit (§10), sent
    /// in the allowed direction (§3.3) after the handshake (§6.2).
    fn on_stream_received(&mut self, s: Stream) {
        self.last_recv = self.now;
        self.pings_sent = 0;
        self.recv_count += 1;
        self.on_stream(s);
    }

    fn on_decoded(&mut self, r: Result<Frame, DecodeError>) {
        self.last_recv = self.now;
        self.pings_sent = 0;
        let raw_type = match &r {
            Ok(f) => f.frame_type() as u8,
            Err(e) => e.frame_type,
        };
        if counted(raw_type) {
            self.recv_count += 1;
        }
        // SPEC §10: count every frame, good or bad, except STREAM (bounded by flow control).
        let verdict = if raw_type == FrameType::Stream as u8 {
            RateVerdict::Ok
        } else {
            self.rate
                .on_frame(self.now, self.config.rate_limit, self.config.flood_limit)
        };
        if verdict == RateVerdict::Flood {
            self.fatal(
                ErrorCode::FLOOD,
                format!("more than {} frames in one second", self.config.flood_limit),
            );
            return;
        }
        if verdict == RateVerdict::FirstOver {
            self.queue(Frame::Error(error_frame(
                RequestId::CONNECTION,
                ErrorCode::RATE_LIMITED,
                format!("over {} frames per second", self.config.rate_limit),
                None,
            )));
        }
        let over_rate = verdict != RateVerdict::Ok;
        match r {
            Ok(frame) => self.on_frame(frame, over_rate),
            Err(e) => self.on_decode_error(e),
        }
    }

    /// SPEC §3.7: a frame error. The reply names the frame's id only if that id is valid
    /// for the frame's type, so a bad id can never end an unrelated exchange.
    fn on_decode_error(&mut self, e: DecodeError) {
        if e.kind.is_fatal() {
            self.fatal(e.code(), e.kind.to_string());
            return;
        }
        let mut e = e;
        let payload_step = matches!(
            e.kind,
            DecodeErrorKind::Malformed(_)
                | DecodeErrorKind::MissingField { .. }
                | DecodeErrorKind::InvalidField { .. }
        );
        if let (true, Some(ty)) = (payload_step, FrameType::from_nibble(e.frame_type)) {
            // SPEC §3.7 step 5: an INTERRUPT names an exchange its sender initiated.
            if ty == FrameType::Interrupt && !self.peer_interrupt_id(RequestId(e.request_id)) {
                e.kind = DecodeErrorKind::InvalidId;
            } else if !self.peer_may_send(ty) {
                // SPEC §3.7 step 6: direction is checked before the payload.
                self.fatal(
                    ErrorCode::PROTOCOL_VIOLATION,
                    format!("{} may not be sent by a {}", ty.name(), self.peer_name()),
                );
                return;
            }
        }
        if matches!(self.state, State::Handshaking | State::Resuming) {
            // SPEC §6.2: nothing can proceed without a valid HELLO.
            self.fatal(e.code(), format!("during handshake: {}", e.kind));
            return;
        }
        let id = FrameType::from_nibble(e.frame_type)
            .filter(|t| t.id_rule().allows(RequestId(e.request_id)))
            .filter(|t| {
                *t != FrameType::Interrupt || self.peer_interrupt_id(RequestId(e.request_id))
            })
            .map_or(RequestId::CONNECTION, |_| RequestId(e.request_id));
        // SPEC §6.2 step 4: a rejected TOOL_DEF of the initial set still counts, so the
        // handshake completes.
        if e.frame_type == FrameType::ToolDef as u8 && self.initial_tools > 0 {
            self.initial_tools -= 1;
            self.maybe_connected();
        }
        let err = error_frame(id, e.code(), e.kind.to_string(), Some(e.frame_type));
        if e.frame_type != FrameType::Error as u8 {
            self.queue(Frame::Error(err.clone()));
            self.emit(Event::Violation(err.clone()));
            self.quarantine(id);
        }
        self.end_by_error(id, err);
    }

    fn on_frame(&mut self, frame: Frame, over_rate: bool) {
        // SPEC §5.13 with §3.7: `token` is required of a client's RESUME. That is a step-6
        // field check, decided before any state rule (step 7); only the receiver's role tells
        // it apart from a server's RESUME, which has no token.
        if let (Role::Server, Frame::Resume(Resume { token: None, .. })) = (self.role, &frame) {
            self.on_decode_error(DecodeError {
                request_id: 0,
                frame_type: FrameType::Resume as u8,
                kind: DecodeErrorKind::MissingField { field: "token" },
            });
            return;
        }
        // SPEC §3.5, §3.7 step 5: an INTERRUPT names an exchange its sender initiated (a
        // frame error, not a connection error: the friendlier answer to a confused peer).
        if let Frame::Interrupt(i) = &frame {
            if !self.peer_interrupt_id(i.id) {
                self.on_decode_error(DecodeError {
                    request_id: i.id.0,
                    frame_type: FrameType::Interrupt as u8,
                    kind: DecodeErrorKind::InvalidId,
                });
                return;
            }
        }
        // SPEC §6.2: the handshake comes first.
        match (self.state, self.role, &frame) {
            (State::Handshaking, Role::Server, Frame::Hello(_) | Frame::Resume(_)) => {}
            (State::Handshaking, Role::Client, Frame::Hello(_) | Frame::Error(_)) => {}
            (State::Resuming, Role::Client, Frame::Resume(_) | Frame::Error(_)) => {}
            (State::Handshaking | State::Resuming, _, f) => {
                let name = f.frame_type().name();
                self.fatal(
                    ErrorCode::PROTOCOL_VIOLATION,
                    format!("{name} before the handshake completed"),
                );
                return;
            }
            (_, _, Frame::Hello(_) | Frame::Resume(_)) => {
                self.fatal(
                    ErrorCode::PROTOCOL_VIOLATION,
                    "second HELLO or RESUME".into(),
                );
                return;
            }
            _ => {}
        }
        // SPEC §3.3: direction.
        if !self.peer_may_send(frame.frame_type()) {
            let name = frame.frame_type().name();
            let who = self.peer_name();
            self.fatal(
                ErrorCode::PROTOCOL_VIOLATION,
                format!("{name} may not be sent by a {who}"),
            );
            return;
        }
        match frame {
            Frame::Hello(h) => match self.role {
                Role::Server => self.on_client_hello(h),
                Role::Client => self.on_server_hello(h),
            },
            Frame::Resume(r) => self.on_resume(r),
            Frame::Invoke(i) => self.on_invoke(i, over_rate),
            Frame::Stream(s) => self.on_stream(s),
            Frame::Interrupt(i) => {
                // SPEC §7.3: an interrupt for an id not in flight crossed the terminal frame.
                if let Some(e) = self.exchanges.get_mut(&i.id.0) {
                    if !e.interrupted {
                        e.interrupted = true;
                        self.emit(Event::Interrupted {
                            id: i.id,
                            reason: i.reason,
                        });
                    }
                }
            }
            Frame::ToolDef(t) => self.on_tool_def(t),
            Frame::Complete(c) => {
                if self.take_initiated(c.id, Kind::Invocation) {
                    self.emit(Event::InvocationEnded {
                        id: c.id,
                        outcome: InvocationOutcome::Complete(Box::new(c)),
                    });
                    self.check_drained();
                } else if !self.quarantined.contains_key(&c.id.0) {
                    self.violation(
                        c.id,
                        ErrorCode::UNKNOWN_ID,
                        "COMPLETE for an id not in flight",
                        FrameType::Complete,
                    );
                }
            }
            Frame::Error(e) => self.on_error(e),
            Frame::Ping(h) => {
                if !self.on_ack(h) {
                    return;
                }
                // SPEC §6.7: answer; a PONG may be dropped when the queue is full.
                if self.out.len() < self.config.max_queued_bytes {
                    let pong = Frame::Pong(self.heartbeat_ack());
                    self.queue(pong);
                }
            }
            Frame::Pong(h) => {
                // SPEC §11.1: a PONG may carry an acknowledgement; SPEC §3.5: it also
                // answers a PING sent after our own ERROR (id quarantine).
                if self.on_ack(h) {
                    self.on_pong();
                }
            }
            Frame::Request(r) => self.on_request(r, over_rate),
            Frame::Reply(r) => {
                if self.take_initiated(r.id, Kind::Request) {
                    self.emit(Event::RequestEnded {
                        id: r.id,
                        outcome: RequestOutcome::Reply(r),
                    });
                    self.check_drained();
                } else if !self.quarantined.contains_key(&r.id.0) {
                    self.violation(
                        r.id,
                        ErrorCode::UNKNOWN_ID,
                        "REPLY for an id not in flight",
                        FrameType::Reply,
                    );
                }
            }
            Frame::Credit(c) => {
                // SPEC §7.5; a CREDIT for an id not in flight crossed the terminal frame.
                let per_inv = self.config.max_queued_per_invocation;
                if let Some(e) = self.exchanges.get_mut(&c.id.0) {
                    if e.kind == Kind::Invocation {
                        match e.grant(c.bytes) {
                            Ok(()) => {
                                if e.blocked && e.has_room(1, per_inv) {
                                    e.blocked = false;
                                    self.emit(Event::Writable { id: c.id });
                                }
                            }
                            Err(code) => {
                                self.violation(c.id, code, "window above 2^32-1", FrameType::Credit)
                            }
                        }
                    }
                }
            }
            Frame::GoAway(g) => {
                self.goaway_received = true;
                if self.state == State::Open {
                    self.state = State::Draining;
                }
                self.emit(Event::GoAway(g));
            }
        }
    }

    fn on_client_hello(&mut self, h: Hello) {
        // SPEC §6.3: the highest common version.
        let Some(version) = h.versions.intersect(Versions::V1).highest() else {
            self.fatal(
                ErrorCode::UNSUPPORTED_VERSION,
                format!(
                    "no common version: client offers {:?}, server supports [1]",
                    h.versions
                ),
            );
            return;
        };
        // SPEC §11.1: frames are counted per session. A connection that refused a resume
        // (`reject_resume`) already sent ERROR(RESUME_FAILED), which the client counted for
        // the old session and forgot with it; the new session starts from zero on both
        // sides.
        self.sent_count = 0;
        self.recv_count = 0;
        self.replay = Replay::new(self.config.replay_buffer);
        self.peer_limits = Limits::from_hello(&h.limits);
        self.note_peer_resume(&h.limits);
        self.peer_requests = has_cap(&h.capabilities, CAP_REQUESTS);
        self.resumable = self.config.resume
            && has_cap(&h.capabilities, CAP_RESUME)
            && self.resume_token.is_some();
        self.heartbeat = negotiate_heartbeat(self.config.heartbeat, h.heartbeat_ms);
        let mut capabilities = Vec::new();
        if self.config.resume {
            capabilities.push(Text::from_static(CAP_RESUME));
        }
        // SPEC §6.2 step 3: the initial tool set follows the HELLO, cut to what the client
        // accepts (its `max_tools`, and frames within its `max_frame_payload`), so it never
        // provokes an error and the client's countdown to `Connected` always completes.
        let max_payload = self.peer_limits.max_frame_payload as usize;
        let mut initial_set = Vec::new();
        self.unannounced.clear();
        for d in self.tools.values() {
            let frame = Frame::ToolDef(ToolDef {
                op: ToolOp::Add,
                ..(**d).clone()
            });
            let fits = encoded_len(&frame) - HEADER_LEN <= max_payload;
            if fits && initial_set.len() < usize::from(self.peer_limits.max_tools) {
                initial_set.push(frame);
            } else {
                self.unannounced.insert(d.name.clone());
            }
        }
        let initial = u16::try_from(initial_set.len()).unwrap_or(u16::MAX);
        // SPEC §5.1, §6.4: the server announces what is in force, defaults included, so a
        // client need not know §13: the limits that bind the client, and the session's
        // heartbeat interval (already the smaller of the two).
        let mut limits = self.hello_limits();
        limits.max_frame_payload = Some(self.config.limits.max_frame_payload);
        limits.max_inflight = Some(self.config.limits.max_inflight);
        let session_heartbeat = self
            .heartbeat
            .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        let hello = Hello {
            versions: Versions::single(version),
            capabilities,
            limits,
            heartbeat_ms: Some(session_heartbeat),
            connection_id: self.connection_id.clone(),
            resume_token: self.resume_token.clone().filter(|_| self.resumable),
            tools: initial,
            agent: self.config.agent.clone(),
        };
        self.queue(Frame::Hello(hello));
        for frame in initial_set {
            self.queue(frame);
        }
        self.open(version, h.capabilities, h.agent);
    }

    fn on_server_hello(&mut self, h: Hello) {
        let chosen = h.versions.highest();
        if h.versions.len() != 1 || chosen != Some(1) {
            self.fatal(
                ErrorCode::UNSUPPORTED_VERSION,
                format!("server chose {:?}; client offered [1]", h.versions),
            );
            return;
        }
        let Some(connection_id) = h.connection_id.clone() else {
            // SPEC §6.2 step 4: MISSING_FIELD, a connection error during the handshake.
            self.fatal(
                ErrorCode::MISSING_FIELD,
                "missing field `connection_id` in the server HELLO".into(),
            );
            return;
        };
        self.connection_id = Some(connection_id);
        self.peer_limits = Limits::from_hello(&h.limits);
        self.note_peer_resume(&h.limits);
        self.heartbeat = negotiate_heartbeat(self.config.heartbeat, h.heartbeat_ms);
        self.resumable = self.config.resume && h.resume_token.is_some();
        self.resume_token = h.resume_token.clone();
        self.initial_tools = h.tools;
        self.open(1, h.capabilities, h.agent);
        // SPEC §6.2 step 1: interrupts of pipelined invocations go out now.
        let deferred: Vec<(u16, Option<Text>)> = self
            .exchanges
            .iter_mut()
            .filter_map(|(id, e)| e.deferred_interrupt.take().map(|r| (*id, r)))
            .collect();
        for (id, reason) in deferred {
            self.queue(Frame::Interrupt(Interrupt {
                id: RequestId(id),
                reason,
            }));
        }
    }

    /// SPEC §11: what the peer keeps for a resume, from its HELLO `limits`.
    fn note_peer_resume(&mut self, l: &HelloLimits) {
        self.peer_replay_buffer = l
            .replay_buffer
            .map_or(DEFAULT_REPLAY_BUFFER, |b| b as usize);
        self.peer_resume_window = l
            .resume_window_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        self.unacked_in = 0;
    }

    fn open(&mut self, version: u8, peer_capabilities: Vec<Text>, peer_agent: Option<Text>) {
        self.state = State::Open;
        self.handshake_deadline = None;
        self.session = Some(Session {
            connection_id: self.connection_id.clone().unwrap_or_default(),
            version,
            peer_limits: self.peer_limits,
            peer_capabilities,
            heartbeat_ms: self
                .heartbeat
                .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            resumable: self.resumable,
            resume_window_ms: if self.resumable {
                let w = self
                    .peer_resume_window
                    .map_or(self.config.resume_window, |p| {
                        p.min(self.config.resume_window)
                    });
                u32::try_from(w.as_millis()).unwrap_or(u32::MAX)
            } else {
                0
            },
            peer_agent,
        });
        self.maybe_connected();
    }

    /// `Connected` once the handshake is done and (client) the initial tools arrived.
    fn maybe_connected(&mut self) {
        if self.initial_tools == 0 {
            if let Some(s) = self.session.clone() {
                self.emit(Event::Connected(Box::new(s)));
            }
        }
    }

    fn on_resume(&mut self, r: Resume) {
        match self.role {
            Role::Server => {
                // A new transport asks to resume: the application decides (SPEC §11.2).
                match r.token {
                    Some(token) if self.config.resume => {
                        self.state = State::Resuming;
                        self.emit(Event::ResumeRequested {
                            token,
                            received: r.received,
                        });
                    }
                    _ => self.queue(Frame::Error(error_frame(
                        RequestId::CONNECTION,
                        ErrorCode::RESUME_FAILED,
                        "resume not supported".into(),
                        None,
                    ))),
                }
            }
            Role::Client => {
                // The server accepted: replay what it missed (SPEC §11.2 step 4).
                if !self.replay_from(r.received) {
                    self.fatal(
                        ErrorCode::RESUME_FAILED,
                        "frames the server missed are no longer buffered".into(),
                    );
                    return;
                }
                self.state = if self.goaway_sent || self.goaway_received {
                    State::Draining
                } else {
                    State::Open
                };
                self.handshake_deadline = None;
                self.emit(Event::Resumed);
            }
        }
    }

    fn on_invoke(&mut self, mut i: Invoke, over_rate: bool) {
        // SPEC §6.2 step 3, §7.2: a tool cut from the initial set is unknown to the client,
        // so it is unknown here too until an `add` announces it.
        let unknown_tool = self.config.check_tools
            && (!self.tools.contains_key(&i.tool) || self.unannounced.contains(&i.tool));
        let last = unknown_tool.then(|| {
            (
                ErrorCode::UNKNOWN_TOOL,
                format!("no tool named {:?}", i.tool.as_str()),
            )
        });
        let held = i.tool.len() + raw_len(&i.args) + raw_len(&i.meta);
        if !self.admit(i.id, Kind::Invocation, over_rate, held, None, last) {
            return;
        }
        if self.input_len > held + UNSHARE_SLACK {
            // SPEC §13.1: what the handler holds is counted by its own size, so it must not
            // pin the rest of a larger message.
            i.tool = Text::from_checked(Bytes::copy_from_slice(i.tool.as_bytes()));
            i.args = i.args.as_ref().map(unshare);
            i.meta = i.meta.as_ref().map(unshare);
        }
        let id = i.id;
        let mut e = Exchange::new(Kind::Invocation, self.peer_limits.initial_window);
        if i.deadline_ms > 0 {
            e.deadline = Some(self.now + Duration::from_millis(u64::from(i.deadline_ms)));
        }
        e.held = held;
        self.insert(id, e);
        self.emit(Event::Invoked(Box::new(i)));
    }

    fn on_stream(&mut self, s: Stream) {
        let max_chunk = self.config.limits.max_chunk;
        let Some(e) = self.exchanges.get_mut(&s.id.0) else {
            if self.quarantined.contains_key(&s.id.0) {
                // SPEC §3.5: sent before the server read our ERROR for this id.
                return;
            }
            self.violation(
                s.id,
                ErrorCode::UNKNOWN_ID,
                "STREAM for an id not in flight",
                FrameType::Stream,
            );
            return;
        };
        match e.accept_stream(&s, max_chunk) {
            Ok(()) => self.emit(Event::Chunk(s)),
            Err(code) => {
                let msg = match code {
                    ErrorCode::CHUNK_TOO_LARGE => format!(
                        "data of {} bytes exceeds max_chunk {max_chunk}",
                        s.data.len()
                    ),
                    ErrorCode::FLOW_CONTROL => {
                        format!("data of {} bytes exceeds the window", s.data.len())
                    }
                    _ => format!("unexpected seq {} or STREAM after final", s.seq),
                };
                self.violation(s.id, code, &msg, FrameType::Stream);
            }
        }
    }

    fn on_tool_def(&mut self, t: ToolDef) {
        // SPEC §9.
        let exists = self.tools.contains_key(&t.name);
        let problem = match t.op {
            ToolOp::Add if exists => Some((ErrorCode::TOOL_STATE, "add of a tool that exists")),
            ToolOp::Update | ToolOp::Remove if !exists => {
                Some((ErrorCode::TOOL_STATE, "update or remove of an unknown tool"))
            }
            ToolOp::Add if self.tools.len() >= usize::from(self.config.limits.max_tools) => {
                Some((ErrorCode::TOO_MANY_TOOLS, "max_tools reached"))
            }
            _ => None,
        };
        if let Some((code, msg)) = problem {
            let err = error_frame(
                RequestId::CONNECTION,
                code,
                format!("{msg}: {:?}", t.name.as_str()),
                Some(FrameType::ToolDef as u8),
            );
            self.queue(Frame::Error(err.clone()));
            self.emit(Event::Violation(err));
        } else {
            let change = match t.op {
                ToolOp::Add => {
                    self.tools.insert(t.name.clone(), Box::new(t.clone()));
                    ToolChange::Added(t)
                }
                ToolOp::Update => {
                    self.tools.insert(t.name.clone(), Box::new(t.clone()));
                    ToolChange::Updated(t)
                }
                ToolOp::Remove => {
                    self.tools.remove(&t.name);
                    ToolChange::Removed(t.name)
                }
            };
            self.emit(Event::ToolsChanged(Box::new(change)));
        }
        if self.initial_tools > 0 {
            self.initial_tools -= 1;
            self.maybe_connected();
        }
    }

    fn on_error(&mut self, e: ErrorFrame) {
        // SPEC §11.2 steps 3–4: the answer to our RESUME; the transport stays open.
        if e.code == ErrorCode::RESUME_FAILED
            && self.role == Role::Client
            && self.state == State::Resuming
        {
            self.restart_session(e);
            return;
        }
        // SPEC §12.1: the scope is decided by the code's number, whatever the id.
        if e.code.scope() == ErrorScope::Connection {
            let reason = CloseReason::PeerError {
                code: e.code,
                message: e.message.map(|m| m.as_str().to_owned()),
            };
            self.close(reason);
            return;
        }
        if e.id.is_connection() {
            self.emit(Event::PeerError(e));
            return;
        }
        if self.exchanges.contains_key(&e.id.0) {
            self.end_by_error(e.id, e);
        } else if !self.quarantined.contains_key(&e.id.0) {
            self.emit(Event::PeerError(e));
        }
    }

    /// Client: the server could not resume. Every exchange of the old session is lost; a
    /// new session starts with HELLO on the same transport (SPEC §11.2 step 4).
    fn restart_session(&mut self, e: ErrorFrame) {
        let ids: Vec<u16> = self.exchanges.keys().copied().collect();
        let reason = CloseReason::PeerError {
            code: e.code,
            message: e.message.as_ref().map(|m| m.as_str().to_owned()),
        };
        for id in ids {
            let kind = self.exchanges.get(&id).map(|x| x.kind);
            self.remove(id);
            if let Some(kind) = kind.filter(|k| self.initiated(*k)) {
                self.emit(ended_lost(kind, RequestId(id), reason.clone()));
            }
        }
        self.out.clear();
        self.replay = Replay::new(self.config.replay_buffer);
        self.sent_count = 0;
        self.recv_count = 0;
        self.tools.clear();
        self.session = None;
        self.resumable = false;
        self.resume_token = None;
        self.goaway_received = false;
        self.goaway_sent = false;
        self.drain_deadline = None;
        self.state = State::Handshaking;
        self.emit(Event::PeerError(e));
        self.queue_client_hello();
    }

    fn on_request(&mut self, mut r: Request, over_rate: bool) {
        let first = (!self.config.accept_requests).then(|| {
            (
                ErrorCode::UNSUPPORTED,
                "client does not accept requests".to_string(),
            )
        });
        let held = r.kind.len() + raw_len(&r.body);
        if !self.admit(r.id, Kind::Request, over_rate, held, first, None) {
            return;
        }
        if self.input_len > held + UNSHARE_SLACK {
            r.kind = Text::from_checked(Bytes::copy_from_slice(r.kind.as_bytes()));
            r.body = r.body.as_ref().map(unshare);
        }
        let id = r.id;
        let mut e = Exchange::new(Kind::Request, 0);
        e.held = held;
        self.insert(id, e);
        self.emit(Event::Requested(Box::new(r)));
    }

    // ───────────────────────── helpers ─────────────────────────

    /// SPEC §7.2 (and §8 for requests): whether to run an opening frame, checked in order:
    /// `first` (a kind-specific refusal that comes first), DRAINING, DUPLICATE_ID,
    /// TOO_MANY_INFLIGHT (`max_inflight`, or the frame's `held` bytes beyond
    /// `max_args_in_flight`, SPEC §13.1), RATE_LIMITED, then `last`. A refusal sends the
    /// terminal ERROR.
    fn admit(
        &mut self,
        id: RequestId,
        kind: Kind,
        over_rate: bool,
        held: usize,
        first: Option<(ErrorCode, String)>,
        last: Option<(ErrorCode, String)>,
    ) -> bool {
        let ty = match kind {
            Kind::Invocation => FrameType::Invoke,
            Kind::Request => FrameType::Request,
        };
        let who = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        // SPEC §6.5: after GOAWAY in either direction nobody opens new exchanges; an opening
        // frame that still comes is refused, whichever side sent the GOAWAY.
        let draining = (self.goaway_sent || self.goaway_received)
            .then(|| (ErrorCode::DRAINING, format!("{who} is draining")));
        let first = first.or(draining);
        if first.is_none() && self.exchanges.contains_key(&id.0) {
            // Ends the exchange already in flight with this id too.
            self.violation(id, ErrorCode::DUPLICATE_ID, "id already in flight", ty);
            return false;
        }
        let in_flight = match kind {
            Kind::Invocation => self.invocations,
            Kind::Request => self.requests,
        };
        let max = self.config.limits.max_inflight;
        // SPEC §13.1: the running exchanges' opening frames are held for their handlers; an
        // empty connection always takes one (a frame is bounded by `max_frame_payload`).
        let max_held = self.config.max_args_in_flight;
        let refuse = first
            .or_else(|| {
                (in_flight >= usize::from(max)).then(|| {
                    (
                        ErrorCode::TOO_MANY_INFLIGHT,
                        format!("max_inflight is {max}"),
                    )
                })
            })
            .or_else(|| {
                (self.args_in_flight > 0 && self.args_in_flight + held > max_held).then(|| {
                    (
                        ErrorCode::TOO_MANY_INFLIGHT,
                        format!(
                            "the arguments of the exchanges in flight would pass {max_held} bytes"
                        ),
                    )
                })
            })
            .or_else(|| {
                over_rate.then(|| (ErrorCode::RATE_LIMITED, "over the frame rate limit".into()))
            })
            .or(last);
        let Some((code, message)) = refuse else {
            return true;
        };
        let err = error_frame(id, code, message, Some(ty as u8));
        self.queue(Frame::Error(err.clone()));
        // SPEC §7.2: an ERROR naming an id in flight is terminal there; a refusal that comes
        // before DUPLICATE_ID (DRAINING) ends ours too, or the two sides would disagree.
        self.end_by_error(id, err);
        false
    }

    /// A rule broken for one exchange: ERROR to the peer (which ends the exchange there),
    /// and the exchange ends here too.
    fn violation(&mut self, id: RequestId, code: ErrorCode, message: &str, ty: FrameType) {
        let err = error_frame(id, code, message.to_owned(), Some(ty as u8));
        self.queue(Frame::Error(err.clone()));
        self.emit(Event::Violation(err.clone()));
        self.quarantine(id);
        self.end_by_error(id, err);
    }

    /// SPEC §3.5: we end an exchange we initiated by sending ERROR. The peer may have sent
    /// frames for it before reading the ERROR; the id stays reserved and such frames are
    /// dropped silently until the PONG of a PING queued right after the ERROR arrives
    /// (frames are ordered, so by then the peer has read the ERROR).
    fn quarantine(&mut self, id: RequestId) {
        let Some(kind) = self.exchanges.get(&id.0).map(|e| e.kind) else {
            return;
        };
        if !self.initiated(kind) {
            return;
        }
        self.queue_ping();
        self.quarantined.insert(id.0, self.pings_queued);
    }

    fn queue_ping(&mut self) {
        self.pings_queued += 1;
        let ping = Frame::Ping(self.heartbeat_ack());
        self.queue(ping);
    }

    /// A PONG answers the oldest PING not yet answered (a PONG may be dropped, which only
    /// delays the release); ids quarantined up to that PING are free again.
    fn on_pong(&mut self) {
        self.pongs_received = (self.pongs_received + 1).min(self.pings_queued);
        if !self.quarantined.is_empty() {
            let answered = self.pongs_received;
            self.quarantined.retain(|_, ping| *ping > answered);
        }
    }

    /// SPEC §3.3: whether the peer's role may send frames of this type.
    fn peer_may_send(&self, ty: FrameType) -> bool {
        match ty {
            FrameType::Hello
            | FrameType::Error
            | FrameType::Ping
            | FrameType::Pong
            | FrameType::GoAway
            | FrameType::Resume
            | FrameType::Interrupt => true,
            FrameType::Invoke | FrameType::Reply | FrameType::Credit => self.role == Role::Server,
            FrameType::Stream | FrameType::ToolDef | FrameType::Complete | FrameType::Request => {
                self.role == Role::Client
            }
        }
    }

    /// SPEC §3.5: the peer's INTERRUPT names an exchange the peer initiated: a client's
    /// an invocation (client id space), a server's a request (server id space).
    fn peer_interrupt_id(&self, id: RequestId) -> bool {
        match self.role {
            Role::Server => id.is_client(),
            Role::Client => id.is_server(),
        }
    }

    fn peer_name(&self) -> &'static str {
        match self.role {
            Role::Client => "server",
            Role::Server => "client",
        }
    }

    /// SPEC §3.6, §7.1: the terminal frame of `id` (COMPLETE or REPLY) does not fit the
    /// peer's `max_frame_payload`. The exchange still ends, with ERROR(RESULT_TOO_LARGE),
    /// which always fits (its message is shortened as needed).
    fn end_too_large(&mut self, id: RequestId, e: &SendError) {
        let err = error_frame(id, ErrorCode::RESULT_TOO_LARGE, e.to_string(), None);
        self.queue(Frame::Error(err.clone()));
        self.remove(id.0);
        self.emit(Event::Aborted { id, error: err });
        self.check_drained();
    }

    /// Ends exchange `id` (if in flight) because of an ERROR sent or received.
    fn end_by_error(&mut self, id: RequestId, err: ErrorFrame) {
        let Some(kind) = self.exchanges.get(&id.0).map(|e| e.kind) else {
            return;
        };
        self.remove(id.0);
        if self.initiated(kind) {
            self.emit(match kind {
                Kind::Invocation => Event::InvocationEnded {
                    id,
                    outcome: InvocationOutcome::Error(err),
                },
                Kind::Request => Event::RequestEnded {
                    id,
                    outcome: RequestOutcome::Error(err),
                },
            });
        } else {
            self.emit(Event::Aborted { id, error: err });
        }
        self.check_drained();
    }

    /// Did this side open exchanges of this kind?
    fn initiated(&self, kind: Kind) -> bool {
        matches!(
            (self.role, kind),
            (Role::Client, Kind::Invocation) | (Role::Server, Kind::Request)
        )
    }

    /// Removes an exchange we initiated when its terminal frame arrives.
    fn take_initiated(&mut self, id: RequestId, kind: Kind) -> bool {
        if self.exchanges.get(&id.0).is_some_and(|e| e.kind == kind) && self.initiated(kind) {
            self.remove(id.0);
            true
        } else {
            false
        }
    }

    fn insert(&mut self, id: RequestId, e: Exchange) {
        match e.kind {
            Kind::Invocation => self.invocations += 1,
            Kind::Request => self.requests += 1,
        }
        self.with_deadline += usize::from(e.deadline.is_some());
        self.args_in_flight += e.held;
        if let Some(old) = self.exchanges.insert(id.0, e) {
            // Keeps the counts exact should an id in flight ever be inserted again.
            match old.kind {
                Kind::Invocation => self.invocations -= 1,
                Kind::Request => self.requests -= 1,
            }
            self.with_deadline -= usize::from(old.deadline.is_some());
            self.args_in_flight -= old.held;
        }
    }

    fn remove(&mut self, id: u16) {
        if let Some(e) = self.exchanges.remove(&id) {
            match e.kind {
                Kind::Invocation => self.invocations -= 1,
                Kind::Request => self.requests -= 1,
            }
            self.with_deadline -= usize::from(e.deadline.is_some());
            self.args_in_flight -= e.held;
            if e.kind == Kind::Invocation && self.requests > 0 && self.state != State::Closed {
                self.interrupt_requests_of(id);
            }
        }
    }

    /// Server, SPEC §8: an invocation ended, so the requests it asked end too: each gets
    /// INTERRUPT (right after the invocation's terminal frame) and the client ends it,
    /// normally with REPLY(cancelled).
    fn interrupt_requests_of(&mut self, invocation: u16) {
        if self.role != Role::Server {
            return;
        }
        let mut ids = Vec::new();
        for (id, e) in self.exchanges.iter_mut() {
            if e.kind == Kind::Request && e.parent == invocation && !e.interrupted {
                e.interrupted = true;
                ids.push(*id);
            }
        }
        for id in ids {
            self.queue(Frame::Interrupt(Interrupt {
                id: RequestId(id),
                reason: Some(Text::from_static("its invocation ended")),
            }));
        }
    }

    /// Client: credit back what the application consumed (SPEC §7.5), batched at half the
    /// initial window.
    fn consumed(&mut self, id: RequestId, len: usize) {
        if self.role != Role::Client {
            return;
        }
        let half = u64::from(self.config.limits.initial_window / 2).max(1);
        let Some(e) = self.exchanges.get_mut(&id.0) else {
            return;
        };
        if e.finished {
            return;
        }
        e.consumed += len as u64;
        if e.consumed >= half {
            let bytes = u32::try_from(e.consumed).unwrap_or(u32::MAX);
            e.consumed -= u64::from(bytes);
            e.window += u64::from(bytes);
            self.queue(Frame::Credit(Credit { id, bytes }));
        }
    }

    fn check_drained(&mut self) {
        // SPEC §6.5: the side that sent GOAWAY closes when nothing is in flight.
        if self.goaway_sent && self.exchanges.is_empty() && self.is_open() {
            self.close(CloseReason::Drained);
        }
    }

    fn queue(&mut self, mut frame: Frame) {
        // SPEC §3.6: optional human-readable text (ERROR message, INTERRUPT/GOAWAY reason)
        // is ours to drop when it would push the frame past the peer's `max_frame_payload`.
        if matches!(
            frame,
            Frame::Error(_) | Frame::Interrupt(_) | Frame::GoAway(_)
        ) && encoded_len(&frame) - HEADER_LEN > self.peer_limits.max_frame_payload as usize
        {
            match &mut frame {
                Frame::Error(e) => e.message = None,
                Frame::Interrupt(i) => i.reason = None,
                Frame::GoAway(g) => g.reason = None,
                _ => {}
            }
        }
        // Replies the peer provokes are bounded by `after_input`: if it stops reading while
        // provoking them, the connection stops rather than grows.
        self.out.push(&frame);
    }

    fn queue_front(&mut self, frame: Frame) {
        self.out.push_front(&frame);
    }

    fn emit(&mut self, ev: Event) {
        self.events.push_back(ev);
    }

    /// A connection error (SPEC §12.2): send it, then close.
    fn fatal(&mut self, code: ErrorCode, message: String) {
        if self.state == State::Closed {
            return;
        }
        self.queue(Frame::Error(error_frame(
            RequestId::CONNECTION,
            code,
            message.clone(),
            None,
        )));
        self.close(CloseReason::ProtocolError { code, message });
    }

    fn require(&self, role: Role) -> Result<(), SendError> {
        if self.role == role {
            Ok(())
        } else {
            Err(SendError::WrongRole)
        }
    }

    fn require_open(&self) -> Result<(), SendError> {
        match self.state {
            State::Open | State::Draining | State::Detached => Ok(()),
            State::Closed => Err(SendError::Closed),
            State::Handshaking | State::Resuming => Err(SendError::NotOpen),
        }
    }

    /// Commands on existing exchanges work in any state but closed (while resuming they are
    /// queued for the new transport).
    fn require_live(&self) -> Result<(), SendError> {
        if self.state == State::Closed {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    fn require_exchange(&self, id: RequestId, kind: Kind) -> Result<(), SendError> {
        match self.exchanges.get(&id.0) {
            Some(e) if e.kind == kind => Ok(()),
            _ => Err(SendError::NotInFlight),
        }
    }

    fn exchange_mut(&mut self, id: RequestId, kind: Kind) -> Result<&mut Exchange, SendError> {
        match self.exchanges.get_mut(&id.0) {
            Some(e) if e.kind == kind => Ok(e),
            _ => Err(SendError::NotInFlight),
        }
    }

    fn check_frame_size(&self, frame: &Frame) -> Result<(), SendError> {
        let len = encoded_len(frame) - HEADER_LEN;
        let max = self.peer_limits.max_frame_payload as usize;
        if len > max {
            return Err(SendError::TooLarge { len, max });
        }
        Ok(())
    }

    /// SPEC §3.5: sequential allocation in `lo..=hi`, wrapping, skipping ids in flight.
    fn alloc_id(&mut self, lo: u16, hi: u16) -> Result<RequestId, SendError> {
        let span = u32::from(hi - lo) + 1;
        for _ in 0..span {
            let next = if self.next_id < lo || self.next_id >= hi {
                lo
            } else {
                self.next_id + 1
            };
            self.next_id = next;
            if !self.exchanges.contains_key(&next) && !self.quarantined.contains_key(&next) {
                return Ok(RequestId(next));
            }
        }
        Err(SendError::TooManyInflight)
    }
}

/// SPEC §11.1: every frame but HELLO, RESUME, PING and PONG is counted.
/// Encoded length of an optional MessagePack value.
fn raw_len(v: &Option<RawValue>) -> usize {
    v.as_ref().map_or(0, |v| v.as_bytes().len())
}

/// The value in an allocation of its own.
fn unshare(v: &RawValue) -> RawValue {
    RawValue::from_checked(Bytes::copy_from_slice(v.as_bytes()))
}

fn counted(raw_type: u8) -> bool {
    !matches!(
        FrameType::from_nibble(raw_type),
        Some(FrameType::Hello | FrameType::Resume | FrameType::Ping | FrameType::Pong)
    )
}

fn has_cap(caps: &[Text], name: &str) -> bool {
    caps.iter().any(|c| c == name)
}

/// SPEC §6.4: the smaller of the two non-zero intervals.
fn negotiate_heartbeat(ours: Option<Duration>, theirs_ms: Option<u32>) -> Option<Duration> {
    let theirs = match theirs_ms {
        None => Some(Duration::from_secs(30)),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(u64::from(ms))),
    };
    match (ours, theirs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut cut = max.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.get(..cut).unwrap_or_default()
}

/// The end of an exchange this side initiated, lost with the connection (`kind` says which
/// event: invocations are the client's, requests the server's).
fn ended_lost(kind: Kind, id: RequestId, reason: CloseReason) -> Event {
    match kind {
        Kind::Invocation => Event::InvocationEnded {
            id,
            outcome: InvocationOutcome::Lost(reason),
        },
        Kind::Request => Event::RequestEnded {
            id,
            outcome: RequestOutcome::Lost(reason),
        },
    }
}

fn error_frame(id: RequestId, code: ErrorCode, message: String, ty: Option<u8>) -> ErrorFrame {
    ErrorFrame {
        id,
        code,
        message: Some(Text::from(truncated(&message, 1024))),
        retryable: code.default_retryable(),
        frame_type: ty,
    }
}
