//! Connection scenarios: flow control and transmit-queue bounds (SPEC §7.5, §13), server
//! requests (§8), tools (§9), heartbeat (§6.7) and rate limiting (§10).

mod pair;

use std::time::Duration;

use asp_proto::frame::{Credit, Metrics, ReplyStatus, Request, Status, ToolDef, ToolOp};
use asp_proto::{
    CloseReason, Config, ErrorCode, Event, Frame, HeartbeatMode, RawValue, RequestId,
    RequestOutcome, SendError, State, StreamOptions, ToolChange,
};
use bytes::Bytes;
use pair::*;

fn small_window(window: u32) -> Config {
    let mut config = quiet_config();
    config.limits.initial_window = window;
    config
}

/// The server closed the connection with OVERLOADED, and (SPEC §13.1: not a silent cut)
/// told the peer why.
fn assert_closed_overloaded(p: &mut Pair) {
    p.drain(Side::Server);
    let evs = p.events(Side::Server);
    assert!(
        matches!(
            evs.last(),
            Some(Event::Closed(CloseReason::ProtocolError {
                code: ErrorCode::OVERLOADED,
                ..
            }))
        ),
        "{:?}",
        kinds(evs)
    );
    let errs = errors_on_wire(&p.wire(Side::Server));
    assert_eq!(errs.last(), Some(&(RequestId(0), ErrorCode::OVERLOADED)));
}

fn credits(frames: &[Frame]) -> Vec<(u16, u32)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Credit(c) => Some((c.id.0, c.bytes)),
            _ => None,
        })
        .collect()
}

// ───────────────────────── flow control (SPEC §7.5) ─────────────────────────

#[test]
fn window_exhaustion_then_credit_then_writable() {
    let (mut p, ids) = with_invocations(small_window(64), quiet_config(), 1);
    let a = ids[0];
    // SPEC §7.5: one chunk is at most half the initial window.
    assert_eq!(p.server.chunk_cap(), 32);
    assert!(p.server.can_stream(a, 64));
    assert!(!p.server.can_stream(a, 65));
    assert!(matches!(
        p.server
            .stream(a, Bytes::from(vec![1; 33]), StreamOptions::BINARY),
        Err(SendError::TooLarge { len: 33, max: 32 })
    ));
    p.server
        .stream(a, Bytes::from(vec![1; 32]), StreamOptions::BINARY)
        .unwrap();
    p.server
        .stream(a, Bytes::from(vec![2; 24]), StreamOptions::BINARY)
        .unwrap();
    p.server
        .stream(a, Bytes::from(vec![2; 8]), StreamOptions::BINARY)
        .unwrap();
    // The window is exhausted. An empty chunk is allowed only as the final one (§5.3).
    assert_eq!(
        p.server
            .stream(a, Bytes::from_static(b"x"), StreamOptions::BINARY),
        Err(SendError::Full)
    );
    assert_eq!(
        p.server.stream(a, Bytes::new(), StreamOptions::BINARY),
        Err(SendError::InvalidField("data"))
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(1,0)", "Chunk(1,1)", "Chunk(1,2)"]
    );
    // Credit is batched at half the initial window: 32 ≥ 32 → CREDIT(32); then 24 < 32;
    // then 24 + 8 → CREDIT(32).
    assert_eq!(credits(&p.wire(Side::Client)), [(1, 32), (1, 32)]);
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Writable(1)"]);
    assert!(p.server.can_stream(a, 32));
    p.server
        .stream(a, Bytes::from(vec![3; 32]), StreamOptions::BINARY)
        .unwrap();
    p.drive();
    assert_eq!(credits(&p.wire(Side::Client)), [(1, 32), (1, 32), (1, 32)]);
    // Not blocked this time: no Writable.
    assert!(p.events(Side::Server).is_empty());
    p.server
        .complete(a, Status::Ok, None, Metrics::default())
        .unwrap();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(1,3)", "Ended(1,Complete Ok)"]
    );
}

#[test]
fn long_stream_through_a_small_window() {
    // Many window refills; byte-stream delivery with random splits.
    for seed in 1..6 {
        let (mut p, ids) = with_invocations(small_window(100), quiet_config(), 2);
        p.delivery = Delivery::Bytes { max_pieces: 5 };
        p.seed(seed);
        p.latency = Duration::from_millis(3);
        let mut sent = [0usize; 2];
        let mut seqs = [0u32; 2];
        let total = 5_000;
        for _ in 0..10_000 {
            for (k, id) in ids.iter().enumerate() {
                if sent[k] >= total {
                    continue;
                }
                let n = 33.min(total - sent[k]);
                let fin = sent[k] + n == total;
                match p.server.stream(
                    *id,
                    Bytes::from(vec![k as u8; n]),
                    StreamOptions::BINARY.fin(fin),
                ) {
                    Ok(()) => {
                        sent[k] += n;
                        seqs[k] += 1;
                    }
                    Err(SendError::Full) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            if sent.iter().all(|s| *s >= total) {
                break;
            }
            p.flush();
            p.step();
        }
        assert_eq!(sent, [total, total], "seed {seed}: stalled");
        for id in &ids {
            p.server
                .complete(*id, Status::Ok, None, Metrics::default())
                .unwrap();
        }
        p.drive();
        let ev = p.take_events(Side::Client);
        let mut got = [0usize; 2];
        let mut next = [0u32; 2];
        for e in &ev {
            if let Event::Chunk(s) = e {
                let k = usize::from(s.id.0 - 1);
                assert_eq!(s.seq, next[k]);
                next[k] += 1;
                got[k] += s.data.len();
                assert!(s.data.iter().all(|b| usize::from(*b) == k));
            }
        }
        assert_eq!(got, [total, total]);
        assert_eq!(next, seqs);
        assert_eq!(ended(&ev).len(), 2);
        assert!(ev.iter().all(|e| error_of(e).is_none()), "{ev:?}");
    }
}

#[test]
fn manual_release_grants_credit() {
    let (mut p, ids) = with_invocations(
        {
            let mut config = small_window(64);
            config.auto_credit = false;
            config
        },
        quiet_config(),
        1,
    );
    let a = ids[0];
    for _ in 0..2 {
        p.server
            .stream(a, Bytes::from(vec![1; 32]), StreamOptions::BINARY)
            .unwrap();
    }
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(1,0)", "Chunk(1,1)"]
    );
    assert!(credits(&p.wire(Side::Client)).is_empty());
    p.client.release(a, 10);
    p.drive();
    assert!(credits(&p.wire(Side::Client)).is_empty());
    p.client.release(a, 54);
    p.drive();
    assert_eq!(credits(&p.wire(Side::Client)), [(1, 64)]);
    // Harmless for an id not in flight.
    p.client.release(RequestId(77), 1000);
    p.drive();
    assert_eq!(credits(&p.wire(Side::Client)).len(), 1);
}

#[test]
fn stream_beyond_window_is_flow_control_for_that_invocation_only() {
    let (mut p, ids) = with_invocations(small_window(64), quiet_config(), 2);
    p.inject_frame(Side::Client, &stream_frame(ids[0].0, 0, &[0; 65], false));
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(1,FLOW_CONTROL(0x25))",
            "Ended(1,Error FLOW_CONTROL(0x25))"
        ]
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Aborted(1,FLOW_CONTROL(0x25))"]
    );
    // Invocation 2 is unaffected and can use its whole window.
    p.server
        .stream(ids[1], Bytes::from(vec![0; 32]), StreamOptions::BINARY)
        .unwrap();
    p.server
        .stream(
            ids[1],
            Bytes::from(vec![0; 32]),
            StreamOptions::BINARY.fin(true),
        )
        .unwrap();
    p.server
        .complete(ids[1], Status::Ok, None, Metrics::default())
        .unwrap();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Chunk(2,0)", "Chunk(2,1)", "Ended(2,Complete Ok)"]
    );
}

#[test]
fn credit_overflow_is_flow_control() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 2);
    p.inject_frame(
        Side::Server,
        &Frame::Credit(Credit {
            id: ids[0],
            bytes: u32::MAX,
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        [
            "Violation(1,FLOW_CONTROL(0x25))",
            "Aborted(1,FLOW_CONTROL(0x25))"
        ]
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Ended(1,Error FLOW_CONTROL(0x25))"]
    );
    assert_eq!(p.server.in_flight(), 1);
    // CREDIT for an id not in flight crossed a terminal frame: ignored silently.
    p.inject_frame(
        Side::Server,
        &Frame::Credit(Credit {
            id: RequestId(55),
            bytes: 10,
        }),
    );
    assert!(p.events(Side::Server).is_empty());
}

#[test]
fn per_invocation_queue_bound_refuses_then_writable() {
    let (mut p, ids) = with_invocations(
        quiet_config(),
        {
            let mut config = quiet_config();
            config.max_queued_per_invocation = 100;
            config
        },
        1,
    );
    let a = ids[0];
    p.server
        .stream(a, Bytes::from(vec![1; 60]), StreamOptions::BINARY)
        .unwrap();
    p.server
        .stream(a, Bytes::from(vec![1; 40]), StreamOptions::BINARY)
        .unwrap();
    assert!(!p.server.can_stream(a, 1));
    assert_eq!(
        p.server
            .stream(a, Bytes::from_static(b"x"), StreamOptions::BINARY),
        Err(SendError::Full)
    );
    // poll_transmit drains the queue: Writable follows.
    p.flush();
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Writable(1)"]);
    assert!(p.server.can_stream(a, 100));
}

#[test]
fn connection_queue_bound_refuses_then_writable_for_the_blocked_invocation() {
    let (mut p, ids) = with_invocations(
        quiet_config(),
        {
            let mut config = quiet_config();
            config.max_queued_bytes = 300;
            config
        },
        2,
    );
    let (a, b) = (ids[0], ids[1]);
    // `a` fills the connection's queue…
    p.server
        .stream(a, Bytes::from(vec![1; 260]), StreamOptions::BINARY)
        .unwrap();
    assert!(p.server.queued_bytes() <= 300);
    // …so `b`, which has nothing queued, is refused.
    assert!(!p.server.can_stream(b, 10));
    assert_eq!(
        p.server
            .stream(b, Bytes::from(vec![2; 10]), StreamOptions::BINARY),
        Err(SendError::Full)
    );
    // When a's data leaves, b must learn it can write again.
    p.flush();
    assert_eq!(p.server.queued_bytes(), 0);
    assert_eq!(kinds(&p.take_events(Side::Server)), ["Writable(2)"]);
    p.server
        .stream(b, Bytes::from(vec![2; 10]), StreamOptions::BINARY)
        .unwrap();
}

#[test]
fn pong_is_dropped_when_the_queue_is_full() {
    let (mut p, ids) = with_invocations(
        quiet_config(),
        {
            let mut config = quiet_config();
            config.max_queued_bytes = 200;
            config
        },
        1,
    );
    // Terminal frames are not bounded by the queue limit; this one overfills it.
    let big = RawValue::string(&"r".repeat(300));
    p.server
        .complete(ids[0], Status::Ok, Some(big), Metrics::default())
        .unwrap();
    let q = p.server.queued_bytes();
    assert!(q > 200);
    // Deliver a PING without draining the server's queue first.
    let now = p.now;
    p.server.handle_message(now, encode(&Frame::PING));
    assert_eq!(
        p.server.queued_bytes(),
        q,
        "PONG queued despite a full queue"
    );
    p.flush();
}

// ───────────────────────── server requests (SPEC §8) ─────────────────────────

#[test]
fn request_and_reply() {
    let (mut p, ids) = with_invocations(quiet_config(), quiet_config(), 1);
    let body = RawValue::string("Delete 3 files?");
    let r = p
        .server
        .request("confirm", Some(body.clone()), Some(ids[0]))
        .unwrap();
    assert_eq!(r, RequestId(0x8000));
    p.drive();
    let ev = p.take_events(Side::Client);
    assert_eq!(
        ev,
        [Event::Requested(Box::new(Request {
            id: r,
            kind: "confirm".into(),
            body: Some(body),
            invocation: Some(ids[0]),
        }))]
    );
    let answer = RawValue::string("yes");
    p.client
        .reply(r, ReplyStatus::Answered, Some(answer.clone()))
        .unwrap();
    assert_eq!(
        p.client.reply(r, ReplyStatus::Answered, None),
        Err(SendError::NotInFlight)
    );
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::RequestEnded {
        id,
        outcome: RequestOutcome::Reply(rep),
    }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*id, r);
    assert_eq!(rep.status, ReplyStatus::Answered);
    assert_eq!(rep.body.as_ref(), Some(&answer));
    assert_eq!(frame_kinds(&p.wire(Side::Server)), ["REQUEST#32768"]);
    assert_eq!(frame_kinds(&p.wire(Side::Client)), ["REPLY#32768"]);
    // Ids are allocated sequentially.
    assert_eq!(p.server.request("input", None, None), Ok(RequestId(0x8001)));
}

#[test]
fn interrupted_request_is_cancelled() {
    let mut p = Pair::connected_default();
    p.clear_wire();
    let r = p.server.request("clarify", None, None).unwrap();
    p.drive();
    assert_eq!(kinds(&p.take_events(Side::Client)), ["Requested(32768)"]);
    p.server
        .interrupt(r, Some("invocation ended".into()))
        .unwrap();
    p.server.interrupt(r, None).unwrap();
    p.drive();
    assert_eq!(
        p.take_events(Side::Client),
        [Event::Interrupted {
            id: r,
            reason: Some("invocation ended".into())
        }]
    );
    assert_eq!(
        frame_kinds(&p.wire(Side::Server)),
        ["REQUEST#32768", "INTERRUPT#32768"]
    );
    p.client.reply(r, ReplyStatus::Cancelled, None).unwrap();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Ended(32768,Reply Cancelled)"]
    );
}

#[test]
fn interrupt_crossing_reply_is_ignored() {
    let mut p = Pair::connected_default();
    p.latency = Duration::from_millis(10);
    let r = p.server.request("clarify", None, None).unwrap();
    p.drive();
    p.clear_events();
    p.client.reply(r, ReplyStatus::Declined, None).unwrap();
    p.flush();
    p.server.interrupt(r, None).unwrap();
    p.drive();
    assert!(p.events(Side::Client).is_empty());
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Ended(32768,Reply Declined)"]
    );
}

#[test]
fn client_fails_a_request() {
    let mut p = Pair::connected_default();
    let r = p.server.request("input", None, None).unwrap();
    p.drive();
    p.clear_events();
    p.client
        .fail(r, ErrorCode::INVALID_ARGUMENTS, "no such file", false)
        .unwrap();
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Ended(32768,Error INVALID_ARGUMENTS(0x40))"]
    );
}

#[test]
fn requests_unsupported_by_the_client() {
    let mut p = Pair::connected(
        {
            let mut config = quiet_config();
            config.accept_requests = false;
            config
        },
        quiet_config(),
    );
    assert_eq!(
        p.server.request("confirm", None, None),
        Err(SendError::Unsupported("requests"))
    );
    // A server that sends one anyway gets UNSUPPORTED for that id.
    p.inject_frame(
        Side::Client,
        &Frame::Request(Request {
            id: RequestId(0x8005),
            kind: "confirm".into(),
            body: None,
            invocation: None,
        }),
    );
    assert!(p.events(Side::Client).is_empty());
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0x8005), ErrorCode::UNSUPPORTED)]
    );
}

#[test]
fn client_max_inflight_bounds_requests() {
    let mut p = Pair::connected(
        {
            let mut config = quiet_config();
            config.limits.max_inflight = 1;
            config
        },
        quiet_config(),
    );
    let r = p.server.request("a", None, None).unwrap();
    assert_eq!(
        p.server.request("b", None, None),
        Err(SendError::TooManyInflight)
    );
    p.drive();
    p.clear_events();
    p.inject_frame(
        Side::Client,
        &Frame::Request(Request {
            id: RequestId(0x9000),
            kind: "c".into(),
            body: None,
            invocation: None,
        }),
    );
    assert!(p.events(Side::Client).is_empty());
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0x9000), ErrorCode::TOO_MANY_INFLIGHT)]
    );
    // A duplicate of the one in flight ends it on both sides.
    p.inject_frame(
        Side::Client,
        &Frame::Request(Request {
            id: r,
            kind: "a".into(),
            body: None,
            invocation: None,
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(32768,DUPLICATE_ID(0x21))",
            "Aborted(32768,DUPLICATE_ID(0x21))"
        ]
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        [
            "PeerError(36864,TOO_MANY_INFLIGHT(0x23))",
            "Ended(32768,Error DUPLICATE_ID(0x21))"
        ]
    );
}

#[test]
fn reply_for_unknown_id() {
    let mut p = Pair::connected_default();
    p.inject_frame(
        Side::Server,
        &Frame::Reply(asp_proto::frame::Reply {
            id: RequestId(0x8123),
            status: ReplyStatus::Answered,
            body: None,
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Violation(33059,UNKNOWN_ID(0x22))"]
    );
}

// ───────────────────────── tools (SPEC §9) ─────────────────────────

#[test]
fn tool_changes_after_connect() {
    let mut p = Pair::connected_default();
    let echo = tool("echo");
    p.server.add_tool(echo.clone()).unwrap();
    p.drive();
    assert_eq!(
        p.take_events(Side::Client),
        [Event::ToolsChanged(Box::new(ToolChange::Added(
            echo.clone()
        )))]
    );
    // Adding a known name is an update.
    let echo2 = ToolDef {
        description: "v2".into(),
        input_schema: Some(RawValue::string("schema")),
        ..echo.clone()
    };
    p.server.add_tool(echo2.clone()).unwrap();
    p.drive();
    assert_eq!(
        p.take_events(Side::Client),
        [Event::ToolsChanged(Box::new(ToolChange::Updated(
            ToolDef {
                op: ToolOp::Update,
                ..echo2.clone()
            }
        )))]
    );
    assert_eq!(
        p.client.tools().next().map(|t| &t.description),
        Some(&"v2".into())
    );
    assert_eq!(p.server.remove_tool("echo"), Ok(true));
    assert_eq!(p.server.remove_tool("echo"), Ok(false));
    p.drive();
    assert_eq!(
        p.take_events(Side::Client),
        [Event::ToolsChanged(Box::new(ToolChange::Removed(
            "echo".into()
        )))]
    );
    assert_eq!(p.client.tools().count(), 0);
    let w = p.wire(Side::Server);
    let ops: Vec<ToolOp> = w
        .iter()
        .filter_map(|f| match f {
            Frame::ToolDef(t) => Some(t.op),
            _ => None,
        })
        .collect();
    assert_eq!(ops, [ToolOp::Add, ToolOp::Update, ToolOp::Remove]);
    assert!(p.events(Side::Server).is_empty());
    // Bad names are refused locally.
    assert_eq!(
        p.server.add_tool(tool("")),
        Err(SendError::InvalidField("name"))
    );
    assert_eq!(p.client.add_tool(tool("x")), Err(SendError::WrongRole));
}

#[test]
fn client_max_tools() {
    let mut p = Pair::connected(
        {
            let mut config = quiet_config();
            config.limits.max_tools = 2;
            config
        },
        quiet_config(),
    );
    p.server.add_tool(tool("a")).unwrap();
    p.server.add_tool(tool("b")).unwrap();
    // The server respects the client's limit locally…
    assert!(matches!(
        p.server.add_tool(tool("c")),
        Err(SendError::TooLarge { max: 2, .. })
    ));
    // …but updates are fine.
    p.server.add_tool(tool("a")).unwrap();
    p.drive();
    p.clear_events();
    // A server that ignores it: TOO_MANY_TOOLS with id 0; the tool is not added.
    p.inject_frame(Side::Client, &Frame::ToolDef(tool("c")));
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        ["Violation(0,TOO_MANY_TOOLS(0x30))"]
    );
    assert_eq!(p.client.tools().count(), 2);
    let w = p.wire(Side::Client);
    let Some(Frame::Error(e)) = w.last() else {
        panic!()
    };
    assert_eq!(
        (e.id, e.code, e.frame_type),
        (RequestId(0), ErrorCode::TOO_MANY_TOOLS, Some(5))
    );
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["PeerError(0,TOO_MANY_TOOLS(0x30))"]
    );
}

#[test]
fn tool_state_errors() {
    let mut p = Pair::connected_default();
    p.server.add_tool(tool("a")).unwrap();
    p.drive();
    p.clear_events();
    p.clear_wire();
    // add of an existing name
    p.inject_frame(Side::Client, &Frame::ToolDef(tool("a")));
    // update / remove of unknown names
    p.inject_frame(
        Side::Client,
        &Frame::ToolDef(ToolDef {
            op: ToolOp::Update,
            ..tool("zz")
        }),
    );
    p.inject_frame(
        Side::Client,
        &Frame::ToolDef(ToolDef {
            op: ToolOp::Remove,
            ..tool("zz")
        }),
    );
    assert_eq!(
        kinds(&p.take_events(Side::Client)),
        [
            "Violation(0,TOOL_STATE(0x31))",
            "Violation(0,TOOL_STATE(0x31))",
            "Violation(0,TOOL_STATE(0x31))"
        ]
    );
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [
            (RequestId(0), ErrorCode::TOOL_STATE),
            (RequestId(0), ErrorCode::TOOL_STATE),
            (RequestId(0), ErrorCode::TOOL_STATE)
        ]
    );
    // The mirror is unchanged.
    let names: Vec<String> = p.client.tools().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(
        p.client.tools().next().map(|t| t.description.to_string()),
        Some("the a tool".into())
    );
}

#[test]
fn initial_tool_set_beyond_client_max_tools() {
    let mut p = Pair::new(
        {
            let mut config = quiet_config();
            config.limits.max_tools = 1;
            config
        },
        quiet_config(),
        default_params(),
    );
    p.server.add_tool(tool("a")).unwrap();
    p.server.add_tool(tool("b")).unwrap();
    p.drive();
    let k = kinds(p.events(Side::Client));
    // SPEC §6.2 step 3: the server sends at most the client's max_tools, so the initial set
    // never provokes TOO_MANY_TOOLS and the handshake completes cleanly.
    assert_eq!(k.len(), 2, "{k:?}");
    assert!(k[0].starts_with("ToolsChanged(Added"));
    assert_eq!(k[1], "Connected");
    assert_eq!(p.client.tools().count(), 1);
    assert!(kinds(p.events(Side::Server))
        .iter()
        .all(|e| !e.starts_with("Violation")));
}

// ───────────────────────── heartbeat (SPEC §6.7) ─────────────────────────

fn hb(ms: u64, mode: HeartbeatMode) -> Config {
    let mut config = Config::default();
    config.heartbeat = Some(Duration::from_millis(ms));
    config.heartbeat_mode = mode;
    config
}

#[test]
fn idle_pair_pings_and_stays_up() {
    let mut p = Pair::connected(
        hb(1000, HeartbeatMode::Frames),
        hb(1000, HeartbeatMode::Frames),
    );
    p.latency = Duration::from_millis(20);
    p.clear_wire();
    p.run_for(Duration::from_secs(30));
    assert!(
        p.events(Side::Client).is_empty(),
        "{:?}",
        p.events(Side::Client)
    );
    assert!(
        p.events(Side::Server).is_empty(),
        "{:?}",
        p.events(Side::Server)
    );
    assert_eq!(p.client.state(), State::Open);
    assert_eq!(p.server.state(), State::Open);
    let c = p.wire(Side::Client);
    let s = p.wire(Side::Server);
    let count = |w: &[Frame], f: Frame| w.iter().filter(|x| **x == f).count();
    assert!(count(&c, Frame::PING) + count(&s, Frame::PING) >= 15);
    // Every PING is answered.
    assert_eq!(count(&c, Frame::PING), count(&s, Frame::PONG));
    assert_eq!(count(&s, Frame::PING), count(&c, Frame::PONG));
    assert!(c
        .iter()
        .chain(&s)
        .all(|f| matches!(f, Frame::Ping(_) | Frame::Pong(_))));
}

#[test]
fn silent_peer_is_closed_after_three_intervals() {
    let mut p = Pair::connected(
        hb(1000, HeartbeatMode::Frames),
        hb(1000, HeartbeatMode::Frames),
    );
    p.clear_wire();
    let t0 = p.now;
    // The server → client direction goes dark.
    p.links[1].hold = true;
    p.run_for(Duration::from_millis(2_999));
    assert!(p.events(Side::Client).is_empty());
    // Two PINGs went out, at H and 2H.
    let pings: Vec<Instant> = p.wires[0]
        .iter()
        .filter(|(_, f)| *f == Frame::PING)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        pings,
        [t0 + Duration::from_secs(1), t0 + Duration::from_secs(2)]
    );
    p.run_for(Duration::from_millis(1));
    assert!(matches!(
        p.events(Side::Client),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::HEARTBEAT_TIMEOUT,
            ..
        })]
    ));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Client)),
        [(RequestId(0), ErrorCode::HEARTBEAT_TIMEOUT)]
    );
    // The server, which still heard the client's PINGs, gets the ERROR and closes.
    p.drive();
    assert!(matches!(
        p.events(Side::Server),
        [Event::Closed(CloseReason::PeerError {
            code: ErrorCode::HEARTBEAT_TIMEOUT,
            ..
        })]
    ));
}

use asp_proto::Instant;

#[test]
fn silent_peer_ends_invocations_lost() {
    let (mut p, ids) = with_invocations(
        hb(1000, HeartbeatMode::Frames),
        hb(1000, HeartbeatMode::Frames),
        2,
    );
    p.links[0].hold = true;
    p.links[1].hold = true;
    p.run_for(Duration::from_secs(3));
    let ev = p.take_events(Side::Client);
    let k = kinds(&ev);
    assert_eq!(k[..2], ["Ended(1,Lost)", "Ended(2,Lost)"]);
    assert_eq!(k.len(), 3);
    assert!(k[2].starts_with("Closed(ProtocolError"));
    assert_eq!(ids.len(), 2);
    // The server side (invocations it serves) just closes.
    assert!(kinds(p.events(Side::Server))[0].starts_with("Closed(ProtocolError"));
}

#[test]
fn transport_heartbeats() {
    let mut p = Pair::connected(
        hb(1000, HeartbeatMode::Transport),
        hb(1000, HeartbeatMode::Transport),
    );
    p.latency = Duration::from_millis(5);
    p.clear_wire();
    p.run_for(Duration::from_secs(20));
    assert!(p.pings[0] >= 10, "client pings: {}", p.pings[0]);
    assert!(p.pings[1] >= 10, "server pings: {}", p.pings[1]);
    // No PING frames: poll_ping asked the transport instead.
    assert!(
        p.wire(Side::Client).is_empty(),
        "{:?}",
        p.wire(Side::Client)
    );
    assert!(p.wire(Side::Server).is_empty());
    assert!(p.events(Side::Client).is_empty());
    assert!(p.events(Side::Server).is_empty());
    assert_eq!(p.client.state(), State::Open);
    // Pongs stop coming back to the client: it closes after 3 intervals.
    p.links[1].hold = true;
    p.run_for(Duration::from_secs(3));
    assert!(matches!(
        p.events(Side::Client),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::HEARTBEAT_TIMEOUT,
            ..
        })]
    ));
}

#[test]
fn transport_pong_keeps_alive() {
    let mut p = Pair::connected(hb(1000, HeartbeatMode::Transport), quiet_config());
    // Only the client heartbeats (session H = 1 s on both sides, but the server's config
    // decides the server's mode: Frames).
    p.links[0].hold = true;
    p.links[1].hold = true;
    for _ in 0..10 {
        p.run_for(Duration::from_millis(900));
        let now = p.now;
        p.client.handle_transport_pong(now);
        p.drain(Side::Client);
    }
    assert_eq!(p.client.state(), State::Open);
    assert!(p.events(Side::Client).is_empty());
}

// ───────────────────────── rate limiting (SPEC §10) ─────────────────────────

#[test]
fn rate_limit_warning_refusal_and_flood() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.rate_limit = 10;
        config.flood_limit = 20;
        config
    });
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.advance(Duration::from_secs(2)); // a fresh window
    p.clear_events();
    p.clear_wire();
    let mut msg = Vec::new();
    for _ in 0..11 {
        msg.extend_from_slice(&encode(&Frame::PING));
    }
    p.inject(Side::Server, Bytes::from(msg));
    let w = frame_kinds(&p.take_wire(Side::Server));
    let mut expect = vec!["PONG#0".to_string(); 10];
    expect.push("ERROR#0(RATE_LIMITED(0x29))".into());
    expect.push("PONG#0".into());
    assert_eq!(w, expect);
    // Frame 12 is an INVOKE: refused with RATE_LIMITED (retryable) for its id.
    p.inject_frame(Side::Server, &invoke_frame(5, "echo"));
    let w = p.take_wire(Side::Server);
    assert_eq!(frame_kinds(&w), ["ERROR#5(RATE_LIMITED(0x29))"]);
    assert!(matches!(&w[0], Frame::Error(e) if e.retryable));
    assert!(p.events(Side::Server).is_empty());
    // Frames 13–20 are still processed; 21 is FLOOD.
    for _ in 0..8 {
        p.inject_frame(Side::Server, &Frame::PING);
    }
    assert_eq!(frame_kinds(&p.take_wire(Side::Server)), vec!["PONG#0"; 8]);
    assert_eq!(p.server.state(), State::Open);
    p.inject_frame(Side::Server, &Frame::PING);
    assert_eq!(
        frame_kinds(&p.take_wire(Side::Server)),
        ["ERROR#0(FLOOD(0x05))"]
    );
    assert!(matches!(
        p.events(Side::Server),
        [Event::Closed(CloseReason::ProtocolError {
            code: ErrorCode::FLOOD,
            ..
        })]
    ));
    p.drive();
    let k = kinds(p.events(Side::Client));
    assert_eq!(k[0], "PeerError(0,RATE_LIMITED(0x29))");
    assert_eq!(k[1], "PeerError(5,RATE_LIMITED(0x29))");
    assert!(k[2].starts_with("Closed(PeerError"), "{k:?}");
}

#[test]
fn rate_window_resets_after_a_second() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.rate_limit = 3;
        config.flood_limit = 100;
        config
    });
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    p.advance(Duration::from_secs(2));
    p.clear_events();
    for _ in 0..3 {
        p.inject_frame(Side::Server, &Frame::PING);
    }
    p.inject_frame(Side::Server, &invoke_frame(1, "echo"));
    assert!(p.events(Side::Server).is_empty());
    p.advance(Duration::from_secs(1));
    p.inject_frame(Side::Server, &invoke_frame(2, "echo"));
    assert_eq!(kinds(p.events(Side::Server)), ["Invoked(2)"]);
}

#[test]
fn rate_limited_request_at_the_client() {
    let mut p = Pair::connected(
        {
            let mut config = quiet_config();
            config.rate_limit = 1;
            config.flood_limit = 100;
            config
        },
        quiet_config(),
    );
    p.advance(Duration::from_secs(2));
    p.inject_frame(Side::Client, &Frame::PING);
    p.inject_frame(
        Side::Client,
        &Frame::Request(Request {
            id: RequestId(0x8000),
            kind: "k".into(),
            body: None,
            invocation: None,
        }),
    );
    assert!(p.events(Side::Client).is_empty());
    let errs = errors_on_wire(&p.wire(Side::Client));
    assert_eq!(
        errs,
        [
            (RequestId(0), ErrorCode::RATE_LIMITED),
            (RequestId(0x8000), ErrorCode::RATE_LIMITED)
        ]
    );
}

// ───────────────────────── local bounds ─────────────────────────

#[test]
fn an_application_that_stops_polling_events_is_closed() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_pending_events = 8;
        config.check_tools = false;
        config
    });
    // Feed INVOKEs straight in, never polling the server's events.
    let mut msg = Vec::new();
    for id in 1..=20u16 {
        msg.extend_from_slice(&encode(&invoke_frame(id, "t")));
    }
    let now = p.now;
    p.server.handle_message(now, Bytes::from(msg));
    assert_closed_overloaded(&mut p);
}

fn invoke_with_args(id: u16, args_len: usize) -> Frame {
    let Frame::Invoke(mut i) = invoke_frame(id, "t") else {
        unreachable!()
    };
    i.args = Some(RawValue::string(&"a".repeat(args_len)));
    Frame::Invoke(i)
}

/// SPEC §13.1: the arguments of running invocations count against
/// `max_args_in_flight`; an INVOKE that would pass it is refused with
/// TOO_MANY_INFLIGHT (the connection goes on), and room returns as invocations end.
#[test]
fn arguments_of_running_invocations_are_bounded() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_args_in_flight = 10_000;
        config.check_tools = false;
        config
    });
    // Each INVOKE holds 1 ("t") + 3 003 (a 3 000-byte string) bytes: three fit, the
    // fourth would pass the bound.
    let mut msg = Vec::new();
    for id in 1..=4u16 {
        msg.extend_from_slice(&encode(&invoke_with_args(id, 3000)));
    }
    let now = p.now;
    p.server.handle_message(now, Bytes::from(msg));
    p.drain(Side::Server);
    let invoked: Vec<u16> = p
        .take_events(Side::Server)
        .iter()
        .filter_map(|e| match e {
            Event::Invoked(i) => Some(i.id.0),
            _ => None,
        })
        .collect();
    assert_eq!(invoked, [1, 2, 3]);
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(4), ErrorCode::TOO_MANY_INFLIGHT)]
    );
    assert_eq!(p.server.state(), State::Open);
    // One ends: room for another.
    p.server
        .complete(RequestId(1), Status::Ok, None, Metrics::default())
        .unwrap();
    let now = p.now;
    p.server
        .handle_message(now, encode(&invoke_with_args(4, 3000)));
    p.drain(Side::Server);
    assert!(p
        .take_events(Side::Server)
        .iter()
        .any(|e| matches!(e, Event::Invoked(i) if i.id.0 == 4)));
    assert_eq!(errors_on_wire(&p.wire(Side::Server)).len(), 1);
}

/// SPEC §13.1: one opening frame is always taken by a connection with nothing running,
/// whatever its size (it is bounded by `max_frame_payload`).
#[test]
fn one_invocation_is_taken_whatever_its_arguments() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_args_in_flight = 100;
        config.check_tools = false;
        config
    });
    let now = p.now;
    p.server
        .handle_message(now, encode(&invoke_with_args(1, 5000)));
    p.server
        .handle_message(now, encode(&invoke_with_args(2, 10)));
    p.drain(Side::Server);
    assert!(p
        .events(Side::Server)
        .iter()
        .any(|e| matches!(e, Event::Invoked(i) if i.id.0 == 1)));
    assert_eq!(
        errors_on_wire(&p.wire(Side::Server)),
        [(RequestId(2), ErrorCode::TOO_MANY_INFLIGHT)]
    );
}

/// SPEC §13.1: a small INVOKE decoded from a large message gets its own copy of its
/// fields, so its handler holds what is counted for it, not the whole message.
#[test]
fn a_running_invocation_does_not_pin_its_whole_message() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.check_tools = false;
        config
    });
    let mut msg = Vec::new();
    msg.extend_from_slice(&encode(&invoke_with_args(1, 20)));
    msg.extend_from_slice(&encode(&invoke_with_args(2, 60_000)));
    let msg = Bytes::from(msg);
    let range = msg.as_ptr() as usize..msg.as_ptr() as usize + msg.len();
    let now = p.now;
    p.server.handle_message(now, msg);
    p.drain(Side::Server);
    let mut args = Vec::new();
    for e in p.take_events(Side::Server) {
        if let Event::Invoked(i) = e {
            args.push((i.id.0, i.args.expect("args").into_bytes()));
        }
    }
    assert_eq!(args.len(), 2);
    let inside = |b: &Bytes| range.contains(&(b.as_ptr() as usize));
    assert!(
        !inside(&args[0].1),
        "the small INVOKE's args still point into the message"
    );
    assert!(
        inside(&args[1].1),
        "the large INVOKE's args were copied for nothing"
    );
}

#[test]
fn a_peer_that_stops_reading_is_closed_not_buffered_forever() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_queued_bytes = 1000;
        config.max_buffered = 4000;
        config
    });
    // Each INVOKE of an unknown tool provokes an ERROR; the server's transmit queue is
    // never drained.
    let now = p.now;
    for id in 1..=200u16 {
        // SPEC §13.1: the server stops reading at `max_queued_bytes`; this peer writes on
        // regardless (the adapter would have stopped reading it).
        if !p.server.wants_input() {
            assert!(p.server.queued_bytes() >= 1000);
        }
        p.server
            .handle_message(now, encode(&invoke_frame(id, "nope")));
        assert!(
            // The bound, one reply past it and the OVERLOADED ERROR.
            p.server.queued_bytes() <= 4000 + 300,
            "{}",
            p.server.queued_bytes()
        );
        if p.server.is_closed() {
            break;
        }
    }
    assert!(p.server.is_closed());
    assert_closed_overloaded(&mut p);
}

#[test]
fn a_server_stops_reading_while_its_queue_is_full_and_reads_again_once_drained() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_queued_bytes = 1000;
        config.max_buffered = 100_000;
        config
    });
    let now = p.now;
    let mut id = 1;
    while p.server.wants_input() {
        p.server
            .handle_message(now, encode(&invoke_frame(id, "nope")));
        id += 1;
        assert!(id < 200, "never paused");
    }
    assert!(!p.server.is_closed());
    // The client is always read: only one side may pause (SPEC §13.1).
    assert!(p.client.wants_input());
    let mut buf = bytes::BytesMut::new();
    while p.server.poll_transmit(&mut buf) > 0 {}
    assert!(p.server.wants_input());
}

#[test]
fn answers_queued_for_a_peer_that_does_not_read_end_the_connection_with_overloaded() {
    let mut p = Pair::connected(quiet_config(), {
        let mut config = quiet_config();
        config.max_queued_bytes = 1000;
        config.max_buffered = 4000;
        config.check_tools = false;
        config
    });
    let now = p.now;
    for id in 1..=8u16 {
        p.server.handle_message(now, encode(&invoke_frame(id, "t")));
    }
    p.drain(Side::Server);
    let blob = vec![b'x'; 900];
    let mut closed_at = None;
    for id in 1..=8u16 {
        let mut v = Vec::new();
        rmp::encode::write_bin(&mut v, &blob).unwrap();
        let r = p.server.complete(
            RequestId(id),
            Status::Ok,
            Some(RawValue::new(Bytes::from(v)).unwrap()),
            Default::default(),
        );
        if p.server.is_closed() {
            closed_at = Some(id);
            break;
        }
        r.unwrap();
    }
    // 900-byte results: the fifth takes the queue past 4000 bytes.
    assert_eq!(closed_at, Some(5));
    // The backlog is dropped: only the ERROR is left to send (SPEC §13.1).
    assert!(p.server.queued_bytes() < 200, "{}", p.server.queued_bytes());
    p.drain(Side::Server);
    let errs = errors_on_wire(&p.wire(Side::Server));
    assert_eq!(errs.last(), Some(&(RequestId(0), ErrorCode::OVERLOADED)));
}
