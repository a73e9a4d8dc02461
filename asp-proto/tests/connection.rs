//! Connection scenarios: handshake (SPEC §6.2–§6.4), invocation lifecycle (§7.1–§7.2, §7.6),
//! interrupts (§7.3), deadlines (§7.4), time handling and memory. Flow control, requests,
//! tools, heartbeat, rate limiting, GOAWAY, frame errors and resume are in
//! `connection_flow.rs` and `connection_session.rs`.

mod pair;

use std::time::Duration;

use asp_proto::frame::{Complete, Hello, HelloLimits, Metrics, Status, Versions};
use asp_proto::{
    CloseReason, Config, Connection, ErrorCode, Event, Frame, Instant, InvocationOutcome,
    InvokeOptions, RawValue, RequestId, SendError, State, StreamOptions,
};
use bytes::Bytes;
use pair::*;

// ───────────────────────── handshake ─────────────────────────

#[test]
fn handshake_negotiates_the_session() {
    let mut client_cfg = Config::default();
    client_cfg.heartbeat = Some(Duration::from_secs(20));
    client_cfg.limits.max_chunk = 1000;
    client_cfg.limits.initial_window = 5000;
    let mut server_cfg = Config::default();
    server_cfg.heartbeat = Some(Duration::from_secs(45));
    server_cfg.limits.max_inflight = 7;
    server_cfg.limits.max_frame_payload = 4096;
    let mut p = Pair::new(client_cfg, server_cfg, default_params());
    assert_eq!(p.client.state(), State::Handshaking);
    assert_eq!(p.server.state(), State::Handshaking);
    p.drive();

    let Some(Event::Connected(cs)) = p.events(Side::Client).first().cloned() else {
        panic!("client: {:?}", p.events(Side::Client));
    };
    let Some(Event::Connected(ss)) = p.events(Side::Server).first().cloned() else {
        panic!("server: {:?}", p.events(Side::Server));
    };
    assert_eq!(p.events(Side::Client).len(), 1);
    assert_eq!(p.events(Side::Server).len(), 1);

    assert_eq!(cs.version, 1);
    assert_eq!(ss.version, 1);
    assert_eq!(cs.connection_id, "conn-1");
    assert_eq!(ss.connection_id, "conn-1");
    // SPEC §6.4: the heartbeat is the smaller interval, on both sides.
    assert_eq!(cs.heartbeat_ms, 20_000);
    assert_eq!(ss.heartbeat_ms, 20_000);
    // Each side sees what the other accepts.
    assert_eq!(cs.peer_limits.max_inflight, 7);
    assert_eq!(cs.peer_limits.max_frame_payload, 4096);
    assert_eq!(ss.peer_limits.max_chunk, 1000);
    assert_eq!(ss.peer_limits.initial_window, 5000);
    assert!(!cs.resumable && !ss.resumable);
    assert!(ss.peer_capabilities.iter().any(|c| c == "requests"));
    assert_eq!(p.client.state(), State::Open);
    assert_eq!(p.server.state(), State::Open);
    assert_eq!(p.client.session(), Some(&*cs));

    // The wire: exactly one HELLO each way; the server's names the version and the id.
    let c = p.wire(Side::Client);
    let s = p.wire(Side::Server);
    assert_eq!(frame_kinds(&c), ["HELLO#0"]);
    assert_eq!(frame_kinds(&s), ["HELLO#0"]);
    let Frame::Hello(sh) = &s[0] else {
        unreachable!()
    };
    assert_eq!(sh.versions, Versions::single(1));
    assert_eq!(
        sh.connection_id.as_ref().map(|t| t.as_str()),
        Some("conn-1")
    );
    assert_eq!(sh.limits.max_inflight, Some(7));
    // SPEC §5.1: the server announces what is in force: the session's interval.
    assert_eq!(sh.heartbeat_ms, Some(20_000));
    assert_eq!(sh.tools, 0);
    let Frame::Hello(ch) = &c[0] else {
        unreachable!()
    };
    assert!(ch.versions.contains(1));
    assert_eq!(ch.heartbeat_ms, Some(20_000));
    assert_eq!(ch.connection_id, None);
}

#[test]
fn server_hello_announces_what_is_in_force() {
    // SPEC §5.1: the server's HELLO carries the session heartbeat and the limits that bind
    // the client even when they are the §13 defaults, so a client needs no copy of §13.
    let p = Pair::connected(Config::default(), Config::default());
    let s = p.wire(Side::Server);
    let Some(Frame::Hello(sh)) = s.first() else {
        panic!("no server HELLO: {s:?}")
    };
    assert_eq!(sh.heartbeat_ms, Some(30_000));
    assert_eq!(sh.limits.max_frame_payload, Some(1 << 20));
    assert_eq!(sh.limits.max_inflight, Some(128));
    assert_eq!(p.client.session().map(|x| x.heartbeat_ms), Some(30_000));
}

#[test]
fn heartbeat_zero_on_one_side_uses_the_other() {
    // SPEC §6.4: the smaller of the two *non-zero* values.
    let mut p = Pair::connected(
        {
            let mut config = Config::default();
            config.heartbeat = None;
            config
        },
        {
            let mut config = Config::default();
            config.heartbeat = Some(Duration::from_secs(5));
            config
        },
    );
    assert_eq!(p.client.session().map(|s| s.heartbeat_ms), Some(5_000));
    assert_eq!(p.server.session().map(|s| s.heartbeat_ms), Some(5_000));
    p.clear_events();
}

#[test]
fn invoke_before_hello_is_pipelined() {
    // SPEC §6.2 step 1: a client may send INVOKE right after its HELLO.
    let mut p = Pair::default_pair();
    assert_eq!(
        p.client.invoke("echo", None, InvokeOptions::default()),
        Ok(RequestId(1))
    );
    p.flush();
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["HELLO#0", "INVOKE#1"]);
    // Server commands before the handshake.
    assert_eq!(
        p.server.request("confirm", None, None),
        Err(SendError::NotOpen)
    );
    assert_eq!(
        p.server.invoke("x", None, InvokeOptions::default()),
        Err(SendError::WrongRole)
    );
}

#[test]
fn first_frame_not_hello_is_protocol_violation() {
    let mut p = Pair::default_pair();
    // Discard the client's real HELLO; the server sees an INVOKE first.
    p.links[0].in_flight.clear();
    p.inject_frame(Side::Server, &invoke_frame(1, "echo"));
    let ev = p.events(Side::Server);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(matches!(
        &ev[0],
        Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::PROTOCOL_VIOLATION,
            ..
        })
    ));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::PROTOCOL_VIOLATION)]
    );
    assert!(p.server.is_closed());
    // A closed server ignores everything after.
    p.inject_frame(Side::Server, &Frame::PING);
    assert_eq!(p.events(Side::Server).len(), 1);
}

#[test]
fn client_versions_without_1_is_unsupported_version() {
    let mut p = Pair::default_pair();
    p.links[0].in_flight.clear();
    let hello = Frame::Hello(Hello {
        versions: Versions::single(2),
        ..Hello::default()
    });
    p.inject_frame(Side::Server, &hello);
    assert!(matches!(
        p.events(Side::Server),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::UNSUPPORTED_VERSION,
            ..
        })]
    ));
    let wire = p.wire(Side::Server);
    assert_eq!(
        errors_on_wire(&wire),
        [(RequestId(0), ErrorCode::UNSUPPORTED_VERSION)]
    );
    // SPEC §6.3: the message lists the versions the server supports.
    let Frame::Error(e) = &wire[0] else {
        unreachable!()
    };
    assert!(e.message.as_ref().is_some_and(|m| m.as_str().contains('1')));
    // The real client receives the ERROR and closes.
    p.drive();
    assert!(matches!(
        p.events(Side::Client),
        [Event::Closed(CloseReason::PeerError {
            code: ErrorCode::UNSUPPORTED_VERSION,
            ..
        })]
    ));
}

#[test]
fn server_choosing_another_version_is_unsupported_version() {
    let mut p = Pair::default_pair();
    p.links[0].in_flight.clear();
    let hello = Frame::Hello(Hello {
        versions: Versions::single(2),
        connection_id: Some("x".into()),
        ..Hello::default()
    });
    p.inject_frame(Side::Client, &hello);
    assert!(matches!(
        p.events(Side::Client),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::UNSUPPORTED_VERSION,
            ..
        })]
    ));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::UNSUPPORTED_VERSION)]
    );
}

#[test]
fn server_hello_without_connection_id_is_missing_field() {
    // SPEC §6.2 step 4: MISSING_FIELD, which during the handshake is a connection error.
    let mut p = Pair::default_pair();
    p.links[0].in_flight.clear();
    let hello = Frame::Hello(Hello {
        versions: Versions::single(1),
        ..Hello::default()
    });
    p.inject_frame(Side::Client, &hello);
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::MISSING_FIELD)]
    );
    assert!(p.client.is_closed());
}

#[test]
fn frame_error_during_handshake_is_fatal() {
    // SPEC §3.7: no session to continue.
    let mut p = Pair::default_pair();
    p.links[0].in_flight.clear();
    p.inject(Side::Server, raw_frame(1, 0x1, 0x01, 0, &[])); // HELLO with a flag bit
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(0), ErrorCode::RESERVED_FLAGS)]
    );
    assert!(p.server.is_closed());
}

#[test]
fn second_hello_is_protocol_violation() {
    let mut p = Pair::connected_default();
    let hello = p.wire(Side::Client)[0].clone();
    p.inject_frame(Side::Server, &hello);
    assert!(matches!(
        p.events(Side::Server),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::PROTOCOL_VIOLATION,
            ..
        })]
    ));
}

#[test]
fn handshake_timeout_on_both_sides() {
    // Server: no HELLO in time → ERROR(HANDSHAKE_TIMEOUT) and close.
    let mut p = Pair::default_pair();
    p.links[0].hold = true; // the client's HELLO never arrives
    p.links[1].hold = true;
    let t0 = p.now;
    p.run_for(Duration::from_millis(9_999));
    assert!(p.events(Side::Server).is_empty());
    assert!(p.events(Side::Client).is_empty());
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.now, t0 + Duration::from_secs(10));
    assert!(matches!(
        p.events(Side::Server),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::HANDSHAKE_TIMEOUT,
            ..
        })]
    ));
    assert!(errors_on_wire(&p.wire(Side::Server))
        .contains(&(RequestId(0), ErrorCode::HANDSHAKE_TIMEOUT)));
    // Client: no server HELLO in time → closes.
    assert!(p.client.is_closed());
    assert!(matches!(
        p.events(Side::Client).last(),
        Some(Event::Closed(_))
    ));
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn initial_tool_set_arrives_before_connected() {
    let mut p = Pair::default_pair();
    p.server.add_tool(tool("echo")).unwrap();
    p.server.add_tool(tool("search")).unwrap();
    // Registered before the handshake: nothing sent yet.
    p.flush();
    assert!(p.wire(Side::Server).is_empty());
    p.drive();
    let k = kinds(p.events(Side::Client));
    assert_eq!(k.len(), 3, "{k:?}");
    assert!(k[0].starts_with("ToolsChanged(Added"));
    assert!(k[1].starts_with("ToolsChanged(Added"));
    assert_eq!(k[2], "Connected");
    let names: Vec<String> = p.client.tools().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["echo", "search"]);
    // On the wire: HELLO(tools = 2) then two TOOL_DEF(add).
    let s = p.wire(Side::Server);
    assert_eq!(frame_kinds(&s), ["HELLO#0", "TOOL_DEF#0", "TOOL_DEF#0"]);
    let Frame::Hello(h) = &s[0] else {
        unreachable!()
    };
    assert_eq!(h.tools, 2);
    assert_eq!(kinds(p.events(Side::Server)), ["Connected"]);
}

#[test]
fn initial_tool_set_split_across_byte_stream_reads() {
    for seed in 1..40 {
        let mut p = Pair::default_pair();
        p.delivery = Delivery::Bytes { max_pieces: 7 };
        p.seed(seed);
        for n in ["a", "b", "c"] {
            p.server.add_tool(tool(n)).unwrap();
        }
        p.drive();
        let k = kinds(p.events(Side::Client));
        assert_eq!(k.len(), 4, "seed {seed}: {k:?}");
        assert_eq!(k[3], "Connected");
    }
}

// ───────────────────────── invocation lifecycle ─────────────────────────

fn metrics() -> Metrics {
    Metrics {
        wall_us: Some(1500),
        cpu_us: Some(900),
        input_tokens: Some(12),
        output_tokens: Some(u64::MAX),
    }
}

#[test]
fn invocation_streams_and_completes() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    p.clear_wire();

    let args = RawValue::string("hi");
    let id = p
        .client
        .invoke("echo", Some(args.clone()), InvokeOptions::default())
        .unwrap();
    assert_eq!(id, RequestId(1));
    assert_eq!(p.client.in_flight(), 1);
    p.flush();
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::Invoked(inv)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(inv.id, id);
    assert_eq!(inv.tool, "echo");
    assert_eq!(inv.args.as_ref(), Some(&args));

    p.server
        .stream(id, Bytes::from_static(b"hello "), StreamOptions::TEXT)
        .unwrap();
    p.server
        .stream(
            id,
            Bytes::from_static(&[0, 1, 2, 0xff]),
            StreamOptions::BINARY,
        )
        .unwrap();
    p.server
        .stream(
            id,
            Bytes::from_static(b"world"),
            StreamOptions::TEXT.fin(true),
        )
        .unwrap();
    assert_eq!(
        p.server
            .stream(id, Bytes::from_static(b"!"), StreamOptions::TEXT),
        Err(SendError::StreamFinished)
    );
    let result = RawValue::uint(42);
    p.server
        .complete(id, Status::Ok, Some(result.clone()), metrics())
        .unwrap();
    assert_eq!(p.server.in_flight(), 0);
    p.flush();
    p.drive();

    let ev = p.take_events(Side::Client);
    assert_eq!(
        kinds(&ev),
        [
            "Chunk(1,0)",
            "Chunk(1,1)",
            "Chunk(1,2)",
            "Ended(1,Complete Ok)"
        ]
    );
    let Event::Chunk(c0) = &ev[0] else {
        unreachable!()
    };
    assert!(c0.text && !c0.fin && &c0.data[..] == b"hello ");
    let Event::Chunk(c1) = &ev[1] else {
        unreachable!()
    };
    assert!(!c1.text && c1.data[..] == [0, 1, 2, 0xff]);
    let Event::Chunk(c2) = &ev[2] else {
        unreachable!()
    };
    assert!(c2.fin);
    assert_eq!(
        ev[3],
        Event::InvocationEnded {
            id,
            outcome: InvocationOutcome::Complete(Box::new(Complete {
                id,
                status: Status::Ok,
                result: Some(result),
                metrics: metrics(),
            }))
        }
    );
    assert_eq!(p.client.in_flight(), 0);
    // Nothing after the terminal frame: commands on the id are refused.
    assert_eq!(p.client.interrupt(id, None), Err(SendError::NotInFlight));
    assert_eq!(
        p.server.complete(id, Status::Ok, None, Metrics::default()),
        Err(SendError::NotInFlight)
    );
    assert_eq!(
        p.server
            .stream(id, Bytes::from_static(b"x"), StreamOptions::BINARY),
        Err(SendError::NotInFlight)
    );
    // Wire: INVOKE; STREAM×3, COMPLETE.
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["INVOKE#1"]);
    assert_eq!(
        frame_kinds(&p.wire(Side::Server)),
        ["STREAM#1", "STREAM#1", "STREAM#1", "COMPLETE#1"]
    );
    assert!(p.events(Side::Server).is_empty());
}

#[test]
fn invocation_fail_ends_with_error() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.flush();
    p.drive();
    p.server
        .stream(id, Bytes::from_static(b"partial"), StreamOptions::TEXT)
        .unwrap();
    p.server
        .fail(id, ErrorCode::TOOL_FAILED, "boom", false)
        .unwrap();
    // Connection-scope codes and code 0 are not for `fail`.
    assert_eq!(
        p.server.fail(id, ErrorCode::FLOOD, "x", false),
        Err(SendError::NotInFlight)
    );
    p.flush();
    p.drive();
    let ev = p.take_events(Side::Client);
    assert_eq!(
        kinds(&ev),
        ["Chunk(1,0)", "Ended(1,Error TOOL_FAILED(0x41))"]
    );
    let Event::InvocationEnded {
        outcome: InvocationOutcome::Error(e),
        ..
    } = &ev[1]
    else {
        unreachable!()
    };
    assert_eq!(e.message.as_ref().map(|m| m.as_str()), Some("boom"));
    assert!(!e.retryable);
}

#[test]
fn fail_rejects_connection_scope_codes() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.flush();
    p.drive();
    assert_eq!(
        p.server.fail(id, ErrorCode::FLOOD, "x", false),
        Err(SendError::InvalidField("code"))
    );
    assert_eq!(
        p.server.fail(id, ErrorCode(0), "x", false),
        Err(SendError::InvalidField("code"))
    );
    assert_eq!(p.server.in_flight(), 1);
}

#[test]
fn duplicate_invoke_ends_both() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.flush();
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Invoked(1)"]);
    // A second INVOKE with the same id, as a buggy client would send.
    p.inject_frame(Side::Server, &invoke_frame(id.0, "echo"));
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        [
            "Violation(1,DUPLICATE_ID(0x21))",
            "Aborted(1,DUPLICATE_ID(0x21))"
        ]
    );
    assert_eq!(p.server.in_flight(), 0);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Error DUPLICATE_ID(0x21))"]
    );
    assert_eq!(p.client.in_flight(), 0);
    // Exactly one ERROR on the wire for the id.
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(id, ErrorCode::DUPLICATE_ID)]
    );
}

#[test]
fn unknown_tool() {
    let mut p = Pair::connected_default();
    let id = p.client.invoke("nope", None, Default::default()).unwrap();
    p.flush();
    p.drive();
    assert!(p.events(Side::Server).is_empty());
    assert_eq!(
        kinds(p.events(Side::Client)),
        ["Ended(1,Error UNKNOWN_TOOL(0x20))"]
    );
    let wire = p.wire(Side::Server);
    let Some(Frame::Error(e)) = wire.last() else {
        panic!()
    };
    assert_eq!(
        (e.id, e.code, e.frame_type),
        (id, ErrorCode::UNKNOWN_TOOL, Some(2))
    );
    assert!(!e.retryable);
}

#[test]
fn check_tools_off_accepts_any_tool() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.check_tools = false;
        config
    });
    p.client
        .invoke("anything", None, Default::default())
        .unwrap();
    p.flush();
    p.drive();
    assert_eq!(kinds(p.events(Side::Server)), ["Invoked(1)"]);
}

#[test]
fn too_many_inflight() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.limits.max_inflight = 2;
        config
    });
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_events();
    // The client knows the server's limit and refuses locally.
    p.client.invoke("echo", None, Default::default()).unwrap();
    p.client.invoke("echo", None, Default::default()).unwrap();
    assert_eq!(
        p.client.invoke("echo", None, Default::default()),
        Err(SendError::TooManyInflight)
    );
    p.flush();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Invoked(1)", "Invoked(2)"]
    );
    // A client that ignores the limit gets TOO_MANY_INFLIGHT (retryable) for that id only.
    p.inject_frame(Side::Server, &invoke_frame(10, "echo"));
    assert!(p.events(Side::Server).is_empty());
    let wire = p.wire(Side::Server);
    let Some(Frame::Error(e)) = wire.last() else {
        panic!()
    };
    assert_eq!(
        (e.id, e.code, e.retryable),
        (RequestId(10), ErrorCode::TOO_MANY_INFLIGHT, true)
    );
    assert_eq!(p.server.in_flight(), 2);
    // The real client never sent id 10: informational for it.
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["PeerError(10,TOO_MANY_INFLIGHT(0x23))"]
    );
    assert_eq!(p.client.in_flight(), 2);
    // After one completes, a new one is accepted.
    p.server
        .complete(RequestId(1), Status::Ok, None, Metrics::default())
        .unwrap();
    p.flush();
    p.drive();
    p.client.invoke("echo", None, Default::default()).unwrap();
    p.flush();
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Invoked(3)"]);
}

/// A connected pair with tool `echo` and `n` invocations in flight (ids 1..=n), events
/// and wire cleared.
pub fn with_invocations(client: Config, server: Config, n: u16) -> (Pair, Vec<RequestId>) {
    let mut p = Pair::connected(client, server);
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    let ids: Vec<RequestId> = (0..n)
        .map(|_| p.client.invoke("echo", None, Default::default()).unwrap())
        .collect();
    p.flush();
    p.drive();
    assert_eq!(p.server.in_flight(), usize::from(n));
    p.clear_events();
    p.clear_wire();
    (p, ids)
}

#[test]
fn stream_for_unknown_id() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 1);
    p.inject_frame(Side::Client, &stream_frame(99, 0, b"x", false));
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Violation(99,UNKNOWN_ID(0x22))"]
    );
    assert_eq!(p.client.in_flight(), 1);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["PeerError(99,UNKNOWN_ID(0x22))"]
    );
    assert_eq!(p.server.in_flight(), 1);
}

#[test]
fn complete_for_unknown_id() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 1);
    p.inject_frame(
        Side::Client,
        &Frame::Complete(Complete {
            id: RequestId(7),
            status: Status::Ok,
            result: None,
            metrics: Metrics::default(),
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Violation(7,UNKNOWN_ID(0x22))"]
    );
    assert_eq!(p.client.in_flight(), 1);
}

/// SPEC §7.6: invocation 1 (`a`) streams one chunk (`first`); then `bad`, a STREAM out of
/// sequence, reaches the client, which takes it as a violation that ends the invocation
/// there, and the server learns it was aborted.
fn assert_bad_sequence_ends_invocation_1(
    p: &mut Pair,
    a: RequestId,
    first: StreamOptions,
    bad: Frame,
) {
    p.server.stream(a, Bytes::from_static(b"0"), first).unwrap();
    p.flush();
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Client)), ["Chunk(1,0)"]);
    p.inject_frame(Side::Client, &bad);
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(1,BAD_SEQUENCE(0x26))",
            "Ended(1,Error BAD_SEQUENCE(0x26))"
        ]
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Aborted(1,BAD_SEQUENCE(0x26))"]
    );
}

#[test]
fn bad_sequence_ends_the_invocation_on_both_sides() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    let (a, b) = (ids[0], ids[1]);
    // seq 5 where 1 is expected.
    let bad = stream_frame(a.0, 5, b"x", false);
    assert_bad_sequence_ends_invocation_1(&mut p, a, StreamOptions::BINARY, bad);
    assert_eq!(
        p.server
            .stream(a, Bytes::from_static(b"1"), StreamOptions::BINARY),
        Err(SendError::NotInFlight)
    );
    // The other invocation is untouched.
    p.server
        .stream(b, Bytes::from_static(b"y"), StreamOptions::BINARY.fin(true))
        .unwrap();
    p.server
        .complete(b, Status::Ok, None, Metrics::default())
        .unwrap();
    p.flush();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(2,0)", "Ended(2,Complete Ok)"]
    );
}

#[test]
fn stream_after_final_is_bad_sequence() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let a = ids[0];
    // The next seq, but after `final`.
    let bad = stream_frame(a.0, 1, b"more", false);
    assert_bad_sequence_ends_invocation_1(&mut p, a, StreamOptions::TEXT.fin(true), bad);
}

#[test]
fn chunk_above_max_chunk() {
    let (mut p, ids) = with_invocations(
        {
            let mut config = quiet_config();
            config.limits.max_chunk = 100;
            config
        },
        quiet_config(),
        2,
    );
    // The server respects the client's limit locally.
    assert_eq!(
        p.server
            .stream(ids[0], Bytes::from(vec![1; 101]), StreamOptions::BINARY),
        Err(SendError::TooLarge { len: 101, max: 100 })
    );
    p.server
        .stream(ids[0], Bytes::from(vec![1; 100]), StreamOptions::BINARY)
        .unwrap();
    p.flush();
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Client)), ["Chunk(1,0)"]);
    // A server that ignores it: CHUNK_TOO_LARGE ends that invocation only.
    p.inject_frame(Side::Client, &stream_frame(ids[0].0, 1, &[2; 101], false));
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(1,CHUNK_TOO_LARGE(0x24))",
            "Ended(1,Error CHUNK_TOO_LARGE(0x24))"
        ]
    );
    assert_eq!(p.client.in_flight(), 1);
}

#[test]
fn nothing_follows_a_terminal_frame() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let a = ids[0];
    p.server
        .complete(a, Status::Ok, None, Metrics::default())
        .unwrap();
    // Late commands after the terminal frame are refused and send nothing.
    assert_eq!(
        p.server
            .stream(a, Bytes::from_static(b"x"), StreamOptions::BINARY),
        Err(SendError::NotInFlight)
    );
    assert_eq!(
        p.server.fail(a, ErrorCode::INTERNAL, "late", false),
        Err(SendError::NotInFlight)
    );
    p.flush();
    p.drive();
    assert_eq!(frame_kinds(&p.wire(Side::Server)), ["COMPLETE#1"]);
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Complete Ok)"]
    );
    // A duplicate COMPLETE from a buggy server is UNKNOWN_ID, not a second Ended.
    p.inject_frame(
        Side::Client,
        &Frame::Complete(Complete {
            id: a,
            status: Status::Ok,
            result: None,
            metrics: Metrics::default(),
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Violation(1,UNKNOWN_ID(0x22))"]
    );
}

#[test]
fn deadline_exceeded() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("slow")).unwrap();
    p.drive();
    p.clear_events();
    let id = p
        .client
        .invoke("slow", None, InvokeOptions::default().deadline_ms(500))
        .unwrap();
    p.flush();
    p.drive();
    let t = p.now;
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Invoked(1)"]);
    assert_eq!(
        p.server.poll_timeout(),
        Some(t + Duration::from_millis(500))
    );
    p.run_for(Duration::from_millis(499));
    assert!(p.events(Side::Server).is_empty());
    p.run_for(Duration::from_millis(1));
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Aborted(1,DEADLINE_EXCEEDED(0x27))"]
    );
    p.drive();
    let ev = p.take_events(Side::Client);
    assert_eq!(kinds(&ev), ["Ended(1,Error DEADLINE_EXCEEDED(0x27))"]);
    assert!(
        matches!(&ev[0], Event::InvocationEnded { outcome: InvocationOutcome::Error(e), .. } if e.retryable)
    );
    assert_eq!(
        p.server.complete(id, Status::Ok, None, Metrics::default()),
        Err(SendError::NotInFlight)
    );
}

// ───────────────────────── interrupts (SPEC §7.3) ─────────────────────────

#[test]
fn interrupt_crossing_complete_is_ignored() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let a = ids[0];
    p.latency = Duration::from_millis(50);
    p.server
        .complete(a, Status::Ok, None, Metrics::default())
        .unwrap();
    p.flush(); // COMPLETE is now on the wire
    p.client.interrupt(a, Some("stop".into())).unwrap();
    p.flush(); // INTERRUPT crosses it
    p.drive();
    assert!(
        p.events(Side::Server).is_empty(),
        "{:?}",
        p.events(Side::Server)
    );
    assert!(p
        .wire(Side::Server)
        .iter()
        .all(|f| !matches!(f, Frame::Error(_))));
    let ev = p.take_events(Side::Client);
    assert_eq!(kinds(&ev), ["Ended(1,Complete Ok)"]);
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["INTERRUPT#1"]);
}

#[test]
fn interrupt_then_cancelled() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let a = ids[0];
    p.client
        .interrupt(a, Some("user pressed stop".into()))
        .unwrap();
    // Interrupting twice is harmless and sends one frame.
    p.client.interrupt(a, None).unwrap();
    p.flush();
    p.drive();
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["INTERRUPT#1"]);
    let ev = p.take_events(Side::Server);
    assert_eq!(
        ev,
        [Event::Interrupted {
            id: a,
            reason: Some("user pressed stop".into())
        }]
    );
    // An INTERRUPT repeated on the wire is reported once.
    p.inject_frame(
        Side::Server,
        &Frame::Interrupt(asp_proto::frame::Interrupt {
            id: a,
            reason: None,
        }),
    );
    assert!(p.events(Side::Server).is_empty());
    p.server
        .complete(a, Status::Cancelled, None, Metrics::default())
        .unwrap();
    p.flush();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Complete Cancelled)"]
    );
    // The client may interrupt again after the end: refused, nothing sent.
    assert_eq!(p.client.interrupt(a, None), Err(SendError::NotInFlight));
}

#[test]
fn cancelled_without_interrupt_goes_out_as_failed() {
    // SPEC §5.6: `cancelled` only after the client's INTERRUPT. A server application that
    // gives up on its own (output it could not send, say) has failed.
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    p.server
        .complete(ids[0], Status::Cancelled, None, Metrics::default())
        .unwrap();
    p.flush();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Complete Failed)"]
    );
}

// ───────────────────────── time (SPEC: time is an input) ─────────────────────────

#[test]
fn time_never_goes_backwards() {
    let mut p = Pair::connected(
        {
            let mut config = Config::default();
            config.heartbeat = Some(Duration::from_secs(1));
            config
        },
        {
            let mut config = Config::default();
            config.heartbeat = Some(Duration::from_secs(1));
            config
        },
    );
    p.run_for(Duration::from_millis(500));
    let late = p.now;
    let before = p.client.poll_timeout();
    // Earlier instants everywhere: clamped, no panic, no timer runs backwards.
    p.client.handle_timeout(Instant::ZERO);
    p.client.handle_message(Instant::ZERO, encode(&Frame::PONG));
    p.client
        .handle_bytes(Instant::from_micros(1), encode(&Frame::PONG));
    p.client.handle_transport_pong(Instant::ZERO);
    let after = p.client.poll_timeout();
    assert!(after >= before, "{before:?} → {after:?}");
    assert!(after.is_some_and(|t| t > late));
    p.flush();
    // Extreme instants saturate.
    let mut c = Connection::client(quiet_config(), Instant::from_micros(u64::MAX - 5));
    c.handle_timeout(Instant::from_micros(u64::MAX));
    let _ = c.poll_timeout();
    let mut s = Connection::server(quiet_config(), default_params(), Instant::ZERO);
    s.handle_timeout(Instant::from_micros(u64::MAX));
    assert!(s.is_closed());
}

#[test]
fn spurious_timeouts_are_harmless() {
    let (mut p, _) = with_invocations(quiet_config(), quiet_config(), 3);
    for _ in 0..10 {
        p.timeout(Side::Client);
        p.timeout(Side::Server);
    }
    assert!(p.events(Side::Client).is_empty());
    assert!(p.events(Side::Server).is_empty());
    assert!(p.wire(Side::Client).is_empty());
    assert!(p.wire(Side::Server).is_empty());
}

// ───────────────────────── memory ─────────────────────────

#[test]
fn connection_size() {
    let size = std::mem::size_of::<Connection>();
    println!("size_of::<Connection>() = {size} bytes");
    println!(
        "size_of::<Config>() = {} bytes",
        std::mem::size_of::<Config>()
    );
    println!(
        "size_of::<Event>() = {} bytes",
        std::mem::size_of::<Event>()
    );
    println!(
        "size_of::<Frame>() = {} bytes",
        std::mem::size_of::<Frame>()
    );
    assert!(size <= 1024, "Connection is {size} bytes");
    let _ = HelloLimits::default();
}

// ───────────────────────── local limits and chunking invariance ─────────────────────────

#[test]
fn local_misuse_is_refused_before_anything_is_sent() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.limits.max_frame_payload = 256;
        config
    });
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.clear_wire();
    // Arguments larger than the server accepts.
    let big = RawValue::string(&"x".repeat(300));
    assert!(matches!(
        p.client.invoke("echo", Some(big), InvokeOptions::default()),
        Err(SendError::TooLarge { max: 256, .. })
    ));
    assert_eq!(
        p.client.invoke("", None, InvokeOptions::default()),
        Err(SendError::InvalidField("tool"))
    );
    assert_eq!(
        p.client
            .invoke("t".repeat(129), None, InvokeOptions::default()),
        Err(SendError::InvalidField("tool"))
    );
    let id = p
        .client
        .invoke("echo", None, InvokeOptions::default())
        .unwrap();
    p.drive();
    // Text chunks must be UTF-8.
    assert_eq!(
        p.server
            .stream(id, Bytes::from_static(&[0xff, 0xfe]), StreamOptions::TEXT),
        Err(SendError::InvalidField("data"))
    );
    assert_eq!(
        p.client.complete(id, Status::Ok, None, Metrics::default()),
        Err(SendError::WrongRole)
    );
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["INVOKE#1"]);
    assert!(p.wire(Side::Server).is_empty());
}

/// A scripted session; returns both event transcripts.
fn scripted_session(delivery: Delivery, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut p = Pair::new(
        {
            let mut config = quiet_config();
            config.limits.initial_window = 100;
            config
        },
        quiet_config(),
        default_params(),
    );
    p.delivery = delivery;
    p.seed(seed);
    p.latency = Duration::from_millis(1);
    for t in ["a", "b", "c"] {
        p.server.add_tool(tool(t)).unwrap();
    }
    p.drive();
    let ids: Vec<RequestId> = (0..3)
        .map(|_| {
            p.client
                .invoke("a", None, InvokeOptions::default())
                .unwrap()
        })
        .collect();
    p.drive();
    let r = p.server.request("confirm", None, Some(ids[0])).unwrap();
    for round in 0..20u8 {
        for id in &ids {
            let _ = p
                .server
                .stream(*id, Bytes::from(vec![round; 30]), StreamOptions::BINARY);
        }
        p.drive();
    }
    p.client
        .reply(r, asp_proto::frame::ReplyStatus::Answered, None)
        .unwrap();
    p.client.interrupt(ids[1], None).unwrap();
    p.server.remove_tool("b").unwrap();
    p.drive();
    p.server
        .complete(ids[0], Status::Ok, None, Metrics::default())
        .unwrap();
    p.server
        .complete(ids[1], Status::Cancelled, None, Metrics::default())
        .unwrap();
    p.server
        .fail(ids[2], ErrorCode::TOOL_FAILED, "x", false)
        .unwrap();
    p.drive();
    (kinds(p.events(Side::Client)), kinds(p.events(Side::Server)))
}

#[test]
fn events_do_not_depend_on_how_bytes_are_chunked() {
    let reference = scripted_session(Delivery::Message, 1);
    assert!(reference.0.len() > 20, "{:?}", reference.0);
    for max_pieces in [1, 2, 5, 17] {
        for seed in 1..8 {
            let got = scripted_session(Delivery::Bytes { max_pieces }, seed);
            assert_eq!(got, reference, "max_pieces {max_pieces}, seed {seed}");
        }
    }
}
