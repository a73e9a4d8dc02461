//! Configuration: every limit the core enforces (SPEC §13), with the documented defaults.

use core::time::Duration;

use crate::frame::{HelloLimits, Text};

/// What this side accepts from its peer, announced in HELLO `limits` (SPEC §5.1, §13).
/// `Limits::default()` gives the SPEC defaults; change the fields you need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame payload accepted. Default 1 MiB.
    pub max_frame_payload: u32,
    /// Server: invocations in flight accepted; client: server requests in flight
    /// accepted. Default 128. Range 1–32767.
    pub max_inflight: u16,
    /// Client: tool definitions stored. Default 256.
    pub max_tools: u16,
    /// Client: largest STREAM data accepted. Default 64 KiB.
    pub max_chunk: u32,
    /// Client: STREAM window of each invocation at its start (SPEC §7.5). Default 256 KiB.
    pub initial_window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_payload: 1 << 20,
            max_inflight: 128,
            max_tools: 256,
            max_chunk: 64 << 10,
            initial_window: 256 << 10,
        }
    }
}

impl Limits {
    /// The peer's limits from its HELLO, with defaults for what it left out.
    pub fn from_hello(h: &HelloLimits) -> Limits {
        let d = Limits::default();
        Limits {
            max_frame_payload: h.max_frame_payload.unwrap_or(d.max_frame_payload),
            max_inflight: h.max_inflight.unwrap_or(d.max_inflight),
            max_tools: h.max_tools.unwrap_or(d.max_tools),
            max_chunk: h.max_chunk.unwrap_or(d.max_chunk),
            initial_window: h.initial_window.unwrap_or(d.initial_window),
        }
    }

    /// The HELLO encoding: only values that differ from the defaults are sent.
    pub fn to_hello(&self) -> HelloLimits {
        let d = Limits::default();
        let diff = |a: u32, b: u32| (a != b).then_some(a);
        HelloLimits {
            max_frame_payload: diff(self.max_frame_payload, d.max_frame_payload),
            max_inflight: (self.max_inflight != d.max_inflight).then_some(self.max_inflight),
            max_tools: (self.max_tools != d.max_tools).then_some(self.max_tools),
            max_chunk: diff(self.max_chunk, d.max_chunk),
            initial_window: diff(self.initial_window, d.initial_window),
            replay_buffer: None,
            resume_window_ms: None,
        }
    }
}

/// How heartbeats are sent (SPEC §6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeartbeatMode {
    /// The core queues PING frames (byte streams, or any transport).
    Frames,
    /// The core asks the adapter to send a transport-level ping (WebSocket ping) through
    /// `Connection::poll_ping`; the adapter reports pongs with `handle_transport_pong`.
    Transport,
}

/// Connection configuration. `Config::default()` gives the SPEC §13 defaults; change the
/// fields you need (the struct is `#[non_exhaustive]`, so new settings can be added):
///
/// ```
/// let mut config = asp_proto::Config::default();
/// config.heartbeat = None;
/// config.limits.max_chunk = 16 << 10;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// What we accept (announced in HELLO).
    pub limits: Limits,
    /// Our heartbeat interval; `None` disables heartbeats from our side. Default 30 s.
    pub heartbeat: Option<Duration>,
    /// How pings are sent. Default [`HeartbeatMode::Frames`].
    pub heartbeat_mode: HeartbeatMode,
    /// Time allowed for the peer's HELLO. Default 10 s.
    pub handshake_timeout: Duration,
    /// Inbound frames per second before INVOKEs are refused (SPEC §10). Default 100 000:
    /// high enough that one fast, well-behaved peer never meets it.
    pub rate_limit: u32,
    /// Inbound frames per second that close the connection with FLOOD. Default 200 000.
    pub flood_limit: u32,
    /// Soft bound on encoded bytes waiting in the transmit queue (SPEC §13.1): STREAM data
    /// beyond it is refused with `SendError::Full`, and a server stops reading input while
    /// the queue is at or above it ([`Connection::wants_input`]). Default 1 MiB.
    ///
    /// [`Connection::wants_input`]: crate::Connection::wants_input
    pub max_queued_bytes: usize,
    /// Hard bound on the transmit queue, every frame type counted (SPEC §13.1): replies the
    /// peer provoked, or answers (COMPLETE, ERROR, REPLY, TOOL_DEF, REQUEST) queued while
    /// the peer does not read, that take the queue past it end the connection with
    /// `ERROR(OVERLOADED)`. Should be at least `max_queued_bytes` plus the largest answer
    /// frame. Default 4 MiB.
    pub max_buffered: usize,
    /// Bound on one invocation's queued STREAM bytes. Default 256 KiB.
    pub max_queued_per_invocation: usize,
    /// Bound on undelivered events; input that takes the backlog beyond it ends the
    /// connection with `ERROR(OVERLOADED)`, since the application stopped polling.
    /// Default 8192.
    pub max_pending_events: usize,
    /// Bound on the argument bytes of the exchanges the peer opened that are still running
    /// (a server's invocations, a client's server requests; SPEC §13.1): an INVOKE or
    /// REQUEST whose `args`/`body` would take the total past it is refused with
    /// `ERROR(TOO_MANY_INFLIGHT)`, unless nothing is running (so one frame up to
    /// `max_frame_payload` is always accepted). Arguments count from the opening frame to
    /// the terminal one, whether or not the handler still holds them. Default 4 MiB.
    pub max_args_in_flight: usize,
    /// Offer session resume (SPEC §11). Default false.
    pub resume: bool,
    /// Bytes of sent frames kept for replay on resume. Default 256 KiB.
    pub replay_buffer: usize,
    /// How long a detached session waits for a resume. Default 30 s.
    pub resume_window: Duration,
    /// Client: announce the `requests` capability (it can answer server requests).
    /// Default true.
    pub accept_requests: bool,
    /// Server: answer INVOKE of a tool not in the registry with UNKNOWN_TOOL. Turn off when
    /// tools are resolved elsewhere (a relay). Default true.
    pub check_tools: bool,
    /// Client: grant STREAM credit as soon as `poll_event` hands a chunk out (default
    /// true). Adapters that buffer chunks for a slower consumer turn this off and call
    /// `Connection::release` when the consumer really took the data, so the window bounds
    /// their buffers too (SPEC §7.5).
    pub auto_credit: bool,
    /// Implementation name sent in HELLO `agent`.
    pub agent: Option<Text>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            heartbeat: Some(Duration::from_secs(30)),
            heartbeat_mode: HeartbeatMode::Frames,
            handshake_timeout: Duration::from_secs(10),
            rate_limit: 100_000,
            flood_limit: 200_000,
            max_queued_bytes: 1 << 20,
            max_buffered: 4 << 20,
            max_queued_per_invocation: 256 << 10,
            max_pending_events: 8192,
            max_args_in_flight: 4 << 20,
            resume: false,
            replay_buffer: 256 << 10,
            resume_window: Duration::from_secs(30),
            accept_requests: true,
            check_tools: true,
            auto_credit: true,
            agent: Some(Text::from_static(concat!(
                "asp-proto/",
                env!("CARGO_PKG_VERSION")
            ))),
        }
    }
}
