//! A quinn-style `Pair` harness for connection scenario tests: a client and a server
//! [`Connection`] joined by a simulated link on a virtual clock.
//!
//! - Each direction has an in-flight queue of transmitted batches (one `poll_transmit` call
//!   each), delivered after `latency`, either as WebSocket messages (`handle_message`) or as
//!   a byte stream (`handle_bytes`) split at pseudo-random points.
//! - After every input a side is drained in the documented order: `poll_transmit` →
//!   `poll_ping` → `poll_event` → `poll_timeout`, repeated while a pass produced anything
//!   (an event can queue a frame: auto-credit; a transmit can queue an event: `Writable`).
//! - Every transmitted batch is decoded with `codec::decode_frame` into a per-direction
//!   transcript (`wire`), and must consist of whole, valid frames.
//! - Every event is collected per side, in order; an event after `Closed` fails the test.
//! - A side that is closed and has nothing left to send closes its end of the transport:
//!   the peer gets `handle_transport_closed` after the in-flight data (like an EOF).
//!
//! Time only moves when the harness moves it: `step` jumps to the next delivery or timer.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use asp_proto::codec;
use asp_proto::frame::{ErrorFrame, Invoke, Stream, ToolDef, ToolOp};
use asp_proto::{
    Config, Connection, ErrorCode, Event, Frame, Instant, InvocationOutcome, RequestId,
    RequestOutcome, ServerParams, Text,
};
use bytes::{Bytes, BytesMut};

/// One end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
    fn idx(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// How batches reach the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// One batch = one WebSocket binary message (`handle_message`).
    Message,
    /// Byte stream: ready batches are concatenated and fed to `handle_bytes` in pieces
    /// split at pseudo-random points (at most `max_pieces` pieces per delivery).
    Bytes { max_pieces: usize },
}

// The link simulator is the one the fuzz `pair` target drives.
#[path = "../../src/fuzzing/link.rs"]
mod link;
pub use link::{Datagram, Link};

pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    pub now: Instant,
    pub latency: Duration,
    pub delivery: Delivery,
    /// links[0]: client → server; links[1]: server → client.
    pub links: [Link; 2],
    /// Per direction: frames transmitted, decoded, with the time they were sent.
    pub wires: [Vec<(Instant, Frame)>; 2],
    /// events[0]: client; events[1]: server.
    pub events: [Vec<Event>; 2],
    /// Transport pings each side asked for (`poll_ping`).
    pub pings: [usize; 2],
    /// Automatic EOF when a side closes (on by default).
    pub auto_eof: bool,
    /// The current connection of each side reported `Closed` (reset when a side's
    /// connection is replaced).
    pub closed: [bool; 2],
    rng: u64,
    /// Consecutive timer firings at one instant (livelock guard).
    same_instant_fires: u32,
}

pub fn default_params() -> ServerParams {
    ServerParams::new("conn-1")
}

/// A config with short, test-friendly timers (heartbeat off unless a test wants it).
pub fn quiet_config() -> Config {
    let mut config = Config::default();
    config.heartbeat = None;
    config
}

impl Pair {
    /// A pair with the given configs, not yet connected (the client's HELLO is queued).
    pub fn new(client: Config, server: Config, params: ServerParams) -> Pair {
        let now = Instant::from_millis(1_000);
        let mut p = Pair {
            client: Connection::client(client, now),
            server: Connection::server(server, params, now),
            now,
            latency: Duration::ZERO,
            delivery: Delivery::Message,
            links: [Link::default(), Link::default()],
            wires: [Vec::new(), Vec::new()],
            events: [Vec::new(), Vec::new()],
            pings: [0, 0],
            auto_eof: true,
            closed: [false, false],
            rng: 0x9e37_79b9_7f4a_7c15,
            same_instant_fires: 0,
        };
        p.flush();
        p
    }

    /// Default configs with heartbeats off.
    pub fn default_pair() -> Pair {
        Pair::new(quiet_config(), quiet_config(), default_params())
    }

    /// A pair driven through the handshake; its events are cleared.
    pub fn connected(client: Config, server: Config) -> Pair {
        let mut p = Pair::new(client, server, default_params());
        p.drive();
        assert!(
            matches!(p.events[0].last(), Some(Event::Connected(_))),
            "client not connected: {:?}",
            p.events[0]
        );
        assert!(
            matches!(p.events[1].last(), Some(Event::Connected(_))),
            "server not connected: {:?}",
            p.events[1]
        );
        p.clear_events();
        p
    }

    pub fn connected_default() -> Pair {
        Pair::connected(quiet_config(), quiet_config())
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn conn(&mut self, side: Side) -> &mut Connection {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    pub fn conn_ref(&self, side: Side) -> &Connection {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    // ───────────────────────── draining ─────────────────────────

    /// Drains one side: poll_transmit → poll_ping → poll_event → poll_timeout, repeated
    /// until a pass yields nothing.
    pub fn drain(&mut self, side: Side) {
        loop {
            let mut progress = false;
            let mut buf = BytesMut::new();
            loop {
                let n = self.conn(side).poll_transmit(&mut buf);
                if n == 0 {
                    break;
                }
                assert_eq!(n, buf.len(), "poll_transmit returned a wrong length");
                let batch = buf.split().freeze();
                self.record_wire(side, &batch);
                let at = self.now + self.latency;
                self.links[side.idx()].send(at, Datagram::Data(batch));
                progress = true;
            }
            if self.conn(side).poll_ping() {
                self.pings[side.idx()] += 1;
                let at = self.now + self.latency;
                self.links[side.idx()].send(at, Datagram::Ping);
                progress = true;
            }
            while let Some(ev) = self.conn(side).poll_event() {
                assert!(
                    !self.closed[side.idx()],
                    "{side:?}: event {ev:?} after Closed"
                );
                if matches!(ev, Event::Closed(_)) {
                    self.closed[side.idx()] = true;
                }
                self.events[side.idx()].push(ev);
                progress = true;
            }
            let _ = self.conn(side).poll_timeout();
            if !progress {
                break;
            }
        }
        if self.auto_eof && self.conn(side).is_closed() && !self.links[side.idx()].eof_sent {
            self.links[side.idx()].eof_sent = true;
            let at = self.now + self.latency;
            self.links[side.idx()].send(at, Datagram::Eof);
        }
    }

    pub fn flush(&mut self) {
        self.drain(Side::Client);
        self.drain(Side::Server);
    }

    fn record_wire(&mut self, side: Side, batch: &Bytes) {
        assert!(!batch.is_empty(), "{side:?} transmitted an empty batch");
        let mut b = batch.clone();
        while let Some(r) = codec::decode_frame(&mut b, u32::MAX) {
            match r {
                Ok(f) => self.wires[side.idx()].push((self.now, f)),
                Err(e) => panic!("{side:?} transmitted an invalid frame: {e} in {batch:02x?}"),
            }
        }
    }

    // ───────────────────────── delivery ─────────────────────────

    /// Feeds `data` to `to` as the configured transport would, then drains it.
    fn feed(&mut self, to: Side, data: Vec<Bytes>) {
        let now = self.now;
        match self.delivery {
            Delivery::Message => {
                for msg in data {
                    self.conn(to).handle_message(now, msg);
                    self.drain(to);
                }
            }
            Delivery::Bytes { max_pieces } => {
                let mut all = BytesMut::new();
                for d in &data {
                    all.extend_from_slice(d);
                }
                let mut all = all.freeze();
                let pieces = 1 + (self.next_rand() as usize) % max_pieces.max(1);
                for i in 0..pieces {
                    if all.is_empty() {
                        break;
                    }
                    let take = if i + 1 == pieces {
                        all.len()
                    } else {
                        1 + (self.next_rand() as usize) % all.len()
                    };
                    let piece = all.split_to(take);
                    self.conn(to).handle_bytes(now, piece);
                    self.drain(to);
                }
            }
        }
    }

    /// Delivers datagrams in direction `from → from.other()`: the first `max` that are due
    /// by `now` (or regardless of time if `ignore_time`). Returns how many were delivered.
    pub fn deliver(&mut self, from: Side, max: usize, ignore_time: bool) -> usize {
        let to = from.other();
        let by = (!ignore_time).then_some(self.now);
        let mut data = Vec::new();
        let mut n = 0;
        let mut delivered = 0;
        while n < max {
            let Some(d) = self.links[from.idx()].pop_due(by) else {
                break;
            };
            n += 1;
            delivered += 1;
            match d {
                Datagram::Data(b) => data.push(b),
                other => {
                    // Control datagrams keep their place in the stream.
                    if !data.is_empty() {
                        self.feed(to, std::mem::take(&mut data));
                    }
                    let now = self.now;
                    match other {
                        Datagram::Ping => {
                            let at = self.now + self.latency;
                            self.links[to.idx()].send(at, Datagram::Pong);
                        }
                        Datagram::Pong => {
                            self.conn(to).handle_transport_pong(now);
                            self.drain(to);
                        }
                        Datagram::Eof => {
                            self.conn(to).handle_transport_closed(now);
                            self.drain(to);
                        }
                        Datagram::Data(_) => unreachable!(),
                    }
                }
            }
        }
        if !data.is_empty() {
            self.feed(to, data);
        }
        delivered
    }

    /// Everything due by `now`, both directions.
    pub fn deliver_due(&mut self) -> bool {
        let a = self.deliver(Side::Client, usize::MAX, false);
        let b = self.deliver(Side::Server, usize::MAX, false);
        a + b > 0
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.links.iter().filter_map(Link::next_due).min()
    }

    fn next_timer(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// One step: deliver what is due and fire due timers; if nothing was due, jump the clock
    /// to the next delivery or timer first. Returns false when there is nothing at all left
    /// to happen.
    pub fn step(&mut self) -> bool {
        let next = [self.next_delivery(), self.next_timer()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            return false;
        };
        if next > self.now {
            self.now = next;
            self.same_instant_fires = 0;
        }
        let mut any = self.deliver_due();
        for side in [Side::Client, Side::Server] {
            if self
                .conn_ref(side)
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                let now = self.now;
                self.conn(side).handle_timeout(now);
                self.drain(side);
                any = true;
                self.same_instant_fires += 1;
                assert!(
                    self.same_instant_fires < 1000,
                    "{side:?}: timer livelock at {now:?}"
                );
            }
        }
        any || next <= self.now
    }

    /// Steps while anything is in flight on an unheld link (timers that fall due meanwhile
    /// fire). Stops when the network is quiet: pending timers far in the future (heartbeats)
    /// do not keep it going.
    pub fn drive(&mut self) {
        self.drive_bounded(100_000);
    }

    /// `drive`, failing the test after `n` steps (livelock detector).
    pub fn drive_bounded(&mut self, n: usize) {
        // Commands since the last input queued frames: hand them to the link first.
        self.flush();
        for _ in 0..n {
            if self.next_delivery().is_none() {
                // Timers already due still fire.
                if self.next_timer().is_some_and(|t| t <= self.now) {
                    self.step();
                    continue;
                }
                return;
            }
            self.step();
        }
        panic!("drive_bounded({n}): still busy (livelock?)");
    }

    /// Runs deliveries and timers until the clock reaches `t` (exclusive of later events),
    /// then sets the clock to `t` and fires what is due then.
    pub fn run_until(&mut self, t: Instant) {
        for _ in 0..1_000_000 {
            let next = [self.next_delivery(), self.next_timer()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(n) if n <= t => {
                    self.step();
                }
                _ => break,
            }
        }
        if t > self.now {
            self.now = t;
        }
        self.deliver_due();
    }

    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Advances the clock without firing anything (inputs will carry the new time).
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    /// Fires `handle_timeout(now)` on a side and drains it.
    pub fn timeout(&mut self, side: Side) {
        let now = self.now;
        self.conn(side).handle_timeout(now);
        self.drain(side);
    }

    // ───────────────────────── link faults ─────────────────────────

    /// The transport drops: in-flight data is lost, both sides see the transport close.
    pub fn drop_link(&mut self) {
        for l in &mut self.links {
            l.in_flight.clear();
            l.hold = false;
        }
        let now = self.now;
        self.client.handle_transport_closed(now);
        self.server.handle_transport_closed(now);
        self.flush();
        // Nothing can travel on a dead transport (and EOFs are moot).
        for l in &mut self.links {
            l.in_flight.clear();
        }
    }

    /// A new transport with `server` as the server end; returns the previous server
    /// connection. The link starts empty.
    pub fn reconnect(&mut self, server: Connection) -> Connection {
        for l in &mut self.links {
            l.in_flight.clear();
            l.eof_sent = false;
            l.hold = false;
        }
        let old = std::mem::replace(&mut self.server, server);
        self.closed[Side::Server.idx()] = self.server.is_closed();
        self.flush();
        old
    }

    /// Replaces the server end in place (keeping the link), returning the previous one.
    pub fn swap_server(&mut self, server: Connection) -> Connection {
        let old = std::mem::replace(&mut self.server, server);
        self.closed[Side::Server.idx()] = self.server.is_closed();
        self.links[Side::Server.idx()].eof_sent = false;
        self.flush();
        old
    }

    // ───────────────────────── injection ─────────────────────────

    /// Delivers raw bytes to `to` now, bypassing the link (one message, or one byte-stream
    /// write), then drains it.
    pub fn inject(&mut self, to: Side, bytes: Bytes) {
        let now = self.now;
        match self.delivery {
            Delivery::Message => self.conn(to).handle_message(now, bytes),
            Delivery::Bytes { .. } => self.conn(to).handle_bytes(now, bytes),
        }
        self.drain(to);
    }

    /// Encodes `frame` and injects it.
    pub fn inject_frame(&mut self, to: Side, frame: &Frame) {
        self.inject(to, encode(frame));
    }

    // ───────────────────────── observation ─────────────────────────

    pub fn events(&self, side: Side) -> &[Event] {
        &self.events[side.idx()]
    }

    pub fn take_events(&mut self, side: Side) -> Vec<Event> {
        std::mem::take(&mut self.events[side.idx()])
    }

    pub fn clear_events(&mut self) {
        self.events = [Vec::new(), Vec::new()];
    }

    /// Frames sent by `from`.
    pub fn wire(&self, from: Side) -> Vec<Frame> {
        self.wires[from.idx()]
            .iter()
            .map(|(_, f)| f.clone())
            .collect()
    }

    pub fn take_wire(&mut self, from: Side) -> Vec<Frame> {
        std::mem::take(&mut self.wires[from.idx()])
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    }

    pub fn clear_wire(&mut self) {
        for w in &mut self.wires {
            w.clear();
        }
    }

    pub fn in_flight(&self, from: Side) -> usize {
        self.links[from.idx()].in_flight.len()
    }
}

// ───────────────────────── frame helpers ─────────────────────────

pub fn encode(frame: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(frame, &mut b);
    b.freeze()
}

/// A frame with a hand-made header (version 1 unless `version` says otherwise).
pub fn raw_frame(version: u8, ty: u8, flags: u8, id: u16, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.push((version << 4) | (ty & 0x0f));
    b.push(flags);
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    Bytes::from(b)
}

/// A header announcing `len` payload bytes, followed by exactly `len` filler bytes.
pub fn oversize_frame(ty: u8, id: u16, len: usize) -> Bytes {
    raw_frame(1, ty, 0, id, &vec![0xc0; len])
}

pub fn invoke_frame(id: u16, tool: &str) -> Frame {
    Frame::Invoke(Invoke {
        id: RequestId(id),
        tool: Text::from(tool),
        args: None,
        deadline_ms: 0,
        meta: None,
    })
}

pub fn stream_frame(id: u16, seq: u32, data: &[u8], fin: bool) -> Frame {
    Frame::Stream(Stream {
        id: RequestId(id),
        data: Bytes::copy_from_slice(data),
        text: false,
        seq,
        fin,
    })
}

pub fn tool(name: &str) -> ToolDef {
    ToolDef {
        op: ToolOp::Add,
        name: Text::from(name),
        description: Text::from(format!("the {name} tool")),
        input_schema: None,
        annotations: None,
    }
}

// ───────────────────────── event helpers ─────────────────────────

/// `(id, code)` of an error-bearing event.
pub fn error_of(ev: &Event) -> Option<(RequestId, ErrorCode)> {
    match ev {
        Event::Violation(e) | Event::PeerError(e) => Some((e.id, e.code)),
        Event::Aborted { id, error } => Some((*id, error.code)),
        Event::InvocationEnded {
            id,
            outcome: InvocationOutcome::Error(e),
        }
        | Event::RequestEnded {
            id,
            outcome: RequestOutcome::Error(e),
        } => Some((*id, e.code)),
        _ => None,
    }
}

/// The `InvocationEnded` events of a (client's) log, as (id, outcome).
pub fn ended(events: &[Event]) -> Vec<(RequestId, InvocationOutcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::InvocationEnded { id, outcome } => Some((*id, outcome.clone())),
            _ => None,
        })
        .collect()
}

/// ERROR frames in a transcript, as (id, code).
pub fn errors_on_wire(frames: &[Frame]) -> Vec<(RequestId, ErrorCode)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Error(ErrorFrame { id, code, .. }) => Some((*id, *code)),
            _ => None,
        })
        .collect()
}

/// A compact name for each event, for transcript assertions.
pub fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Connected(_) => "Connected".to_string(),
            Event::Invoked(i) => format!("Invoked({})", i.id.0),
            Event::Interrupted { id, .. } => format!("Interrupted({})", id.0),
            Event::Aborted { id, error } => format!("Aborted({},{:?})", id.0, error.code),
            Event::Chunk(s) => format!("Chunk({},{})", s.id.0, s.seq),
            // Both `*Ended` events as `Ended(…)`: the side says which it is.
            Event::InvocationEnded { id, outcome } => match outcome {
                InvocationOutcome::Complete(c) => {
                    format!("Ended({},Complete {:?})", id.0, c.status)
                }
                InvocationOutcome::Error(e) => format!("Ended({},Error {:?})", id.0, e.code),
                InvocationOutcome::Lost(_) => format!("Ended({},Lost)", id.0),
                other => format!("Ended({},{other:?})", id.0),
            },
            Event::RequestEnded { id, outcome } => match outcome {
                RequestOutcome::Reply(r) => format!("Ended({},Reply {:?})", id.0, r.status),
                RequestOutcome::Error(e) => format!("Ended({},Error {:?})", id.0, e.code),
                RequestOutcome::Lost(_) => format!("Ended({},Lost)", id.0),
                other => format!("Ended({},{other:?})", id.0),
            },
            Event::ToolsChanged(c) => format!("ToolsChanged({c:?})"),
            Event::Requested(r) => format!("Requested({})", r.id.0),
            Event::Writable { id } => format!("Writable({})", id.0),
            Event::GoAway(_) => "GoAway".to_string(),
            Event::PeerError(e) => format!("PeerError({},{:?})", e.id.0, e.code),
            Event::Violation(e) => format!("Violation({},{:?})", e.id.0, e.code),
            Event::Detached => "Detached".to_string(),
            Event::ResumeRequested { .. } => "ResumeRequested".to_string(),
            Event::Resumed => "Resumed".to_string(),
            Event::Closed(r) => format!("Closed({r:?})"),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Frame kinds of a transcript: "STREAM#1", "ERROR#0(FLOOD)", …
pub fn frame_kinds(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Error(e) => format!("ERROR#{}({:?})", e.id.0, e.code),
            f => format!("{}#{}", f.frame_type().name(), f.request_id().0),
        })
        .collect()
}

/// A connected pair whose client has `n` invocations of `echo` in flight, with events and
/// the wire transcript cleared.
pub fn with_invocations(
    client: asp_proto::Config,
    server: asp_proto::Config,
    n: u16,
) -> (Pair, Vec<asp_proto::RequestId>) {
    let mut p = Pair::connected(client, server);
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    let ids: Vec<asp_proto::RequestId> = (0..n)
        .map(|_| p.client.invoke("echo", None, Default::default()).unwrap())
        .collect();
    p.drive();
    assert_eq!(p.server.in_flight(), usize::from(n));
    p.clear_events();
    p.clear_wire();
    (p, ids)
}
