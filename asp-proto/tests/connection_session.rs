//! Connection scenarios: GOAWAY and draining (SPEC §6.5), frame errors that must not
//! disturb other exchanges (§3.7, §2.1), connection errors (§12.1) and session resume (§11).

mod pair;

use std::time::Duration;

use asp_proto::frame::{ErrorFrame, Metrics, Request, Status};
use asp_proto::{
    CloseReason, Config, Connection, ErrorCode, Event, Frame, InvocationOutcome, Limits, RequestId,
    SendError, ServerParams, State, StreamOptions, Text,
};
use bytes::Bytes;
use pair::*;

fn done(p: &mut Pair, id: RequestId) {
    p.server
        .complete(id, Status::Ok, None, Metrics::default())
        .unwrap();
}

// ───────────────────────── GOAWAY (SPEC §6.5) ─────────────────────────

#[test]
fn server_goaway_drains_then_closes() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    let now = p.now;
    p.server
        .goaway(now, Some("shutting down".into()), Duration::from_secs(5));
    assert_eq!(p.server.state(), State::Draining);
    // The side that sent GOAWAY opens nothing new either.
    assert_eq!(p.server.request("k", None, None), Err(SendError::Draining));
    p.drive();
    let ev = p.take_events(Side::Client);
    let [Event::GoAway(g)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(g.timeout_ms, 5000);
    assert_eq!(g.reason.as_ref().map(|r| r.as_str()), Some("shutting down"));
    assert_eq!(p.client.state(), State::Draining);
    assert_eq!(
        p.client.invoke("echo", None, Default::default()),
        Err(SendError::Draining)
    );
    // In-flight invocations continue normally.
    p.server
        .stream(ids[0], Bytes::from_static(b"a"), StreamOptions::TEXT)
        .unwrap();
    done(&mut p, ids[0]);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(1,0)", "Ended(1,Complete Ok)"]
    );
    assert_eq!(p.server.state(), State::Draining);
    done(&mut p, ids[1]);
    p.flush();
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(Drained)"]);
    p.drive();
    // The last COMPLETE still went out, then the transport closed.
    let k = kinds(&p.take_events(Side::Client));
    assert_eq!(k, ["Ended(2,Complete Ok)", "Closed(TransportClosed)"]);
    assert_eq!(
        frame_kinds(&p.wire(Side::Server)),
        ["GOAWAY#0", "STREAM#1", "COMPLETE#1", "COMPLETE#2"]
    );
}

#[test]
fn goaway_with_nothing_in_flight_closes_at_once() {
    let mut p = Pair::connected_default();
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(5));
    p.flush();
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(Drained)"]);
    p.drive();
    assert_eq!(
        kinds(p.events(Side::Client)),
        ["GoAway", "Closed(TransportClosed)"]
    );
}

#[test]
fn drain_timeout_is_going_away() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(2));
    p.drive();
    p.clear_events();
    p.run_for(Duration::from_millis(1999));
    assert!(p.events(Side::Server).is_empty());
    p.run_for(Duration::from_millis(1));
    let ev = p.take_events(Side::Server);
    assert!(
        matches!(
            &ev[..],
            [Event::Closed(CloseReason::ProtocolError {
                code: ErrorCode::GOING_AWAY,
                ..
            })]
        ),
        "{ev:?}"
    );
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::GOING_AWAY)]
    );
    p.drive();
    let ev = p.take_events(Side::Client);
    let k = kinds(&ev);
    assert_eq!(k.len(), 2, "{k:?}");
    assert_eq!(k[0], format!("Ended({},Lost)", ids[0].0));
    assert!(matches!(
        &ev[1],
        Event::Closed(CloseReason::PeerError {
            code: ErrorCode::GOING_AWAY,
            ..
        })
    ));
}

#[test]
fn invoke_crossing_goaway_is_draining() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    p.latency = Duration::from_millis(10);
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(5));
    p.flush();
    // The client has not seen the GOAWAY yet.
    let late = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    let ev = p.take_events(Side::Client);
    assert_eq!(kinds(&ev), ["GoAway", "Ended(2,Error DRAINING(0x28))"]);
    assert!(
        matches!(&ev[1], Event::InvocationEnded { outcome: InvocationOutcome::Error(e), .. } if e.retryable)
    );
    assert!(p.events(Side::Server).is_empty());
    assert_eq!(late, RequestId(2));
    done(&mut p, ids[0]);
    p.drive();
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(Drained)"]);
}

#[test]
fn duplicate_invoke_while_draining_keeps_both_sides_in_agreement() {
    // SPEC §7.2 checks DRAINING before DUPLICATE_ID; the ERROR(DRAINING) names an id in
    // flight at the client, which ends it there (§5.7), so the server must end it too.
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(5));
    p.drive();
    p.clear_events();
    p.inject_frame(Side::Server, &invoke_frame(ids[0].0, "echo"));
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Error DRAINING(0x28))"]
    );
    assert_eq!(p.client.in_flight(), 1);
    assert_eq!(p.server.in_flight(), 1, "server still runs invocation 1");
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Aborted(1,DRAINING(0x28))"]
    );
    done(&mut p, ids[1]);
    p.drive();
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(Drained)"]);
}

#[test]
fn client_goaway_refuses_requests_and_closes_when_done() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let now = p.now;
    p.client.goaway(now, None, Duration::from_secs(5));
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Server)), ["GoAway"]);
    assert_eq!(p.server.request("k", None, None), Err(SendError::Draining));
    // A REQUEST crossing the client's GOAWAY is refused with DRAINING.
    p.inject_frame(
        Side::Client,
        &Frame::Request(Request {
            id: RequestId(0x8000),
            kind: "k".into(),
            body: None,
            invocation: None,
        }),
    );
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0x8000), ErrorCode::DRAINING)]
    );
    done(&mut p, ids[0]);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Complete Ok)", "Closed(Drained)"]
    );
    assert!(p.server.is_closed());
}

#[test]
fn goaway_crossing_goaway() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    p.latency = Duration::from_millis(5);
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(5));
    p.client.goaway(now, None, Duration::from_secs(5));
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Client)), ["GoAway"]);
    assert_eq!(kinds(&p.take_events(Side::Server)), ["GoAway"]);
    done(&mut p, ids[0]);
    p.drive();
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(Drained)"]);
    let k = kinds(p.events(Side::Client));
    assert_eq!(k[..2], ["Ended(1,Complete Ok)", "Closed(Drained)"]);
}

// ───────────────────────── frame errors (SPEC §3.7) ─────────────────────────

/// Three invocations; `hit` is called to break invocation 2; 1 and 3 must complete.
fn only_one_invocation_ends(
    client: Config,
    hit: impl FnOnce(&mut Pair, RequestId),
    code: ErrorCode,
) {
    let (mut p, ids) = with_invocations(client, quiet_config(), 3);
    for id in &ids {
        p.server
            .stream(*id, Bytes::from_static(b"x"), StreamOptions::BINARY)
            .unwrap();
    }
    p.drive();
    p.clear_events();
    hit(&mut p, ids[1]);
    p.drive();
    let cev = p.take_events(Side::Client);
    assert_eq!(
        kinds(&cev),
        [
            format!("Violation(2,{code:?})"),
            format!("Ended(2,Error {code:?})")
        ]
    );
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        [format!("Aborted(2,{code:?})")]
    );
    assert_eq!(p.client.in_flight(), 2);
    assert_eq!(p.server.in_flight(), 2);
    for id in [ids[0], ids[2]] {
        p.server
            .stream(
                id,
                Bytes::from_static(b"y"),
                StreamOptions::BINARY.fin(true),
            )
            .unwrap();
        done(&mut p, id);
    }
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Chunk(1,1)",
            "Ended(1,Complete Ok)",
            "Chunk(3,1)",
            "Ended(3,Complete Ok)"
        ]
    );
}

#[test]
fn malformed_stream_ends_only_its_invocation() {
    // STREAM whose `data` is an integer: INVALID_FIELD.
    only_one_invocation_ends(
        quiet_config(),
        |p, id| {
            p.inject(
                Side::Client,
                raw_frame(1, 0x3, 0, id.0, &[0x82, 0x00, 0x05, 0x01, 0x01]),
            );
        },
        ErrorCode::INVALID_FIELD,
    );
    // Not a map at all: MALFORMED_PAYLOAD.
    only_one_invocation_ends(
        quiet_config(),
        |p, id| p.inject(Side::Client, raw_frame(1, 0x3, 0, id.0, &[0x91, 0x00])),
        ErrorCode::MALFORMED_PAYLOAD,
    );
    // `seq` missing: MISSING_FIELD.
    only_one_invocation_ends(
        quiet_config(),
        |p, id| {
            p.inject(
                Side::Client,
                raw_frame(1, 0x3, 0, id.0, &[0x81, 0x00, 0xa1, 0x61]),
            )
        },
        ErrorCode::MISSING_FIELD,
    );
    // A reserved flag bit on a STREAM for the id.
    only_one_invocation_ends(
        quiet_config(),
        |p, id| {
            let mut b = encode(&stream_frame(id.0, 1, b"z", false)).to_vec();
            b[1] = 0x80;
            p.inject(Side::Client, Bytes::from(b));
        },
        ErrorCode::RESERVED_FLAGS,
    );
}

fn small_frames() -> Config {
    let mut config = quiet_config();
    config.limits.max_frame_payload = 1024;
    config
}

#[test]
fn oversize_frame_ends_only_its_invocation() {
    // As one whole WebSocket message.
    only_one_invocation_ends(
        small_frames(),
        |p, id| p.inject(Side::Client, oversize_frame(0x3, id.0, 5000)),
        ErrorCode::FRAME_TOO_LARGE,
    );
    // On a byte stream, in small pieces, followed by a valid frame in the same read.
    only_one_invocation_ends(
        small_frames(),
        |p, id| {
            p.delivery = Delivery::Bytes { max_pieces: 1 };
            let big = oversize_frame(0x3, id.0, 5000);
            for piece in big.chunks(700) {
                p.inject(Side::Client, Bytes::copy_from_slice(piece));
            }
        },
        ErrorCode::FRAME_TOO_LARGE,
    );
}

#[test]
fn frame_with_a_bad_id_ends_nothing() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    let r = p.server.request("k", None, None).unwrap();
    p.drive();
    p.clear_events();
    p.clear_wire();
    // STREAM with a server-space id that names the request in flight: INVALID_ID, id 0.
    p.inject(
        Side::Client,
        encode_with_id(&stream_frame(1, 0, b"x", false), r.0),
    );
    // A reserved type carrying the id of an invocation in flight: UNKNOWN_FRAME_TYPE, id 0.
    p.inject(Side::Client, raw_frame(1, 0xf, 0, ids[0].0, &[]));
    p.inject(Side::Client, raw_frame(1, 0x0, 0, ids[1].0, &[]));
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(0,INVALID_ID(0x16))",
            "Violation(0,UNKNOWN_FRAME_TYPE(0x10))",
            "Violation(0,UNKNOWN_FRAME_TYPE(0x10))"
        ]
    );
    let w = p.wire(Side::Client);
    let types: Vec<Option<u8>> = w
        .iter()
        .map(|f| match f {
            Frame::Error(e) => e.frame_type,
            _ => None,
        })
        .collect();
    assert_eq!(types, [Some(3), Some(0xf), Some(0)]);
    assert_eq!(p.client.in_flight(), 3);
    p.drive();
    assert_eq!(p.server.in_flight(), 3);
    assert_eq!(
        kinds(p.events(Side::Server)),
        [
            "PeerError(0,INVALID_ID(0x16))",
            "PeerError(0,UNKNOWN_FRAME_TYPE(0x10))",
            "PeerError(0,UNKNOWN_FRAME_TYPE(0x10))"
        ]
    );
}

/// `frame` encoded, with its header id replaced.
fn encode_with_id(frame: &Frame, id: u16) -> Bytes {
    let mut b = encode(frame).to_vec();
    b[2..4].copy_from_slice(&id.to_be_bytes());
    Bytes::from(b)
}

#[test]
fn malformed_error_frame_still_ends_its_exchange_without_a_reply() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    // ERROR for invocation 1 whose `code` is a string: INVALID_FIELD, reported locally.
    p.inject(
        Side::Client,
        raw_frame(1, 0x7, 0, ids[0].0, &[0x81, 0x00, 0xa1, 0x78]),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Error INVALID_FIELD(0x15))"]
    );
    // SPEC §3.7: an ERROR is never answered with an ERROR.
    assert!(p.wire(Side::Client).is_empty());
    // A malformed ERROR for an id not in flight is dropped.
    p.inject(
        Side::Client,
        raw_frame(1, 0x7, 0, 99, &[0x81, 0x00, 0xa1, 0x78]),
    );
    assert!(p.events(Side::Client).is_empty());
    assert!(p.wire(Side::Client).is_empty());
    assert_eq!(p.client.in_flight(), 1);
}

#[test]
fn error_frames_are_never_answered() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 1);
    let err = |id: u16, code: u16| {
        Frame::Error(ErrorFrame {
            id: RequestId(id),
            code: ErrorCode(code),
            message: None,
            retryable: false,
            frame_type: None,
        })
    };
    for f in [err(77, 0x22), err(0, 0x29), err(0, 0x13), err(0x8000, 0x40)] {
        p.inject_frame(Side::Client, &f);
        p.inject_frame(Side::Server, &f);
    }
    assert!(p.wire(Side::Client).is_empty());
    assert!(p.wire(Side::Server).is_empty());
    assert_eq!(p.client.in_flight(), 1);
    assert!(p
        .events(Side::Client)
        .iter()
        .all(|e| matches!(e, Event::PeerError(_))));
}

#[test]
fn connection_scope_error_closes_whatever_its_id() {
    // SPEC §12.1: the scope is decided by the code's number.
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    p.inject_frame(
        Side::Client,
        &Frame::Error(ErrorFrame {
            id: ids[0],
            code: ErrorCode::PROTOCOL_VIOLATION,
            message: None,
            retryable: false,
            frame_type: None,
        }),
    );
    let k = kinds(p.events(Side::Client));
    assert_eq!(k[..2], ["Ended(1,Lost)", "Ended(2,Lost)"]);
    assert!(k[2].starts_with("Closed(PeerError"), "{k:?}");
}

#[test]
fn framing_errors_are_fatal() {
    // A text message.
    let mut p = Pair::connected_default();
    let now = p.now;
    p.client.handle_text_message(now);
    p.drain(Side::Client);
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::FRAMING_ERROR)]
    );
    assert!(p.client.is_closed());
    // A message that ends inside a frame.
    let mut p = Pair::connected_default();
    let b = encode(&stream_frame(1, 0, b"hello", false));
    p.inject(Side::Client, b.slice(..b.len() - 1));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::FRAMING_ERROR)]
    );
    assert!(p.client.is_closed());
    // An empty message.
    let mut p = Pair::connected_default();
    p.inject(Side::Server, Bytes::new());
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::FRAMING_ERROR)]
    );
    assert_eq!(p.events(Side::Server).len(), 1);
    // A wrong header version, mid-session.
    let mut p = Pair::connected_default();
    p.inject(Side::Server, raw_frame(2, 0x8, 0, 0, &[]));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::UNSUPPORTED_VERSION)]
    );
    assert!(p.server.is_closed());
}

#[test]
fn wrong_direction_is_protocol_violation() {
    let mut p = Pair::connected_default();
    p.inject_frame(Side::Client, &invoke_frame(1, "echo"));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::PROTOCOL_VIOLATION)]
    );
    let mut p = Pair::connected_default();
    p.inject_frame(Side::Server, &stream_frame(1, 0, b"x", false));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::PROTOCOL_VIOLATION)]
    );
}

#[test]
fn frames_after_a_fatal_error_in_the_same_message_are_not_processed() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 1);
    let mut msg = encode(&Frame::PING).to_vec();
    msg.extend_from_slice(&raw_frame(3, 0x8, 0, 0, &[])); // bad version
    msg.extend_from_slice(&encode(&Frame::PING));
    p.inject(Side::Server, Bytes::from(msg));
    assert_eq!(
        frame_kinds(&p.wire(Side::Server)),
        ["PONG#0", "ERROR#0(UNSUPPORTED_VERSION(0x02))"]
    );
}

// ───────────────────────── resume (SPEC §11) ─────────────────────────

const TOKEN: [u8; 16] = [7; 16];

fn resume_cfg() -> Config {
    let mut config = quiet_config();
    config.resume = true;
    config
}

fn token_params() -> ServerParams {
    ServerParams::new("conn-r").resume_token(Bytes::from_static(&TOKEN))
}

fn resumable_pair(client: Config, server: Config) -> Pair {
    let mut p = Pair::new(client, server, token_params());
    p.drive();
    assert!(matches!(p.events(Side::Client).last(), Some(Event::Connected(s)) if s.resumable));
    assert!(matches!(p.events(Side::Server).last(), Some(Event::Connected(s)) if s.resumable));
    p.clear_events();
    p.clear_wire();
    p
}

/// New transport: the client sends RESUME to a fresh server connection, which reports
/// `ResumeRequested`. Returns (old server, token, received).
fn reconnect_and_request(p: &mut Pair, server_cfg: Config) -> (Connection, Bytes, u64) {
    let now = p.now;
    let old = p.reconnect(Connection::server(server_cfg, token_params(), now));
    p.client.resume(now).unwrap();
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::ResumeRequested { token, received }] = &ev[..] else {
        panic!("new server: {ev:?}")
    };
    (old, token.clone(), *received)
}

/// `echo` on the server and one invocation of it delivered both ways, the events cleared:
/// its id.
fn echo_running(p: &mut Pair) -> RequestId {
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    p.clear_events();
    id
}

/// On a new transport the client asks to resume, the old server connection accepts and
/// takes the new transport over.
fn resume_on_the_old_server(p: &mut Pair, server_cfg: Config) {
    let (mut old, _, received) = reconnect_and_request(p, server_cfg);
    let now = p.now;
    old.accept_resume(now, received).unwrap();
    p.swap_server(old);
    p.drive();
}

#[test]
fn resume_mid_stream_loses_and_duplicates_nothing() {
    for delivery in [Delivery::Message, Delivery::Bytes { max_pieces: 4 }] {
        let mut p = resumable_pair(
            {
                let mut config = resume_cfg();
                config.limits = {
                    let mut limits = Limits::default();
                    limits.initial_window = 400;
                    limits
                };
                config
            },
            resume_cfg(),
        );
        p.delivery = delivery;
        let id = echo_running(&mut p);
        p.latency = Duration::from_millis(10);
        let mut next = 0u32;
        fn stream(p: &mut Pair, id: RequestId, next: &mut u32, n: usize) -> usize {
            let mut sent = 0;
            for _ in 0..n {
                let data = Bytes::from(format!("chunk-{:04}-padding-padding", *next));
                match p.server.stream(id, data, StreamOptions::TEXT) {
                    Ok(()) => {
                        *next += 1;
                        sent += 1;
                    }
                    Err(SendError::Full) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            sent
        }
        // Some chunks arrive, some are in flight when the link drops.
        stream(&mut p, id, &mut next, 5);
        p.flush();
        p.run_for(Duration::from_millis(10));
        stream(&mut p, id, &mut next, 5);
        p.flush();
        p.run_for(Duration::from_millis(5));
        assert!(p.in_flight(Side::Server) > 0);
        p.drop_link();
        assert_eq!(kinds(p.events(Side::Client)).last().unwrap(), "Detached");
        assert_eq!(kinds(&p.take_events(Side::Server)), ["Detached"]);
        assert_eq!(p.client.state(), State::Detached);
        assert_eq!(p.server.state(), State::Detached);
        // The server keeps producing while detached (queued for the new transport).
        stream(&mut p, id, &mut next, 3);
        // The client may invoke while detached too.
        let id2 = p.client.invoke("echo", None, Default::default()).unwrap();

        let (mut old, token, received) = reconnect_and_request(&mut p, resume_cfg());
        assert_eq!(&token[..], &TOKEN);
        let now = p.now;
        old.accept_resume(now, received).unwrap();
        let _fresh = p.swap_server(old);
        p.drive();
        assert_eq!(p.client.state(), State::Open);
        assert_eq!(p.server.state(), State::Open);
        // Finish the stream.
        for _ in 0..100 {
            if stream(&mut p, id, &mut next, 4) == 0 {
                p.drive();
            }
            if next >= 40 {
                break;
            }
            p.drive();
        }
        p.server
            .stream(id, Bytes::new(), StreamOptions::BINARY.fin(true))
            .unwrap();
        done(&mut p, id);
        p.drive();
        let cev: Vec<Event> = p.events(Side::Client).to_vec();
        let sev = kinds(p.events(Side::Server));
        assert!(sev.contains(&"Resumed".to_string()), "{sev:?}");
        assert!(sev.contains(&format!("Invoked({})", id2.0)), "{sev:?}");
        assert!(kinds(&cev).contains(&"Resumed".to_string()));
        let mut expect = 0u32;
        let mut text = Vec::new();
        for e in &cev {
            if let Event::Chunk(s) = e {
                assert_eq!(s.id, id);
                assert_eq!(s.seq, expect, "{delivery:?}: chunk lost or duplicated");
                expect += 1;
                text.extend_from_slice(&s.data);
            }
        }
        assert_eq!(expect, next + 1);
        let want: Vec<u8> = (0..next)
            .flat_map(|i| format!("chunk-{i:04}-padding-padding").into_bytes())
            .collect();
        assert_eq!(text, want);
        assert_eq!(
            ended(&cev),
            [(
                id,
                InvocationOutcome::Complete(Box::new(asp_proto::frame::Complete {
                    id,
                    status: Status::Ok,
                    result: None,
                    metrics: Metrics::default()
                }))
            )]
        );
        assert!(
            cev.iter().all(|e| error_of(e).is_none()),
            "{:?}",
            kinds(&cev)
        );
    }
}

#[test]
fn resume_replays_the_clients_lost_frames() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    p.latency = Duration::from_millis(10);
    // Two INVOKEs and an INTERRUPT are in flight when the link drops.
    let a = p.client.invoke("echo", None, Default::default()).unwrap();
    let b = p.client.invoke("echo", None, Default::default()).unwrap();
    p.client.interrupt(a, None).unwrap();
    p.flush();
    p.drop_link();
    p.clear_events();
    resume_on_the_old_server(&mut p, resume_cfg());
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Resumed", "Invoked(1)", "Invoked(2)", "Interrupted(1)"]
    );
    p.server
        .complete(a, Status::Cancelled, None, Metrics::default())
        .unwrap();
    done(&mut p, b);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Resumed",
            "Ended(1,Complete Cancelled)",
            "Ended(2,Complete Ok)"
        ]
    );
}

#[test]
fn resume_beyond_the_replay_buffer_fails_and_the_client_starts_over() {
    let mut p = resumable_pair(resume_cfg(), {
        let mut config = resume_cfg();
        config.replay_buffer = 200;
        config
    });
    let _lost = echo_running(&mut p);
    p.latency = Duration::from_millis(10);
    // STREAM data would wait for room in the replay buffer (SPEC §11.1); other frames go
    // out and push the oldest ones out of it.
    for i in 0..10u8 {
        p.server
            .add_tool(asp_proto::frame::ToolDef {
                description: Text::from(format!("tool {i} {}", "d".repeat(50)).as_str()),
                ..tool(&format!("t{i}"))
            })
            .unwrap();
    }
    p.flush();
    p.drop_link(); // ~700 bytes lost, only 200 kept
    p.clear_events();
    let (mut old, _, received) = reconnect_and_request(&mut p, resume_cfg());
    let now = p.now;
    assert_eq!(old.accept_resume(now, received), Err(SendError::Closed));
    assert!(old.is_closed());
    // The application rejects on the new connection.
    p.server.reject_resume(now);
    p.drive();
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::RESUME_FAILED)]
    );
    let k = kinds(&p.take_events(Side::Client));
    assert_eq!(
        k,
        [
            "Ended(1,Lost)",
            "PeerError(0,RESUME_FAILED(0x08))",
            "Connected"
        ]
    );
    // The new session works: the new server has no tools, so INVOKE is UNKNOWN_TOOL.
    assert_eq!(p.client.state(), State::Open);
    assert_eq!(p.server.state(), State::Open);
    assert_eq!(p.client.tools().count(), 0);
    p.server.add_tool(tool("echo")).unwrap();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    done(&mut p, id);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "ToolsChanged(Added(ToolDef { op: Add, name: \"echo\", description: \"the echo tool\", input_schema: None, annotations: None }))",
            &format!("Ended({},Complete Ok)", id.0)
        ]
    );
}

#[test]
fn reject_resume_of_an_unknown_token() {
    let (mut p, ids) = {
        let mut p = resumable_pair(resume_cfg(), resume_cfg());
        let id = echo_running(&mut p);
        (p, vec![id])
    };
    p.drop_link();
    p.clear_events();
    let (_old, _, _) = reconnect_and_request(&mut p, resume_cfg());
    let now = p.now;
    p.server.reject_resume(now);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            format!("Ended({},Lost)", ids[0].0),
            "PeerError(0,RESUME_FAILED(0x08))".to_string(),
            "Connected".to_string()
        ]
    );
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Connected"]);
}

#[test]
fn server_without_resume_answers_resume_failed() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    p.drop_link();
    p.clear_events();
    let now = p.now;
    let _old = p.reconnect(Connection::server(quiet_config(), default_params(), now));
    p.client.resume(now).unwrap();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["PeerError(0,RESUME_FAILED(0x08))", "Connected"]
    );
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Connected"]);
}

#[test]
fn detached_session_expires_after_the_resume_window() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    echo_running(&mut p);
    p.drop_link();
    p.clear_events();
    p.run_for(Duration::from_millis(29_999));
    assert!(p.events(Side::Client).is_empty());
    p.run_for(Duration::from_millis(1));
    assert_eq!(
        kinds(p.events(Side::Client)),
        ["Ended(1,Lost)", "Closed(TransportClosed)"]
    );
    assert_eq!(kinds(p.events(Side::Server)), ["Closed(TransportClosed)"]);
}

#[test]
fn link_drop_during_resume_keeps_the_session() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    let id = echo_running(&mut p);
    p.drop_link();
    p.clear_events();
    // Second transport: RESUME sent, then it drops before the server answers.
    let now = p.now;
    let old = p.reconnect(Connection::server(resume_cfg(), token_params(), now));
    p.client.resume(now).unwrap();
    p.flush();
    p.drop_link();
    assert!(
        !p.client.is_closed(),
        "client session lost: {:?}",
        p.events(Side::Client)
    );
    p.clear_events();
    // Third transport: the resume succeeds.
    let now = p.now;
    p.reconnect(Connection::server(resume_cfg(), token_params(), now));
    p.client.resume(now).unwrap();
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::ResumeRequested { received, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    let mut old = old;
    old.accept_resume(p.now, *received).unwrap();
    p.swap_server(old);
    done(&mut p, id);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Resumed", "Ended(1,Complete Ok)"]
    );
}

#[test]
fn client_that_cannot_replay_fails_the_resume() {
    let mut p = resumable_pair(
        {
            let mut config = resume_cfg();
            config.replay_buffer = 20;
            config
        },
        resume_cfg(),
    );
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    p.latency = Duration::from_millis(10);
    for _ in 0..4 {
        p.client.invoke("echo", None, Default::default()).unwrap();
    }
    p.flush();
    p.drop_link();
    p.clear_events();
    resume_on_the_old_server(&mut p, resume_cfg());
    let k = kinds(p.events(Side::Client));
    assert_eq!(k.len(), 5, "{k:?}");
    assert!(
        k[4].starts_with("Closed(ProtocolError { code: RESUME_FAILED"),
        "{k:?}"
    );
    assert!(
        errors_on_wire(&p.wire(Side::Client)).contains(&(RequestId(0), ErrorCode::RESUME_FAILED))
    );
    assert!(p.server.is_closed());
}

#[test]
fn resume_requires_a_detached_session() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    let now = p.now;
    assert_eq!(p.client.resume(now), Err(SendError::NotOpen));
    assert_eq!(p.server.accept_resume(now, 0), Err(SendError::NotOpen));
    assert_eq!(p.server.resume(now), Err(SendError::WrongRole));
    // Non-resumable sessions close when the transport drops.
    let mut q = Pair::connected_default();
    q.drop_link();
    assert_eq!(kinds(q.events(Side::Client)), ["Closed(TransportClosed)"]);
    assert_eq!(q.client.resume(now), Err(SendError::NotOpen));
}

#[test]
fn second_resume_after_a_rejected_one_counts_from_the_new_session() {
    // The connection that rejected a resume sent ERROR(RESUME_FAILED) before the new
    // session's HELLO; frame counts (SPEC §11.1) must start at the session on both sides,
    // or a later resume replays the wrong frames (here: a duplicate TOOL_DEF add).
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    p.drop_link();
    p.clear_events();
    let now = p.now;
    let mut s1 = Connection::server(resume_cfg(), token_params(), now);
    s1.add_tool(tool("a")).unwrap();
    s1.add_tool(tool("b")).unwrap();
    let _old = p.reconnect(s1);
    p.client.resume(now).unwrap();
    p.drive();
    p.server.reject_resume(now);
    p.drive();
    assert_eq!(
        kinds(p.events(Side::Client))[0],
        "PeerError(0,RESUME_FAILED(0x08))"
    );
    assert_eq!(kinds(p.events(Side::Client)).last().unwrap(), "Connected");
    p.clear_events();
    // The new session drops and resumes.
    p.latency = Duration::from_millis(10);
    p.server.add_tool(tool("c")).unwrap();
    p.flush();
    p.drop_link(); // the TOOL_DEF(c) is lost in flight
    p.clear_events();
    let (mut s1, _, received) = reconnect_and_request(&mut p, resume_cfg());
    let now = p.now;
    s1.accept_resume(now, received).unwrap();
    p.swap_server(s1);
    p.drive();
    let k = kinds(p.events(Side::Client));
    assert_eq!(k.len(), 2, "{k:?}");
    assert_eq!(k[0], "Resumed");
    assert!(k[1].starts_with("ToolsChanged(Added(ToolDef { op: Add, name: \"c\""));
    let names: Vec<String> = p.client.tools().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn resume_failed_outside_a_resume_is_a_connection_error() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 1);
    p.inject_frame(
        Side::Client,
        &Frame::Error(ErrorFrame {
            id: RequestId(0),
            code: ErrorCode::RESUME_FAILED,
            message: None,
            retryable: false,
            frame_type: None,
        }),
    );
    // No new HELLO on an open connection: the client closes.
    assert!(p.client.is_closed());
    assert!(p.wire(Side::Client).is_empty());
    assert_eq!(kinds(p.events(Side::Client))[0], "Ended(1,Lost)");
}

/// SPEC §11.1 with the §13 defaults (the issue-25 case): one window of 16 KiB chunks is more
/// than the 256 KiB replay buffer holds. The sender waits for room instead of dropping
/// frames a cut could lose, the receiver's PING `received` acknowledgements make that room,
/// and a cut at any moment is then resumable: every chunk arrives once, in order.
#[test]
fn default_replay_buffer_pauses_the_stream_until_acknowledged() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    let id = echo_running(&mut p);
    p.clear_wire();
    p.latency = Duration::from_millis(10);
    let chunk = |i: u32| Bytes::from(format!("{i:08}{}", "x".repeat((16 << 10) - 8)));
    let mut next = 0u32;
    // Nothing delivered yet: the server stops before its window (16 chunks) is used.
    while p
        .server
        .stream(id, chunk(next), StreamOptions::BINARY)
        .is_ok()
    {
        next += 1;
    }
    assert!(
        (14..16).contains(&next),
        "paused by the replay buffer at {next}"
    );
    assert!(p.server.replay_bytes() + p.server.queued_bytes() <= 256 << 10);
    // Deliver: the client acknowledges every quarter buffer, the server may go on.
    p.drive();
    let acks = p
        .wire(Side::Client)
        .iter()
        .filter(|f| matches!(f, Frame::Ping(h) if h.received.is_some()))
        .count();
    assert!(acks >= 3, "{acks} acknowledgements");
    assert!(
        p.server.replay_bytes() < 64 << 10,
        "acknowledged frames left"
    );
    assert!(p
        .events(Side::Server)
        .iter()
        .any(|e| matches!(e, Event::Writable { .. })));
    // Stream up to 40 chunks, cutting the link after each burst the first time it has
    // some in flight.
    let mut cut = false;
    let mut seqs = Vec::new();
    fn chunk_numbers(events: &[Event], seqs: &mut Vec<u32>) {
        for e in events {
            if let Event::Chunk(s) = e {
                if !s.data.is_empty() {
                    seqs.push(std::str::from_utf8(&s.data[..8]).unwrap().parse().unwrap());
                }
            }
        }
    }
    while next < 40 {
        while next < 40
            && p.server
                .stream(id, chunk(next), StreamOptions::BINARY)
                .is_ok()
        {
            next += 1;
        }
        p.flush();
        if !cut && p.in_flight(Side::Server) > 0 {
            cut = true;
            p.drop_link();
            chunk_numbers(&p.take_events(Side::Client), &mut seqs);
            p.clear_events();
            let (mut old, _, received) = reconnect_and_request(&mut p, resume_cfg());
            let now = p.now;
            old.accept_resume(now, received)
                .expect("everything lost is still held");
            p.swap_server(old);
        }
        p.drive();
    }
    assert!(cut);
    p.server
        .stream(id, Bytes::new(), StreamOptions::BINARY.fin(true))
        .unwrap();
    done(&mut p, id);
    p.drive();
    chunk_numbers(p.events(Side::Client), &mut seqs);
    assert_eq!(
        seqs,
        (0..40).collect::<Vec<_>>(),
        "every chunk once, in order"
    );
    let ends = ended(p.events(Side::Client));
    assert_eq!(ends.len(), 1, "one terminal frame");
}

/// SPEC §6.7, §11.3: in a resumable session the heartbeat timeout detaches (no ERROR,
/// which would fail the session at the peer); a RESUME then continues it.
#[test]
fn heartbeat_timeout_detaches_a_resumable_session() {
    let mut hb = resume_cfg();
    hb.heartbeat = Some(Duration::from_millis(100));
    let mut p = resumable_pair(hb.clone(), hb.clone());
    let id = echo_running(&mut p);
    p.clear_wire();
    // A silent link: nothing is delivered either way, nobody sees the transport end.
    p.links[0].hold = true;
    p.links[1].hold = true;
    p.run_for(Duration::from_millis(301));
    assert_eq!(p.client.state(), State::Detached);
    assert_eq!(p.server.state(), State::Detached);
    for side in [Side::Client, Side::Server] {
        assert!(
            !p.wire(side).iter().any(|f| matches!(f, Frame::Error(_))),
            "no ERROR on a detach"
        );
    }
    assert!(kinds(p.events(Side::Client)).contains(&"Detached".to_string()));
    p.clear_events();
    resume_on_the_old_server(&mut p, hb);
    done(&mut p, id);
    p.drive();
    assert_eq!(ended(p.events(Side::Client)).len(), 1);
    assert_eq!(p.client.state(), State::Open);
}

/// SPEC §11.3: deadlines run on while detached; the ERROR waits for the resume.
#[test]
fn deadlines_run_while_detached() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    let id = p
        .client
        .invoke(
            "echo",
            None,
            asp_proto::InvokeOptions::default().deadline_ms(50),
        )
        .unwrap();
    p.drive();
    p.clear_events();
    p.drop_link();
    p.clear_events();
    let t = p.now + Duration::from_millis(60);
    p.server.handle_timeout(t);
    assert!(
        p.server
            .poll_event()
            .is_some_and(|e| matches!(e, Event::Aborted { id: i, .. } if i == id)),
        "the deadline fired while detached"
    );
    assert_eq!(p.server.state(), State::Detached);
    p.advance(Duration::from_millis(60));
    resume_on_the_old_server(&mut p, resume_cfg());
    let ends = ended(p.events(Side::Client));
    assert!(
        matches!(&ends[..], [(i, InvocationOutcome::Error(e))] if *i == id && e.code == ErrorCode::DEADLINE_EXCEEDED),
        "{ends:?}"
    );
}

/// SPEC §11.3: a deliberate close (WebSocket Close 1000) ends a resumable session at once.
#[test]
fn peer_close_ends_a_resumable_session() {
    let mut p = resumable_pair(resume_cfg(), resume_cfg());
    let now = p.now;
    p.server.handle_peer_close(now);
    assert_eq!(p.server.state(), State::Closed);
    p.client.handle_transport_closed(now);
    assert_eq!(
        p.client.state(),
        State::Detached,
        "an unexplained end detaches"
    );
}
