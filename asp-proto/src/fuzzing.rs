//! Fuzzing support (feature `arbitrary`): [`Arbitrary`] for every frame type, and the bodies
//! of the `fuzz/` targets, so that `cargo fuzz` and the seed-replay test
//! (`tests/fuzz_regressions.rs`, `cargo test -p asp-proto --features arbitrary`) run the very
//! same code.
//!
//! Every generated frame is *valid*: it respects the field ranges of SPEC §5 and the request
//! id rule of its type (§3.5), so `decode(encode(f)) == f`. An `any` field is never
//! `Some(nil)`, which decodes as absent (§4.2).
//!
//! The harnesses panic (with a message naming the broken invariant) on any violation:
//!
//! - [`decode`]: raw bytes through [`Decoder`] in fuzzer-chosen chunks and through
//!   [`codec::decode_frame`].
//! - [`roundtrip`]: an arbitrary [`Frame`] through encode and both decoders.
//! - [`session`]: one [`Connection`] driven by a scripted, partly malicious peer.
//! - [`pair`]: a client and a server wired together, the fuzzer choosing what is sent,
//!   delivered, polled, and when time passes.
//!
//! Input layouts are documented on each function; `fuzz/gen_seeds.py` writes seeds in them.
#![allow(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::{Bytes, BytesMut};
use core::time::Duration;

use crate::codec::{self, decode_frame, encoded_len, Decoder, HEADER_LEN};
use crate::frame::*;
use crate::{
    CloseReason, Config, Connection, DecodeError, DecodeErrorKind, ErrorCode, Event, HeartbeatMode,
    InvocationOutcome, InvokeOptions, Limits, RequestOutcome, Role, ServerParams, State,
    StreamOptions,
};

// ───────────────────────────── generators ─────────────────────────────

/// Names the generators prefer, so that INVOKEs meet registered tools and capabilities are
/// recognised.
const WORDS: &[&str] = &[
    "echo",
    "sleep",
    "fail",
    "requests",
    "resume",
    "clarify",
    "confirm",
    "x",
    "é",
    "日本語",
];

/// A string of `min..=max` UTF-8 bytes: a known word or arbitrary text, cut at a char
/// boundary and padded with `a` up to `min`.
fn text(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Text> {
    let mut s = if u.ratio(1, 2)? {
        (*u.choose(WORDS)?).to_owned()
    } else {
        <&str>::arbitrary(u)?.to_owned()
    };
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    while s.len() < min {
        s.push('a');
    }
    Ok(Text::from(s))
}

fn opt_text(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Option<Text>> {
    Ok(if bool::arbitrary(u)? {
        Some(text(u, min, max)?)
    } else {
        None
    })
}

/// `min..=max` arbitrary bytes.
fn bin(u: &mut Unstructured<'_>, min: usize, max: usize) -> Result<Bytes> {
    let b = <&[u8]>::arbitrary(u)?;
    let mut v = b[..b.len().min(max)].to_vec();
    v.resize(v.len().max(min), 0x5a);
    Ok(Bytes::from(v))
}

/// Fixed well-formed MessagePack values, none of them `nil`.
const RAW_VALUES: &[&[u8]] = &[
    &[0x80],                                     // {}
    &[0x90],                                     // []
    &[0xc3],                                     // true
    &[0xc2],                                     // false
    &[0xff],                                     // -1
    &[0xd0, 0x80],                               // int 8 -128
    &[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],       // 1.0
    &[0xca, 0x40, 0x49, 0x0f, 0xdb],             // float 32
    &[0xc4, 0x02, 0x00, 0xff],                   // bin
    &[0xd4, 0x01, 0x00],                         // fixext 1
    &[0xc7, 0x00, 0x05],                         // ext 8, empty
    &[0x81, 0xa1, 0x61, 0x01],                   // {"a": 1}
    &[0x82, 0x00, 0xc0, 0xa1, 0x62, 0x91, 0xc0], // {0: nil, "b": [nil]}
    &[0x91, 0x91, 0x91, 0x90],                   // [[[[]]]]
    &[0xa3, 0xff, 0xfe, 0xfd],                   // str with bad UTF-8: opaque, allowed
    &[0xdc, 0x00, 0x01, 0x01],                   // array 16 of one
    &[0xcf, 0, 0, 0, 0, 0, 0, 0, 1],             // non-shortest uint 64
];

fn raw_depth(u: &mut Unstructured<'_>, depth: u8) -> Result<RawValue> {
    Ok(match u.int_in_range(0u8..=6)? {
        0 => RawValue::uint(u64::arbitrary(u)?),
        1 => RawValue::string(text(u, 0, 300)?.as_str()),
        2 | 3 => RawValue::new(Bytes::from_static(u.choose(RAW_VALUES)?))
            .unwrap_or_else(|_| RawValue::uint(0)),
        4 => {
            let b = <&[u8]>::arbitrary(u)?;
            match RawValue::new(Bytes::copy_from_slice(b)) {
                Ok(v) if b != [0xc0] => v,
                _ => RawValue::uint(u64::from(u8::arbitrary(u)?)),
            }
        }
        _ if depth < 3 => {
            // A small array or map of nested values.
            let n = u.int_in_range(0u8..=3)?;
            let map = bool::arbitrary(u)?;
            let mut b = vec![if map { 0x80 } else { 0x90 } | n];
            for _ in 0..n {
                if map {
                    b.extend_from_slice(raw_depth(u, depth + 1)?.as_bytes());
                }
                b.extend_from_slice(raw_depth(u, depth + 1)?.as_bytes());
            }
            RawValue::new(Bytes::from(b)).unwrap_or_else(|_| RawValue::uint(1))
        }
        _ => RawValue::uint(2),
    })
}

fn raw(u: &mut Unstructured<'_>) -> Result<RawValue> {
    raw_depth(u, 0)
}

fn opt_raw(u: &mut Unstructured<'_>) -> Result<Option<RawValue>> {
    Ok(if bool::arbitrary(u)? {
        Some(raw(u)?)
    } else {
        None
    })
}

/// Client-space id, mostly one of the first few (so frames meet exchanges in flight).
fn client_id(u: &mut Unstructured<'_>) -> Result<RequestId> {
    Ok(RequestId(if u.ratio(3, 4)? {
        u.int_in_range(1..=4)?
    } else {
        u.int_in_range(1..=0x7fff)?
    }))
}

/// Server-space id, mostly one of the first few.
fn server_id(u: &mut Unstructured<'_>) -> Result<RequestId> {
    Ok(RequestId(if u.ratio(3, 4)? {
        u.int_in_range(0x8001..=0x8004)?
    } else {
        u.int_in_range(0x8000..=0xffff)?
    }))
}

fn u32_biased(u: &mut Unstructured<'_>, min: u32) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => min,
        1 => min.saturating_add(u32::from(u8::arbitrary(u)?)),
        2 => u32::MAX,
        _ => u32::arbitrary(u)?.max(min),
    })
}

impl<'a> Arbitrary<'a> for RequestId {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        match u.int_in_range(0u8..=3)? {
            0 => client_id(u),
            1 => server_id(u),
            2 => Ok(RequestId::CONNECTION),
            _ => Ok(RequestId(u16::arbitrary(u)?)),
        }
    }
}

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        text(u, 0, usize::MAX)
    }
}

impl<'a> Arbitrary<'a> for RawValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        raw(u)
    }
}

impl<'a> Arbitrary<'a> for FrameType {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&FrameType::ALL)?)
    }
}

impl<'a> Arbitrary<'a> for ErrorCode {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(3, 4)? {
            Ok(*u.choose(ErrorCode::ALL)?)
        } else {
            Ok(ErrorCode(u16::arbitrary(u)?.max(1)))
        }
    }
}

impl<'a> Arbitrary<'a> for Versions {
    /// Non-empty; `[1]` half of the time.
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if bool::arbitrary(u)? {
            return Ok(Versions::V1);
        }
        let bits = u16::arbitrary(u)?;
        let mut v = Versions::default();
        for n in 1..16u8 {
            if bits & (1 << n) != 0 {
                v.insert(n);
            }
        }
        if v.is_empty() {
            v.insert(1);
        }
        Ok(v)
    }
}

impl<'a> Arbitrary<'a> for HelloLimits {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut l = HelloLimits::default();
        if bool::arbitrary(u)? {
            l.max_frame_payload = Some(u32_biased(u, 64)?);
        }
        if bool::arbitrary(u)? {
            l.max_inflight = Some(u.int_in_range(1..=0x7fff)?);
        }
        if bool::arbitrary(u)? {
            l.max_tools = Some(u16::arbitrary(u)?);
        }
        if bool::arbitrary(u)? {
            l.max_chunk = Some(u32_biased(u, 4)?);
        }
        if bool::arbitrary(u)? {
            l.initial_window = Some(u32_biased(u, 8)?);
        }
        if bool::arbitrary(u)? {
            l.replay_buffer = Some(u32_biased(u, 0)?);
        }
        if bool::arbitrary(u)? {
            l.resume_window_ms = Some(u32_biased(u, 0)?);
        }
        Ok(l)
    }
}

impl<'a> Arbitrary<'a> for Hello {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n_caps = u.int_in_range(0u8..=32)? as usize;
        let n_caps = if u.ratio(3, 4)? { n_caps % 3 } else { n_caps };
        let mut capabilities = Vec::with_capacity(n_caps);
        for _ in 0..n_caps {
            capabilities.push(text(u, 1, 64)?);
        }
        Ok(Hello {
            versions: Versions::arbitrary(u)?,
            capabilities,
            limits: HelloLimits::arbitrary(u)?,
            heartbeat_ms: Option::<u32>::arbitrary(u)?,
            connection_id: opt_text(u, 1, 64)?,
            resume_token: if bool::arbitrary(u)? {
                Some(bin(u, 1, 64)?)
            } else {
                None
            },
            tools: if u.ratio(3, 4)? {
                u.int_in_range(0..=3)?
            } else {
                u16::arbitrary(u)?
            },
            agent: opt_text(u, 0, 256)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Invoke {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Invoke {
            id: client_id(u)?,
            tool: text(u, 1, 128)?,
            args: opt_raw(u)?,
            deadline_ms: if bool::arbitrary(u)? {
                0
            } else {
                u32_biased(u, 0)?
            },
            meta: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Stream {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let id = client_id(u)?;
        let is_text = bool::arbitrary(u)?;
        let fin = bool::arbitrary(u)?;
        // SPEC §5.3: only the final chunk may be empty.
        let min = usize::from(!fin);
        let data = if is_text {
            text(u, min, usize::MAX)?.as_bytes().clone()
        } else {
            bin(u, min, usize::MAX)?
        };
        Ok(Stream {
            id,
            data,
            text: is_text,
            seq: if u.ratio(3, 4)? {
                u.int_in_range(0..=3)?
            } else {
                u32::arbitrary(u)?
            },
            fin,
        })
    }
}

impl<'a> Arbitrary<'a> for Interrupt {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Interrupt {
            id: if bool::arbitrary(u)? {
                client_id(u)?
            } else {
                server_id(u)?
            },
            reason: opt_text(u, 0, 1024)?,
        })
    }
}

impl<'a> Arbitrary<'a> for ToolOp {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[ToolOp::Add, ToolOp::Update, ToolOp::Remove])?)
    }
}

impl<'a> Arbitrary<'a> for ToolDef {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ToolDef {
            op: ToolOp::arbitrary(u)?,
            name: text(u, 1, 128)?,
            description: text(u, 0, 65535)?,
            input_schema: opt_raw(u)?,
            annotations: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Status {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[Status::Ok, Status::Cancelled, Status::Failed])?)
    }
}

impl<'a> Arbitrary<'a> for Metrics {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Metrics {
            wall_us: Option::arbitrary(u)?,
            cpu_us: Option::arbitrary(u)?,
            input_tokens: Option::arbitrary(u)?,
            output_tokens: Option::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Complete {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Complete {
            id: client_id(u)?,
            status: Status::arbitrary(u)?,
            result: opt_raw(u)?,
            metrics: Metrics::arbitrary(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for ErrorFrame {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ErrorFrame {
            id: RequestId::arbitrary(u)?,
            code: ErrorCode::arbitrary(u)?,
            message: opt_text(u, 0, 1024)?,
            retryable: bool::arbitrary(u)?,
            frame_type: if bool::arbitrary(u)? {
                Some(u.int_in_range(0..=15)?)
            } else {
                None
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Request {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Request {
            id: server_id(u)?,
            kind: text(u, 1, 64)?,
            body: opt_raw(u)?,
            invocation: if bool::arbitrary(u)? {
                Some(client_id(u)?)
            } else {
                None
            },
        })
    }
}

impl<'a> Arbitrary<'a> for ReplyStatus {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(*u.choose(&[
            ReplyStatus::Answered,
            ReplyStatus::Cancelled,
            ReplyStatus::Declined,
        ])?)
    }
}

impl<'a> Arbitrary<'a> for Reply {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Reply {
            id: server_id(u)?,
            status: ReplyStatus::arbitrary(u)?,
            body: opt_raw(u)?,
        })
    }
}

impl<'a> Arbitrary<'a> for Credit {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Credit {
            id: client_id(u)?,
            bytes: u32_biased(u, 1)?,
        })
    }
}

impl<'a> Arbitrary<'a> for GoAway {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(GoAway {
            reason: opt_text(u, 0, 1024)?,
            timeout_ms: if bool::arbitrary(u)? {
                0
            } else {
                u32_biased(u, 0)?
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Resume {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Resume {
            token: if bool::arbitrary(u)? {
                Some(bin(u, 1, 64)?)
            } else {
                None
            },
            received: if u.ratio(3, 4)? {
                u64::from(u8::arbitrary(u)?)
            } else {
                u64::arbitrary(u)?
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Frame {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match FrameType::arbitrary(u)? {
            FrameType::Hello => Frame::Hello(Hello::arbitrary(u)?),
            FrameType::Invoke => Frame::Invoke(Invoke::arbitrary(u)?),
            FrameType::Stream => Frame::Stream(Stream::arbitrary(u)?),
            FrameType::Interrupt => Frame::Interrupt(Interrupt::arbitrary(u)?),
            FrameType::ToolDef => Frame::ToolDef(ToolDef::arbitrary(u)?),
            FrameType::Complete => Frame::Complete(Complete::arbitrary(u)?),
            FrameType::Error => Frame::Error(ErrorFrame::arbitrary(u)?),
            FrameType::Ping => Frame::Ping(Heartbeat {
                received: Option::<u64>::arbitrary(u)?,
            }),
            FrameType::Pong => Frame::Pong(Heartbeat {
                received: Option::<u64>::arbitrary(u)?,
            }),
            FrameType::Request => Frame::Request(Request::arbitrary(u)?),
            FrameType::Reply => Frame::Reply(Reply::arbitrary(u)?),
            FrameType::Credit => Frame::Credit(Credit::arbitrary(u)?),
            FrameType::GoAway => Frame::GoAway(GoAway::arbitrary(u)?),
            FrameType::Resume => Frame::Resume(Resume::arbitrary(u)?),
        })
    }
}

// ───────────────────────────── codec targets ─────────────────────────────

/// `max_payload` choices of the [`decode`] target, by selector.
const MAX_PAYLOADS: [u32; 8] = [1 << 20, 0, 1, 8, 16, 64, 255, 1024];

fn encode_one(f: &Frame) -> Bytes {
    let mut b = BytesMut::new();
    codec::encode(f, &mut b);
    b.freeze()
}

/// `f` encodes to exactly [`encoded_len`] bytes that decode back to `f`.
fn assert_reencodes(f: &Frame) {
    let wire = encode_one(f);
    assert_eq!(
        wire.len(),
        encoded_len(f),
        "encoded_len disagrees for {f:?}"
    );
    let mut buf = wire.clone();
    match decode_frame(&mut buf, u32::MAX) {
        Some(Ok(back)) => assert_eq!(&back, f, "re-encoding changed the frame: {wire:02x?}"),
        other => panic!("re-encoded {f:?} as {wire:02x?}, which decodes as {other:?}"),
    }
    assert!(buf.is_empty(), "decode_frame left bytes of a single frame");
}

type Decoded = Vec<Result<Frame, DecodeError>>;

/// Every result of `decode_frame` over `msg` (one WebSocket message).
fn decode_message(msg: &Bytes, max: u32) -> Decoded {
    let mut buf = msg.clone();
    let mut out = Vec::new();
    while let Some(r) = decode_frame(&mut buf, max) {
        let fatal = matches!(&r, Err(e) if e.kind.is_fatal());
        out.push(r);
        if fatal {
            assert!(
                buf.is_empty(),
                "decode_frame kept bytes after a fatal error"
            );
        }
    }
    out
}

/// Drains `dec`, checking that it never grows while giving out frames.
fn drain(dec: &mut Decoder, out: &mut Decoded) {
    let mut before = dec.buffered();
    while let Some(r) = dec.next_frame() {
        let now = dec.buffered();
        assert!(
            now <= before,
            "Decoder grew from {before} to {now} bytes while decoding"
        );
        before = now;
        out.push(r);
    }
}

/// Fuzz target `decode`: raw bytes through [`Decoder`] (stream mode) in fuzzer-chosen
/// chunks, and through [`codec::decode_frame`] (message mode).
///
/// Layout: `sel`, then `sel >> 4` chunk-size bytes, then the stream. `sel & 7` picks
/// `max_payload` from `[1 MiB, 0, 1, 8, 16, 64, 255, 1024]`. Chunk byte `c` feeds
/// `(c & 0x7f) + 1` bytes and, unless its top bit is set, drains the decoder after the
/// feed; the sizes repeat. No chunk bytes: the stream is fed whole. So a seed is `00`
/// followed by the wire bytes.
///
/// Invariants: no panic; each feed adds exactly its length to [`Decoder::buffered`] (0 once
/// poisoned); decoding never grows it; once drained, `buffered() < 8 + max_payload` (only
/// an incomplete frame whose header passed the checks is kept, SPEC §3.6); the frames and
/// errors do not depend on the chunking; message mode gives the same results, except that
/// a message ending inside a frame ends with a fatal `Truncated`; every `Ok` frame
/// re-encodes to `encoded_len` bytes that decode to itself.
pub fn decode(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = MAX_PAYLOADS[usize::from(sel & 7)];
    let n_sizes = usize::from(sel >> 4).min(rest.len());
    let (sizes, stream) = rest.split_at(n_sizes);
    let stream = Bytes::copy_from_slice(stream);
    let bound = HEADER_LEN as u64 + u64::from(max);

    // Stream mode, chunked.
    let mut dec = Decoder::new(max);
    let mut chunked = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < stream.len() {
        let (len, drain_after) = match sizes.get(i % sizes.len().max(1)) {
            Some(&c) => (usize::from(c & 0x7f) + 1, c & 0x80 == 0),
            None => (stream.len(), true),
        };
        i += 1;
        let end = (off + len).min(stream.len());
        let before = dec.buffered();
        dec.feed(stream.slice(off..end));
        let expect = if dec.is_poisoned() {
            0
        } else {
            before + (end - off)
        };
        assert_eq!(dec.buffered(), expect, "feed of {} bytes", end - off);
        off = end;
        if drain_after {
            drain(&mut dec, &mut chunked);
            assert!(
                (dec.buffered() as u64) < bound,
                "drained Decoder holds {} bytes; max_payload is {max}",
                dec.buffered()
            );
        }
    }
    drain(&mut dec, &mut chunked);
    assert!(
        (dec.buffered() as u64) < bound,
        "drained Decoder holds {} bytes",
        dec.buffered()
    );
    if dec.is_poisoned() {
        assert_eq!(dec.buffered(), 0, "a poisoned Decoder keeps bytes");
    }

    // Stream mode, whole: chunking must not matter.
    let mut whole_dec = Decoder::new(max);
    whole_dec.feed(stream.clone());
    let mut whole = Vec::new();
    drain(&mut whole_dec, &mut whole);
    assert_eq!(chunked, whole, "the chunking changed the decoded frames");

    // Message mode.
    let msg = decode_message(&stream, max);
    match msg.split_last() {
        Some((Err(e), head)) if e.kind == DecodeErrorKind::Truncated => {
            assert!(
                whole.len() >= head.len() && whole[..head.len()] == *head,
                "message mode disagrees with stream mode before the truncation"
            );
        }
        _ => assert_eq!(msg, whole, "message mode disagrees with stream mode"),
    }

    for f in whole
        .iter()
        .chain(msg.iter())
        .filter_map(|r| r.as_ref().ok())
    {
        assert_reencodes(f);
    }
}

/// Fuzz target `roundtrip`: an arbitrary valid [`Frame`] → [`codec::encode`] → decode equals
/// the original, in message mode and in stream mode fed byte by byte; [`encoded_len`] is the
/// encoded size; the payload passes a `max_payload` equal to its length and is
/// `FrameTooLarge` one below.
pub fn roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(f) = Frame::arbitrary(&mut u) else {
        return;
    };
    assert_reencodes(&f);
    let wire = encode_one(&f);
    let payload = u32::try_from(wire.len() - HEADER_LEN).unwrap();

    let mut buf = wire.clone();
    assert_eq!(decode_frame(&mut buf, payload), Some(Ok(f.clone())));
    if payload > 0 {
        let mut buf = wire.clone();
        let r = decode_frame(&mut buf, payload - 1);
        assert!(
            matches!(
                r,
                Some(Err(DecodeError {
                    kind: DecodeErrorKind::FrameTooLarge { .. },
                    ..
                }))
            ),
            "payload of {payload} bytes against a limit of {}: {r:?}",
            payload - 1
        );
    }

    let mut dec = Decoder::new(payload);
    let mut out = Vec::new();
    for b in wire.iter() {
        dec.feed_slice(&[*b]);
        drain(&mut dec, &mut out);
    }
    assert_eq!(out, vec![Ok(f)], "byte-by-byte stream decoding");
    assert_eq!(dec.buffered(), 0);
}

// ───────────────────────────── connection targets ─────────────────────────────

fn pick<T: Copy>(choices: &[T], b: u8) -> T {
    choices[usize::from(b) % choices.len()]
}

/// A [`Config`] with small limits, from 4 bytes (all zero: the first choice of each).
fn small_config(b: [u8; 4], pair: bool) -> Config {
    let limits = Limits {
        max_frame_payload: pick(&[256, 64, 128, 1 << 20], b[0]),
        max_inflight: pick(&[2, 1, 3, 4], b[0] >> 2),
        max_tools: pick(&[2, 0, 1, 4], b[0] >> 4),
        max_chunk: pick(&[64, 4, 16, 1024], b[0] >> 6),
        initial_window: pick(&[128, 8, 32, 4096], b[1]),
    };
    let (rate_limit, flood_limit) = if pair {
        (100_000, 200_000)
    } else {
        pick(&[(100_000, 200_000), (3, 6), (8, 8), (1, 100)], b[1] >> 5)
    };
    Config {
        limits,
        heartbeat: pick(
            &[
                Some(Duration::from_secs(30)),
                None,
                Some(Duration::from_secs(1)),
                Some(Duration::from_millis(50)),
            ],
            b[1] >> 2,
        ),
        heartbeat_mode: if b[1] & 0x10 != 0 && !pair {
            HeartbeatMode::Transport
        } else {
            HeartbeatMode::Frames
        },
        handshake_timeout: pick(
            &[
                Duration::from_secs(10),
                Duration::from_secs(1),
                Duration::from_millis(100),
                Duration::from_secs(60),
            ],
            b[3] >> 6,
        ),
        rate_limit,
        flood_limit,
        max_queued_bytes: pick(&[256, 64, 1024, 1 << 20], b[2]),
        max_buffered: 2 * pick(&[256, 64, 1024, 1 << 20], b[2]) + HEADER_LEN,
        max_queued_per_invocation: pick(&[64, 16, 256, 1 << 20], b[2] >> 2),
        max_pending_events: pick(&[64, 4, 16, 8192], b[2] >> 4),
        resume: b[1] & 0x80 != 0 && !pair,
        replay_buffer: pick(&[512, 0, 64, 1 << 16], b[2] >> 6),
        resume_window: Duration::from_secs(1),
        accept_requests: b[3] & 1 == 0,
        check_tools: b[3] & 2 == 0,
        auto_credit: b[3] & 4 == 0,
        agent: if b[3] & 8 == 0 {
            Some(Text::from_static("fuzz"))
        } else {
            None
        },
    }
}

/// Time steps, in ms, for clock advances.
const STEPS_MS: [u64; 16] = [
    0, 1, 10, 49, 50, 100, 999, 1000, 1001, 3000, 10_000, 29_999, 30_000, 90_000, 100_000,
    10_000_000,
];

fn step_of(b: u8) -> Duration {
    Duration::from_millis(pick(&STEPS_MS, b))
}

fn u16_le(u: &mut Unstructured<'_>) -> Result<u16> {
    let mut b = [0u8; 2];
    u.fill_buffer(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// A text of fuzzer-chosen length, to reach the SPEC length limits (1024 for reasons).
fn long_text(u: &mut Unstructured<'_>) -> Result<Option<Text>> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => None,
        1 => Some(text(u, 0, 64)?),
        _ => Some(Text::from("r".repeat(usize::from(u8::arbitrary(u)?) * 8))),
    })
}

fn opt_text_long(u: &mut Unstructured<'_>) -> Result<Text> {
    Ok(long_text(u)?.unwrap_or_default())
}

/// Who caused a step (see [`Checker::after_step`]).
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Peer input: bytes, messages, transport events.
    Peer,
    /// `handle_timeout`, with the exchanges in flight before it.
    Timer { in_flight: usize },
    /// An application command (or a poll, which may grant credit).
    Local,
}

/// Bytes `handle_timeout` may queue beyond the bound besides the deadline ERRORs: a PING
/// and a fatal ERROR (message ≤ 1024 bytes).
const TIMER_SLACK: usize = HEADER_LEN + 1100;

/// What the single-connection harness tracks to check invariants (SPEC §7.1 and the
/// documented bounds of `Connection`).
struct Checker {
    /// Event::Closed was delivered.
    closed: bool,
    /// Exchanges this side opened whose `Ended` was not delivered yet.
    live: BTreeSet<u16>,
    /// `Config::max_buffered` (`Connection::check_input_bounds`).
    bound: usize,
    /// Events delivered so far.
    seen: usize,
    /// The reason in `Event::Closed`.
    reason: Option<CloseReason>,
}

impl Checker {
    fn new(config: &Config) -> Checker {
        Checker {
            closed: false,
            live: BTreeSet::new(),
            bound: config.max_buffered,
            seen: 0,
            reason: None,
        }
    }

    fn opened(&mut self, id: RequestId) {
        assert!(
            self.live.insert(id.0),
            "id {id:?} handed out again before its Ended was delivered"
        );
    }

    fn event(&mut self, ev: &Event) {
        assert!(!self.closed, "event after Closed: {ev:?}");
        self.seen += 1;
        match ev {
            Event::InvocationEnded { id, .. } | Event::RequestEnded { id, .. } => assert!(
                self.live.remove(&id.0),
                "Ended for {id:?}, which is not open (ended twice, or never opened): {ev:?}"
            ),
            Event::Closed(r) => {
                self.closed = true;
                self.reason = Some(r.clone());
                assert!(
                    self.live.is_empty(),
                    "Closed while exchanges never ended: {:?}",
                    self.live
                );
            }
            _ => {}
        }
    }

    /// Right after the step that closed the connection, once every event was delivered
    /// (`queued`: the queue at the close). An OVERLOADED close drops what was queued and
    /// leaves only its ERROR (SPEC §13.1), whatever the bound it hit.
    fn closed_by(&self, queued: usize, _pending: usize) {
        if let Some(CloseReason::ProtocolError {
            code: ErrorCode::OVERLOADED,
            ..
        }) = &self.reason
        {
            assert!(
                queued <= TIMER_SLACK,
                "closed as OVERLOADED with {queued} bytes still queued: the backlog was kept"
            );
        }
    }

    /// After every step. `kind` says who caused it: the peer's input, the clock, or the
    /// application (a local command, whose frames the application chose to queue).
    ///
    /// The queue bound, exactly as `Connection::check_input_bounds` enforces it: a frame
    /// whose replies take the queue past `max_buffered` closes the connection with
    /// OVERLOADED right after it. So after peer input the queue is within the bound (or no
    /// larger than before) unless the connection closed. Timers never close for overload:
    /// one `handle_timeout` may add a PING, one ERROR per expired deadline and one fatal
    /// ERROR beyond the bound (`TIMER_SLACK`).
    fn after_step(&self, conn: &Connection, q0: usize, was_closed: bool, kind: Step) {
        let q = conn.queued_bytes();
        let limit = match kind {
            Step::Peer => self.bound.max(q0),
            Step::Timer { in_flight } => self.bound.max(q0) + TIMER_SLACK + 64 * in_flight,
            Step::Local => usize::MAX,
        };
        if was_closed {
            assert!(q <= q0, "queue grew from {q0} to {q} bytes after Closed");
        } else if !conn.is_closed() {
            assert!(
                q <= limit,
                "{kind:?} step: queue grew from {q0} to {q} bytes (bound {}) and the \
                 connection stayed {:?}",
                self.bound,
                conn.state()
            );
        }
        if conn.is_closed() {
            assert_eq!(conn.in_flight(), 0, "exchanges in flight after close");
        }
    }
}

/// Drives `handle_timeout` at `now` until no timer is due; a timer that stays due is a
/// livelock for any adapter loop.
fn fire_timers(conn: &mut Connection, now: crate::Instant) {
    conn.handle_timeout(now);
    for _ in 0..8 {
        match conn.poll_timeout() {
            Some(t) if t <= now => conn.handle_timeout(now),
            _ => return,
        }
    }
    panic!(
        "poll_timeout stays at {:?} <= now {now:?} after 9 handle_timeout calls (state {:?})",
        conn.poll_timeout(),
        conn.state()
    );
}

/// Transmits up to `calls` batches; checks that every frame we send decodes, and, once the
/// queue is drained, that `queued_bytes` accounted exactly for what was sent.
fn transmit(conn: &mut Connection, calls: usize, sink: &mut impl FnMut(Bytes)) {
    let q0 = conn.queued_bytes();
    let mut total = 0;
    let mut drained = false;
    for _ in 0..calls {
        let mut buf = BytesMut::new();
        let n = conn.poll_transmit(&mut buf);
        assert_eq!(n, buf.len());
        if n == 0 {
            drained = true;
            break;
        }
        total += n;
        let batch = buf.freeze();
        for r in decode_message(&batch, u32::MAX) {
            if let Err(e) = r {
                panic!("we sent a frame that does not decode: {e} in {batch:02x?}");
            }
        }
        sink(batch);
    }
    let gated = matches!(conn.state(), State::Detached | State::Resuming);
    if drained && !gated {
        assert!(!conn.wants_transmit(), "drained queue still wants transmit");
        assert_eq!(
            conn.queued_bytes(),
            0,
            "queued_bytes after the queue drained"
        );
        assert_eq!(
            total, q0,
            "queued_bytes was {q0} but {total} bytes were sent"
        );
    }
}

/// Ids the harness knows about, for commands and targeted peer frames.
#[derive(Default)]
struct Ids(Vec<u16>);

impl Ids {
    fn add(&mut self, id: RequestId) {
        if !self.0.contains(&id.0) {
            if self.0.len() >= 16 {
                self.0.remove(0);
            }
            self.0.push(id.0);
        }
    }

    /// A known id, or (if none, or for high `slot`) a raw one near the start of `space`.
    fn get(&self, slot: u8, space: u16) -> RequestId {
        if self.0.is_empty() || slot >= 0xf0 {
            RequestId(space.wrapping_add(u16::from(slot & 0x0f)))
        } else {
            RequestId(self.0[usize::from(slot) % self.0.len()])
        }
    }
}

/// One connection and its scripted peer.
struct Session {
    role: Role,
    conn: Connection,
    now: crate::Instant,
    /// `true`: WebSocket messages (`handle_message`); `false`: a byte stream.
    messages: bool,
    check: Checker,
    /// Client: invocations; server: requests (the ones this side opened).
    mine: Ids,
    /// Client: server requests; server: invocations (the peer's).
    theirs: Ids,
    /// Next `seq` the peer uses on each invocation (client harness).
    peer_seq: BTreeMap<u16, u32>,
    /// Bytes this side transmitted.
    sent: usize,
}

impl Session {
    fn deliver(&mut self, wire: Bytes, split: u8) {
        if self.messages {
            self.conn.handle_message(self.now, wire);
        } else if split == 0 || wire.is_empty() {
            self.conn.handle_bytes(self.now, wire);
        } else {
            let step = usize::from(split);
            let mut off = 0;
            while off < wire.len() {
                let end = (off + step).min(wire.len());
                self.conn.handle_bytes(self.now, wire.slice(off..end));
                off = end;
            }
        }
    }

    fn send_frame(&mut self, f: &Frame, split: u8) {
        self.deliver(encode_one(f), split);
    }

    fn poll(&mut self, n: usize) {
        for _ in 0..n {
            let Some(ev) = self.conn.poll_event() else {
                break;
            };
            self.check.event(&ev);
            match &ev {
                Event::Invoked(i) => self.theirs.add(i.id),
                Event::Requested(r) => self.theirs.add(r.id),
                _ => {}
            }
        }
    }

    fn peer_hello(&mut self, b: u8, split: u8) {
        let limits = HelloLimits {
            max_frame_payload: [None, Some(64), Some(200), Some(1 << 16)][usize::from(b & 3)],
            max_inflight: [None, Some(1), Some(2)][usize::from(b >> 2 & 3) % 3],
            max_tools: [None, Some(0), Some(1)][usize::from(b >> 4 & 3) % 3],
            max_chunk: [None, Some(4), Some(8)][usize::from(b >> 2 & 3) % 3],
            initial_window: [None, Some(8), Some(64)][usize::from(b >> 4 & 3) % 3],
            ..HelloLimits::default()
        };
        let heartbeat_ms = [None, Some(0), Some(100), Some(1000)][usize::from(b >> 6)];
        let hello = match self.role {
            Role::Server => {
                let mut capabilities = Vec::new();
                if b & 1 == 0 {
                    capabilities.push(Text::from_static("requests"));
                }
                if b & 2 == 0 {
                    capabilities.push(Text::from_static("resume"));
                }
                Hello {
                    versions: Versions::V1,
                    capabilities,
                    limits,
                    heartbeat_ms,
                    agent: Some(Text::from_static("peer")),
                    ..Hello::default()
                }
            }
            Role::Client => Hello {
                versions: Versions::V1,
                capabilities: Vec::new(),
                limits,
                heartbeat_ms,
                connection_id: Some(Text::from_static("c1")),
                resume_token: (b & 1 == 0).then(|| Bytes::from_static(b"token")),
                tools: u16::from(b >> 1 & 3),
                agent: None,
            },
        };
        self.send_frame(&Frame::Hello(hello), split);
    }
}

/// Fuzz targets `server_session` and `client_session`: one [`Connection`] with a small
/// [`Config`], driven by a structured sequence of operations: inbound frames (valid ones
/// from arbitrary [`Frame`] values, frames aimed at exchanges in flight, corrupted
/// encodings, raw bytes), local commands, clock advances, transport events and polls.
///
/// Layout: 4 config bytes (see `small_config`; bit 4 of byte 3 selects WebSocket messages
/// instead of a byte stream), then operations until the input ends, each one tag byte
/// (`tag % 22`) and its fields. Tag 3 (raw bytes) is `03 len_lo len_hi split bytes…`; tag 0
/// (a valid peer HELLO) is `00 b split`; tag 10 (transmit) is `0a calls`; tag 11 (poll
/// events) is `0b n`.
///
/// Tags: 0 peer HELLO, 1 arbitrary frame, 2 corrupted frame, 3 raw bytes, 4 peer opens an
/// exchange, 5 peer STREAM (client) / CREDIT (server), 6 peer ends one of ours, 7 peer
/// INTERRUPT, 8 peer TOOL_DEF (client) / PING or GOAWAY (server), 9 clock advance,
/// 10 transmit, 11 poll events, 12 transport event; local commands: 13 invoke/request,
/// 14 stream/release, 15 complete/reply, 16 fail, 17 interrupt, 18 add/remove tool,
/// 19 goaway, 20 close, 21 resume/accept/reject.
///
/// Invariants after every step: no panic; `queued_bytes` never grows past
/// `max_buffered` through peer input without the connection closing (timers:
/// by at most a PING, deadline ERRORs and a fatal ERROR; see `Checker::after_step`), and
/// never grows once closed; a drained queue accounts for every byte sent; every frame sent
/// decodes; timers converge; each exchange this side opened ends exactly once
/// ([`Event::InvocationEnded`] or [`Event::RequestEnded`]) and its id is not handed out
/// again before that; nothing follows [`Event::Closed`], and nothing is in flight then; an
/// OVERLOADED close has a current overload behind it.
pub fn session(role: Role, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = <[u8; 4]>::arbitrary(&mut u) else {
        return;
    };
    let config = small_config(cfg, false);
    let now = crate::Instant::ZERO;
    let conn = match role {
        Role::Client => Connection::client(config.clone(), now),
        Role::Server => Connection::server(
            config.clone(),
            ServerParams {
                connection_id: Text::from_static("c1"),
                resume_token: config.resume.then(|| Bytes::from_static(b"token")),
            },
            now,
        ),
    };
    let mut s = Session {
        role,
        conn,
        now,
        messages: cfg[3] & 0x10 != 0,
        check: Checker::new(&config),
        mine: Ids::default(),
        theirs: Ids::default(),
        peer_seq: BTreeMap::new(),
        sent: 0,
    };
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        if session_op(&mut s, &mut u).is_err() {
            break;
        }
    }
    // Finally: drain everything, close, and check the ending.
    let q0 = s.conn.queued_bytes();
    let was_closed = s.conn.is_closed();
    s.poll(usize::MAX);
    s.check.after_step(&s.conn, q0, was_closed, Step::Local);
    s.conn.close(CloseReason::Local);
    s.poll(usize::MAX);
    assert!(s.check.closed, "no Closed event after close()");
    transmit(&mut s.conn, usize::MAX, &mut |_| {});
}

fn session_op(s: &mut Session, u: &mut Unstructured<'_>) -> Result<()> {
    let tag = u8::arbitrary(u)? % 22;
    let q0 = s.conn.queued_bytes();
    let was_closed = s.conn.is_closed();
    let client = s.role == Role::Client;
    let mut kind = Step::Peer;
    match tag {
        // ── the peer ──
        0 => {
            let b = u8::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            s.peer_hello(b, split);
        }
        1 => {
            let f = Frame::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            s.send_frame(&f, split);
        }
        2 => {
            // A corrupted valid frame.
            let f = Frame::arbitrary(u)?;
            let how = u8::arbitrary(u)?;
            let pos = usize::from(u16_le(u)?);
            let val = u8::arbitrary(u)?;
            let split = u8::arbitrary(u)?;
            let mut wire = encode_one(&f).to_vec();
            let n = wire.len();
            match how % 5 {
                0 => wire[pos % n] ^= 1 << (val & 7),
                1 => wire.truncate(pos % n),
                2 => wire[pos % HEADER_LEN] = val,
                3 => {
                    // Length field off by a little.
                    let len = u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]]);
                    let len = len.wrapping_add(u32::from(val & 0x0f)).wrapping_sub(8);
                    wire[4..8].copy_from_slice(&len.to_be_bytes());
                }
                _ => wire.insert(HEADER_LEN + pos % (n - HEADER_LEN + 1), val),
            }
            s.deliver(Bytes::from(wire), split);
        }
        3 => {
            let len = usize::from(u16_le(u)?);
            let split = u8::arbitrary(u)?;
            let b = u.bytes(len.min(u.len()))?;
            s.deliver(Bytes::copy_from_slice(b), split);
        }
        4 => {
            // The peer opens an exchange: INVOKE (to a server) or REQUEST (to a client).
            let b = u8::arbitrary(u)?;
            let deadline = pick(&[0, 0, 1, 50, 1000, 30_000], u8::arbitrary(u)?);
            let body = opt_raw(u)?;
            let f = if client {
                Frame::Request(Request {
                    id: RequestId(0x8000 + u16::from(b & 3)),
                    kind: Text::from(pick(WORDS, b >> 2)),
                    body,
                    invocation: (b & 0x80 != 0).then(|| s.mine.get(b, 1)),
                })
            } else {
                Frame::Invoke(Invoke {
                    id: RequestId(1 + u16::from(b & 3)),
                    tool: Text::from(pick(WORDS, b >> 2)),
                    args: body,
                    deadline_ms: deadline,
                    meta: None,
                })
            };
            s.send_frame(&f, 0);
        }
        5 => {
            // Client: STREAM on a known invocation; server: CREDIT.
            let slot = u8::arbitrary(u)?;
            let len = usize::from(u16_le(u)? % 4200);
            let flags = u8::arbitrary(u)?;
            let id = s.mine.get(slot, 1);
            let f = if client {
                let next = s.peer_seq.entry(id.0).or_insert(0);
                let seq = if flags & 0x30 == 0x30 {
                    next.wrapping_add(u32::from(flags >> 6)).wrapping_sub(1)
                } else {
                    *next
                };
                *next = next.wrapping_add(1);
                Frame::Stream(Stream {
                    id,
                    data: Bytes::from(vec![b'd'; len]),
                    text: flags & 1 != 0,
                    seq,
                    fin: flags & 2 != 0,
                })
            } else {
                let id = s.theirs.get(slot, 1);
                let bytes = match flags & 3 {
                    0 => len as u32 + 1,
                    1 => 1,
                    2 => u32::MAX,
                    _ => u32::MAX / 2 + len as u32,
                };
                Frame::Credit(Credit { id, bytes })
            };
            s.send_frame(&f, flags >> 3 & 7);
        }
        6 => {
            // The peer ends an exchange this side opened: COMPLETE / REPLY / ERROR.
            let slot = u8::arbitrary(u)?;
            let how = u8::arbitrary(u)?;
            let f = if how & 1 == 0 {
                if client {
                    Frame::Complete(Complete {
                        id: s.mine.get(slot, 1),
                        status: pick(&[Status::Ok, Status::Cancelled, Status::Failed], how >> 1),
                        result: Some(RawValue::uint(u64::from(how))),
                        metrics: Metrics::default(),
                    })
                } else {
                    Frame::Reply(Reply {
                        id: s.mine.get(slot, 0x8000),
                        status: ReplyStatus::Answered,
                        body: None,
                    })
                }
            } else {
                let id = match how >> 1 & 3 {
                    0 => RequestId::CONNECTION,
                    1 => s.theirs.get(slot, if client { 0x8000 } else { 1 }),
                    _ => s.mine.get(slot, if client { 1 } else { 0x8000 }),
                };
                Frame::Error(ErrorFrame {
                    id,
                    code: ErrorCode::arbitrary(u)?,
                    message: None,
                    retryable: false,
                    frame_type: None,
                })
            };
            s.send_frame(&f, 0);
        }
        7 => {
            // INTERRUPT of an exchange the peer opened... from the peer's side: aimed at
            // ours it is a violation, at theirs it is the peer interrupting its own.
            let slot = u8::arbitrary(u)?;
            let id = if slot & 1 == 0 {
                s.theirs.get(slot, if client { 0x8000 } else { 1 })
            } else {
                s.mine.get(slot, if client { 1 } else { 0x8000 })
            };
            let reason = opt_text(u, 0, 1024)?;
            s.send_frame(&Frame::Interrupt(Interrupt { id, reason }), 0);
        }
        8 => {
            // Client: TOOL_DEF; server: PING / GOAWAY.
            let b = u8::arbitrary(u)?;
            let f = if client {
                Frame::ToolDef(ToolDef {
                    op: pick(&[ToolOp::Add, ToolOp::Update, ToolOp::Remove], b),
                    name: Text::from(pick(WORDS, b >> 2)),
                    description: Text::default(),
                    input_schema: opt_raw(u)?,
                    annotations: None,
                })
            } else if b & 1 == 0 {
                Frame::PING
            } else {
                Frame::GoAway(GoAway {
                    reason: None,
                    timeout_ms: u32::from(b),
                })
            };
            s.send_frame(&f, 0);
        }
        9 => {
            kind = Step::Timer {
                in_flight: s.conn.in_flight(),
            };
            s.now = s.now + step_of(u8::arbitrary(u)?);
            fire_timers(&mut s.conn, s.now);
        }
        10 => {
            let calls = usize::from(u8::arbitrary(u)?);
            let calls = if calls == 0 { usize::MAX } else { calls };
            let mut sent = 0;
            transmit(&mut s.conn, calls, &mut |b| sent += b.len());
            s.sent += sent;
        }
        11 => {
            kind = Step::Local; // auto credit queues CREDIT frames
            let n = usize::from(u8::arbitrary(u)?);
            s.poll(if n == 0 { usize::MAX } else { n });
        }
        12 => match u8::arbitrary(u)? % 4 {
            0 => s.conn.handle_transport_closed(s.now),
            1 => s.conn.handle_transport_pong(s.now),
            2 => s.conn.handle_text_message(s.now),
            _ => {
                let _ = s.conn.poll_ping();
            }
        },
        // ── local commands ──
        tag => {
            kind = Step::Local;
            local_command(s, tag, u)?;
        }
    }
    if !was_closed && s.conn.is_closed() {
        let (q, seen) = (s.conn.queued_bytes(), s.check.seen);
        s.poll(usize::MAX);
        s.check.closed_by(q, s.check.seen - seen);
    }
    s.check.after_step(&s.conn, q0, was_closed, kind);
    Ok(())
}

fn local_command(s: &mut Session, tag: u8, u: &mut Unstructured<'_>) -> Result<()> {
    let client = s.role == Role::Client;
    let now = s.now;
    match tag {
        13 => {
            // Open: invoke / request.
            let b = u8::arbitrary(u)?;
            let body = opt_raw(u)?;
            let name = if b & 0x80 == 0 {
                Text::from(pick(WORDS, b))
            } else {
                text(u, 0, 200)?
            };
            let r = if client {
                let opts = InvokeOptions {
                    deadline_ms: pick(&[0, 0, 1, 50, 1000, 30_000], b >> 4),
                    meta: opt_raw(u)?,
                };
                s.conn.invoke(name, body, opts)
            } else {
                let inv = (b & 0x40 != 0).then(|| s.theirs.get(b, 1));
                s.conn.request(name, body, inv)
            };
            if let Ok(id) = r {
                s.check.opened(id);
                s.mine.add(id);
            }
        }
        14 => {
            // Server: stream; client: release.
            let slot = u8::arbitrary(u)?;
            let len = usize::from(u16_le(u)? % 4200);
            let flags = u8::arbitrary(u)?;
            if client {
                s.conn.release(s.mine.get(slot, 1), len);
            } else {
                let fill = if flags & 4 != 0 { 0xff } else { b's' };
                let _ = s.conn.stream(
                    s.theirs.get(slot, 1),
                    Bytes::from(vec![fill; len]),
                    StreamOptions::BINARY
                        .text(flags & 1 != 0)
                        .fin(flags & 2 != 0),
                );
            }
        }
        15 => {
            // Server: complete; client: reply.
            let slot = u8::arbitrary(u)?;
            let st = u8::arbitrary(u)?;
            let body = opt_raw(u)?;
            let _ = if client {
                s.conn.reply(
                    s.theirs.get(slot, 0x8000),
                    pick(
                        &[
                            ReplyStatus::Answered,
                            ReplyStatus::Cancelled,
                            ReplyStatus::Declined,
                        ],
                        st,
                    ),
                    body,
                )
            } else {
                s.conn.complete(
                    s.theirs.get(slot, 1),
                    pick(&[Status::Ok, Status::Cancelled, Status::Failed], st),
                    body,
                    Metrics::arbitrary(u)?,
                )
            };
        }
        16 => {
            let slot = u8::arbitrary(u)?;
            let code = ErrorCode::arbitrary(u)?;
            let msg = opt_text_long(u)?;
            let retry = bool::arbitrary(u)?;
            let id = s.theirs.get(slot, if client { 0x8000 } else { 1 });
            let _ = s.conn.fail(id, code, msg, retry);
        }
        17 => {
            let slot = u8::arbitrary(u)?;
            let id = s.mine.get(slot, if client { 1 } else { 0x8000 });
            let reason = long_text(u)?;
            let _ = s.conn.interrupt(id, reason);
        }
        18 => {
            // Server: add / remove tool; client: nothing of its own (WrongRole).
            let b = u8::arbitrary(u)?;
            if b & 1 == 0 {
                let def = ToolDef {
                    op: ToolOp::Add,
                    name: if b & 0x80 == 0 {
                        Text::from(pick(WORDS, b >> 1))
                    } else {
                        text(u, 0, 200)?
                    },
                    description: opt_text_long(u)?,
                    input_schema: opt_raw(u)?,
                    annotations: None,
                };
                let _ = s.conn.add_tool(def);
            } else {
                let _ = s.conn.remove_tool(pick(WORDS, b >> 1));
            }
        }
        19 => {
            let b = u8::arbitrary(u)?;
            let reason = long_text(u)?;
            s.conn.goaway(now, reason, step_of(b));
        }
        20 => s.conn.close(CloseReason::Local),
        _ => {
            let b = u8::arbitrary(u)?;
            if client {
                let _ = s.conn.resume(now);
            } else if b & 1 == 0 {
                let _ = s.conn.accept_resume(now, u64::from(b >> 1));
            } else {
                s.conn.reject_resume(now);
            }
        }
    }
    Ok(())
}

// ───────────────────────────── pair target ─────────────────────────────

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

/// One direction of the wire.
#[derive(Default)]
struct Pipe {
    /// WebSocket mode: whole messages.
    messages: VecDeque<Bytes>,
    /// Byte-stream mode.
    stream: BytesMut,
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
    c2s: Pipe,
    s2c: Pipe,
    messages: bool,
    wire_up: bool,
    now: crate::Instant,
    model: PairModel,
}

impl Pair {
    /// (`me`, the peer, `me`'s outgoing pipe). `server_side`: `me` is the server.
    fn sides(&mut self, server_side: bool) -> (&mut Side, &mut Side, &mut Pipe) {
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
                    if messages {
                        out.messages.push_back(batch);
                    } else {
                        out.stream.extend_from_slice(&batch);
                    }
                });
            }
            1 => {
                // Deliver some of what `me` sent to the peer.
                kind = Step::Peer;
                let (_, peer, out) = self.sides(server_side);
                if messages {
                    for _ in 0..=(b >> 5) {
                        if let Some(m) = out.messages.pop_front() {
                            peer.conn.handle_message(now, m);
                        }
                    }
                } else {
                    let n = usize::from(b >> 1);
                    let n = if n == 0 {
                        out.stream.len()
                    } else {
                        n.min(out.stream.len())
                    };
                    let chunk = out.stream.split_to(n).freeze();
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
        c2s: Pipe::default(),
        s2c: Pipe::default(),
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
