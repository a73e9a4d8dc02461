//! What the connection tells the application ([`Connection::poll_event`](crate::Connection::poll_event)).

use crate::error::CloseReason;
use crate::frame::{
    Complete, ErrorFrame, GoAway, Invoke, Reply, Request, RequestId, Stream, Text, ToolDef,
};
use crate::Limits;

/// The negotiated session, reported once the handshake completes (SPEC §6.2–§6.4).
/// Made by the core only (`#[non_exhaustive]`: fields may be added).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The server's connection id.
    pub connection_id: Text,
    /// The protocol version in use.
    pub version: u8,
    /// What the peer accepts.
    pub peer_limits: Limits,
    /// The peer's capabilities.
    pub peer_capabilities: Vec<Text>,
    /// Session heartbeat interval in ms (0 = off).
    pub heartbeat_ms: u32,
    /// Whether the session can be resumed (SPEC §11).
    pub resumable: bool,
    /// How long a detached session is kept, in ms: the smaller of the two announced resume
    /// windows (SPEC §11.3); 0 when not resumable.
    pub resume_window_ms: u32,
    /// Peer implementation name.
    pub peer_agent: Option<Text>,
}

/// How an invocation this side opened ended (client; [`Event::InvocationEnded`]).
///
/// `#[non_exhaustive]`: a later protocol version may add a way to end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvocationOutcome {
    /// COMPLETE received (SPEC §5.6). Boxed, as are the other large, once-per-exchange
    /// payloads of [`Event`], so that the per-chunk event stays small to move.
    Complete(Box<Complete>),
    /// ERROR received, or sent by us because the peer broke a rule for this id.
    Error(ErrorFrame),
    /// The connection closed before a terminal frame.
    Lost(CloseReason),
}

/// How a request this side asked ended (server; [`Event::RequestEnded`], SPEC §8).
///
/// `#[non_exhaustive]`: a later protocol version may add a way to end.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// REPLY received (SPEC §5.10).
    Reply(Reply),
    /// ERROR received (the client refused), or sent by us because the client broke a rule
    /// for this id.
    Error(ErrorFrame),
    /// The connection closed before a terminal frame.
    Lost(CloseReason),
}

/// A change to the client's mirror of the server's tool set (SPEC §9).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolChange {
    /// A tool was added (or, with `update`, replaced).
    Added(ToolDef),
    /// A tool's definition was replaced.
    Updated(ToolDef),
    /// A tool was removed.
    Removed(Text),
}

/// An event for the application. Drain with `poll_event` after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake finished; for a client, the initial tool set has arrived too.
    Connected(Box<Session>),
    /// Server: a new invocation to run. End it with `complete` or `fail`.
    Invoked(Box<Invoke>),
    /// Server: the client interrupted an invocation; client: the server interrupted a
    /// request. Either way the exchange must still be ended (SPEC §7.3).
    Interrupted {
        /// The exchange.
        id: RequestId,
        /// The reason given.
        reason: Option<Text>,
    },
    /// An exchange the *peer* initiated was ended by the protocol (deadline passed, peer
    /// ERROR, duplicate id, flow-control breach…). Stop working on it: commands for the id
    /// now return [`SendError::NotInFlight`](crate::SendError::NotInFlight).
    Aborted {
        /// The exchange.
        id: RequestId,
        /// The ERROR that ended it (sent or received).
        error: ErrorFrame,
    },
    /// Client: a chunk of an invocation's output.
    Chunk(Stream),
    /// Client: an invocation this side opened ended (exactly once per invocation).
    InvocationEnded {
        /// The invocation.
        id: RequestId,
        /// How.
        outcome: InvocationOutcome,
    },
    /// Server: a request this side asked ended (exactly once per request).
    RequestEnded {
        /// The request.
        id: RequestId,
        /// How.
        outcome: RequestOutcome,
    },
    /// Client: the tool set changed.
    ToolsChanged(Box<ToolChange>),
    /// Client: the server asks a question. Answer with `reply`.
    Requested(Box<Request>),
    /// Server: `stream` for this invocation may succeed again after `Full`.
    Writable {
        /// The invocation.
        id: RequestId,
    },
    /// The peer sent GOAWAY: open no new exchanges (SPEC §6.5).
    GoAway(GoAway),
    /// The peer reported a non-fatal error that ends nothing of ours (a warning, a
    /// tool-set error, or an error about an id not in flight).
    PeerError(ErrorFrame),
    /// The peer broke a rule; we sent it this ERROR (SPEC §3.7). Informational: anything it
    /// ended is reported separately.
    Violation(ErrorFrame),
    /// The transport dropped but the session can be resumed (SPEC §11). A client should
    /// reconnect and call `resume`.
    Detached,
    /// Server: a new transport asks to resume a session. Look the token up and call
    /// `accept_resume` on that session's connection, or `reject_resume` here.
    ResumeRequested {
        /// The token presented.
        token: bytes::Bytes,
        /// Counted frames the client received.
        received: u64,
    },
    /// The session continues on a new transport.
    Resumed,
    /// The connection closed. The last event.
    Closed(CloseReason),
}
