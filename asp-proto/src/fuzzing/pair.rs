//! The `pair` target: an honest client and server wired together.

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use super::link::{Datagram, Link};
use super::session::{
    fire_timers, pick, small_config, step_of, transmit, u16_le, Checker, Ids, Step,
};
use crate::arbitrary::{opt_raw, opt_text, WORDS};
use crate::frame::*;
use crate::{
    CloseReason, Connection, ErrorCode, Event, InvocationOutcome, InvokeOptions, RequestOutcome,
    ServerParams, StreamOptions,
};

/// Close reasons an honest pair may end with: time-outs and local bounds, never a
/// protocol violation.
fn honest_close(reason: &CloseReason) -> bool {
    let ok_code = |c: ErrorCode| {
        matches!(
            c,
            ErrorCode::HANDSHAKE_TIMEOUT
                | ErrorCode::HEARTBEAT_TIMEOUT
                | ErrorCode::GOING_AWAY
                | ErrorCode::OVERLOADED
        )
    };
    match reason {
        CloseReason::ProtocolError { code, .. } | CloseReason::PeerError { code, .. } => {
            ok_code(*code)
        }
        _ => true,
    }
}

struct Side {
    conn: Connection,
    check: Checker,
    /// Exchanges this side opened / the peer opened, by id.
    mine: Ids,
    theirs: Ids,
}

impl Side {
    fn poll(&mut self, n: usize, model: &mut PairModel, is_client: bool) {
        for _ in 0..n {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            self.check.event(&ev);
            model.event(&ev, is_client);
            match &ev {
                Event::Invoked(i) => self.theirs.add(i.id),
                Event::Requested(r) => self.theirs.add(r.id),
                _ => {}
            }
        }
    }
}

/// End-to-end expectations of the pair.
#[derive(Default)]
struct PairModel {
    /// STREAM chunks the server application sent that the client has not received yet, per
    /// invocation (the core neither splits nor merges chunks).
    streamed: BTreeMap<u16, VecDeque<(Bytes, bool)>>,
    /// Error codes the server application failed an invocation with.
    failed: BTreeMap<u16, ErrorCode>,
    /// Error codes the client application refused a request with.
    refused: BTreeMap<u16, ErrorCode>,
    /// The client pipelined an INVOKE before the server's HELLO (SPEC §6.2 step 1), under
    /// the default limits: one may break a smaller limit the server then announces.
    pipelined: bool,
}

impl PairModel {
    fn event(&mut self, ev: &Event, is_client: bool) {
        let who = if is_client { "client" } else { "server" };
        match ev {
            // SPEC §6.2 step 1: the risk a pipelining client takes.
            Event::Violation(e)
                if !is_client
                    && self.pipelined
                    && e.code == ErrorCode::FRAME_TOO_LARGE
                    && e.frame_type == Some(FrameType::Invoke as u8) => {}
            Event::Violation(e) => panic!("{who} saw a violation from an honest peer: {e:?}"),
            Event::Closed(r) => assert!(honest_close(r), "{who} closed with {r:?}"),
            Event::Chunk(c) => {
                let sent = self.streamed.get_mut(&c.id.0).and_then(|q| q.pop_front());
                assert_eq!(
                    sent,
                    Some((c.data.clone(), c.text)),
                    "client received a chunk on {:?} that is not the next one the server sent",
                    c.id
                );
            }
            Event::InvocationEnded {
                id,
                outcome: InvocationOutcome::Error(e),
            }
            | Event::RequestEnded {
                id,
                outcome: RequestOutcome::Error(e),
            } => {
                let app = if is_client {
                    self.failed.get(&id.0)
                } else {
                    self.refused.get(&id.0)
                };
                let allowed = Some(&e.code) == app
                    || matches!(
                        e.code,
                        ErrorCode::DEADLINE_EXCEEDED
                            | ErrorCode::DRAINING
                            | ErrorCode::UNKNOWN_TOOL
                            // SPEC §3.6: a result over the client's frame limit.
                            | ErrorCode::RESULT_TOO_LARGE
                    )
                    || (self.pipelined
                        && matches!(
                            e.code,
                            ErrorCode::FRAME_TOO_LARGE | ErrorCode::TOO_MANY_INFLIGHT
                        ));
                assert!(
                    allowed,
                    "{who}: {id:?} ended with an unexpected error {e:?}"
                );
            }
            _ => {}
        }
    }
}

/// Both ends and the wire between them.
struct Pair {
    client: Side,
    server: Side,
    /// Client → server, server → client.
    c2s: Link,
    s2c: Link,
    messages: bool,
    wire_up: bool,
    now: crate::Instant,
    model: PairModel,
}

impl Pair {
    /// (`me`, the peer, `me`'s outgoing pipe). `server_side`: `me` is the server.
    fn sides(&mut self, server_side: bool) -> (&mut Side, &mut Side, &mut Link) {
        if server_side {
            (&mut self.server, &mut self.client, &mut self.s2c)
        } else {
            (&mut self.client, &mut self.server, &mut self.c2s)
        }
    }

    /// One operation; returns who caused it (see [`Checker::after_step`]).
    fn op(&mut self, tag: u8, b: u8, u: &mut Unstructured<'_>) -> Result<Step> {
        let server_side = b & 1 != 0;
        let now = self.now;
        let (messages, wire_up) = (self.messages, self.wire_up);
        let mut kind = Step::Local;
        match tag % 16 {
            0 => {
                // `me` transmits into its pipe (lost if the transport is down).
                let calls = if b >> 1 == 0 {
                    usize::MAX
                } else {
                    usize::from(b >> 1)
                };
                let (me, _, out) = self.sides(server_side);
                transmit(&mut me.conn, calls, &mut |batch| {
                    if !wire_up {
                        return;
                    }
                    // No latency: the fuzzer chooses when the peer reads.
                    out.send(now, Datagram::Data(batch));
                });
            }
            1 => {
                // Deliver some of what `me` sent to the peer.
                kind = Step::Peer;
                let (_, peer, out) = self.sides(server_side);
                if messages {
                    for _ in 0..=(b >> 5) {
                        if let Some(Datagram::Data(m)) = out.pop_due(None) {
                            peer.conn.handle_message(now, m);
                        }
                    }
                } else {
                    let n = match usize::from(b >> 1) {
                        0 => usize::MAX,
                        n => n,
                    };
                    let chunk = out.take_bytes(None, n);
                    if !chunk.is_empty() {
                        peer.conn.handle_bytes(now, chunk);
                    }
                }
            }
            2 => {
                kind = Step::Timer {
                    in_flight: self
                        .client
                        .conn
                        .in_flight()
                        .max(self.server.conn.in_flight()),
                };
                self.now = now + step_of(b >> 1);
                fire_timers(&mut self.client.conn, self.now);
                fire_timers(&mut self.server.conn, self.now);
            }
            3 => {
                // Poll events (auto credit may queue CREDIT: a local step).
                let n = usize::from(b >> 1);
                let n = if n == 0 { usize::MAX } else { n };
                let side = if server_side {
                    &mut self.server
                } else {
                    &mut self.client
                };
                side.poll(n, &mut self.model, !server_side);
            }
            4 => {
                let body = opt_raw(u)?;
                let opts = InvokeOptions {
                    deadline_ms: pick(&[0, 0, 0, 1, 50, 1000, 30_000, 100], b >> 1),
                    meta: None,
                };
                let c = &mut self.client;
                if c.conn.state() == crate::State::Handshaking {
                    self.model.pipelined = true;
                }
                if let Ok(id) = c.conn.invoke(pick(WORDS, b >> 4), body, opts) {
                    c.check.opened(id);
                    c.mine.add(id);
                }
            }
            5 => {
                let slot = u8::arbitrary(u)?;
                let len = usize::from(u16_le(u)? % 1100);
                let id = self.server.theirs.get(slot, 1);
                let is_text = b & 2 != 0;
                let data = Bytes::from(vec![b'a' + (slot % 26); len]);
                if self
                    .server
                    .conn
                    .stream(
                        id,
                        data.clone(),
                        StreamOptions::BINARY.text(is_text).fin(b & 4 != 0),
                    )
                    .is_ok()
                {
                    let q = self.model.streamed.entry(id.0).or_default();
                    q.push_back((data, is_text));
                }
            }
            6 => {
                let slot = u8::arbitrary(u)?;
                let result = opt_raw(u)?;
                let id = self.server.theirs.get(slot, 1);
                let _ = self.server.conn.complete(
                    id,
                    pick(&[Status::Ok, Status::Cancelled, Status::Failed], b >> 1),
                    result,
                    Metrics::default(),
                );
            }
            7 => {
                // `me` fails an exchange the peer opened.
                let slot = u8::arbitrary(u)?;
                let code = ErrorCode(u.int_in_range(0x20..=0x50)?);
                let (me, _, _) = self.sides(server_side);
                let id = me.theirs.get(slot, if server_side { 1 } else { 0x8000 });
                if me.conn.fail(id, code, "failed", false).is_ok() {
                    if server_side {
                        self.model.failed.insert(id.0, code);
                    } else {
                        self.model.refused.insert(id.0, code);
                    }
                }
            }
            8 => {
                let slot = u8::arbitrary(u)?;
                let reason = opt_text(u, 0, 100)?;
                let (me, _, _) = self.sides(server_side);
                let id = me.mine.get(slot, if server_side { 0x8000 } else { 1 });
                let _ = me.conn.interrupt(id, reason);
            }
            9 => {
                let slot = u8::arbitrary(u)?;
                let body = opt_raw(u)?;
                let s = &mut self.server;
                let inv = (b & 2 != 0).then(|| s.theirs.get(slot, 1));
                if let Ok(id) = s.conn.request(pick(WORDS, b >> 2), body, inv) {
                    s.check.opened(id);
                    s.mine.add(id);
                }
            }
            10 => {
                let slot = u8::arbitrary(u)?;
                let body = opt_raw(u)?;
                let st = [
                    ReplyStatus::Answered,
                    ReplyStatus::Cancelled,
                    ReplyStatus::Declined,
                ];
                let c = &mut self.client;
                let _ = c
                    .conn
                    .reply(c.theirs.get(slot, 0x8000), pick(&st, b >> 1), body);
            }
            11 => {
                let name = pick(WORDS, b >> 2);
                if b & 2 == 0 {
                    let def = ToolDef {
                        op: ToolOp::Add,
                        name: Text::from(name),
                        description: Text::default(),
                        input_schema: opt_raw(u)?,
                        annotations: None,
                    };
                    let _ = self.server.conn.add_tool(def);
                } else {
                    let _ = self.server.conn.remove_tool(name);
                }
            }
            12 => {
                let (me, _, _) = self.sides(server_side);
                me.conn.goaway(now, None, step_of(b >> 1));
            }
            13 => {
                // Client flow control by hand (matters with auto_credit off).
                let slot = u8::arbitrary(u)?;
                let c = &mut self.client;
                c.conn.release(c.mine.get(slot, 1), usize::from(b) * 8);
            }
            14 => {
                kind = Step::Peer;
                self.wire_up = false;
                self.client.conn.handle_transport_closed(now);
                self.server.conn.handle_transport_closed(now);
            }
            _ => {
                let (me, _, _) = self.sides(server_side);
                me.conn.close(CloseReason::Local);
            }
        }
        Ok(kind)
    }
}

/// Fuzz target `pair`: an honest client and server wired together; the fuzzer chooses the
/// commands on each side, when each side transmits, which bytes (or messages) are
/// delivered, when events are polled, and when time passes.
///
/// Layout: 4 client config bytes, 4 server config bytes (see `small_config`; rate limits
/// high, resume off), one transport byte (bit 0: WebSocket messages), then operations: a
/// tag byte (`% 16`), a byte whose bit 0 picks the side (1 = server), and fields.
///
/// Invariants: those of [`session`] on both sides, and, since both peers follow the
/// protocol: no [`Event::Violation`]; closes only through timeouts, drains, local bounds
/// or the transport; the client receives exactly a prefix of what the server streamed,
/// with the same text flag; an exchange ends with an ERROR only for a code the other
/// application chose or one the protocol allows (deadline, draining, unknown tool).
pub fn pair(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(cc), Ok(sc), Ok(t)) = (
        <[u8; 4]>::arbitrary(&mut u),
        <[u8; 4]>::arbitrary(&mut u),
        u8::arbitrary(&mut u),
    ) else {
        return;
    };
    let (ccfg, scfg) = (small_config(cc, true), small_config(sc, true));
    let now = crate::Instant::ZERO;
    let mut p = Pair {
        client: Side {
            conn: Connection::client(ccfg.clone(), now),
            check: Checker::new(&ccfg),
            mine: Ids::default(),
            theirs: Ids::default(),
        },
        server: Side {
            conn: Connection::server(
                scfg.clone(),
                ServerParams {
                    connection_id: Text::from_static("c1"),
                    resume_token: None,
                },
                now,
            ),
            check: Checker::new(&scfg),
            mine: Ids::default(),
            theirs: Ids::default(),
        },
        c2s: Link::default(),
        s2c: Link::default(),
        messages: t & 1 != 0,
        wire_up: true,
        now,
        model: PairModel::default(),
    };
    for _ in 0..256 {
        let (Ok(tag), Ok(b)) = (u8::arbitrary(&mut u), u8::arbitrary(&mut u)) else {
            break;
        };
        if u.is_empty() && tag == 0 && b == 0 {
            break;
        }
        let snap = |s: &Side| (s.conn.queued_bytes(), s.conn.is_closed());
        let (cq, cc) = snap(&p.client);
        let (sq, sc) = snap(&p.server);
        let r = p.op(tag, b, &mut u);
        let kind = *r.as_ref().unwrap_or(&Step::Local);
        for (side, was_closed, is_client) in [(&mut p.client, cc, true), (&mut p.server, sc, false)]
        {
            if !was_closed && side.conn.is_closed() {
                let (q, seen) = (side.conn.queued_bytes(), side.check.seen);
                side.poll(usize::MAX, &mut p.model, is_client);
                side.check.closed_by(q, side.check.seen - seen);
            }
        }
        p.client.check.after_step(&p.client.conn, cq, cc, kind);
        p.server.check.after_step(&p.server.conn, sq, sc, kind);
        if r.is_err() || u.is_empty() {
            break;
        }
    }
    for is_client in [true, false] {
        let side = if is_client {
            &mut p.client
        } else {
            &mut p.server
        };
        side.poll(usize::MAX, &mut p.model, is_client);
        side.conn.close(CloseReason::Local);
        side.poll(usize::MAX, &mut p.model, is_client);
        assert!(side.check.closed, "no Closed event after close()");
    }
}
