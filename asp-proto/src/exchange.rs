//! Per-exchange state: one invocation (client space) or server request (server space),
//! and the lifecycle rules of SPEC §7.1 and §8 that concern a single exchange.
//!
//! The lifecycle, as one table (SPEC §7.1). "Initiator" is the client for an invocation and
//! the server for a request.
//!
//! | state      | input                        | initiator does                  | responder does                          |
//! |------------|------------------------------|---------------------------------|-----------------------------------------|
//! | —          | opening frame (INVOKE/REQ)   | sends it → `Running`            | accepts → `Running`, or ERROR (§7.2)    |
//! | `Running`  | STREAM (invocations only)    | checks seq/window/chunk → chunk | sends within window                     |
//! | `Running`  | STREAM with `final`          | → `Finished`                    | → `Finished`                            |
//! | any        | INTERRUPT                    | sends (once)                    | marks `interrupted`, tells the app      |
//! | any        | COMPLETE / REPLY / ERROR     | removed: `*Ended` event         | sends → removed                         |
//! | (absent)   | INTERRUPT / CREDIT           | —                               | ignored: it crossed the terminal frame  |
//! | (absent)   | STREAM / COMPLETE / REPLY    | ERROR(UNKNOWN_ID)               | —                                       |
//!
//! The checks that can fail are methods here returning the wire code to send; `conn.rs`
//! applies the effects (frames, events, removal).

use crate::error::ErrorCode;
use crate::frame::Stream;
use crate::time::Instant;

/// Which kind of exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Client → server INVOKE.
    Invocation,
    /// Server → client REQUEST.
    Request,
}

/// One exchange in flight.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub(crate) kind: Kind,
    /// The final STREAM was sent (responder) or received (initiator).
    pub(crate) finished: bool,
    /// An INTERRUPT was sent (initiator) or received (responder).
    pub(crate) interrupted: bool,
    /// Invocations: remaining STREAM window in bytes (SPEC §7.5). For the server the window
    /// it may still send into; for the client the window it still accepts.
    pub(crate) window: u64,
    /// Invocations: `seq` of the next STREAM (SPEC §7.6).
    pub(crate) next_seq: u32,
    /// Server: STREAM data bytes queued but not yet transmitted.
    pub(crate) queued: usize,
    /// Server: a `stream` call was refused; emit `Writable` when room returns.
    pub(crate) blocked: bool,
    /// Client: data bytes delivered to the application since the last CREDIT.
    pub(crate) consumed: u64,
    /// Server: when the deadline passes (SPEC §7.4).
    pub(crate) deadline: Option<Instant>,
    /// Requests: the invocation they belong to (REQUEST `invocation`), 0 if none; they end
    /// with it (SPEC §8).
    pub(crate) parent: u16,
    /// Client: an INTERRUPT asked for before the server's HELLO (a pipelined invocation),
    /// with its reason; sent once the session is open and the server's limits are known.
    pub(crate) deferred_interrupt: Option<Option<crate::frame::Text>>,
    /// Exchanges the peer opened: bytes of the opening frame's fields their handler may
    /// hold until the exchange ends (SPEC §13.1, `Config::max_args_in_flight`).
    pub(crate) held: usize,
}

impl Exchange {
    pub(crate) fn new(kind: Kind, window: u32) -> Exchange {
        Exchange {
            kind,
            finished: false,
            interrupted: false,
            window: u64::from(window),
            next_seq: 0,
            queued: 0,
            blocked: false,
            consumed: 0,
            deadline: None,
            parent: 0,
            deferred_interrupt: None,
            held: 0,
        }
    }

    /// Client: checks an inbound STREAM against SPEC §7.1, §7.5 and §7.6, in that order,
    /// and accounts for it. An `Err` code ends the invocation.
    pub(crate) fn accept_stream(&mut self, s: &Stream, max_chunk: u32) -> Result<(), ErrorCode> {
        if self.kind != Kind::Invocation || self.finished || s.seq != self.next_seq {
            return Err(ErrorCode::BAD_SEQUENCE);
        }
        let len = s.data.len() as u64;
        if len > u64::from(max_chunk) {
            return Err(ErrorCode::CHUNK_TOO_LARGE);
        }
        if len > self.window {
            return Err(ErrorCode::FLOW_CONTROL);
        }
        self.window -= len;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.finished = s.fin;
        Ok(())
    }

    /// Server: a CREDIT grant (SPEC §7.5). A window above 2³²−1 is FLOW_CONTROL.
    pub(crate) fn grant(&mut self, bytes: u32) -> Result<(), ErrorCode> {
        self.window += u64::from(bytes);
        if self.window > u64::from(u32::MAX) {
            return Err(ErrorCode::FLOW_CONTROL);
        }
        Ok(())
    }

    /// Server: can `len` more data bytes be queued now?
    pub(crate) fn has_room(&self, len: usize, max_queued: usize) -> bool {
        len as u64 <= self.window && self.queued + len <= max_queued
    }
}
