//! Session snapshots (SPEC §11.4): a session resumed by another process from stored bytes,
//! as a relay cluster node does (§15.6), keeps the §11 rules exactly: every frame the client
//! missed is replayed once, none twice, and output a stored snapshot does not cover never
//! reaches the client.

mod pair;

use std::time::Duration;

use asp_proto::frame::{Metrics, Status};
use asp_proto::{
    Config, Connection, ErrorCode, Event, InvocationOutcome, ServerParams, SnapshotError, State,
    StreamOptions,
};
use bytes::Bytes;
use pair::*;

const TOKEN: [u8; 16] = [9; 16];

fn resume_cfg() -> Config {
    let mut config = quiet_config();
    config.resume = true;
    config
}

fn params() -> ServerParams {
    ServerParams::new("conn-s").resume_token(Bytes::from_static(&TOKEN))
}

/// A connected resumable pair whose server holds output until a snapshot is stored, with
/// the tool `echo`. Returns the pair and the last stored snapshot.
fn held_pair() -> (Pair, Bytes) {
    let mut p = Pair::new(resume_cfg(), resume_cfg(), params());
    p.server.hold_until_persisted();
    p.server.add_tool(tool("echo")).unwrap();
    // The server's HELLO waits for the first stored snapshot.
    p.drive();
    assert!(p.server.wants_snapshot());
    assert!(!matches!(
        p.events(Side::Client).last(),
        Some(Event::Connected(_))
    ));
    let stored = persist(&mut p);
    p.drive();
    assert!(matches!(p.events(Side::Client).last(), Some(Event::Connected(s)) if s.resumable));
    p.clear_events();
    p.clear_wire();
    (p, stored)
}

/// Takes a snapshot and reports it stored (what a relay does after writing it to Redis).
fn persist(p: &mut Pair) -> Bytes {
    let s = p.server.snapshot().unwrap();
    p.server.handle_persisted(s.mark);
    s.bytes
}

/// The process holding the session dies; the client reconnects elsewhere and sends RESUME;
/// the new process restores `stored` and accepts. Returns the client's `received`.
fn resume_elsewhere(p: &mut Pair, stored: &Bytes) -> u64 {
    p.drop_link();
    p.clear_events();
    let now = p.now;
    // The new process's connection that reads the RESUME.
    let _dead = p.reconnect(Connection::server(
        resume_cfg(),
        ServerParams::new("other").resume_token(Bytes::from_static(&[1; 16])),
        now,
    ));
    p.client.resume(now).unwrap();
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::ResumeRequested { token, received }] = &ev[..] else {
        panic!("new server: {ev:?}")
    };
    assert_eq!(&token[..], &TOKEN);
    let received = *received;
    let mut restored = Connection::restore(resume_cfg(), stored, now).unwrap();
    assert_eq!(restored.state(), State::Detached);
    assert_eq!(restored.resume_token().map(|t| &t[..]), Some(&TOKEN[..]));
    restored.accept_resume(now, received).unwrap();
    p.swap_server(restored);
    received
}

fn chunks(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Chunk(s) => Some(String::from_utf8_lossy(&s.data).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn held_output_waits_for_a_stored_snapshot() {
    let (mut p, _) = held_pair();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    p.server
        .stream(id, Bytes::from_static(b"one"), StreamOptions::TEXT)
        .unwrap();
    p.drive();
    assert!(chunks(p.events(Side::Client)).is_empty(), "not stored yet");
    assert!(p.server.wants_snapshot());
    assert!(!p.server.wants_transmit());
    persist(&mut p);
    assert!(!p.server.wants_snapshot());
    p.drive();
    assert_eq!(chunks(p.events(Side::Client)), ["one"]);
}

#[test]
fn resumed_elsewhere_replays_what_the_client_missed_once() {
    let (mut p, _) = held_pair();
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    p.server
        .stream(id, Bytes::from_static(b"seen"), StreamOptions::TEXT)
        .unwrap();
    persist(&mut p);
    p.drive();
    assert_eq!(chunks(p.events(Side::Client)), ["seen"]);
    // Stored but never delivered (the link is cut before the bytes move), then one more
    // chunk that no stored snapshot covers: it dies with the process.
    p.server
        .stream(id, Bytes::from_static(b"stored"), StreamOptions::TEXT)
        .unwrap();
    p.server.add_tool(tool("late")).unwrap();
    let stored = persist(&mut p);
    p.server
        .stream(id, Bytes::from_static(b"lost"), StreamOptions::TEXT)
        .unwrap();
    p.flush();
    p.clear_events();

    resume_elsewhere(&mut p, &stored);
    assert_eq!(p.server.session().unwrap().connection_id, "conn-s");
    assert_eq!(
        p.server.in_flight_ids().collect::<Vec<_>>(),
        [id],
        "the invocation is still in flight in the restored session"
    );
    // SPEC §15.6: the new process cannot continue the handler; it ends the invocation.
    p.server
        .fail(id, ErrorCode::UNAVAILABLE, "node lost", true)
        .unwrap();
    p.drive();
    let ev = p.take_events(Side::Client);
    assert_eq!(kinds(&ev)[0], "Resumed");
    assert_eq!(
        chunks(&ev),
        ["stored"],
        "replayed once; never the unstored one"
    );
    assert!(kinds(&ev).iter().any(|k| k.starts_with("ToolsChanged")));
    let outcomes = ended(&ev);
    let [(eid, InvocationOutcome::Error(e))] = &outcomes[..] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(
        (*eid, e.code, e.retryable),
        (id, ErrorCode::UNAVAILABLE, true)
    );
    assert_eq!(p.client.session().unwrap().connection_id, "conn-s");
    // The session goes on: a new invocation on the new process.
    let id2 = p.client.invoke("late", None, Default::default()).unwrap();
    p.drive();
    assert!(kinds(&p.take_events(Side::Server)).contains(&format!("Invoked({})", id2.0)));
    p.server
        .complete(id2, Status::Ok, None, Metrics::default())
        .unwrap();
    p.drive();
    assert_eq!(ended(&p.take_events(Side::Client)).len(), 1);
}

#[test]
fn frames_the_dead_process_received_after_its_snapshot_are_sent_again() {
    let (mut p, stored) = held_pair();
    // The INVOKE reaches the first process, which dies before storing anything newer (it
    // acknowledged nothing: its output, PONG included, was held).
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    assert!(kinds(&p.take_events(Side::Server)).contains(&format!("Invoked({})", id.0)));
    resume_elsewhere(&mut p, &stored);
    p.drive();
    assert_eq!(
        kinds(&p.take_events(Side::Server)),
        ["Resumed", &format!("Invoked({})", id.0)],
        "the client re-sent its INVOKE to the new process"
    );
}

#[test]
fn a_client_ahead_of_the_snapshot_is_refused() {
    let mut p = Pair::new(resume_cfg(), resume_cfg(), params());
    p.server.add_tool(tool("echo")).unwrap();
    p.drive();
    // Not holding output: the snapshot is older than what the client received.
    let stale = p.server.snapshot().unwrap().bytes;
    let id = p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    p.server
        .stream(id, Bytes::from_static(b"x"), StreamOptions::TEXT)
        .unwrap();
    p.drive();
    p.drop_link();
    p.clear_events();
    let now = p.now;
    let _ = p.reconnect(Connection::server(resume_cfg(), params(), now));
    p.client.resume(now).unwrap();
    p.drive();
    let ev = p.take_events(Side::Server);
    let [Event::ResumeRequested { received, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    let mut restored = Connection::restore(resume_cfg(), &stale, now).unwrap();
    assert_eq!(*received, 2, "TOOL_DEF and STREAM");
    assert!(restored.accept_resume(now, *received).is_err());
}

#[test]
fn a_detached_session_snapshots_and_restores_its_timers() {
    let (mut p, _) = held_pair();
    p.client.invoke("echo", None, Default::default()).unwrap();
    p.drive();
    let now = p.now;
    p.server.goaway(now, None, Duration::from_secs(10));
    p.drop_link();
    assert_eq!(p.server.state(), State::Detached);
    let s = p.server.snapshot().unwrap();
    let later = now + Duration::from_secs(3);
    let c = Connection::restore(resume_cfg(), &s.bytes, later).unwrap();
    assert_eq!(c.state(), State::Detached);
    // Resume window (30 s by default) from the restore.
    assert_eq!(c.poll_timeout(), Some(later + Duration::from_secs(10)));
}

#[test]
fn refuses_what_is_not_a_snapshot() {
    let (p, stored) = held_pair();
    assert!(matches!(
        Connection::restore(quiet_config(), &stored, p.now),
        Err(SnapshotError::NotResumable)
    ));
    for n in 0..stored.len() {
        assert!(
            Connection::restore(resume_cfg(), &stored[..n], p.now).is_err(),
            "truncated at {n}"
        );
    }
    let mut flipped = stored.to_vec();
    for i in 0..flipped.len() {
        flipped[i] ^= 0xff;
        // Never panics; may or may not decode.
        let _ = Connection::restore(resume_cfg(), &flipped, p.now);
        flipped[i] ^= 0xff;
    }
    let client = Connection::client(resume_cfg(), p.now);
    assert_eq!(client.snapshot(), Err(SnapshotError::NotResumable));
}
