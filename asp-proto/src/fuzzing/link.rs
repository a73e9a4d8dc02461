//! The simulated transport between two connections, one direction per [`Link`]: shared by
//! the fuzz `pair` target (`src/fuzzing/pair.rs`) and the scenario tests' `Pair`
//! (`tests/pair/mod.rs` includes this file with `#[path]`), so that both drive the core over
//! the same model of a transport. It uses only what the including module names `Instant`
//! (the crate's) and public API.
//!
//! What travels is a [`Datagram`]: one `poll_transmit` batch, a transport ping or pong, or
//! the sender's EOF, each due at an instant (the sender's time plus any latency). A receiver
//! takes whole batches ([`Link::pop_due`]: WebSocket, one message each) or any number of
//! bytes across batches ([`Link::take_bytes`]: a byte stream, which may cut anywhere).
// Public for the test crate that includes it; each includer uses a part of it.
#![allow(unreachable_pub, dead_code)]

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::Instant;

/// What travels on a link.
#[derive(Clone, Debug)]
pub enum Datagram {
    /// One `poll_transmit` batch.
    Data(Bytes),
    /// A transport-level (WebSocket) ping; the receiving transport answers it with `Pong` by
    /// itself, as WebSocket libraries do.
    Ping,
    /// A transport-level pong: the receiver's `handle_transport_pong`.
    Pong,
    /// The sender closed its end: the receiver's `handle_transport_closed`.
    Eof,
}

/// One direction of the transport.
#[derive(Debug, Default)]
pub struct Link {
    /// (deliver at, datagram), in send order.
    pub in_flight: VecDeque<(Instant, Datagram)>,
    /// Stop delivering (the data stays queued): a one-way partition.
    pub hold: bool,
    /// The sender already closed its end.
    pub eof_sent: bool,
}

impl Link {
    /// Queues `d`, due at `at`.
    pub fn send(&mut self, at: Instant, d: Datagram) {
        self.in_flight.push_back((at, d));
    }

    /// When the next datagram is due; `None` when nothing is queued or the link is held.
    pub fn next_due(&self) -> Option<Instant> {
        if self.hold {
            return None;
        }
        self.in_flight.front().map(|(at, _)| *at)
    }

    /// The next datagram, if the link is not held and it is due by `now` (`None`: whatever
    /// its time).
    pub fn pop_due(&mut self, now: Option<Instant>) -> Option<Datagram> {
        let due = self.next_due()?;
        if now.is_some_and(|now| due > now) {
            return None;
        }
        self.in_flight.pop_front().map(|(_, d)| d)
    }

    /// A byte stream's read: up to `n` bytes of the data batches at the front that are due by
    /// `now` (`None`: whatever their time), crossing batch boundaries and cutting the last
    /// (its rest stays in front). Stops at a control datagram or a batch not yet due.
    pub fn take_bytes(&mut self, now: Option<Instant>, n: usize) -> Bytes {
        let mut out = BytesMut::new();
        while out.len() < n {
            let Some((at, Datagram::Data(batch))) = self.in_flight.front_mut() else {
                break;
            };
            if self.hold || now.is_some_and(|now| *at > now) {
                break;
            }
            let want = n - out.len();
            if batch.len() > want {
                out.extend_from_slice(&batch.split_to(want));
                break;
            }
            out.extend_from_slice(batch);
            self.in_flight.pop_front();
        }
        out.freeze()
    }
}
