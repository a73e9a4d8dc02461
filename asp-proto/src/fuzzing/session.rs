//! The connection targets: one connection against a scripted peer (`session`), and the
//! checks and helpers the `pair` target shares.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::{Bytes, BytesMut};
use core::time::Duration;

use super::codec::{decode_message, encode_one};
use crate::arbitrary::{opt_raw, opt_text, text, WORDS};
use crate::codec::HEADER_LEN;
use crate::frame::*;
use crate::{
    CloseReason, Config, Connection, ErrorCode, Event, HeartbeatMode, InvokeOptions, Limits, Role,
    ServerParams, State, StreamOptions,
};

pub(super) fn pick<T: Copy>(choices: &[T], b: u8) -> T {
    choices[usize::from(b) % choices.len()]
}

/// A [`Config`] with small limits, from 4 bytes (all zero: the first choice of each).
pub(super) fn small_config(b: [u8; 4], pair: bool) -> Config {
    let limits = Limits {
        max_frame_payload: pick(&[256, 64, 128, 1 << 20], b[0]),
        max_inflight: pick(&[2, 1, 3, 4], b[0] >> 2),
        max_tools: pick(&[2, 0, 1, 4], b[0] >> 4),
        max_chunk: pick(&[64, 4, 16, 1024], b[0] >> 6),
        initial_window: pick(&[128, 8, 32, 4096], b[1]),
    };
    let (rate_limit, flood_limit) = if pair {
        (100_000, 200_000)
    } else {
        pick(&[(100_000, 200_000), (3, 6), (8, 8), (1, 100)], b[1] >> 5)
    };
    Config {
        limits,
        heartbeat: pick(
            &[
                Some(Duration::from_secs(30)),
                None,
                Some(Duration::from_secs(1)),
                Some(Duration::from_millis(50)),
            ],
            b[1] >> 2,
        ),
        heartbeat_mode: if b[1] & 0x10 != 0 && !pair {
            HeartbeatMode::Transport
        } else {
            HeartbeatMode::Frames
        },
        handshake_timeout: pick(
            &[
                Duration::from_secs(10),
                Duration::from_secs(1),
                Duration::from_millis(100),
                Duration::from_secs(60),
            ],
            b[3] >> 6,
        ),
        rate_limit,
        flood_limit,
        max_queued_bytes: pick(&[256, 64, 1024, 1 << 20], b[2]),
        max_buffered: 2 * pick(&[256, 64, 1024, 1 << 20], b[2]) + HEADER_LEN,
        max_queued_per_invocation: pick(&[64, 16, 256, 1 << 20], b[2] >> 2),
        max_pending_events: pick(&[64, 4, 16, 8192], b[2] >> 4),
        // SPEC §13.1: small bounds on arguments in flight for a lone side; an honest pair
        // keeps the default, which its small frames never reach (a refusal there would be
        // a false alarm of the pair's checks).
        max_args_in_flight: if pair {
            4 << 20
        } else {
            pick(&[4 << 20, 0, 64, 512], b[1] >> 3)
        },
        resume: b[1] & 0x80 != 0 && !pair,
        replay_buffer: pick(&[512, 0, 64, 1 << 16], b[2] >> 6),
        resume_window: Duration::from_secs(1),
        accept_requests: b[3] & 1 == 0,
        check_tools: b[3] & 2 == 0,
        auto_credit: b[3] & 4 == 0,
        agent: if b[3] & 8 == 0 {
            Some(Text::from_static("fuzz"))
        } else {
            None
        },
    }
}

/// Time steps, in ms, for clock advances.
pub(super) const STEPS_MS: [u64; 16] = [
    0, 1, 10, 49, 50, 100, 999, 1000, 1001, 3000, 10_000, 29_999, 30_000, 90_000, 100_000,
    10_000_000,
];

pub(super) fn step_of(b: u8) -> Duration {
    Duration::from_millis(pick(&STEPS_MS, b))
}

pub(super) fn u16_le(u: &mut Unstructured<'_>) -> Result<u16> {
    let mut b = [0u8; 2];
    u.fill_buffer(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// A text of fuzzer-chosen length, to reach the SPEC length limits (1024 for reasons).
pub(super) fn long_text(u: &mut Unstructured<'_>) -> Result<Option<Text>> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => None,
        1 => Some(text(u, 0, 64)?),
        _ => Some(Text::from("r".repeat(usize::from(u8::arbitrary(u)?) * 8))),
    })
}

pub(super) fn opt_text_long(u: &mut Unstructured<'_>) -> Result<Text> {
    Ok(long_text(u)?.unwrap_or_default())
}

/// Who caused a step (see [`Checker::after_step`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// Peer input: bytes, messages, transport events.
    Peer,
    /// `handle_timeout`, with the exchanges in flight before it.
    Timer { in_flight: usize },
    /// An application command (or a poll, which may grant credit).
    Local,
}

/// Bytes `handle_timeout` may queue beyond the bound besides the deadline ERRORs: a PING
/// and a fatal ERROR (message ≤ 1024 bytes).
pub(super) const TIMER_SLACK: usize = HEADER_LEN + 1100;

/// What the single-connection harness tracks to check invariants (SPEC §7.1 and the
/// documented bounds of `Connection`).
pub(super) struct Checker {
    /// Event::Closed was delivered.
    pub(super) closed: bool,
    /// Exchanges this side opened whose `Ended` was not delivered yet.
    pub(super) live: BTreeSet<u16>,
    /// `Config::max_buffered` (`Connection::check_input_bounds`).
    pub(super) bound: usize,
    /// Events delivered so far.
    pub(super) seen: usize,
    /// The reason in `Event::Closed`.
    pub(super) reason: Option<CloseReason>,
}

impl Checker {
    pub(super) fn new(config: &Config) -> Checker {
        Checker {
            closed: false,
            live: BTreeSet::new(),
            bound: config.max_buffered,
            seen: 0,
            reason: None,
        }
    }

    pub(super) fn opened(&mut self, id: RequestId) {
        assert!(
            self.live.insert(id.0),
            "id {id:?} handed out again before its Ended was delivered"
        );
    }

    pub(super) fn event(&mut self, ev: &Event) {
        assert!(!self.closed, "event after Closed: {ev:?}");
        self.seen += 1;
        match ev {
            Event::InvocationEnded { id, .. } | Event::RequestEnded { id, .. } => assert!(
                self.live.remove(&id.0),
                "Ended for {id:?}, which is not open (ended twice, or never opened): {ev:?}"
            ),
            Event::Closed(r) => {
                self.closed = true;
                self.reason = Some(r.clone());
                assert!(
                    self.live.is_empty(),
                    "Closed while exchanges never ended: {:?}",
                    self.live
                );
            }
            _ => {}
        }
    }

    /// Right after the step that closed the connection, once every event was delivered
    /// (`queued`: the queue at the close). An OVERLOADED close drops what was queued and
    /// leaves only its ERROR (SPEC §13.1), whatever the bound it hit.
    pub(super) fn closed_by(&self, queued: usize, _pending: usize) {
        if let Some(CloseReason::ProtocolError {
            code: ErrorCode::OVERLOADED,
            ..
        }) = &self.reason
        {
            assert!(
                queued <= TIMER_SLACK,
                "closed as OVERLOADED with {queued} bytes still queued: the backlog was kept"
            );
        }
    }

    /// After every step. `kind` says who caused it: the peer's input, the clock, or the
    /// application (a local command, whose frames the application chose to queue).
    ///
    /// The queue bound, exactly as `Connection::check_input_bounds` enforces it: a frame
    /// whose replies take the queue past `max_buffered` closes the connection with
    /// OVERLOADED right after it. So after peer input the queue is within the bound (or no
    /// larger than before) unless the connection closed. Timers never close for overload:
    /// one `handle_timeout` may add a PING, one ERROR per expired deadline and one fatal
    /// ERROR beyond the bound (`TIMER_SLACK`).
    pub(super) fn after_step(&self, conn: &Connection, q0: usize, was_closed: bool, kind: Step) {
        let q = conn.queued_bytes();
        let limit = match kind {
            Step::Peer => self.bound.max(q0),
            Step::Timer { in_flight } => self.bound.max(q0) + TIMER_SLACK + 64 * in_flight,
            Step::Local => usize::MAX,
        };
        if was_closed {
            assert!(q <= q0, "queue grew from {q0} to {q} bytes after Closed");
        } else if !conn.is_closed() {
            assert!(
                q <= limit,
                "{kind:?} step: queue grew from {q0} to {q} bytes (bound {}) and the \
                 connection stayed {:?}",
                self.bound,
                conn.state()
            );
        }
        if conn.is_closed() {
            assert_eq!(conn.in_flight(), 0, "exchanges in flight after close");
        }
    }
}

/// Drives `handle_timeout` at `now` until no timer is due; a timer that stays due is a
/// livelock for any adapter loop.
pub(super) fn fire_timers(conn: &mut Connection, now: crate::Instant) {
    conn.handle_timeout(now);
    for _ in 0..8 {
        match conn.poll_timeout() {
            Some(t) if t <= now => conn.handle_timeout(now),
            _ => return,
        }
    }
    panic!(
        "poll_timeout stays at {:?} <= now {now:?} after 9 handle_timeout calls (state {:?})",
        conn.poll_timeout(),
        conn.state()
    );
}

/// Transmits up to `calls` batches; checks that every frame we send decodes, and, once the
/// queue is drained, that `queued_bytes` accounted exactly for what was sent.
pub(super) fn transmit(conn: &mut Connection, calls: usize, sink: &mut impl FnMut(Bytes)) {
    let q0 = conn.queued_bytes();
    let mut total = 0;
    let mut drained = false;
    for _ in 0..calls {
        let mut buf = BytesMut::new();
        let n = conn.poll_transmit(&mut buf);
        assert_eq!(n, buf.len());
        if n == 0 {
            drained = true;
            break;
        }
        total += n;
        let batch = buf.freeze();
        for r in decode_message(&batch, u32::MAX) {
            if let Err(e) = r {
                panic!("we sent a frame that does not decode: {e} in {batch:02x?}");
            }
        }
        sink(batch);
    }
    let gated = matches!(conn.state(), State::Detached | State::Resuming);
    if drained && !gated {
        assert!(!conn.wants_transmit(), "drained queue still wants transmit");
        assert_eq!(
            conn.queued_bytes(),
            0,
            "queued_bytes after the queue drained"
        );
        assert_eq!(
            total, q0,
            "queued_bytes was {q0} but {total} bytes were sent"
        );
    }
}

/// Ids the harness knows about, for commands and targeted peer frames.
#[derive(Default)]
pub(super) struct Ids(Vec<u16>);

impl Ids {
    pub(super) fn add(&mut self, id: RequestId) {
        if !self.0.contains(&id.0) {
            if self.0.len() >= 16 {
                self.0.remove(0);
            }
            self.0.push(id.0);
        }
    }

    /// A known id, or (if none, or for high `slot`) a raw one near the start of `space`.
    pub(super) fn get(&self, slot: u8, space: u16) -> RequestId {
        if self.0.is_empty() || slot >= 0xf0 {
            RequestId(space.wrapping_add(u16::from(slot & 0x0f)))
        } else {
            RequestId(self.0[usize::from(slot) % self.0.len()])
        }
    }
}

/// One connection and its scripted peer.
pub(super) struct Session {
    role: Role,
    conn: Connection,
    now: crate::Instant,
    /// `true`: WebSocket messages (`handle_message`); `false`: a byte stream.
    messages: bool,
    check: Checker,
    /// Client: invocations; server: requests (the ones this side opened).
    mine: Ids,
    /// Client: server requests; server: invocations (the peer's).
    theirs: Ids,
    /// Next `seq` the peer uses on each invocation (client harness).
    peer_seq: BTreeMap<u16, u32>,
    /// Bytes this side transmitted.
    sent: usize,
}

impl Session {
    pub(super) fn deliver(&mut self, wire: Bytes, split: u8) {
        if self.messages {
            self.conn.handle_message(self.now, wire);
        } else if split == 0 || wire.is_empty() {
            self.conn.handle_bytes(self.now, wire);
        } else {
            let step = usize::from(split);
            let mut off = 0;
            while off < wire.len() {
                let end = (off + step).min(wire.len());
                self.conn.handle_bytes(self.now, wire.slice(off..end));
                off = end;
            }
        }
    }

    pub(super) fn send_frame(&mut self, f: &Frame, split: u8) {
        self.deliver(encode_one(f), split);
    }

    pub(super) fn poll(&mut self, n: usize) {
        for _ in 0..n {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            self.check.event(&ev);
            match &ev {
                Event::Invoked(i) => self.theirs.add(i.id),
                Event::Requested(r) => self.theirs.add(r.id),
                _ => {}
            }
        }
    }

    pub(super) fn peer_hello(&mut self, b: u8, split: u8) {
        let limits = HelloLimits {
            max_frame_payload: [None, Some(64), Some(200), Some(1 << 16)][usize::from(b & 3)],
            max_inflight: [None, Some(1), Some(2)][usize::from(b >> 2 & 3) % 3],
            max_tools: [None, Some(0), Some(1)][usize::from(b >> 4 & 3) % 3],
            max_chunk: [None, Some(4), Some(8)][usize::from(b >> 2 & 3) % 3],
            initial_window: [None, Some(8), Some(64)][usize::from(b >> 4 & 3) % 3],
            ..HelloLimits::default()
        };
        let heartbeat_ms = [None, Some(0), Some(100), Some(1000)][usize::from(b >> 6)];
        let hello = match self.role {
            Role::Server => {
                let mut capabilities = Vec::new();
                if b & 1 == 0 {
                    capabilities.push(Text::from_static("requests"));
                }
                if b & 2 == 0 {
                    capabilities.push(Text::from_static("resume"));
                }
                Hello {
                    versions: Versions::V1,
                    capabilities,
                    limits,
                    heartbeat_ms,
                    agent: Some(Text::from_static("peer")),
                    ..Hello::default()
                }
            }
            Role::Client => Hello {
                versions: Versions::V1,
                capabilities: Vec::new(),
                limits,
                heartbeat_ms,
                connection_id: Some(Text::from_static("c1")),
                resume_token: (b & 1 == 0).then(|| Bytes::from_static(b"token")),
                tools: u16::from(b >> 1 & 3),
                agent: None,
            },
        };
        self.send_frame(&Frame::Hello(hello), split);
    }
}

/// Fuzz targets `server_session` and `client_session`: one [`Connection`] with a small
/// [`Config`], driven by a structured sequence of operations: inbound frames (valid ones
/// from arbitrary [`Frame`] values, frames aimed at exchanges in flight, corrupted
/// encodings, raw bytes), local commands, clock advances, transport events and polls.
///
/// Layout: 4 config bytes (see `small_config`; bit 4 of byte 3 selects WebSocket messages
/// instead of a byte stream), then operations until the input ends, each one tag byte
/// (`tag % 22`) and its fields. Tag 3 (raw bytes) is `03 len_lo len_hi split bytes…`; tag 0
/// (a valid peer HELLO) is `00 b split`; tag 10 (transmit) is `0a calls`; tag 11 (poll
/// events) is `0b n`.
///
/// Tags: 0 peer HELLO, 1 arbitrary frame, 2 corrupted frame, 3 raw bytes, 4 peer opens an
/// exchange, 5 peer STREAM (client) / CREDIT (server), 6 peer ends one of ours, 7 peer
/// INTERRUPT, 8 peer TOOL_DEF (client) / PING or GOAWAY (server), 9 clock advance,
/// 10 transmit, 11 poll events, 12 transport event; local commands: 13 invoke/request,
/// 14 stream/release, 15 complete/reply, 16 fail, 17 interrupt, 18 add/remove tool,
/// 19 goaway, 20 close, 21 resume/accept/reject.
///
/// Invariants after every step: no panic; `queued_bytes` never grows past
/// `max_buffered` through peer input without the connection closing (timers:
/// by at most a PING, deadline ERRORs and a fatal ERROR; see `Checker::after_step`), and
/// never grows once closed; a drained queue accounts for every byte sent; every frame sent
/// decodes; timers converge; each exchange this side opened ends exactly once
/// ([`Event::InvocationEnded`] or [`Event::RequestEnded`]) and its id is not handed out
/// again before that; nothing follows [`Event::Closed`], and nothing is in flight then; an
/// OVERLOADED close has a current overload behind it.
pub fn session(role: Role, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = <[u8; 4]>::arbitrary(&mut u) else {
        return;
    };
    let config = small_config(cfg, false);
    let now = crate::Instant::ZERO;
    let conn = match role {
        Role::Client => Connection::client(config.clone(), now),
        Role::Server => Connection::server(
            config.clone(),
            ServerParams {
                connection_id: Text::from_static("c1"),
                resume_token: config.resume.then(|| Bytes::from_static(b"token")),
            },
            now,
        ),
    };
    let mut s = Session {
        role,
        conn,
        now,
        messages: cfg[3] & 0x10 != 0,
        check: Checker::new(&config),
        mine: Ids::default(),
        theirs: Ids::default(),
        peer_seq: BTreeMap::new(),
        sent: 0,
    };
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        if session_op(&mut s, &mut u).is_err() {
            break;
        }
    }
    // Finally: drain everything, close, and check the ending.
    let q0 = s.conn.queued_bytes();
    let was_closed = s.conn.is_closed();
    s.poll(usize::MAX);
    s.check.after_step(&s.conn, q0, was_closed, Step::Local);
    s.conn.close(CloseReason::Local);
    s.poll(usize::MAX);
    assert!(s.check.closed, "no Closed event after close()");
    transmit(&mut s.conn, usize::MAX, &mut |_| {});
}

pub(super) fn session_op(s: &mut Session, u: &mut Unstructured<'_>) -> Result<()> {
    let tag = u8::arbitrary(u)? % 22;
    let q0 = s.conn.queued_bytes();
    let was_closed = s.conn.is_closed();
    let client = s.role == Role::Client;
    let mut kind = Step::Peer;
    match tag {
        // ── the peer ──
        0 => {
            let b = u8::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            s.peer_hello(b, split);
        }
        1 => {
            let f = Frame::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            s.send_frame(&f, split);
        }
        2 => {
            // A corrupted valid frame.
            let f = Frame::arbitrary(u)?;
            let how = u8::arbitrary(u)?;
            let pos = usize::from(u16_le(u)?);
            let val = u8::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            let mut wire = encode_one(&f).to_vec();
            let n = wire.len();
            match how % 5 {
                0 => wire[pos % n] ^= 1 << (val & 7),
                1 => wire.truncate(pos % n),
                2 => wire[pos % HEADER_LEN] = val,
                3 => {
                    // Length field off by a little.
                    let len = u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]]);
                    let len = len.wrapping_add(u32::from(val & 0x0f)).wrapping_sub(8);
                    wire[4..8].copy_from_slice(&len.to_be_bytes());
                }
                _ => wire.insert(HEADER_LEN + pos % (n - HEADER_LEN + 1), val),
            }
            s.deliver(Bytes::from(wire), split);
        }
        3 => {
            let len = usize::from(u16_le(u)?);
            let split = u8::arbitrary(u)?;
            let b = u.bytes(len.min(u.len()))?;
            s.deliver(Bytes::copy_from_slice(b), split);
        }
        4 => {
            // The peer opens an exchange: INVOKE (to a server) or REQUEST (to a client).
            let b = u8::arbitrary(u)?;
            let deadline = pick(&[0, 0, 1, 50, 1000, 30_000], u8::arbitrary(u)?);
            let body = opt_raw(u)?;
            let f = if client {
                Frame::Request(Request {
                    id: RequestId(0x8000 + u16::from(b & 3)),
                    kind: Text::from(pick(WORDS, b >> 2)),
                    body,
                    invocation: (b & 0x80 != 0).then(|| s.mine.get(b, 1)),
                })
            } else {
                Frame::Invoke(Invoke {
                    id: RequestId(1 + u16::from(b & 3)),
                    tool: Text::from(pick(WORDS, b >> 2)),
                    args: body,
                    deadline_ms: deadline,
                    meta: None,
                })
            };
            s.send_frame(&f, 0);
        }
        5 => {
            // Client: STREAM on a known invocation; server: CREDIT.
            let slot = u8::arbitrary(u)?;
            let len = usize::from(u16_le(u)? % 4200);
            let flags = u8::arbitrary(u)?;
            let id = s.mine.get(slot, 1);
            let f = if client {
                let next = s.peer_seq.entry(id.0).or_insert(0);
                let seq = if flags & 0x30 == 0x30 {
                    next.wrapping_add(u32::from(flags >> 6)).wrapping_sub(1)
                } else {
                    *next
                };
                *next = next.wrapping_add(1);
                Frame::Stream(Stream {
                    id,
                    data: Bytes::from(vec![b'd'; len]),
                    text: flags & 1 != 0,
                    seq,
                    fin: flags & 2 != 0,
                })
            } else {
                let id = s.theirs.get(slot, 1);
                let bytes = match flags & 3 {
                    0 => len as u32 + 1,
                    1 => 1,
                    2 => u32::MAX,
                    _ => u32::MAX / 2 + len as u32,
                };
                Frame::Credit(Credit { id, bytes })
            };
            s.send_frame(&f, flags >> 3 & 7);
        }
        6 => {
            // The peer ends an exchange this side opened: COMPLETE / REPLY / ERROR.
            let slot = u8::arbitrary(u)?;
            let how = u8::arbitrary(u)?;
            let f = if how & 1 == 0 {
                if client {
                    Frame::Complete(Complete {
                        id: s.mine.get(slot, 1),
                        status: pick(&[Status::Ok, Status::Cancelled, Status::Failed], how >> 1),
                        result: Some(RawValue::uint(u64::from(how))),
                        metrics: Metrics::default(),
                    })
                } else {
                    Frame::Reply(Reply {
                        id: s.mine.get(slot, 0x8000),
                        status: ReplyStatus::Answered,
                        body: None,
                    })
                }
            } else {
                let id = match how >> 1 & 3 {
                    0 => RequestId::CONNECTION,
                    1 => s.theirs.get(slot, if client { 0x8000 } else { 1 }),
                    _ => s.mine.get(slot, if client { 1 } else { 0x8000 }),
                };
                Frame::Error(ErrorFrame {
                    id,
                    code: ErrorCode::arbitrary(u)?,
                    message: None,
                    retryable: false,
                    frame_type: None,
                })
            };
            s.send_frame(&f, 0);
        }
        7 => {
            // INTERRUPT of an exchange the peer opened... from the peer's side: aimed at
            // ours it is a violation, at theirs it is the peer interrupting its own.
            let slot = u8::arbitrary(u)?;
            let id = if slot & 1 == 0 {
                s.theirs.get(slot, if client { 0x8000 } else { 1 })
            } else {
                s.mine.get(slot, if client { 1 } else { 0x8000 })
            };
            let reason = opt_text(u, 0, 1024)?;
            s.send_frame(&Frame::Interrupt(Interrupt { id, reason }), 0);
        }
        8 => {
            // Client: TOOL_DEF; server: PING / GOAWAY.
            let b = u8::arbitrary(u)?;
            let f = if client {
                Frame::ToolDef(ToolDef {
                    op: pick(&[ToolOp::Add, ToolOp::Update, ToolOp::Remove], b),
                    name: Text::from(pick(WORDS, b >> 2)),
                    description: Text::default(),
                    input_schema: opt_raw(u)?,
                    annotations: None,
                })
            } else if b & 1 == 0 {
                Frame::PING
            } else {
                Frame::GoAway(GoAway {
                    reason: None,
                    timeout_ms: u32::from(b),
                })
            };
            s.send_frame(&f, 0);
        }
        9 => {
            kind = Step::Timer {
                in_flight: s.conn.in_flight(),
            };
            s.now = s.now + step_of(u8::arbitrary(u)?);
            fire_timers(&mut s.conn, s.now);
        }
        10 => {
            let calls = usize::from(u8::arbitrary(u)?);
            let calls = if calls == 0 { usize::MAX } else { calls };
            let mut sent = 0;
            transmit(&mut s.conn, calls, &mut |b| sent += b.len());
            s.sent += sent;
        }
        11 => {
            kind = Step::Local; // auto credit queues CREDIT frames
            let n = usize::from(u8::arbitrary(u)?);
            s.poll(if n == 0 { usize::MAX } else { n });
        }
        12 => match u8::arbitrary(u)? % 4 {
            0 => s.conn.handle_transport_closed(s.now),
            1 => s.conn.handle_transport_pong(s.now),
            2 => s.conn.handle_text_message(s.now),
            _ => {
                let _ = s.conn.poll_ping();
            }
        },
        // ── local commands ──
        tag => {
            kind = Step::Local;
            local_command(s, tag, u)?;
        }
    }
    if !was_closed && s.conn.is_closed() {
        let (q, seen) = (s.conn.queued_bytes(), s.check.seen);
        s.poll(usize::MAX);
        s.check.closed_by(q, s.check.seen - seen);
    }
    s.check.after_step(&s.conn, q0, was_closed, kind);
    Ok(())
}

pub(super) fn local_command(s: &mut Session, tag: u8, u: &mut Unstructured<'_>) -> Result<()> {
    let client = s.role == Role::Client;
    let now = s.now;
    match tag {
        13 => {
            // Open: invoke / request.
            let b = u8::arbitrary(u)?;
            let body = opt_raw(u)?;
            let name = if b & 0x80 == 0 {
                Text::from(pick(WORDS, b))
            } else {
                text(u, 0, 200)?
            };
            let r = if client {
                let opts = InvokeOptions {
                    deadline_ms: pick(&[0, 0, 1, 50, 1000, 30_000], b >> 4),
                    meta: opt_raw(u)?,
                };
                s.conn.invoke(name, body, opts)
            } else {
                let inv = (b & 0x40 != 0).then(|| s.theirs.get(b, 1));
                s.conn.request(name, body, inv)
            };
            if let Ok(id) = r {
                s.check.opened(id);
                s.mine.add(id);
            }
        }
        14 => {
            // Server: stream; client: release.
            let slot = u8::arbitrary(u)?;
            let len = usize::from(u16_le(u)? % 4200);
            let flags = u8::arbitrary(u)?;
            if client {
                s.conn.release(s.mine.get(slot, 1), len);
            } else {
                let fill = if flags & 4 != 0 { 0xff } else { b's' };
                let _ = s.conn.stream(
                    s.theirs.get(slot, 1),
                    Bytes::from(vec![fill; len]),
                    StreamOptions::BINARY
                        .text(flags & 1 != 0)
                        .fin(flags & 2 != 0),
                );
            }
        }
        15 => {
            // Server: complete; client: reply.
            let slot = u8::arbitrary(u)?;
            let st = u8::arbitrary(u)?;
            let body = opt_raw(u)?;
            let _ = if client {
                s.conn.reply(
                    s.theirs.get(slot, 0x8000),
                    pick(
                        &[
                            ReplyStatus::Answered,
                            ReplyStatus::Cancelled,
                            ReplyStatus::Declined,
                        ],
                        st,
                    ),
                    body,
                )
            } else {
                s.conn.complete(
                    s.theirs.get(slot, 1),
                    pick(&[Status::Ok, Status::Cancelled, Status::Failed], st),
                    body,
                    Metrics::arbitrary(u)?,
                )
            };
        }
        16 => {
            let slot = u8::arbitrary(u)?;
            let code = ErrorCode::arbitrary(u)?;
            let msg = opt_text_long(u)?;
            let retry = bool::arbitrary(u)?;
            let id = s.theirs.get(slot, if client { 0x8000 } else { 1 });
            let _ = s.conn.fail(id, code, msg, retry);
        }
        17 => {
            let slot = u8::arbitrary(u)?;
            let id = s.mine.get(slot, if client { 1 } else { 0x8000 });
            let reason = long_text(u)?;
            let _ = s.conn.interrupt(id, reason);
        }
        18 => {
            // Server: add / remove tool; client: nothing of its own (WrongRole).
            let b = u8::arbitrary(u)?;
            if b & 1 == 0 {
                let def = ToolDef {
                    op: ToolOp::Add,
                    name: if b & 0x80 == 0 {
                        Text::from(pick(WORDS, b >> 1))
                    } else {
                        text(u, 0, 200)?
                    },
                    description: opt_text_long(u)?,
                    input_schema: opt_raw(u)?,
                    annotations: None,
                };
                let _ = s.conn.add_tool(def);
            } else {
                let _ = s.conn.remove_tool(pick(WORDS, b >> 1));
            }
        }
        19 => {
            let b = u8::arbitrary(u)?;
            let reason = long_text(u)?;
            s.conn.goaway(now, reason, step_of(b));
        }
        20 => s.conn.close(CloseReason::Local),
        _ => {
            let b = u8::arbitrary(u)?;
            if client {
                let _ = s.conn.resume(now);
            } else if b & 1 == 0 {
                let _ = s.conn.accept_resume(now, u64::from(b >> 1));
            } else {
                s.conn.reject_resume(now);
            }
        }
    }
    Ok(())
}
