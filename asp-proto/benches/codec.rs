//! Codec benchmarks: `encode/<TYPE>` and `decode/<TYPE>` for one representative frame of
//! every type, `invoke_roundtrip` (encode + decode), and `stream_throughput` (10 000
//! back-to-back 32-byte STREAM frames through a `Decoder`).
//!
//! Targets (issue "Workspace, SPEC.md and the frame codec"): INVOKE encode + decode
//! ≤ 100 ns, STREAM decode ≤ 30 ns. Run: `cargo bench -p asp-proto` (about a minute).

use std::hint::black_box;
use std::time::Duration;

use asp_proto::codec::{self, decode_frame};
use asp_proto::frame::{
    Complete, Credit, ErrorFrame, GoAway, Hello, HelloLimits, Interrupt, Invoke, Metrics, Reply,
    ReplyStatus, Request, Resume, Status, Stream, ToolDef, ToolOp, Versions,
};
use asp_proto::{Decoder, ErrorCode, Frame, FrameType, RawValue, RequestId, Text};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const MAX: u32 = 1 << 20;

/// `{"query": "rust sans-io", "limit": 10}`
fn args() -> RawValue {
    let mut v = vec![0x82, 0xa5];
    v.extend_from_slice(b"query");
    v.push(0xac);
    v.extend_from_slice(b"rust sans-io");
    v.push(0xa5);
    v.extend_from_slice(b"limit");
    v.push(0x0a);
    RawValue::new(Bytes::from(v)).expect("valid")
}

/// `{"type": "object", "required": ["query"]}`
fn schema() -> RawValue {
    let mut v = vec![0x82, 0xa4];
    v.extend_from_slice(b"type");
    v.push(0xa6);
    v.extend_from_slice(b"object");
    v.push(0xa8);
    v.extend_from_slice(b"required");
    v.extend_from_slice(&[0x91, 0xa5]);
    v.extend_from_slice(b"query");
    RawValue::new(Bytes::from(v)).expect("valid")
}

fn stream_frame(seq: u32) -> Frame {
    Frame::Stream(Stream {
        id: RequestId(1),
        data: Bytes::from_static(b"The quick brown fox jumps over t"), // 32 bytes
        text: true,
        seq,
        fin: false,
    })
}

fn invoke_frame() -> Frame {
    Frame::Invoke(Invoke {
        id: RequestId(1),
        tool: Text::from_static("web_search"),
        args: Some(args()),
        deadline_ms: 30_000,
        meta: None,
    })
}

/// One representative frame per type.
fn representative(ty: FrameType) -> Frame {
    match ty {
        FrameType::Hello => Frame::Hello(Hello {
            versions: Versions::V1,
            capabilities: vec![Text::from_static("requests"), Text::from_static("resume")],
            limits: HelloLimits {
                max_frame_payload: Some(1 << 20),
                initial_window: Some(256 << 10),
                ..HelloLimits::default()
            },
            heartbeat_ms: Some(30_000),
            connection_id: None,
            resume_token: None,
            tools: 0,
            agent: Some(Text::from_static("asp-bench/0.1")),
        }),
        FrameType::Invoke => invoke_frame(),
        FrameType::Stream => stream_frame(42),
        FrameType::Interrupt => Frame::Interrupt(Interrupt {
            id: RequestId(1),
            reason: Some(Text::from_static("user pressed stop")),
        }),
        FrameType::ToolDef => Frame::ToolDef(ToolDef {
            op: ToolOp::Add,
            name: Text::from_static("web_search"),
            description: Text::from_static("Searches the web and returns the top results."),
            input_schema: Some(schema()),
            annotations: None,
        }),
        FrameType::Complete => Frame::Complete(Complete {
            id: RequestId(1),
            status: Status::Ok,
            result: Some(RawValue::string("3 results")),
            metrics: Metrics {
                wall_us: Some(1_250_000),
                output_tokens: Some(512),
                ..Metrics::default()
            },
        }),
        FrameType::Error => Frame::Error(ErrorFrame {
            id: RequestId(1),
            code: ErrorCode::INVALID_FIELD,
            message: Some(Text::from_static("invalid field `tool`: TooLong")),
            retryable: false,
            frame_type: Some(FrameType::Invoke as u8),
        }),
        FrameType::Ping => Frame::PING,
        FrameType::Pong => Frame::PONG,
        FrameType::Request => Frame::Request(Request {
            id: RequestId(0x8001),
            kind: Text::from_static("confirm"),
            body: Some(RawValue::string("Delete 3 files?")),
            invocation: Some(RequestId(1)),
        }),
        FrameType::Reply => Frame::Reply(Reply {
            id: RequestId(0x8001),
            status: ReplyStatus::Answered,
            body: Some(RawValue::new(Bytes::from_static(&[0xc3])).expect("true")),
        }),
        FrameType::Credit => Frame::Credit(Credit {
            id: RequestId(1),
            bytes: 128 << 10,
        }),
        FrameType::GoAway => Frame::GoAway(GoAway {
            reason: Some(Text::from_static("shutting down")),
            timeout_ms: 30_000,
        }),
        FrameType::Resume => Frame::Resume(Resume {
            token: Some(Bytes::from_static(&[0x5a; 32])),
            received: 1234,
        }),
    }
}

/// A `Bytes` as a reader produces it (split off a `BytesMut`: already shared, so cloning
/// and slicing never allocate).
fn wire(frames: &[Frame]) -> Bytes {
    let mut b = BytesMut::new();
    for f in frames {
        codec::encode(f, &mut b);
    }
    b.split().freeze()
}

/// Keeps the optimiser from discarding a decoded frame, without copying it: `black_box` of
/// the 168-byte value itself (or returning it from the `iter` closure, which criterion
/// black-boxes) would add a `memcpy` per frame that the codec does not do.
#[inline(always)]
fn consume(r: Option<Result<Frame, asp_proto::DecodeError>>) {
    black_box(&r);
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for ty in FrameType::ALL {
        let f = representative(ty);
        let mut buf = BytesMut::with_capacity(1024);
        g.bench_function(ty.name(), |b| {
            b.iter(|| {
                buf.clear();
                codec::encode(black_box(&f), &mut buf);
                black_box(&buf);
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for ty in FrameType::ALL {
        let bytes = wire(&[representative(ty)]);
        // The input `Bytes` is cloned in the (untimed) setup: obtaining the input is not
        // decoding. Dropping the decoded frame is timed.
        g.bench_function(ty.name(), |b| {
            b.iter_batched(
                || bytes.clone(),
                |mut m| consume(decode_frame(&mut m, MAX)),
                BatchSize::SmallInput,
            )
        });
    }
    // Binary STREAM data (no UTF-8 check) for comparison with the text frame above.
    let mut bin = stream_frame(42);
    if let Frame::Stream(s) = &mut bin {
        s.text = false;
    }
    let bytes = wire(&[bin]);
    g.bench_function("STREAM_BIN", |b| {
        b.iter_batched(
            || bytes.clone(),
            |mut m| consume(decode_frame(&mut m, MAX)),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // For reference: cloning and dropping a `Bytes` (one atomic increment and decrement),
    // which the decode benches keep out of the timing.
    let mut g = c.benchmark_group("baseline");
    let bytes = wire(&[stream_frame(42)]);
    g.bench_function("bytes_clone_drop", |b| {
        b.iter(|| {
            let m = black_box(&bytes).clone();
            black_box(&m);
        })
    });
    g.finish();
}

fn invoke_roundtrip(c: &mut Criterion) {
    let f = invoke_frame();
    let mut buf = BytesMut::with_capacity(4096);
    c.bench_function("invoke_roundtrip", |b| {
        b.iter(|| {
            buf.clear();
            codec::encode(black_box(&f), &mut buf);
            // Hand the encoded frame over as `Bytes` without copying; once the decoded
            // frame is dropped, `buf` reclaims the storage.
            let mut m = buf.split().freeze();
            consume(decode_frame(&mut m, MAX));
        })
    });
}

fn stream_throughput(c: &mut Criterion) {
    const N: u32 = 10_000;
    let frames: Vec<Frame> = (0..N).map(stream_frame).collect();
    let bytes = wire(&frames);
    let mut g = c.benchmark_group("stream_throughput");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("decoder_10k_x_32B", |b| {
        b.iter(|| {
            let mut dec = Decoder::new(MAX);
            dec.feed(bytes.clone());
            let mut n = 0u32;
            while let Some(r) = dec.next_frame() {
                consume(Some(r));
                n += 1;
            }
            assert_eq!(n, N);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encode, decode, invoke_roundtrip, stream_throughput
}
criterion_main!(benches);
