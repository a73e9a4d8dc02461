//! Core behaviour the adapters' resume support depends on (found while building it).

use asp_proto::{Config, Connection, Instant, ServerParams, State};
use bytes::{Bytes, BytesMut};

/// Shuttles bytes both ways until both sides are quiet.
fn shuttle(client: &mut Connection, server: &mut Connection, now: Instant) {
    let mut buf = BytesMut::new();
    for _ in 0..8 {
        while client.poll_transmit(&mut buf) > 0 {
            server.handle_message(now, buf.split().freeze());
        }
        while server.poll_transmit(&mut buf) > 0 {
            client.handle_message(now, buf.split().freeze());
        }
    }
    while client.poll_event().is_some() {}
    while server.poll_event().is_some() {}
}

/// `wants_transmit` should mean "`poll_transmit` has something for you". A resuming client
/// holds every frame but its RESUME until the server answers (SPEC §11.2), yet
/// `wants_transmit` reports the held frames, so an adapter that wakes its writer on it
/// spins until the answer comes (asp-async works around it in `Shared::pump`).
#[test]
fn resuming_client_wants_transmit_only_when_it_can() {
    let now = Instant::ZERO;
    let mut cfg = Config::default();
    cfg.resume = true;
    let mut client = Connection::client(cfg.clone(), now);
    let mut server = Connection::server(
        cfg,
        ServerParams::new("c").resume_token(Bytes::from_static(&[1; 16])),
        now,
    );
    shuttle(&mut client, &mut server, now);
    assert_eq!(client.state(), State::Open);
    client.handle_transport_closed(now);
    assert_eq!(client.state(), State::Detached);
    // Invoked while detached: queued for after the resume.
    client.invoke("echo", None, Default::default()).unwrap();
    client.resume(now).unwrap();
    let mut buf = BytesMut::new();
    assert!(client.poll_transmit(&mut buf) > 0, "the RESUME");
    assert_eq!(client.state(), State::Resuming);
    assert_eq!(client.poll_transmit(&mut buf.split()), 0, "INVOKE held");
    assert!(
        !client.wants_transmit(),
        "wants_transmit while poll_transmit has nothing to give"
    );
}
