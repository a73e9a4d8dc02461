//! Property test of the connection state machine: random application commands on both
//! sides of a `Pair`, random partial deliveries (WebSocket messages or a byte stream split
//! at random points) and random clock advances, with invariants checked after every step.
//!
//! Both peers are honest (only the public API is used), so any protocol ERROR that is not an
//! ordinary outcome (a deadline, DRAINING, UNKNOWN_TOOL…) is a bug: no `Violation` and no
//! `PeerError` may ever appear.

mod pair;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use asp_proto::frame::{Metrics, ReplyStatus, Status};
use asp_proto::{
    Config, Connection, ErrorCode, Event, Frame, InvocationOutcome, InvokeOptions, Limits,
    RawValue, RequestId, RequestOutcome, SendError, ServerParams, State, StreamOptions,
};
use bytes::Bytes;
use pair::*;
use proptest::prelude::*;

const TOOLS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Cmd {
    Invoke {
        tool: u8,
        deadline_ms: u16,
    },
    Stream {
        k: u8,
        len: u16,
        text: bool,
        fin: bool,
    },
    Complete {
        k: u8,
        status: u8,
    },
    Fail {
        k: u8,
        code: u16,
    },
    Interrupt {
        k: u8,
    },
    Request {
        k: u8,
    },
    Reply {
        k: u8,
        status: u8,
    },
    FailRequest {
        k: u8,
    },
    InterruptRequest {
        k: u8,
    },
    AddTool {
        t: u8,
        desc: u8,
    },
    RemoveTool {
        t: u8,
    },
    GoAway {
        server: bool,
        timeout_ms: u16,
    },
    Advance {
        ms: u16,
    },
    Deliver {
        from_server: bool,
        n: u8,
    },
    DeliverAll,
    /// The transport drops; with resume on, the client resumes on a new one (SPEC §11).
    Bounce,
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        4 => (any::<u8>(), prop_oneof![3 => Just(0u16), 1 => 1..3000u16])
            .prop_map(|(tool, deadline_ms)| Cmd::Invoke { tool, deadline_ms }),
        12 => (any::<u8>(), 0..700u16, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(k, len, text, fin)| Cmd::Stream { k, len, text, fin }),
        3 => (any::<u8>(), 0..3u8).prop_map(|(k, status)| Cmd::Complete { k, status }),
        1 => (any::<u8>(), prop_oneof![Just(0x40u16), Just(0x42), Just(0x100)])
            .prop_map(|(k, code)| Cmd::Fail { k, code }),
        2 => any::<u8>().prop_map(|k| Cmd::Interrupt { k }),
        2 => any::<u8>().prop_map(|k| Cmd::Request { k }),
        2 => (any::<u8>(), 0..3u8).prop_map(|(k, status)| Cmd::Reply { k, status }),
        1 => any::<u8>().prop_map(|k| Cmd::FailRequest { k }),
        1 => any::<u8>().prop_map(|k| Cmd::InterruptRequest { k }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(t, desc)| Cmd::AddTool { t, desc }),
        1 => any::<u8>().prop_map(|t| Cmd::RemoveTool { t }),
        1 => (prop::bool::weighted(0.15), any::<bool>(), 0..3000u16).prop_map(
            |(go, server, timeout_ms)| if go {
                Cmd::GoAway { server, timeout_ms }
            } else {
                Cmd::Advance { ms: timeout_ms / 8 }
            }
        ),
        3 => (0..2500u16).prop_map(|ms| Cmd::Advance { ms }),
        8 => (any::<bool>(), 1..4u8).prop_map(|(from_server, n)| Cmd::Deliver { from_server, n }),
        2 => Just(Cmd::DeliverAll),
        1 => prop::bool::weighted(0.3).prop_map(|b| if b { Cmd::Bounce } else { Cmd::DeliverAll }),
    ]
}

#[derive(Clone, Debug)]
struct Setup {
    bytes: bool,
    seed: u64,
    window: u32,
    max_queued: usize,
    per_inv: usize,
    server_inflight: u16,
    client_inflight: u16,
    max_tools: u16,
    heartbeat: bool,
    resume: bool,
    client_replay: usize,
    server_replay: usize,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        any::<u64>(),
        prop_oneof![Just(64u32), Just(1000), Just(256 << 10)],
        prop_oneof![Just(400usize), Just(3000), Just(1 << 20)],
        prop_oneof![Just(300usize), Just(256 << 10)],
        prop_oneof![Just(2u16), Just(128)],
        prop_oneof![Just(1u16), Just(128)],
        prop_oneof![Just(2u16), Just(256)],
        any::<bool>(),
        (
            prop::bool::weighted(0.8),
            prop_oneof![Just(300usize), Just(256 << 10)],
            prop_oneof![Just(2000usize), Just(256 << 10)],
        ),
    )
        .prop_map(
            |(
                bytes,
                seed,
                window,
                max_queued,
                per_inv,
                server_inflight,
                client_inflight,
                max_tools,
                heartbeat,
                (resume, client_replay, server_replay),
            )| Setup {
                bytes,
                seed,
                window,
                max_queued,
                per_inv,
                server_inflight,
                client_inflight,
                max_tools,
                heartbeat,
                resume,
                client_replay,
                server_replay,
            },
        )
}

/// What the test knows, as the applications on each side would.
#[derive(Default)]
struct Model {
    /// Every id `invoke` returned, in order.
    invoked: Vec<RequestId>,
    /// Server: ids it learned from `Invoked`.
    served: Vec<RequestId>,
    /// Server: invocations it still has to end (Invoked, not yet completed/failed/aborted).
    serving: BTreeSet<u16>,
    /// Server: every id `request` returned.
    requested: Vec<RequestId>,
    /// Client: requests it learned from `Requested`.
    asked: Vec<RequestId>,
    /// Client: requests it still has to answer.
    answering: BTreeSet<u16>,
    /// How many events of each log were already checked.
    seen: [usize; 2],
    /// Ended events per id (client invocations and server requests).
    ended: BTreeMap<u16, End>,
    /// Per direction: wire frames already checked, and ids whose terminal frame that
    /// sender already sent (SPEC §7.1: nothing for the id follows it).
    wire_seen: [usize; 2],
    terminated: [BTreeSet<u16>; 2],
}

fn pick(v: &[RequestId], k: u8) -> Option<RequestId> {
    (!v.is_empty()).then(|| v[usize::from(k) % v.len()])
}

/// Mostly an exchange still live at the application, sometimes any (late commands).
fn pick_live(live: &BTreeSet<u16>, all: &[RequestId], k: u8) -> Option<RequestId> {
    if k < 220 && !live.is_empty() {
        live.iter()
            .nth(usize::from(k) % live.len())
            .map(|id| RequestId(*id))
    } else {
        pick(all, k)
    }
}

fn config(s: &Setup, client: bool) -> Config {
    let mut c = Config::default();
    c.heartbeat = s.heartbeat.then(|| Duration::from_secs(4));
    c.resume = s.resume;
    c.replay_buffer = if client {
        s.client_replay
    } else {
        s.server_replay
    };
    if client {
        c.limits = {
            let mut limits = Limits::default();
            limits.initial_window = s.window;
            limits.max_chunk = 600;
            limits.max_inflight = s.client_inflight;
            limits.max_tools = s.max_tools;
            limits
        };
    } else {
        c.limits = {
            let mut limits = Limits::default();
            limits.max_inflight = s.server_inflight;
            limits
        };
        c.max_queued_bytes = s.max_queued;
        c.max_queued_per_invocation = s.per_inv;
    }
    c
}

fn params() -> ServerParams {
    {
        let mut params = default_params();
        params.resume_token = Some(Bytes::from_static(&[9; 16]));
        params
    }
}

/// Errors a command may legitimately return in some state.
fn allowed(r: Result<(), SendError>) -> Result<(), TestCaseError> {
    match r {
        Ok(())
        | Err(SendError::NotOpen)
        | Err(SendError::Closed)
        | Err(SendError::Draining)
        | Err(SendError::NotInFlight)
        | Err(SendError::TooManyInflight)
        | Err(SendError::Full)
        | Err(SendError::StreamFinished) => Ok(()),
        Err(SendError::TooLarge { len, max }) if len > max => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!("unexpected {e:?}"))),
    }
}

fn run(setup: Setup, cmds: Vec<Cmd>) -> Result<(), TestCaseError> {
    let mut p = Pair::new(config(&setup, true), config(&setup, false), params());
    p.seed(setup.seed);
    if setup.bytes {
        p.delivery = Delivery::Bytes { max_pieces: 4 };
    }
    for t in &TOOLS[..2] {
        p.server.add_tool(tool(t)).unwrap();
    }
    p.drive();
    let mut m = Model::default();
    check(&mut p, &mut m, &setup)?;

    for c in &cmds {
        apply(&mut p, &mut m, c, &setup)?;
        p.flush();
        check(&mut p, &mut m, &setup)?;
    }

    // Wind down: deliver everything, end everything either side still owes, deliver again.
    p.drive_bounded(10_000);
    check(&mut p, &mut m, &setup)?;
    for _ in 0..3 {
        for id in m.serving.clone() {
            let r = p
                .server
                .complete(RequestId(id), Status::Ok, None, Metrics::default());
            if r.is_ok() {
                m.serving.remove(&id);
            }
        }
        for id in m.answering.clone() {
            if p.client
                .reply(RequestId(id), ReplyStatus::Declined, None)
                .is_ok()
            {
                m.answering.remove(&id);
            }
        }
        p.drive_bounded(10_000);
        check(&mut p, &mut m, &setup)?;
    }
    if !p.client.is_closed() && !p.server.is_closed() {
        prop_assert_eq!(
            p.client.in_flight(),
            0,
            "client exchanges left after wind-down"
        );
        prop_assert_eq!(
            p.server.in_flight(),
            0,
            "server exchanges left after wind-down"
        );
        tools_agree(&p)?;
    }
    // Whatever is left ends now (a detached session when its resume window has passed).
    p.drop_link();
    p.advance(Config::default().resume_window);
    p.timeout(Side::Client);
    p.timeout(Side::Server);
    check(&mut p, &mut m, &setup)?;
    for id in &m.invoked {
        prop_assert!(
            m.ended.contains_key(&id.0),
            "invocation {:?} never ended",
            id
        );
    }
    for id in &m.requested {
        prop_assert!(m.ended.contains_key(&id.0), "request {:?} never ended", id);
    }
    Ok(())
}

fn apply(p: &mut Pair, m: &mut Model, c: &Cmd, s: &Setup) -> Result<(), TestCaseError> {
    let now = p.now;
    match *c {
        Cmd::Invoke { tool, deadline_ms } => {
            // Mostly a registered tool.
            let name = if tool < 200 {
                TOOLS[usize::from(tool) % 2]
            } else {
                TOOLS[usize::from(tool) % TOOLS.len()]
            };
            let opts = InvokeOptions::default().deadline_ms(u32::from(deadline_ms));
            match p.client.invoke(name, Some(RawValue::uint(7)), opts) {
                Ok(id) => {
                    prop_assert!(!m.invoked.contains(&id), "id {:?} reused", id);
                    m.invoked.push(id);
                }
                Err(e) => allowed(Err(e))?,
            }
        }
        Cmd::Stream { k, len, text, fin } => {
            if let Some(id) = pick_live(&m.serving, &m.served, k) {
                let data = Bytes::from(vec![b'x'; usize::from(len)]);
                // SPEC §5.3: only the final chunk may be empty.
                allowed(p.server.stream(
                    id,
                    data,
                    StreamOptions::BINARY.text(text).fin(fin || len == 0),
                ))?;
            }
        }
        Cmd::Complete { k, status } => {
            if let Some(id) = pick_live(&m.serving, &m.served, k) {
                let status = [Status::Ok, Status::Cancelled, Status::Failed][usize::from(status)];
                let r = p.server.complete(
                    id,
                    status,
                    Some(RawValue::uint(id.0.into())),
                    Metrics {
                        wall_us: Some(5),
                        ..Metrics::default()
                    },
                );
                end_served(m, id, &r)?;
                allowed(r)?;
            }
        }
        Cmd::Fail { k, code } => {
            if let Some(id) = pick_live(&m.serving, &m.served, k) {
                let r = p.server.fail(id, ErrorCode(code), "failed", false);
                end_served(m, id, &r)?;
                allowed(r)?;
            }
        }
        Cmd::Interrupt { k } => {
            if let Some(id) = pick(&m.invoked, k) {
                allowed(p.client.interrupt(id, Some("stop".into())))?;
            }
        }
        Cmd::Request { k } => {
            let inv = pick(&m.served, k);
            match p
                .server
                .request("confirm", Some(RawValue::string("?")), inv)
            {
                Ok(id) => {
                    prop_assert!(!m.requested.contains(&id), "request id {:?} reused", id);
                    m.requested.push(id);
                }
                Err(SendError::Unsupported(_)) => {
                    return Err(TestCaseError::fail("client accepts requests"))
                }
                Err(e) => allowed(Err(e))?,
            }
        }
        Cmd::Reply { k, status } => {
            if let Some(id) = pick_live(&m.answering, &m.asked, k) {
                let status = [
                    ReplyStatus::Answered,
                    ReplyStatus::Cancelled,
                    ReplyStatus::Declined,
                ][usize::from(status)];
                let r = p.client.reply(id, status, Some(RawValue::uint(1)));
                end_answered(m, id, &r)?;
                allowed(r)?;
            }
        }
        Cmd::FailRequest { k } => {
            if let Some(id) = pick_live(&m.answering, &m.asked, k) {
                let r = p.client.fail(id, ErrorCode::INVALID_ARGUMENTS, "no", false);
                end_answered(m, id, &r)?;
                allowed(r)?;
            }
        }
        Cmd::InterruptRequest { k } => {
            if let Some(id) = pick(&m.requested, k) {
                allowed(p.server.interrupt(id, None))?;
            }
        }
        Cmd::AddTool { t, desc } => {
            let mut def = tool(TOOLS[usize::from(t) % TOOLS.len()]);
            def.description = format!("v{desc}").into();
            match p.server.add_tool(def) {
                Ok(()) | Err(SendError::Closed) | Err(SendError::TooLarge { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("add_tool: {e:?}"))),
            }
        }
        Cmd::RemoveTool { t } => {
            let _ = p.server.remove_tool(TOOLS[usize::from(t) % TOOLS.len()]);
        }
        Cmd::GoAway { server, timeout_ms } => {
            let d = Duration::from_millis(u64::from(timeout_ms));
            if server {
                p.server.goaway(now, None, d);
            } else {
                p.client.goaway(now, None, d);
            }
        }
        Cmd::Advance { ms } => {
            p.advance(Duration::from_millis(u64::from(ms)));
            p.timeout(Side::Client);
            p.timeout(Side::Server);
        }
        Cmd::Deliver { from_server, n } => {
            let from = if from_server {
                Side::Server
            } else {
                Side::Client
            };
            p.deliver(from, usize::from(n), true);
        }
        Cmd::DeliverAll => {
            p.deliver(Side::Client, usize::MAX, true);
            p.deliver(Side::Server, usize::MAX, true);
        }
        Cmd::Bounce => bounce(p, m, s)?,
    }
    Ok(())
}

fn bounce(p: &mut Pair, m: &mut Model, s: &Setup) -> Result<(), TestCaseError> {
    p.drop_link();
    check(p, m, s)?;
    if p.client.state() != State::Detached {
        return Ok(());
    }
    let now = p.now;
    let mut fresh = Connection::server(config(s, false), params(), now);
    for t in &TOOLS[..2] {
        fresh.add_tool(tool(t)).unwrap();
    }
    let mut old = p.reconnect(fresh);
    p.client.resume(now).unwrap();
    p.drive_bounded(1000);
    let received = p.events(Side::Server)[m.seen[1]..]
        .iter()
        .find_map(|e| match e {
            Event::ResumeRequested { received, .. } => Some(*received),
            _ => None,
        });
    let Some(received) = received else {
        return Err(TestCaseError::fail("no ResumeRequested"));
    };
    if old.accept_resume(now, received).is_ok() {
        p.swap_server(old);
        return Ok(());
    }
    // The old session is gone (its replay buffer lost frames). Account for its last
    // events, then the client starts a new session with the fresh server.
    let mut last = Vec::new();
    while let Some(e) = old.poll_event() {
        last.push(e);
    }
    p.events[1].extend(last);
    check(p, m, s)?;
    for id in &m.requested {
        prop_assert!(
            m.ended.contains_key(&id.0),
            "request {:?} of the lost session never ended",
            id
        );
    }
    m.requested.clear();
    m.ended.retain(|id, _| *id < 0x8000);
    m.served.clear();
    m.serving.clear();
    m.asked.clear();
    m.answering.clear();
    p.server.reject_resume(now);
    p.drive_bounded(1000);
    check(p, m, s)?;
    Ok(())
}

fn end_served(
    m: &mut Model,
    id: RequestId,
    r: &Result<(), SendError>,
) -> Result<(), TestCaseError> {
    if r.is_ok() {
        prop_assert!(
            m.serving.remove(&id.0),
            "server ended invocation {:?} that it was not serving",
            id
        );
    }
    Ok(())
}

fn end_answered(
    m: &mut Model,
    id: RequestId,
    r: &Result<(), SendError>,
) -> Result<(), TestCaseError> {
    if r.is_ok() {
        prop_assert!(
            m.answering.remove(&id.0),
            "client ended request {:?} that it was not answering",
            id
        );
    }
    Ok(())
}

fn check(p: &mut Pair, m: &mut Model, s: &Setup) -> Result<(), TestCaseError> {
    // New events, in order.
    for side in [Side::Client, Side::Server] {
        let i = match side {
            Side::Client => 0,
            Side::Server => 1,
        };
        let evs: Vec<Event> = p.events(side)[m.seen[i]..].to_vec();
        m.seen[i] += evs.len();
        for ev in evs {
            match (&ev, side) {
                (Event::PeerError(e), Side::Client) if e.code == ErrorCode::RESUME_FAILED => {}
                (Event::Violation(_) | Event::PeerError(_), _) => {
                    return Err(TestCaseError::fail(format!(
                        "{side:?}: {ev:?} between honest peers"
                    )));
                }
                (Event::InvocationEnded { id, .. } | Event::RequestEnded { id, .. }, _) => {
                    let outcome = end_of(&ev).expect("an *Ended event");
                    let mine = match side {
                        Side::Client => m.invoked.contains(id),
                        Side::Server => m.requested.contains(id),
                    };
                    prop_assert!(
                        mine,
                        "{:?}: Ended for {:?}, which it never opened",
                        side,
                        id
                    );
                    prop_assert!(
                        m.ended.insert(id.0, outcome.clone()).is_none(),
                        "{:?}: {:?} ended twice",
                        side,
                        id
                    );
                    outcome_matches(p, side, *id, &outcome)?;
                }
                (Event::Invoked(i), Side::Server) => {
                    prop_assert!(m.serving.insert(i.id.0), "Invoked twice: {:?}", i.id);
                    if !m.served.contains(&i.id) {
                        m.served.push(i.id);
                    }
                }
                (Event::Requested(r), Side::Client) => {
                    prop_assert!(m.answering.insert(r.id.0), "Requested twice: {:?}", r.id);
                    if !m.asked.contains(&r.id) {
                        m.asked.push(r.id);
                    }
                }
                (Event::Aborted { id, .. }, Side::Server) => {
                    prop_assert!(m.serving.remove(&id.0), "Aborted {:?} not being served", id);
                }
                (Event::Aborted { id, .. }, Side::Client) => {
                    prop_assert!(
                        m.answering.remove(&id.0),
                        "Aborted {:?} not being answered",
                        id
                    );
                }
                (Event::Closed(_), Side::Server) => m.serving.clear(),
                (Event::Closed(_), Side::Client) => m.answering.clear(),
                _ => {}
            }
        }
    }
    // An opening frame (INVOKE, REQUEST) makes its id live again for the responder; it is
    // seen before the responder's replies, so process openings of both directions first.
    for (i, side) in [Side::Client, Side::Server].into_iter().enumerate() {
        for f in &p.wire(side)[m.wire_seen[i]..] {
            if matches!(f, Frame::Invoke(_) | Frame::Request(_)) {
                m.terminated[1 - i].remove(&f.request_id().0);
            }
        }
    }
    for (i, side) in [Side::Client, Side::Server].into_iter().enumerate() {
        let wire = p.wire(side);
        let start = m.wire_seen[i].min(wire.len());
        for (k, f) in wire.iter().enumerate().skip(start) {
            let id = f.request_id().0;
            // A verbatim re-send is a resume replay (SPEC §11.2), not a new frame.
            if id == 0 || (s.resume && wire[..k].contains(f)) {
                continue;
            }
            match f {
                Frame::Invoke(_) | Frame::Request(_) => {
                    m.terminated[i].remove(&id);
                }
                _ => prop_assert!(
                    !m.terminated[i].contains(&id),
                    "{:?} sent {:?} after its terminal frame for #{}",
                    side,
                    f.frame_type(),
                    id
                ),
            }
            if matches!(f, Frame::Complete(_) | Frame::Reply(_) | Frame::Error(_)) {
                m.terminated[i].insert(id);
            }
        }
        m.wire_seen[i] = wire.len();
    }
    for side in [Side::Client, Side::Server] {
        let q = p.conn_ref(side).queued_bytes();
        let max = match side {
            Side::Client => Config::default().max_queued_bytes,
            Side::Server => s.max_queued,
        };
        prop_assert!(q <= 2 * max + 8, "{:?} queued {} > 2×{} + 8", side, q, max);
    }
    Ok(())
}

/// How an exchange ended, from either `*Ended` event (invocations end on the client,
/// requests on the server).
#[derive(Clone, Debug)]
enum End {
    Complete(asp_proto::frame::Complete),
    Reply(asp_proto::frame::Reply),
    Error(asp_proto::frame::ErrorFrame),
    Lost,
}

fn end_of(ev: &Event) -> Option<End> {
    Some(match ev {
        Event::InvocationEnded { outcome, .. } => match outcome {
            InvocationOutcome::Complete(c) => End::Complete((**c).clone()),
            InvocationOutcome::Error(e) => End::Error(e.clone()),
            _ => End::Lost,
        },
        Event::RequestEnded { outcome, .. } => match outcome {
            RequestOutcome::Reply(r) => End::Reply(r.clone()),
            RequestOutcome::Error(e) => End::Error(e.clone()),
            _ => End::Lost,
        },
        _ => return None,
    })
}

/// The initiator's outcome is what the other side sent.
fn outcome_matches(
    p: &Pair,
    side: Side,
    id: RequestId,
    outcome: &End,
) -> Result<(), TestCaseError> {
    let theirs = p.wire(side.other());
    let ours = p.wire(side);
    match outcome {
        End::Complete(c) => {
            let sent = theirs
                .iter()
                .any(|f| matches!(f, Frame::Complete(x) if x == c));
            prop_assert!(sent, "{:?}: {:?} was never sent", side, c);
        }
        End::Reply(r) => {
            let sent = theirs
                .iter()
                .any(|f| matches!(f, Frame::Reply(x) if x == r));
            prop_assert!(sent, "{:?}: {:?} was never sent", side, r);
        }
        End::Error(e) => {
            let sent = theirs
                .iter()
                .chain(&ours)
                .any(|f| matches!(f, Frame::Error(x) if x.id == id && x.code == e.code));
            prop_assert!(
                sent,
                "{:?}: ERROR {:?} for {:?} was never sent",
                side,
                e.code,
                id
            );
        }
        End::Lost => {}
    }
    Ok(())
}

fn tools_agree(p: &Pair) -> Result<(), TestCaseError> {
    let c: Vec<(String, String)> = p
        .client
        .tools()
        .map(|t| (t.name.to_string(), t.description.to_string()))
        .collect();
    let s: Vec<(String, String)> = p
        .server
        .tools()
        .map(|t| (t.name.to_string(), t.description.to_string()))
        .collect();
    prop_assert_eq!(c, s, "the client's mirror differs from the registry");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_sessions_keep_the_invariants(
        s in setup(),
        cmds in prop::collection::vec(cmd(), 1..80),
    ) {
        run(s, cmds)?;
    }
}
