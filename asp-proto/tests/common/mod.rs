//! Shared test support for the `asp-proto` integration tests: proptest strategies producing
//! valid frames of every type (SPEC §5), arbitrary MessagePack values, and a tiny
//! MessagePack/header builder that is independent of the crate's own writer.
//!
//! Use from a test file with `mod common;`.
#![allow(dead_code)] // each test binary uses a different subset

use asp_proto::codec;
use asp_proto::frame::{
    Complete, Credit, ErrorFrame, GoAway, Heartbeat, Hello, HelloLimits, Interrupt, Invoke,
    Metrics, Reply, ReplyStatus, Request, Resume, Status, Stream, ToolDef, ToolOp, Versions,
};
use asp_proto::{ErrorCode, Frame, RawValue, RequestId, Text};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

// ───────────────────────────── independent MessagePack builder ─────────────────────────────

/// A minimal MessagePack writer for hand-built payloads. It deliberately does not use the
/// crate's writer, and lets tests choose non-canonical encodings.
#[derive(Default, Clone, Debug)]
pub struct Mp(pub Vec<u8>);

impl Mp {
    pub fn new() -> Mp {
        Mp(Vec::new())
    }
    /// Raw bytes, verbatim.
    pub fn raw(mut self, b: &[u8]) -> Mp {
        self.0.extend_from_slice(b);
        self
    }
    /// Shortest map header.
    pub fn map(self, n: u32) -> Mp {
        if n < 16 {
            self.raw(&[0x80 | n as u8])
        } else if n <= 0xffff {
            self.raw(&[0xde]).raw(&(n as u16).to_be_bytes())
        } else {
            self.raw(&[0xdf]).raw(&n.to_be_bytes())
        }
    }
    /// Shortest array header.
    pub fn array(self, n: u32) -> Mp {
        if n < 16 {
            self.raw(&[0x90 | n as u8])
        } else if n <= 0xffff {
            self.raw(&[0xdc]).raw(&(n as u16).to_be_bytes())
        } else {
            self.raw(&[0xdd]).raw(&n.to_be_bytes())
        }
    }
    /// Shortest unsigned integer.
    pub fn uint(self, v: u64) -> Mp {
        if v < 128 {
            self.raw(&[v as u8])
        } else if v <= 0xff {
            self.raw(&[0xcc, v as u8])
        } else if v <= 0xffff {
            self.raw(&[0xcd]).raw(&(v as u16).to_be_bytes())
        } else if v <= 0xffff_ffff {
            self.raw(&[0xce]).raw(&(v as u32).to_be_bytes())
        } else {
            self.raw(&[0xcf]).raw(&v.to_be_bytes())
        }
    }
    /// Shortest signed integer (negative values use the int family).
    pub fn int(self, v: i64) -> Mp {
        if v >= 0 {
            self.uint(v as u64)
        } else if v >= -32 {
            self.raw(&[v as i8 as u8])
        } else if v >= i64::from(i8::MIN) {
            self.raw(&[0xd0, v as i8 as u8])
        } else if v >= i64::from(i16::MIN) {
            self.raw(&[0xd1]).raw(&(v as i16).to_be_bytes())
        } else if v >= i64::from(i32::MIN) {
            self.raw(&[0xd2]).raw(&(v as i32).to_be_bytes())
        } else {
            self.raw(&[0xd3]).raw(&v.to_be_bytes())
        }
    }
    pub fn nil(self) -> Mp {
        self.raw(&[0xc0])
    }
    pub fn bool(self, b: bool) -> Mp {
        self.raw(&[if b { 0xc3 } else { 0xc2 }])
    }
    /// Shortest `str` header, then the bytes (which need not be UTF-8).
    pub fn str_bytes(self, s: &[u8]) -> Mp {
        let n = s.len();
        let m = if n < 32 {
            self.raw(&[0xa0 | n as u8])
        } else if n <= 0xff {
            self.raw(&[0xd9, n as u8])
        } else if n <= 0xffff {
            self.raw(&[0xda]).raw(&(n as u16).to_be_bytes())
        } else {
            self.raw(&[0xdb]).raw(&(n as u32).to_be_bytes())
        };
        m.raw(s)
    }
    pub fn str(self, s: &str) -> Mp {
        self.str_bytes(s.as_bytes())
    }
    /// Shortest `bin`.
    pub fn bin(self, b: &[u8]) -> Mp {
        let n = b.len();
        let m = if n <= 0xff {
            self.raw(&[0xc4, n as u8])
        } else if n <= 0xffff {
            self.raw(&[0xc5]).raw(&(n as u16).to_be_bytes())
        } else {
            self.raw(&[0xc6]).raw(&(n as u32).to_be_bytes())
        };
        m.raw(b)
    }
    pub fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

/// An 8-byte header from its raw parts (SPEC §3.1).
pub fn header(version: u8, ty: u8, flags: u8, id: u16, len: u32) -> [u8; 8] {
    let i = id.to_be_bytes();
    let l = len.to_be_bytes();
    [
        (version << 4) | (ty & 0x0f),
        flags,
        i[0],
        i[1],
        l[0],
        l[1],
        l[2],
        l[3],
    ]
}

/// A version-1 frame with no flags and the given payload.
pub fn raw_frame(ty: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    raw_frame_full(1, ty, 0, id, payload)
}

/// A frame from every raw header part; the length is the payload's.
pub fn raw_frame_full(version: u8, ty: u8, flags: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = header(version, ty, flags, id, payload.len() as u32).to_vec();
    v.extend_from_slice(payload);
    v
}

/// Encodes one frame into a fresh buffer.
pub fn encode_one(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(f, &mut b);
    b.freeze()
}

/// Encodes frames back to back.
pub fn encode_all(frames: &[Frame]) -> Bytes {
    let mut b = BytesMut::new();
    for f in frames {
        codec::encode(f, &mut b);
    }
    b.freeze()
}

// ───────────────────────────── strategies: scalars ─────────────────────────────

/// A UTF-8 string of `min..=max` **bytes**: mostly arbitrary (multi-byte) characters, with
/// the exact boundaries `min` and `max` (built from 2-byte characters where possible, so
/// the limit is checked in bytes, not characters) mixed in.
pub fn utf8(min: usize, max: usize) -> BoxedStrategy<String> {
    assert!(min <= max);
    let cap = max.min(40);
    let general = vec(any::<char>(), 0..=cap).prop_map(move |cs| {
        let mut s = String::new();
        for c in cs {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        while s.len() < min {
            s.push('a');
        }
        s
    });
    let exact = |n: usize| {
        let mut s = "é".repeat(n / 2);
        if n % 2 == 1 {
            s.push('z');
        }
        s
    };
    let (lo, hi) = (exact(min), exact(max));
    prop_oneof![
        8 => general,
        1 => Just(lo),
        1 => Just(hi),
    ]
    .boxed()
}

pub fn text(min: usize, max: usize) -> BoxedStrategy<Text> {
    utf8(min, max).prop_map(Text::from).boxed()
}

/// Binary data of `min..=max` bytes (max length mixed in).
pub fn bin(min: usize, max: usize) -> BoxedStrategy<Bytes> {
    let cap = max.min(300);
    prop_oneof![
        8 => vec(any::<u8>(), min..=cap.max(min)),
        1 => vec(any::<u8>(), max..=max),
    ]
    .prop_map(Bytes::from)
    .boxed()
}

pub fn client_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![Just(1u16), Just(0x7fff), 1u16..=0x7fff].prop_map(RequestId)
}

pub fn server_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![Just(0x8000u16), Just(0xffff), 0x8000u16..=0xffff].prop_map(RequestId)
}

pub fn nonzero_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![client_id(), server_id()]
}

pub fn any_id() -> impl Strategy<Value = RequestId> {
    prop_oneof![1 => Just(RequestId(0)), 4 => nonzero_id()]
}

/// A `u32` biased towards the encoding boundaries.
pub fn u32_in(lo: u32, hi: u32) -> BoxedStrategy<u32> {
    let mut edges = vec![lo, hi];
    for e in [127u32, 128, 255, 256, 65_535, 65_536] {
        if (lo..=hi).contains(&e) {
            edges.push(e);
        }
    }
    prop_oneof![3 => lo..=hi, 1 => proptest::sample::select(edges)].boxed()
}

/// A `u64` biased towards the encoding boundaries.
pub fn u64_any() -> BoxedStrategy<u64> {
    prop_oneof![
        3 => any::<u64>(),
        2 => 0u64..300,
        1 => proptest::sample::select(vec![
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ]),
    ]
    .boxed()
}

// ───────────────────────────── strategies: MessagePack values ─────────────────────────────

/// Raw bytes of one well-formed MessagePack value (any type, nested up to a few levels,
/// with canonical and non-canonical headers, ext types, floats and even non-UTF-8 `str`
/// contents, which `any` fields carry opaquely — SPEC §4.2). `allow_nil_top`: whether the
/// value itself may be `nil`.
pub fn msgpack_value(allow_nil_top: bool) -> BoxedStrategy<Vec<u8>> {
    let leaf = prop_oneof![
        u64_any().prop_map(|v| Mp::new().uint(v).0),
        any::<i64>().prop_map(|v| Mp::new().int(v).0),
        any::<bool>().prop_map(|b| Mp::new().bool(b).0),
        Just(vec![0xc0]),
        any::<f32>().prop_map(|f| Mp::new().raw(&[0xca]).raw(&f.to_be_bytes()).0),
        any::<f64>().prop_map(|f| Mp::new().raw(&[0xcb]).raw(&f.to_be_bytes()).0),
        utf8(0, 40).prop_map(|s| Mp::new().str(&s).0),
        // str8/str16/str32 headers for short strings: non-canonical but well-formed.
        (utf8(0, 20), 0..3usize).prop_map(|(s, form)| {
            let n = s.len();
            let m = match form {
                0 => Mp::new().raw(&[0xd9, n as u8]),
                1 => Mp::new().raw(&[0xda]).raw(&(n as u16).to_be_bytes()),
                _ => Mp::new().raw(&[0xdb]).raw(&(n as u32).to_be_bytes()),
            };
            m.raw(s.as_bytes()).0
        }),
        // `any` is opaque: a str holding invalid UTF-8 is still a well-formed value.
        vec(128u8..=255, 1..8).prop_map(|b| Mp::new().str_bytes(&b).0),
        vec(any::<u8>(), 0..40).prop_map(|b| Mp::new().bin(&b).0),
        // fixext 1/2/4/8/16 and ext 8.
        (any::<i8>(), 0..6usize, vec(any::<u8>(), 16)).prop_map(|(t, form, d)| {
            let (marker, n) = [
                (0xd4u8, 1usize),
                (0xd5, 2),
                (0xd6, 4),
                (0xd7, 8),
                (0xd8, 16),
            ]
            .get(form)
            .copied()
            .unwrap_or((0xc7, 3));
            let mut v = vec![marker];
            if marker == 0xc7 {
                v.push(n as u8);
            }
            v.push(t as u8);
            v.extend_from_slice(&d[..n]);
            v
        }),
    ];
    let value = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            (vec(inner.clone(), 0..5), 0..3usize).prop_map(|(items, form)| {
                let n = items.len() as u32;
                let mut m = match form {
                    0 => Mp::new().array(n),
                    1 => Mp::new().raw(&[0xdc]).raw(&(n as u16).to_be_bytes()),
                    _ => Mp::new().raw(&[0xdd]).raw(&n.to_be_bytes()),
                };
                for i in items {
                    m = m.raw(&i);
                }
                m.0
            }),
            (vec((inner.clone(), inner), 0..4), 0..3usize).prop_map(|(items, form)| {
                let n = items.len() as u32;
                let mut m = match form {
                    0 => Mp::new().map(n),
                    1 => Mp::new().raw(&[0xde]).raw(&(n as u16).to_be_bytes()),
                    _ => Mp::new().raw(&[0xdf]).raw(&n.to_be_bytes()),
                };
                for (k, v) in items {
                    m = m.raw(&k).raw(&v);
                }
                m.0
            }),
        ]
    });
    if allow_nil_top {
        value.boxed()
    } else {
        value.prop_filter("nil top-level", |v| v != &[0xc0]).boxed()
    }
}

/// A [`RawValue`] that is not `nil` (a nil `any` field decodes as absent, SPEC §4.2).
pub fn raw_value() -> BoxedStrategy<RawValue> {
    prop_oneof![
        1 => utf8(0, 40).prop_map(|s| RawValue::string(&s)),
        1 => u64_any().prop_map(RawValue::uint),
        4 => msgpack_value(false)
            .prop_map(|v| RawValue::new(Bytes::from(v)).expect("strategy builds valid values")),
    ]
    .boxed()
}

pub fn opt_raw() -> BoxedStrategy<Option<RawValue>> {
    proptest::option::of(raw_value()).boxed()
}

// ───────────────────────────── strategies: frames ─────────────────────────────

pub fn versions() -> impl Strategy<Value = Versions> {
    vec(1u8..=15, 1..=16).prop_map(|vs| {
        let mut set = Versions::default();
        for v in vs {
            set.insert(v);
        }
        set
    })
}

pub fn limits() -> impl Strategy<Value = HelloLimits> {
    use proptest::option::of;
    (
        of(u32_in(64, u32::MAX)),
        of((1u16..=0x7fff).boxed()),
        of(any::<u16>()),
        of(u32_in(1, u32::MAX)),
        of(u32_in(1, u32::MAX)),
        of(u32_in(0, u32::MAX)),
        of(u32_in(0, u32::MAX)),
    )
        .prop_map(
            |(
                max_frame_payload,
                max_inflight,
                max_tools,
                max_chunk,
                initial_window,
                replay_buffer,
                resume_window_ms,
            )| HelloLimits {
                max_frame_payload,
                max_inflight,
                max_tools,
                max_chunk,
                initial_window,
                replay_buffer,
                resume_window_ms,
            },
        )
}

pub fn hello() -> impl Strategy<Value = Hello> {
    use proptest::option::of;
    (
        versions(),
        vec(text(0, 64), 0..=32),
        limits(),
        of(u32_in(0, u32::MAX)),
        of(text(1, 64)),
        of(bin(1, 64)),
        any::<u16>(),
        of(text(0, 256)),
    )
        .prop_map(
            |(
                versions,
                capabilities,
                limits,
                heartbeat_ms,
                connection_id,
                resume_token,
                tools,
                agent,
            )| {
                Hello {
                    versions,
                    capabilities,
                    limits,
                    heartbeat_ms,
                    connection_id,
                    resume_token,
                    tools,
                    agent,
                }
            },
        )
}

pub fn invoke() -> impl Strategy<Value = Invoke> {
    (
        client_id(),
        text(1, 128),
        opt_raw(),
        u32_in(0, u32::MAX),
        opt_raw(),
    )
        .prop_map(|(id, tool, args, deadline_ms, meta)| Invoke {
            id,
            tool,
            args,
            deadline_ms,
            meta,
        })
}

/// STREAM data: text (UTF-8, sent as `str`) or binary (sent as `bin`).
pub fn stream_data() -> impl Strategy<Value = (Bytes, bool)> {
    prop_oneof![
        utf8(0, 300).prop_map(|s| (Bytes::from(s), true)),
        bin(0, 300).prop_map(|b| (b, false)),
    ]
}

/// A STREAM; `data` is empty only when `fin` is set (SPEC §5.3: an empty non-final chunk is
/// `INVALID_FIELD`).
pub fn stream() -> impl Strategy<Value = Stream> {
    (
        client_id(),
        stream_data(),
        u32_in(0, u32::MAX),
        any::<bool>(),
    )
        .prop_map(|(id, (data, text), seq, fin)| Stream {
            id,
            fin: fin || data.is_empty(),
            data,
            text,
            seq,
        })
}

pub fn tool_op() -> impl Strategy<Value = ToolOp> {
    prop_oneof![
        Just(ToolOp::Add),
        Just(ToolOp::Update),
        Just(ToolOp::Remove)
    ]
}

pub fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::Cancelled),
        Just(Status::Failed)
    ]
}

pub fn reply_status() -> impl Strategy<Value = ReplyStatus> {
    prop_oneof![
        Just(ReplyStatus::Answered),
        Just(ReplyStatus::Cancelled),
        Just(ReplyStatus::Declined)
    ]
}

pub fn metrics() -> impl Strategy<Value = Metrics> {
    use proptest::option::of;
    (of(u64_any()), of(u64_any()), of(u64_any()), of(u64_any())).prop_map(
        |(wall_us, cpu_us, input_tokens, output_tokens)| Metrics {
            wall_us,
            cpu_us,
            input_tokens,
            output_tokens,
        },
    )
}

/// Any valid frame of the given type (SPEC §5 ranges; ids per §3.5).
pub fn frame_of(ty: asp_proto::FrameType) -> BoxedStrategy<Frame> {
    use asp_proto::FrameType as T;
    use proptest::option::of;
    match ty {
        T::Hello => hello().prop_map(Frame::Hello).boxed(),
        T::Invoke => invoke().prop_map(Frame::Invoke).boxed(),
        T::Stream => stream().prop_map(Frame::Stream).boxed(),
        T::Interrupt => (nonzero_id(), of(text(0, 1024)))
            .prop_map(|(id, reason)| Frame::Interrupt(Interrupt { id, reason }))
            .boxed(),
        T::ToolDef => (
            tool_op(),
            text(1, 128),
            text(0, 65_535),
            opt_raw(),
            opt_raw(),
        )
            .prop_map(|(op, name, description, input_schema, annotations)| {
                Frame::ToolDef(ToolDef {
                    op,
                    name,
                    description,
                    input_schema,
                    annotations,
                })
            })
            .boxed(),
        T::Complete => (client_id(), status(), opt_raw(), metrics())
            .prop_map(|(id, status, result, metrics)| {
                Frame::Complete(Complete {
                    id,
                    status,
                    result,
                    metrics,
                })
            })
            .boxed(),
        T::Error => (
            any_id(),
            prop_oneof![1u16..=0xff, any::<u16>().prop_filter("code 0", |c| *c != 0)],
            of(text(0, 1024)),
            any::<bool>(),
            of(0u8..=15),
        )
            .prop_map(|(id, code, message, retryable, frame_type)| {
                Frame::Error(ErrorFrame {
                    id,
                    code: ErrorCode(code),
                    message,
                    retryable,
                    frame_type,
                })
            })
            .boxed(),
        T::Ping => proptest::option::of(any::<u64>())
            .prop_map(|received| Frame::Ping(Heartbeat { received }))
            .boxed(),
        T::Pong => proptest::option::of(any::<u64>())
            .prop_map(|received| Frame::Pong(Heartbeat { received }))
            .boxed(),
        T::Request => (
            server_id(),
            text(1, 64),
            opt_raw(),
            of((1u16..=0x7fff).prop_map(RequestId)),
        )
            .prop_map(|(id, kind, body, invocation)| {
                Frame::Request(Request {
                    id,
                    kind,
                    body,
                    invocation,
                })
            })
            .boxed(),
        T::Reply => (server_id(), reply_status(), opt_raw())
            .prop_map(|(id, status, body)| Frame::Reply(Reply { id, status, body }))
            .boxed(),
        T::Credit => (client_id(), u32_in(1, u32::MAX))
            .prop_map(|(id, bytes)| Frame::Credit(Credit { id, bytes }))
            .boxed(),
        T::GoAway => (of(text(0, 1024)), u32_in(0, u32::MAX))
            .prop_map(|(reason, timeout_ms)| Frame::GoAway(GoAway { reason, timeout_ms }))
            .boxed(),
        T::Resume => (of(bin(1, 64)), u64_any())
            .prop_map(|(token, received)| Frame::Resume(Resume { token, received }))
            .boxed(),
    }
}

/// Any valid frame, every type equally likely.
pub fn arb_frame() -> BoxedStrategy<Frame> {
    proptest::sample::select(asp_proto::FrameType::ALL.to_vec())
        .prop_flat_map(frame_of)
        .boxed()
}

/// Any valid frame whose encoding is at most `max` bytes (for byte-at-a-time feeding).
pub fn arb_frame_upto(max: usize) -> BoxedStrategy<Frame> {
    arb_frame()
        .prop_filter("encoding too long", move |f| codec::encoded_len(f) <= max)
        .boxed()
}
