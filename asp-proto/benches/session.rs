//! Connection benchmarks: the core's own cost per STREAM chunk, without sockets.
//!
//! `session/stream_10k_x_32B`: a server `Connection` streams 10 000 chunks of 32 bytes to a
//! client `Connection` in memory: `stream` on the server, `poll_transmit` into messages of
//! up to 64 KiB, `handle_message` on the client, `poll_event` for every chunk, and the
//! client's CREDIT back to the server — everything both sides of the adapter benchmark
//! `stream/*` (asp-tokio) ask of the core, so the adapter's overhead over this is its own.
//! Run: `cargo bench -p asp-proto --bench session`.

use std::hint::black_box;
use std::time::Duration;

use asp_proto::{
    Config, Connection, Event, Instant, InvokeOptions, RawValue, RequestId, SendError,
    ServerParams, StreamOptions,
};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CHUNKS: usize = 10_000;
const CHUNK: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn config() -> Config {
    let mut config = Config::default();
    config.heartbeat = None;
    config.agent = None;
    config
}

/// Moves every queued message from `from` to `to`.
fn carry(from: &mut Connection, to: &mut Connection, buf: &mut BytesMut, now: Instant) {
    while from.poll_transmit(buf) > 0 {
        to.handle_message(now, buf.split().freeze());
    }
}

fn connected() -> (Connection, Connection) {
    let now = Instant::ZERO;
    let mut c = Connection::client(config(), now);
    let mut s = Connection::server(config(), ServerParams::new("bench"), now);
    s.add_tool(asp_proto::frame::ToolDef {
        op: asp_proto::frame::ToolOp::Add,
        name: "stream".into(),
        description: "".into(),
        input_schema: None,
        annotations: None,
    })
    .expect("add tool");
    let mut buf = BytesMut::new();
    for _ in 0..3 {
        carry(&mut c, &mut s, &mut buf, now);
        carry(&mut s, &mut c, &mut buf, now);
    }
    while c.poll_event().is_some() {}
    while s.poll_event().is_some() {}
    (c, s)
}

/// One invocation of CHUNKS chunks, start to COMPLETE.
fn stream_once(c: &mut Connection, s: &mut Connection, buf: &mut BytesMut) {
    let now = Instant::ZERO;
    let id = c
        .invoke("stream", Some(RawValue::nil()), InvokeOptions::default())
        .expect("invoke");
    carry(c, s, buf, now);
    while s.poll_event().is_some() {}
    let chunk = Bytes::from_static(CHUNK);
    let (mut sent, mut got) = (0, 0);
    while got < CHUNKS {
        while sent < CHUNKS {
            match s.stream(id, chunk.clone(), StreamOptions::BINARY) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => break,
                Err(e) => panic!("stream: {e:?}"),
            }
        }
        carry(s, c, buf, now);
        while let Some(ev) = c.poll_event() {
            if let Event::Chunk(x) = ev {
                got += 1;
                black_box(x);
            }
        }
        carry(c, s, buf, now);
        while s.poll_event().is_some() {}
    }
    s.complete(id, asp_proto::frame::Status::Ok, None, Default::default())
        .expect("complete");
    carry(s, c, buf, now);
    while c.poll_event().is_some() {}
    assert_eq!(got, CHUNKS);
    let _: RequestId = id;
}

fn stream(c: &mut Criterion) {
    let (mut client, mut server) = connected();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut g = c.benchmark_group("session");
    g.throughput(Throughput::Elements(CHUNKS as u64));
    g.bench_function("stream_10k_x_32B", |b| {
        b.iter(|| stream_once(&mut client, &mut server, &mut buf))
    });
    g.finish();
}

fn config_c() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config_c();
    targets = stream
}
criterion_main!(benches);
