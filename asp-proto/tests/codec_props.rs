//! Property and unit tests of the frame codec (SPEC §3–§5): round trips of every frame type,
//! chunking invariance of [`Decoder`], robustness against arbitrary bytes, the memory bound
//! of SPEC §2.2/§3.6, and one deterministic test per rejection class of SPEC §3.7 / §4.3.

mod common;

use asp_proto::codec::{self, decode_frame, encoded_len, HEADER_LEN};
use asp_proto::error::{Invalid, Malformed};
use asp_proto::frame::{Hello, Invoke, Metrics, Stream, Versions};
use asp_proto::{DecodeError, DecodeErrorKind, Decoder, ErrorCode, Frame, FrameType, RawValue};
use bytes::{Bytes, BytesMut};
use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

type Item = Result<Frame, DecodeError>;

const BIG: u32 = u32::MAX;

// ───────────────────────────── helpers ─────────────────────────────

/// Every item `decode_frame` yields for `wire`, checking it always makes progress.
fn decode_all(wire: &Bytes, max: u32) -> Vec<Item> {
    let mut buf = wire.clone();
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        let Some(r) = decode_frame(&mut buf, max) else {
            break;
        };
        assert!(buf.len() < before, "decode_frame made no progress");
        out.push(r);
    }
    out
}

/// Drains a decoder, checking it cannot loop: every item consumes at least a header.
fn drain(dec: &mut Decoder, out: &mut Vec<Item>, bound: usize) {
    let mut n = 0usize;
    while let Some(r) = dec.next_frame() {
        out.push(r);
        n += 1;
        assert!(
            n <= bound,
            "decoder yielded more items than headers could fit"
        );
    }
}

/// How a chunk is handed to the decoder.
#[derive(Clone, Copy, Debug)]
struct Feed {
    /// `feed(Bytes)` (zero-copy path) or `feed_slice` (copying path).
    as_bytes: bool,
    /// Drain after this chunk (if not, the next feed joins onto unconsumed input).
    drain: bool,
}

fn feed_strategy() -> impl Strategy<Value = Feed> {
    (any::<bool>(), prop::bool::weighted(0.8))
        .prop_map(|(as_bytes, drain)| Feed { as_bytes, drain })
}

/// Cuts `wire` at the (sorted, deduplicated) `cuts` and feeds the pieces to a new decoder
/// with limit `max`, draining per `feeds`; checks the memory bound after each drain.
fn decode_chunked(wire: &Bytes, max: u32, cuts: &[Index], feeds: &[Feed]) -> (Vec<Item>, Decoder) {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    let bound = wire.len() / HEADER_LEN + 1;
    let mut dec = Decoder::new(max);
    let mut out = Vec::new();
    for (k, w) in points.windows(2).enumerate() {
        let chunk = wire.slice(w[0]..w[1]);
        let how = feeds.get(k % feeds.len().max(1)).copied().unwrap_or(Feed {
            as_bytes: true,
            drain: true,
        });
        if how.as_bytes {
            dec.feed(chunk);
        } else {
            dec.feed_slice(&chunk);
        }
        if how.drain {
            drain(&mut dec, &mut out, bound);
            assert_buffer_bound(&dec, max);
        }
    }
    drain(&mut dec, &mut out, bound);
    assert_buffer_bound(&dec, max);
    (out, dec)
}

/// SPEC §2.2: never more than `8 + max_frame_payload` bytes of one frame held.
fn assert_buffer_bound(dec: &Decoder, max: u32) {
    assert!(
        dec.buffered() as u64 <= HEADER_LEN as u64 + u64::from(max),
        "decoder buffers {} bytes with max_payload {max}",
        dec.buffered()
    );
}

/// Feeds `wire` to a new decoder one byte at a time, draining after each byte.
fn decode_bytewise(wire: &[u8], max: u32) -> (Vec<Item>, Decoder) {
    let mut dec = Decoder::new(max);
    let mut out = Vec::new();
    for b in wire {
        dec.feed_slice(std::slice::from_ref(b));
        drain(&mut dec, &mut out, wire.len() / HEADER_LEN + 1);
        assert_buffer_bound(&dec, max);
    }
    (out, dec)
}

/// `Decoder` (any chunking) and `decode_frame` (whole message) agree: identical items,
/// except that where the message ends inside a frame `decode_frame` reports the fatal
/// `Truncated` and the decoder instead waits for more input (possibly after reporting a
/// header error of that last frame, which it can see before the payload arrives).
fn assert_decoders_agree(whole: &[Item], stream: &[Item]) {
    match whole.last() {
        Some(Err(e)) if e.kind == DecodeErrorKind::Truncated => {
            let n = whole.len() - 1;
            assert_eq!(
                &stream[..n.min(stream.len())],
                &whole[..n.min(stream.len())]
            );
            assert!(
                stream.len() == n || stream.len() == n + 1,
                "{whole:?} vs {stream:?}"
            );
            if let Some(last) = stream.get(n) {
                // Only a non-fatal header error can be seen before the payload is whole.
                assert!(
                    matches!(last, Err(e) if !e.kind.is_fatal()),
                    "unexpected {last:?} where the message is truncated"
                );
            }
        }
        _ => assert_eq!(stream, whole),
    }
}

/// A byte mutation of an encoded buffer.
#[derive(Clone, Debug)]
enum Mutation {
    Xor(Index, u8),
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..).prop_map(|(i, x)| Mutation::Xor(i, x)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(wire: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = wire.to_vec();
    for m in muts {
        if v.is_empty() {
            break;
        }
        match m {
            Mutation::Xor(i, x) => {
                let i = i.index(v.len());
                v[i] ^= x;
            }
            Mutation::Set(i, x) => {
                let i = i.index(v.len());
                v[i] = *x;
            }
            Mutation::Insert(i, x) => {
                let i = i.index(v.len() + 1);
                v.insert(i, *x);
            }
            Mutation::Remove(i) => {
                let i = i.index(v.len());
                v.remove(i);
            }
            Mutation::Truncate(i) => {
                let i = i.index(v.len());
                v.truncate(i);
            }
        }
    }
    v
}

/// A version-1 header with a valid-looking id for a random type, and a payload that is a
/// MessagePack map of small keys (mostly defined ones) to arbitrary values: exercises the
/// field checks far more than uniformly random bytes do.
fn structured_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        1u8..=14,
        any::<u16>(),
        prop::bool::weighted(0.7),
        vec(
            (
                prop_oneof![8 => 0u64..9, 1 => any::<u64>()],
                msgpack_value(true),
            ),
            0..6,
        ),
    )
        .prop_map(|(ty, raw_id, fix_id, entries)| {
            let ft = FrameType::from_nibble(ty).expect("1..=14");
            let id = if fix_id {
                match ft.id_rule() {
                    asp_proto::frame::IdRule::Zero => 0,
                    asp_proto::frame::IdRule::Client => 1 + raw_id % 0x7fff,
                    asp_proto::frame::IdRule::Server => 0x8000 | raw_id,
                    asp_proto::frame::IdRule::NonZero => raw_id.max(1),
                    asp_proto::frame::IdRule::Any => raw_id,
                }
            } else {
                raw_id
            };
            let mut m = Mp::new().map(entries.len() as u32);
            for (k, v) in entries {
                m = m.uint(k).raw(&v);
            }
            raw_frame(ty, id, &m.0)
        })
}

// ───────────────────────────── properties ─────────────────────────────

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) encode → decode_frame is the identity, consumes exactly `encoded_len` bytes, and
    /// the header's length field is the payload's.
    #[test]
    fn roundtrip_decode_frame(f in arb_frame(), next in arb_frame()) {
        let mut buf = BytesMut::new();
        codec::encode(&f, &mut buf);
        prop_assert_eq!(buf.len(), encoded_len(&f));
        let payload_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        prop_assert_eq!(payload_len + HEADER_LEN, buf.len());
        prop_assert_eq!(buf[0], 0x10 | f.frame_type() as u8);
        prop_assert_eq!(buf[1], 0);
        prop_assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), f.request_id().0);
        // encode appends: a second frame follows the first.
        codec::encode(&next, &mut buf);
        let mut wire = buf.freeze();
        let total = wire.len();
        // The exact payload length is within the limit (SPEC §3.6: `>` max is too large).
        prop_assert_eq!(decode_frame(&mut wire, payload_len as u32), Some(Ok(f.clone())));
        prop_assert_eq!(total - wire.len(), encoded_len(&f));
        prop_assert_eq!(decode_frame(&mut wire, BIG), Some(Ok(next)));
        prop_assert!(wire.is_empty());
        prop_assert_eq!(decode_frame(&mut wire, BIG), None);
    }

    /// Decoding is canonical: decode(encode(decode(x))) == decode(x) for any payload that
    /// decodes at all, and decode errors carry the header's id and type.
    #[test]
    fn decode_is_stable_on_structured_garbage(wire in structured_garbage()) {
        let hdr = codec::Header::parse(&wire).expect("header");
        let mut buf = Bytes::from(wire);
        match decode_frame(&mut buf, BIG).expect("one item") {
            Ok(f) => {
                prop_assert_eq!(f.request_id().0, hdr.request_id);
                prop_assert_eq!(f.frame_type() as u8, hdr.frame_type);
                let mut again = encode_one(&f);
                prop_assert_eq!(decode_frame(&mut again, BIG), Some(Ok(f)));
            }
            Err(e) => {
                prop_assert_eq!(e.request_id, hdr.request_id);
                prop_assert_eq!(e.frame_type, hdr.frame_type);
                prop_assert!(!e.kind.is_fatal());
            }
        }
        prop_assert!(buf.is_empty());
    }

    /// (b) Any chunking, any mix of `feed`/`feed_slice`, draining or not between feeds,
    /// yields the same frames in order as decoding the whole buffer.
    #[test]
    fn decoder_chunked_matches_whole(
        frames in vec(arb_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
        feeds in vec(feed_strategy(), 1..8),
    ) {
        let wire = encode_all(&frames);
        let whole = decode_all(&wire, BIG);
        let expect: Vec<Item> = frames.iter().cloned().map(Ok).collect();
        prop_assert_eq!(&whole, &expect);
        let (got, dec) = decode_chunked(&wire, 1 << 20, &cuts, &feeds);
        prop_assert_eq!(&got, &expect);
        prop_assert_eq!(dec.buffered(), 0);
        prop_assert!(!dec.is_poisoned());
    }

    /// (b) One byte at a time.
    #[test]
    fn decoder_bytewise_matches_whole(frames in vec(arb_frame_upto(2048), 1..4)) {
        let wire = encode_all(&frames);
        let (got, dec) = decode_bytewise(&wire, 1 << 20);
        let expect: Vec<Item> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, expect);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// (c) Random bytes never panic either decoder, and both agree.
    #[test]
    fn random_bytes_never_panic(
        wire in vec(any::<u8>(), 0..300),
        max in prop_oneof![Just(0u32), Just(64), 1u32..4096],
        cuts in vec(any::<Index>(), 0..8),
        feeds in vec(feed_strategy(), 1..4),
    ) {
        let wire = Bytes::from(wire);
        let whole = decode_all(&wire, max);
        let (stream, _) = decode_chunked(&wire, max, &cuts, &feeds);
        assert_decoders_agree(&whole, &stream);
        let (bytewise, _) = decode_bytewise(&wire, max);
        assert_decoders_agree(&whole, &bytewise);
    }

    /// (c) Random bytes behind a valid version-1 header (so the payload checks run).
    #[test]
    fn random_payloads_never_panic(
        ty in 0u8..16,
        id in any::<u16>(),
        payload in vec(any::<u8>(), 0..200),
        more in vec(any::<u8>(), 0..40),
    ) {
        let mut wire = raw_frame(ty, id, &payload);
        wire.extend_from_slice(&more);
        let wire = Bytes::from(wire);
        let whole = decode_all(&wire, BIG);
        let (stream, _) = decode_bytewise(&wire, 4096);
        assert_decoders_agree(&whole, &stream);
    }

    /// (c) Valid encodings with random mutations and truncations never panic, and the
    /// stream decoder agrees with the message decoder in any chunking.
    #[test]
    fn mutated_encodings_never_panic(
        frames in vec(arb_frame_upto(4096), 1..4),
        muts in vec(mutation(), 1..6),
        cuts in vec(any::<Index>(), 0..8),
        feeds in vec(feed_strategy(), 1..4),
    ) {
        let wire = Bytes::from(apply(&encode_all(&frames), &muts));
        let whole = decode_all(&wire, 1 << 16);
        let (stream, _) = decode_chunked(&wire, 1 << 16, &cuts, &feeds);
        assert_decoders_agree(&whole, &stream);
    }

    /// (c) Structured garbage (typed headers, maps of arbitrary values), concatenated and
    /// chunked.
    #[test]
    fn structured_garbage_chunked(
        frames in vec(structured_garbage(), 1..5),
        cuts in vec(any::<Index>(), 0..10),
        feeds in vec(feed_strategy(), 1..4),
    ) {
        let wire = Bytes::from(frames.concat());
        let whole = decode_all(&wire, BIG);
        prop_assert_eq!(whole.len(), frames.len());
        let (stream, dec) = decode_chunked(&wire, 1 << 16, &cuts, &feeds);
        prop_assert_eq!(&stream, &whole);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// (d) With a small limit, the decoder never holds more than `8 + max` bytes after a
    /// feed/drain cycle, whatever the input.
    #[test]
    fn decoder_memory_is_bounded(
        max in prop_oneof![Just(64u32), 0u32..200],
        parts in vec(prop_oneof![
            vec(any::<u8>(), 0..200),
            arb_frame_upto(600).prop_map(|f| encode_one(&f).to_vec()),
            (0u8..16, any::<u16>(), vec(any::<u8>(), 0..300))
                .prop_map(|(ty, id, p)| raw_frame(ty, id, &p)),
        ], 1..6),
        cuts in vec(any::<Index>(), 0..16),
        feeds in vec(feed_strategy(), 1..4),
    ) {
        let wire = Bytes::from(parts.concat());
        // `decode_chunked` asserts the bound after every drain.
        let whole = decode_all(&wire, max);
        let (stream, _) = decode_chunked(&wire, max, &cuts, &feeds);
        assert_decoders_agree(&whole, &stream);
        // And byte-at-a-time, the worst case for stashing.
        let (bytewise, _) = decode_bytewise(&wire, max);
        prop_assert_eq!(bytewise, stream);
    }

    /// (e) Frames over the limit give `FrameTooLarge` (with the header's id and type) and
    /// are skipped exactly: the next frame still decodes, in any chunking, with either
    /// decoder. Oversize payloads may be garbage: they are never looked at.
    #[test]
    fn oversize_frames_are_skipped(
        max in 64u32..400,
        items in vec(prop_oneof![
            3 => arb_frame_upto(1200).prop_map(Ok),
            1 => (0u8..16, any::<u16>(), vec(any::<u8>(), 401..800))
                .prop_map(|(ty, id, p)| Err(raw_frame(ty, id, &p))),
        ], 1..6),
        cuts in vec(any::<Index>(), 0..12),
        feeds in vec(feed_strategy(), 1..4),
    ) {
        let mut wire = Vec::new();
        let mut expect: Vec<Item> = Vec::new();
        for it in &items {
            let bytes = match it {
                Ok(f) => encode_one(f).to_vec(),
                Err(raw) => raw.clone(),
            };
            let payload = (bytes.len() - HEADER_LEN) as u32;
            if payload > max {
                expect.push(Err(DecodeError {
                    request_id: u16::from_be_bytes([bytes[2], bytes[3]]),
                    frame_type: bytes[0] & 0x0f,
                    kind: DecodeErrorKind::FrameTooLarge { len: payload, max },
                }));
            } else {
                let f = match it {
                    Ok(f) => f.clone(),
                    Err(_) => unreachable!("raw frames are always oversize"),
                };
                expect.push(Ok(f));
            }
            wire.extend_from_slice(&bytes);
        }
        let wire = Bytes::from(wire);
        prop_assert_eq!(&decode_all(&wire, max), &expect);
        let (got, dec) = decode_chunked(&wire, max, &cuts, &feeds);
        prop_assert_eq!(&got, &expect);
        prop_assert_eq!(dec.buffered(), 0);
    }
}

// ───────────────────────────── deterministic: rejection classes ─────────────────────────────

const PING: [u8; 8] = [0x18, 0, 0, 0, 0, 0, 0, 0];

/// Decodes `wire` (which must hold exactly one frame) with `decode_frame`, with a decoder
/// fed all at once and with a decoder fed byte by byte, checks all three agree, and — for a
/// non-fatal error — that a PING after it still decodes. Returns the one item.
fn one(wire: &[u8]) -> Item {
    let mut with_ping = wire.to_vec();
    with_ping.extend_from_slice(&PING);
    let with_ping = Bytes::from(with_ping);

    let whole = decode_all(&with_ping, 1 << 20);
    let (bytewise, bytewise_dec) = decode_bytewise(&with_ping, 1 << 20);
    assert_eq!(whole, bytewise, "decode_frame vs byte-wise Decoder");
    let mut dec = Decoder::new(1 << 20);
    dec.feed(with_ping.clone());
    let mut streamed = Vec::new();
    drain(&mut dec, &mut streamed, 1000);
    assert_eq!(whole, streamed, "decode_frame vs Decoder");

    let first = whole.first().cloned().expect("one item");
    match &first {
        Err(e) if e.kind.is_fatal() => {
            assert_eq!(whole.len(), 1, "nothing after a fatal error: {whole:?}");
            assert!(dec.is_poisoned() && bytewise_dec.is_poisoned());
        }
        _ => assert_eq!(whole.get(1..), Some(&[Ok(Frame::PING)][..]), "{whole:?}"),
    }
    first
}

/// Expects `wire` to be rejected with `kind`, reported with the header's id and type.
#[track_caller]
fn rejects(wire: &[u8], kind: DecodeErrorKind) {
    let e = one(wire).expect_err("should be rejected");
    assert_eq!(e.kind, kind, "wire {wire:02x?}");
    assert_eq!(
        e.request_id,
        u16::from_be_bytes([wire[2], wire[3]]),
        "request_id"
    );
    assert_eq!(e.frame_type, wire[0] & 0x0f, "frame_type");
}

#[track_caller]
fn accepts(wire: &[u8]) -> Frame {
    one(wire).unwrap_or_else(|e| panic!("rejected {wire:02x?}: {e}"))
}

fn malformed(m: Malformed) -> DecodeErrorKind {
    DecodeErrorKind::Malformed(m)
}

fn missing(field: &'static str) -> DecodeErrorKind {
    DecodeErrorKind::MissingField { field }
}

fn invalid(field: &'static str, reason: Invalid) -> DecodeErrorKind {
    DecodeErrorKind::InvalidField { field, reason }
}

/// A minimal valid payload for each type, so header-level tests have a well-formed body.
fn valid_payload(ty: FrameType) -> Vec<u8> {
    let m = Mp::new();
    match ty {
        FrameType::Hello => m.map(1).uint(0).array(1).uint(1),
        FrameType::Invoke => m.map(1).uint(0).str("t"),
        FrameType::Stream => m.map(2).uint(0).str("x").uint(1).uint(0),
        FrameType::ToolDef => m.map(2).uint(0).uint(0).uint(1).str("t"),
        FrameType::Complete | FrameType::Reply => m.map(1).uint(0).uint(0),
        FrameType::Error => m.map(1).uint(0).uint(0x13),
        FrameType::Request => m.map(1).uint(0).str("confirm"),
        FrameType::Credit => m.map(1).uint(0).uint(1),
        FrameType::Resume => m.map(1).uint(1).uint(0),
        FrameType::Interrupt | FrameType::Ping | FrameType::Pong | FrameType::GoAway => m,
    }
    .0
}

fn valid_id(ty: FrameType) -> u16 {
    match ty.id_rule() {
        asp_proto::frame::IdRule::Zero | asp_proto::frame::IdRule::Any => 0,
        asp_proto::frame::IdRule::Client | asp_proto::frame::IdRule::NonZero => 7,
        asp_proto::frame::IdRule::Server => 0x8007,
    }
}

#[test]
fn minimal_payloads_are_valid() {
    for ty in FrameType::ALL {
        let f = accepts(&raw_frame(ty as u8, valid_id(ty), &valid_payload(ty)));
        assert_eq!(f.frame_type(), ty);
    }
}

// SPEC §3.2: wrong version is fatal.

#[test]
fn wrong_version_is_fatal_and_poisons_the_decoder() {
    for version in [0u8, 2, 3, 0xf] {
        let mut wire = raw_frame_full(version, 8, 0, 0, &[]);
        let kind = DecodeErrorKind::UnsupportedVersion { version };
        rejects(&wire, kind);
        assert_eq!(kind.code(), ErrorCode::UNSUPPORTED_VERSION);

        // Valid frames after it are never returned: not by decode_frame (buffer cleared)...
        wire.extend_from_slice(&encode_one(&Frame::PONG));
        let mut buf = Bytes::from(wire.clone());
        assert_eq!(
            decode_frame(&mut buf, BIG).map(|r| r.map_err(|e| e.kind)),
            Some(Err(kind))
        );
        assert!(buf.is_empty());
        assert_eq!(decode_frame(&mut buf, BIG), None);

        // ...nor by a decoder, even when fed later. (Here the bad header arrives split, so it
        // completes in the decoder's `partial` buffer; `rejects` above and
        // `decoder_wrong_version_with_whole_header_does_not_panic` cover the zero-copy path.)
        let mut dec = Decoder::new(1 << 20);
        dec.feed(encode_one(&Frame::PING));
        dec.feed(Bytes::copy_from_slice(&wire[..3]));
        assert_eq!(dec.next_frame(), Some(Ok(Frame::PING)));
        assert_eq!(dec.next_frame(), None);
        dec.feed(Bytes::copy_from_slice(&wire[3..]));
        assert_eq!(
            dec.next_frame().map(|r| r.map_err(|e| e.kind)),
            Some(Err(kind))
        );
        assert!(dec.is_poisoned());
        assert_eq!(dec.next_frame(), None);
        dec.feed(encode_one(&Frame::PING));
        dec.feed_slice(&PING);
        assert_eq!(dec.next_frame(), None);
        assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn wrong_version_is_detected_from_the_header_alone() {
    // The decoder reports it as soon as the 8 header bytes are in, without the payload,
    // and takes precedence over an oversize length (SPEC §3.7 step 1 before 2).
    let hdr = header(2, 0x2, 0xff, 5, u32::MAX);
    let mut dec = Decoder::new(64);
    for b in &hdr[..7] {
        dec.feed_slice(&[*b]);
        assert_eq!(dec.next_frame(), None);
    }
    dec.feed_slice(&hdr[7..]);
    let e = dec.next_frame().expect("item").expect_err("error");
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { version: 2 });
    assert_eq!((e.request_id, e.frame_type), (5, 2));
    assert!(dec.is_poisoned());

    let mut buf = Bytes::copy_from_slice(&hdr);
    let e = decode_frame(&mut buf, 64)
        .expect("item")
        .expect_err("error");
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { version: 2 });
}

// SPEC §3.3: reserved types.

#[test]
fn unknown_frame_types() {
    for ty in [0x0u8, 0xF] {
        for id in [0u16, 1, 0x8000] {
            rejects(&raw_frame(ty, id, &[]), DecodeErrorKind::UnknownFrameType);
            // With a payload too: it is skipped, not parsed.
            rejects(
                &raw_frame(ty, id, &[0xc1, 0xc1]),
                DecodeErrorKind::UnknownFrameType,
            );
        }
    }
    assert_eq!(
        DecodeErrorKind::UnknownFrameType.code(),
        ErrorCode::UNKNOWN_FRAME_TYPE
    );
}

// SPEC §3.4: every flag bit is reserved.

#[test]
fn each_reserved_flag_bit() {
    for bit in 0..8 {
        let flags = 1u8 << bit;
        for ty in FrameType::ALL {
            let wire = raw_frame_full(1, ty as u8, flags, valid_id(ty), &valid_payload(ty));
            rejects(&wire, DecodeErrorKind::ReservedFlags { flags });
        }
    }
    rejects(
        &raw_frame_full(1, 8, 0xff, 0, &[]),
        DecodeErrorKind::ReservedFlags { flags: 0xff },
    );
}

// SPEC §3.5: ids.

#[test]
fn invalid_id_per_rule() {
    use asp_proto::frame::IdRule;
    for ty in FrameType::ALL {
        let (bad, good): (&[u16], &[u16]) = match ty.id_rule() {
            IdRule::Zero => (&[1, 0x7fff, 0x8000, 0xffff], &[0]),
            IdRule::Client => (&[0, 0x8000, 0xffff], &[1, 0x7fff]),
            IdRule::Server => (&[0, 1, 0x7fff], &[0x8000, 0xffff]),
            IdRule::NonZero => (&[0], &[1, 0x7fff, 0x8000, 0xffff]),
            IdRule::Any => (&[], &[0, 1, 0x7fff, 0x8000, 0xffff]),
        };
        for &id in bad {
            rejects(
                &raw_frame(ty as u8, id, &valid_payload(ty)),
                DecodeErrorKind::InvalidId,
            );
            // The payload is not parsed: an id error wins over a malformed payload.
            rejects(
                &raw_frame(ty as u8, id, &[0xc1]),
                DecodeErrorKind::InvalidId,
            );
        }
        for &id in good {
            let f = accepts(&raw_frame(ty as u8, id, &valid_payload(ty)));
            assert_eq!(f.request_id().0, id);
        }
    }
    // The table of SPEC §3.3/§3.5.
    use FrameType as T;
    for (ty, rule) in [
        (T::Hello, IdRule::Zero),
        (T::Invoke, IdRule::Client),
        (T::Stream, IdRule::Client),
        (T::Interrupt, IdRule::NonZero),
        (T::ToolDef, IdRule::Zero),
        (T::Complete, IdRule::Client),
        (T::Error, IdRule::Any),
        (T::Ping, IdRule::Zero),
        (T::Pong, IdRule::Zero),
        (T::Request, IdRule::Server),
        (T::Reply, IdRule::Server),
        (T::Credit, IdRule::Client),
        (T::GoAway, IdRule::Zero),
        (T::Resume, IdRule::Zero),
    ] {
        assert_eq!(ty.id_rule(), rule, "{ty:?}");
    }
}

#[test]
fn header_checks_run_in_spec_order() {
    // SPEC §3.7: version, length, type, flags, id, payload — the first failure decides.
    let mut dec = Decoder::new(4);
    let check = |h: [u8; 8]| codec::Header::parse(&h).expect("8 bytes").check(4);
    assert_eq!(
        check(header(2, 0xF, 1, 1, 5)),
        Err(DecodeErrorKind::UnsupportedVersion { version: 2 })
    );
    assert_eq!(
        check(header(1, 0xF, 1, 1, 5)),
        Err(DecodeErrorKind::FrameTooLarge { len: 5, max: 4 })
    );
    assert_eq!(
        check(header(1, 0xF, 1, 1, 4)),
        Err(DecodeErrorKind::UnknownFrameType)
    );
    assert_eq!(
        check(header(1, 0x8, 1, 1, 4)),
        Err(DecodeErrorKind::ReservedFlags { flags: 1 })
    );
    assert_eq!(
        check(header(1, 0x8, 0, 1, 4)),
        Err(DecodeErrorKind::InvalidId)
    );
    assert_eq!(check(header(1, 0x8, 0, 0, 4)), Ok(FrameType::Ping));
    // Through the decoder: a too-large reserved-type frame is FRAME_TOO_LARGE, and skipped.
    let mut wire = raw_frame_full(1, 0xF, 3, 1, &[0xc1; 5]);
    wire.extend_from_slice(&PING);
    dec.feed(Bytes::from(wire));
    let e = dec.next_frame().expect("item").expect_err("too large");
    assert_eq!(e.kind, DecodeErrorKind::FrameTooLarge { len: 5, max: 4 });
    assert_eq!((e.request_id, e.frame_type), (1, 0xF));
    assert_eq!(dec.next_frame(), Some(Ok(Frame::PING)));
}

#[test]
fn frame_too_large_boundary() {
    // Declared length == max is fine, max + 1 is FRAME_TOO_LARGE (SPEC §3.6).
    let f = Frame::Stream(Stream {
        id: codec_id(3),
        data: Bytes::from_static(b"0123456789"),
        text: false,
        seq: 0,
        fin: false,
    });
    let wire = encode_one(&f);
    let len = (wire.len() - HEADER_LEN) as u32;
    assert_eq!(decode_frame(&mut wire.clone(), len), Some(Ok(f.clone())));
    let e = decode_frame(&mut wire.clone(), len - 1)
        .expect("item")
        .expect_err("too large");
    assert_eq!(e.kind, DecodeErrorKind::FrameTooLarge { len, max: len - 1 });
    assert_eq!((e.request_id, e.frame_type), (3, 3));
    assert_eq!(e.code(), ErrorCode::FRAME_TOO_LARGE);

    // The decoder skips the payload as it arrives, never holding it.
    let mut dec = Decoder::new(len - 1);
    let mut got = Vec::new();
    for b in wire.iter().chain(PING.iter()) {
        dec.feed_slice(&[*b]);
        while let Some(r) = dec.next_frame() {
            got.push(r.map_err(|e| e.kind));
        }
        assert!(
            dec.buffered() <= HEADER_LEN,
            "holds {} bytes",
            dec.buffered()
        );
    }
    assert_eq!(
        got,
        vec![
            Err(DecodeErrorKind::FrameTooLarge { len, max: len - 1 }),
            Ok(Frame::PING)
        ]
    );
}

#[test]
fn frame_too_large_at_u32_max_does_not_allocate_or_wait_for_header_check() {
    // A 4 GiB declared length with a small limit: reported at once, then skipped lazily.
    let mut dec = Decoder::new(1 << 20);
    dec.feed_slice(&header(1, 3, 0, 1, u32::MAX));
    let e = dec.next_frame().expect("item").expect_err("too large");
    assert_eq!(
        e.kind,
        DecodeErrorKind::FrameTooLarge {
            len: u32::MAX,
            max: 1 << 20
        }
    );
    dec.feed(Bytes::from(vec![0u8; 1 << 16]));
    assert_eq!(dec.next_frame(), None);
    assert_eq!(dec.buffered(), 0);
}

fn codec_id(n: u16) -> asp_proto::RequestId {
    asp_proto::RequestId(n)
}

// SPEC §4.3: malformed payloads.

#[test]
fn malformed_not_a_map() {
    for payload in [
        &[0x90][..],   // fixarray
        &[0xa1, b'x'], // fixstr
        &[0x01],       // int
        &[0xc0],       // nil
        &[0xc3],       // true
        &[0xc4, 0],    // bin
        &[0xdc, 0, 0], // array 16
        &[0xd4, 0, 0], // fixext
    ] {
        rejects(&raw_frame(2, 1, payload), malformed(Malformed::NotAMap));
        rejects(&raw_frame(8, 0, payload), malformed(Malformed::NotAMap));
    }
}

#[test]
fn malformed_truncated() {
    let inv = |p: Mp| raw_frame(2, 1, &p.0);
    // Map header says 1 entry, none present.
    rejects(&inv(Mp::new().map(1)), malformed(Malformed::Truncated));
    // Key present, value absent.
    rejects(
        &inv(Mp::new().map(1).uint(0)),
        malformed(Malformed::Truncated),
    );
    // Value ends inside the string.
    rejects(
        &inv(Mp::new().map(1).uint(0).raw(&[0xa5, b'a', b'b'])),
        malformed(Malformed::Truncated),
    );
    // map 16 / map 32 headers cut short.
    rejects(
        &inv(Mp::new().raw(&[0xde, 0])),
        malformed(Malformed::Truncated),
    );
    rejects(
        &inv(Mp::new().raw(&[0xdf, 0, 0, 0])),
        malformed(Malformed::Truncated),
    );
    // An `any` value cut short, and one claiming 4 billion elements.
    rejects(
        &inv(Mp::new().map(2).uint(0).str("t").uint(1).raw(&[0x92, 0x01])),
        malformed(Malformed::Truncated),
    );
    rejects(
        &inv(Mp::new()
            .map(2)
            .uint(0)
            .str("t")
            .uint(1)
            .raw(&[0xdd, 0xff, 0xff, 0xff, 0xff])),
        malformed(Malformed::Truncated),
    );
    // An unknown key's value cut short.
    rejects(
        &inv(Mp::new().map(2).uint(0).str("t").uint(9).raw(&[0xcd, 0])),
        malformed(Malformed::Truncated),
    );
    // A uint field cut short (u32 with 2 of 4 bytes).
    rejects(
        &raw_frame(0xC, 1, &Mp::new().map(1).uint(0).raw(&[0xce, 0, 1]).0),
        malformed(Malformed::Truncated),
    );
}

#[test]
fn malformed_invalid_marker_0xc1() {
    rejects(
        &raw_frame(2, 1, &[0xc1]),
        malformed(Malformed::InvalidMarker),
    );
    rejects(
        &raw_frame(2, 1, &Mp::new().map(1).raw(&[0xc1]).0),
        malformed(Malformed::InvalidMarker),
    );
    // As a field value, nested in `any`, and as an unknown key's value.
    rejects(
        &raw_frame(2, 1, &Mp::new().map(1).uint(0).raw(&[0xc1]).0),
        malformed(Malformed::InvalidMarker),
    );
    rejects(
        &raw_frame(
            2,
            1,
            &Mp::new()
                .map(2)
                .uint(0)
                .str("t")
                .uint(1)
                .raw(&[0x91, 0xc1])
                .0,
        ),
        malformed(Malformed::InvalidMarker),
    );
    rejects(
        &raw_frame(8, 0, &Mp::new().map(1).uint(40).raw(&[0xc1]).0),
        malformed(Malformed::InvalidMarker),
    );
}

#[test]
fn malformed_non_integer_key() {
    for key in [
        Mp::new().str("tool"),
        Mp::new().int(-1),
        Mp::new().int(-100),
        Mp::new().nil(),
        Mp::new().bool(false),
        Mp::new().raw(&[0xca, 0, 0, 0, 0]), // float 0.0
        Mp::new().bin(&[0]),
        Mp::new().array(0),
    ] {
        let payload = Mp::new().map(2).uint(0).str("t").raw(&key.0).uint(1).0;
        rejects(
            &raw_frame(2, 1, &payload),
            malformed(Malformed::NonIntegerKey),
        );
        let payload = Mp::new().map(1).raw(&key.0).uint(1).0;
        rejects(
            &raw_frame(9, 0, &payload),
            malformed(Malformed::NonIntegerKey),
        );
    }
}

#[test]
fn malformed_duplicate_key() {
    let p = Mp::new().map(2).uint(0).str("a").uint(0).str("b").0;
    rejects(&raw_frame(2, 1, &p), malformed(Malformed::DuplicateKey(0)));
    // Also when the second copy uses another integer encoding, or is nil.
    let p = Mp::new()
        .map(3)
        .uint(0)
        .str("a")
        .uint(2)
        .uint(5)
        .raw(&[0xcc, 2])
        .uint(6)
        .0;
    rejects(&raw_frame(2, 1, &p), malformed(Malformed::DuplicateKey(2)));
    let p = Mp::new()
        .map(3)
        .uint(0)
        .str("a")
        .uint(1)
        .nil()
        .uint(1)
        .nil()
        .0;
    rejects(&raw_frame(2, 1, &p), malformed(Malformed::DuplicateKey(1)));
    // Inside HELLO limits.
    let p = Mp::new()
        .map(2)
        .uint(0)
        .array(1)
        .uint(1)
        .uint(2)
        .map(2)
        .uint(1)
        .uint(5)
        .uint(1)
        .uint(6)
        .0;
    rejects(&raw_frame(1, 0, &p), malformed(Malformed::DuplicateKey(1)));
}

#[test]
fn malformed_trailing_bytes() {
    let p = Mp::new().map(1).uint(0).str("t").nil().0;
    rejects(&raw_frame(2, 1, &p), malformed(Malformed::TrailingBytes));
    rejects(
        &raw_frame(8, 0, &[0x80, 0x00]),
        malformed(Malformed::TrailingBytes),
    );
    rejects(
        &raw_frame(8, 0, &[0x80, 0x80]),
        malformed(Malformed::TrailingBytes),
    );
    let p = Mp::new().map(1).uint(0).uint(1).raw(&[0]).0;
    rejects(&raw_frame(0xC, 1, &p), malformed(Malformed::TrailingBytes));
}

// SPEC §4.2: missing fields (absent, or nil).

#[test]
fn missing_required_fields() {
    let cases: Vec<(u8, u16, Mp, &str)> = vec![
        (1, 0, Mp::new().map(1).uint(1).array(0), "versions"),
        (1, 0, Mp::new().map(1).uint(0).nil(), "versions"),
        (1, 0, Mp::new(), "versions"),
        (2, 1, Mp::new(), "tool"),
        (2, 1, Mp::new().map(1).uint(0).nil(), "tool"),
        (2, 1, Mp::new().map(1).uint(1).uint(5), "tool"),
        (3, 1, Mp::new().map(1).uint(1).uint(0), "data"),
        (3, 1, Mp::new().map(2).uint(0).nil().uint(1).uint(0), "data"),
        (3, 1, Mp::new().map(1).uint(0).str("x"), "seq"),
        (
            3,
            1,
            Mp::new().map(2).uint(0).bin(b"x").uint(1).nil(),
            "seq",
        ),
        (5, 0, Mp::new().map(1).uint(1).str("t"), "op"),
        (5, 0, Mp::new().map(1).uint(0).uint(0), "name"),
        (5, 0, Mp::new().map(2).uint(0).uint(0).uint(1).nil(), "name"),
        (6, 1, Mp::new().map(1).uint(1).uint(0), "status"),
        (7, 0, Mp::new().map(1).uint(1).str("m"), "code"),
        (7, 5, Mp::new().map(1).uint(0).nil(), "code"),
        (0xA, 0x8000, Mp::new().map(1).uint(1).uint(0), "kind"),
        (0xB, 0x8000, Mp::new(), "status"),
        (0xC, 1, Mp::new().raw(&[0x80]), "bytes"),
        (0xC, 1, Mp::new().map(1).uint(0).nil(), "bytes"),
        (0xE, 0, Mp::new().map(1).uint(0).bin(b"tok"), "received"),
    ];
    for (ty, id, p, field) in cases {
        rejects(&raw_frame(ty, id, &p.0), missing(field));
        assert_eq!(missing(field).code(), ErrorCode::MISSING_FIELD);
    }
}

// SPEC §4.2: invalid fields.

#[test]
fn invalid_field_wrong_type() {
    use Invalid::WrongType as W;
    let cases: Vec<(u8, u16, Mp, &str)> = vec![
        (1, 0, Mp::new().map(1).uint(0).uint(1), "versions"),
        (1, 0, Mp::new().map(1).uint(0).array(1).str("1"), "versions"),
        (
            1,
            0,
            Mp::new()
                .map(2)
                .uint(0)
                .array(1)
                .uint(1)
                .uint(1)
                .str("requests"),
            "capabilities",
        ),
        (
            1,
            0,
            Mp::new()
                .map(2)
                .uint(0)
                .array(1)
                .uint(1)
                .uint(1)
                .array(1)
                .uint(1),
            "capabilities",
        ),
        (
            1,
            0,
            Mp::new().map(2).uint(0).array(1).uint(1).uint(2).array(0),
            "limits",
        ),
        (
            1,
            0,
            Mp::new()
                .map(2)
                .uint(0)
                .array(1)
                .uint(1)
                .uint(2)
                .map(1)
                .uint(0)
                .str("x"),
            "limits.max_frame_payload",
        ),
        (
            1,
            0,
            Mp::new().map(2).uint(0).array(1).uint(1).uint(3).bool(true),
            "heartbeat_ms",
        ),
        (
            1,
            0,
            Mp::new().map(2).uint(0).array(1).uint(1).uint(4).bin(b"c"),
            "connection_id",
        ),
        (
            1,
            0,
            Mp::new().map(2).uint(0).array(1).uint(1).uint(5).str("tok"),
            "resume_token",
        ),
        (
            1,
            0,
            Mp::new().map(2).uint(0).array(1).uint(1).uint(7).uint(1),
            "agent",
        ),
        (2, 1, Mp::new().map(1).uint(0).uint(5), "tool"),
        (2, 1, Mp::new().map(1).uint(0).bin(b"t"), "tool"),
        (
            2,
            1,
            Mp::new().map(2).uint(0).str("t").uint(2).str("100"),
            "deadline_ms",
        ),
        (
            2,
            1,
            Mp::new()
                .map(2)
                .uint(0)
                .str("t")
                .uint(2)
                .raw(&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0]),
            "deadline_ms",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).uint(5).uint(1).uint(0),
            "data",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).array(0).uint(1).uint(0),
            "data",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).str("x").uint(1).bool(false),
            "seq",
        ),
        (
            3,
            1,
            Mp::new()
                .map(3)
                .uint(0)
                .str("x")
                .uint(1)
                .uint(0)
                .uint(2)
                .uint(1),
            "final",
        ),
        (4, 1, Mp::new().map(1).uint(0).uint(1), "reason"),
        (
            5,
            0,
            Mp::new().map(2).uint(0).str("add").uint(1).str("t"),
            "op",
        ),
        (
            5,
            0,
            Mp::new()
                .map(3)
                .uint(0)
                .uint(0)
                .uint(1)
                .str("t")
                .uint(2)
                .bin(b"d"),
            "description",
        ),
        (
            6,
            1,
            Mp::new().map(2).uint(0).uint(0).uint(2).array(0),
            "metrics",
        ),
        (
            6,
            1,
            Mp::new()
                .map(2)
                .uint(0)
                .uint(0)
                .uint(2)
                .map(1)
                .uint(0)
                .str("1"),
            "metrics",
        ),
        (7, 0, Mp::new().map(1).uint(0).str("x"), "code"),
        (
            7,
            0,
            Mp::new().map(2).uint(0).uint(1).uint(2).uint(1),
            "retryable",
        ),
        (
            7,
            0,
            Mp::new().map(2).uint(0).uint(1).uint(3).str("STREAM"),
            "frame_type",
        ),
        (
            0xA,
            0x8000,
            Mp::new().map(2).uint(0).str("k").uint(2).str("1"),
            "invocation",
        ),
        (0xB, 0x8000, Mp::new().map(1).uint(0).bool(true), "status"),
        (
            0xC,
            1,
            Mp::new().map(1).uint(0).raw(&[0xca, 0x3f, 0x80, 0, 0]),
            "bytes",
        ),
        (0xD, 0, Mp::new().map(1).uint(1).str("1"), "timeout_ms"),
        (
            0xE,
            0,
            Mp::new().map(2).uint(0).str("tok").uint(1).uint(0),
            "token",
        ),
    ];
    for (ty, id, p, field) in cases {
        rejects(&raw_frame(ty, id, &p.0), invalid(field, W));
    }
    assert_eq!(invalid("tool", W).code(), ErrorCode::INVALID_FIELD);
}

#[test]
fn invalid_field_out_of_range() {
    use Invalid::OutOfRange as R;
    let h = |k: u64, v: Mp| Mp::new().map(2).uint(0).array(1).uint(1).uint(k).raw(&v.0);
    let lim = |k: u64, v: u64| h(2, Mp::new().map(1).uint(k).uint(v));
    let cases: Vec<(u8, u16, Mp, &str)> = vec![
        (1, 0, Mp::new().map(1).uint(0).array(1).uint(0), "versions"),
        (1, 0, Mp::new().map(1).uint(0).array(1).uint(16), "versions"),
        (
            1,
            0,
            Mp::new().map(1).uint(0).array(2).uint(1).int(-1),
            "versions",
        ),
        (1, 0, lim(0, 63), "limits.max_frame_payload"),
        (1, 0, lim(0, 1 << 32), "limits.max_frame_payload"),
        (1, 0, lim(1, 0), "limits.max_inflight"),
        (1, 0, lim(1, 32768), "limits.max_inflight"),
        (1, 0, lim(2, 65536), "limits.max_tools"),
        (1, 0, lim(3, 0), "limits.max_chunk"),
        (1, 0, lim(4, 0), "limits.initial_window"),
        (1, 0, h(3, Mp::new().uint(1 << 32)), "heartbeat_ms"),
        (1, 0, h(6, Mp::new().uint(65536)), "tools"),
        (
            2,
            1,
            Mp::new().map(2).uint(0).str("t").uint(2).uint(1 << 32),
            "deadline_ms",
        ),
        (
            2,
            1,
            Mp::new().map(2).uint(0).str("t").uint(2).int(-5),
            "deadline_ms",
        ),
        (
            2,
            1,
            Mp::new().map(2).uint(0).str("t").uint(2).raw(&[0xd0, 0x80]),
            "deadline_ms",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).str("x").uint(1).uint(1 << 32),
            "seq",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).str("x").uint(1).int(-1),
            "seq",
        ),
        (
            5,
            0,
            Mp::new().map(2).uint(0).uint(3).uint(1).str("t"),
            "op",
        ),
        (6, 1, Mp::new().map(1).uint(0).uint(3), "status"),
        (
            6,
            1,
            Mp::new()
                .map(2)
                .uint(0)
                .uint(0)
                .uint(2)
                .map(1)
                .uint(0)
                .int(-1),
            "metrics",
        ),
        (7, 0, Mp::new().map(1).uint(0).uint(0), "code"),
        (7, 0, Mp::new().map(1).uint(0).uint(65536), "code"),
        (
            7,
            0,
            Mp::new().map(2).uint(0).uint(1).uint(3).uint(16),
            "frame_type",
        ),
        (
            0xA,
            0x8000,
            Mp::new().map(2).uint(0).str("k").uint(2).uint(0),
            "invocation",
        ),
        (
            0xA,
            0x8000,
            Mp::new().map(2).uint(0).str("k").uint(2).uint(0x8000),
            "invocation",
        ),
        (0xB, 0x8000, Mp::new().map(1).uint(0).uint(3), "status"),
        (0xC, 1, Mp::new().map(1).uint(0).uint(0), "bytes"),
        (0xC, 1, Mp::new().map(1).uint(0).uint(1 << 32), "bytes"),
        (0xD, 0, Mp::new().map(1).uint(1).uint(1 << 32), "timeout_ms"),
        (0xE, 0, Mp::new().map(1).uint(1).int(-1), "received"),
    ];
    for (ty, id, p, field) in cases {
        rejects(&raw_frame(ty, id, &p.0), invalid(field, R));
    }
}

#[test]
fn invalid_field_utf8() {
    use Invalid::Utf8 as U;
    let bad: &[u8] = b"a\xffb";
    let h = |k: u64, v: Mp| Mp::new().map(2).uint(0).array(1).uint(1).uint(k).raw(&v.0);
    let cases: Vec<(u8, u16, Mp, &str)> = vec![
        (
            1,
            0,
            h(1, Mp::new().array(1).str_bytes(bad)),
            "capabilities",
        ),
        (1, 0, h(4, Mp::new().str_bytes(bad)), "connection_id"),
        (1, 0, h(7, Mp::new().str_bytes(bad)), "agent"),
        (2, 1, Mp::new().map(1).uint(0).str_bytes(bad), "tool"),
        // A lone surrogate (CESU-style) and an overlong encoding are not UTF-8 either.
        (
            2,
            1,
            Mp::new().map(1).uint(0).str_bytes(b"\xed\xa0\x80"),
            "tool",
        ),
        (
            2,
            1,
            Mp::new().map(1).uint(0).str_bytes(b"\xc0\xaf"),
            "tool",
        ),
        (
            3,
            1,
            Mp::new().map(2).uint(0).str_bytes(bad).uint(1).uint(0),
            "data",
        ),
        (
            3,
            1,
            Mp::new()
                .map(2)
                .uint(0)
                .str_bytes(&[0xe2, 0x82])
                .uint(1)
                .uint(0),
            "data",
        ),
        (4, 1, Mp::new().map(1).uint(0).str_bytes(bad), "reason"),
        (
            5,
            0,
            Mp::new().map(2).uint(0).uint(0).uint(1).str_bytes(bad),
            "name",
        ),
        (
            5,
            0,
            Mp::new()
                .map(3)
                .uint(0)
                .uint(0)
                .uint(1)
                .str("t")
                .uint(2)
                .str_bytes(bad),
            "description",
        ),
        (
            7,
            0,
            Mp::new().map(2).uint(0).uint(1).uint(1).str_bytes(bad),
            "message",
        ),
        (0xA, 0x8000, Mp::new().map(1).uint(0).str_bytes(bad), "kind"),
        (0xD, 0, Mp::new().map(1).uint(0).str_bytes(bad), "reason"),
    ];
    for (ty, id, p, field) in cases {
        rejects(&raw_frame(ty, id, &p.0), invalid(field, U));
    }
    // But STREAM `bin` data and strings inside `any` values are opaque.
    let f = accepts(&raw_frame(
        3,
        1,
        &Mp::new().map(2).uint(0).bin(bad).uint(1).uint(0).0,
    ));
    assert!(matches!(f, Frame::Stream(Stream { text: false, .. })));
    let f = accepts(&raw_frame(
        2,
        1,
        &Mp::new().map(2).uint(0).str("t").uint(1).str_bytes(bad).0,
    ));
    let Frame::Invoke(inv) = f else {
        panic!("INVOKE")
    };
    assert_eq!(
        &inv.args.expect("args").as_bytes()[..],
        &Mp::new().str_bytes(bad).0[..]
    );
}

#[test]
fn invalid_field_too_long_and_empty() {
    use Invalid::{Empty as E, TooLong as L};
    let s = |n: usize| "é".repeat(n / 2) + if n % 2 == 1 { "z" } else { "" };
    let h = |k: u64, v: Mp| Mp::new().map(2).uint(0).array(1).uint(1).uint(k).raw(&v.0);
    let versions = |n: u32| {
        let mut m = Mp::new().map(1).uint(0).array(n);
        for _ in 0..n {
            m = m.uint(1);
        }
        m
    };
    let caps = |n: u32, len: usize| {
        let mut m = Mp::new().array(n);
        for _ in 0..n {
            m = m.str(&s(len));
        }
        h(1, m)
    };
    let cases: Vec<(u8, u16, Mp, &str, Invalid)> = vec![
        (1, 0, versions(17), "versions", L),
        (1, 0, Mp::new().map(1).uint(0).array(0), "versions", E),
        (1, 0, caps(33, 1), "capabilities", L),
        (1, 0, caps(1, 65), "capabilities", L),
        (1, 0, h(4, Mp::new().str(&s(65))), "connection_id", L),
        (1, 0, h(4, Mp::new().str("")), "connection_id", E),
        (1, 0, h(5, Mp::new().bin(&[7; 65])), "resume_token", L),
        (1, 0, h(5, Mp::new().bin(&[])), "resume_token", E),
        (1, 0, h(7, Mp::new().str(&s(257))), "agent", L),
        (2, 1, Mp::new().map(1).uint(0).str(&s(129)), "tool", L),
        (2, 1, Mp::new().map(1).uint(0).str(""), "tool", E),
        (4, 1, Mp::new().map(1).uint(0).str(&s(1025)), "reason", L),
        (
            5,
            0,
            Mp::new().map(2).uint(0).uint(0).uint(1).str(&s(129)),
            "name",
            L,
        ),
        (
            5,
            0,
            Mp::new().map(2).uint(0).uint(0).uint(1).str(""),
            "name",
            E,
        ),
        (
            5,
            0,
            Mp::new()
                .map(3)
                .uint(0)
                .uint(0)
                .uint(1)
                .str("t")
                .uint(2)
                .str(&s(65_536)),
            "description",
            L,
        ),
        (
            7,
            0,
            Mp::new().map(2).uint(0).uint(1).uint(1).str(&s(1025)),
            "message",
            L,
        ),
        (0xA, 0x8000, Mp::new().map(1).uint(0).str(&s(65)), "kind", L),
        (0xA, 0x8000, Mp::new().map(1).uint(0).str(""), "kind", E),
        (0xD, 0, Mp::new().map(1).uint(0).str(&s(1025)), "reason", L),
        (
            0xE,
            0,
            Mp::new().map(2).uint(0).bin(&[1; 65]).uint(1).uint(0),
            "token",
            L,
        ),
        (
            0xE,
            0,
            Mp::new().map(2).uint(0).bin(&[]).uint(1).uint(0),
            "token",
            E,
        ),
    ];
    for (ty, id, p, field, why) in cases {
        rejects(&raw_frame(ty, id, &p.0), invalid(field, why));
    }
    // The limits are in bytes and inclusive: exactly the maximum is accepted.
    accepts(&raw_frame(2, 1, &Mp::new().map(1).uint(0).str(&s(128)).0));
    accepts(&raw_frame(
        2,
        1,
        &Mp::new().map(1).uint(0).str(&"𝄞".repeat(32)).0,
    ));
    rejects(
        &raw_frame(2, 1, &Mp::new().map(1).uint(0).str(&"𝄞".repeat(33)).0),
        invalid("tool", L),
    );
    accepts(&raw_frame(1, 0, &versions(16).0));
    accepts(&raw_frame(1, 0, &caps(32, 64).0));
    accepts(&raw_frame(
        5,
        0,
        &Mp::new()
            .map(3)
            .uint(0)
            .uint(0)
            .uint(1)
            .str("t")
            .uint(2)
            .str(&s(65_535))
            .0,
    ));
}

#[test]
fn empty_stream_data_only_when_final() {
    // SPEC §5.3: `data` has at least 1 byte unless `final` is true.
    for data in [
        Mp::new().str(""),
        Mp::new().bin(b""),
        Mp::new().raw(&[0xd9, 0]),
    ] {
        let p = Mp::new().map(2).uint(0).raw(&data.0).uint(1).uint(0).0;
        rejects(&raw_frame(3, 1, &p), invalid("data", Invalid::Empty));
        let p = Mp::new()
            .map(3)
            .uint(0)
            .raw(&data.0)
            .uint(1)
            .uint(0)
            .uint(2)
            .bool(false)
            .0;
        rejects(&raw_frame(3, 1, &p), invalid("data", Invalid::Empty));
        let p = Mp::new()
            .map(3)
            .uint(0)
            .raw(&data.0)
            .uint(1)
            .uint(0)
            .uint(2)
            .nil()
            .0;
        rejects(&raw_frame(3, 1, &p), invalid("data", Invalid::Empty));
        let p = Mp::new()
            .map(3)
            .uint(2)
            .bool(true)
            .uint(0)
            .raw(&data.0)
            .uint(1)
            .uint(9)
            .0;
        let Frame::Stream(s) = accepts(&raw_frame(3, 1, &p)) else {
            panic!("STREAM")
        };
        assert!(s.data.is_empty() && s.fin && s.seq == 9);
    }
    // The field checks come first: a mistyped `final` is reported as such.
    let p = Mp::new()
        .map(3)
        .uint(0)
        .str("")
        .uint(1)
        .uint(0)
        .uint(2)
        .uint(1)
        .0;
    rejects(&raw_frame(3, 1, &p), invalid("final", Invalid::WrongType));
}

// SPEC §2.1: a WebSocket message that ends inside a frame.

#[test]
fn message_truncation_is_fatal() {
    let wire = encode_one(&Frame::Invoke(Invoke {
        id: codec_id(9),
        tool: "search".into(),
        args: Some(RawValue::uint(1)),
        deadline_ms: 0,
        meta: None,
    }));
    for cut in 1..wire.len() {
        let mut msg = BytesMut::new();
        msg.extend_from_slice(&PING);
        msg.extend_from_slice(&wire[..cut]);
        let mut buf = msg.freeze();
        assert_eq!(decode_frame(&mut buf, BIG), Some(Ok(Frame::PING)));
        let e = decode_frame(&mut buf, BIG)
            .expect("item")
            .expect_err("truncated");
        assert_eq!(e.kind, DecodeErrorKind::Truncated);
        assert!(e.kind.is_fatal());
        assert_eq!(e.code(), ErrorCode::FRAMING_ERROR);
        assert_eq!(e.frame_type, 2, "cut {cut}");
        // With a whole header the id is known; before that it is reported as 0.
        assert_eq!(
            e.request_id,
            if cut >= HEADER_LEN { 9 } else { 0 },
            "cut {cut}"
        );
        assert!(buf.is_empty(), "the rest of the message is dropped");
        assert_eq!(decode_frame(&mut buf, BIG), None);
    }
    // A frame over the limit that is not whole in the message is also a framing error.
    let mut buf = Bytes::copy_from_slice(&header(1, 3, 0, 1, 1000));
    let e = decode_frame(&mut buf, 64)
        .expect("item")
        .expect_err("truncated");
    assert_eq!(e.kind, DecodeErrorKind::Truncated);
}

// SPEC §4.3, §4.2, §4.4: what must be accepted.

#[test]
fn unknown_keys_are_ignored() {
    let nested = Mp::new()
        .map(2)
        .str("k")
        .array(2)
        .uint(1)
        .map(1)
        .uint(0)
        .nil()
        .uint(5)
        .bin(b"x")
        .0;
    let base = Invoke {
        id: codec_id(1),
        tool: "t".into(),
        args: None,
        deadline_ms: 0,
        meta: None,
    };
    for key in [
        Mp::new().uint(100),
        Mp::new().uint(4),
        Mp::new().uint(31),
        Mp::new().uint(32),
        Mp::new().uint(127),
        Mp::new().uint(255),
        Mp::new().uint(1 << 40),
        Mp::new().uint(u64::MAX),
        Mp::new().raw(&[0xd0, 100]), // int 8 holding a non-negative key
    ] {
        let p = Mp::new().map(2).raw(&key.0).raw(&nested).uint(0).str("t").0;
        assert_eq!(
            accepts(&raw_frame(2, 1, &p)),
            Frame::Invoke(base.clone()),
            "key {key:?}"
        );
        // Twice: only *defined* keys must be unique.
        let p = Mp::new()
            .map(3)
            .raw(&key.0)
            .raw(&nested)
            .uint(0)
            .str("t")
            .raw(&key.0)
            .nil()
            .0;
        assert_eq!(
            accepts(&raw_frame(2, 1, &p)),
            Frame::Invoke(base.clone()),
            "key {key:?}"
        );
    }
    // PING/PONG have one optional field (`received`, key 0) and may carry unknown keys.
    let p = Mp::new().map(2).uint(100).raw(&nested).uint(1).str("x").0;
    assert_eq!(accepts(&raw_frame(8, 0, &p)), Frame::PING);
    assert_eq!(accepts(&raw_frame(9, 0, &p)), Frame::PONG);
    // Unknown keys inside HELLO `limits`.
    let p = Mp::new()
        .map(2)
        .uint(0)
        .array(1)
        .uint(1)
        .uint(2)
        .map(2)
        .uint(9)
        .raw(&nested)
        .uint(100)
        .raw(&nested)
        .0;
    assert_eq!(
        accepts(&raw_frame(1, 0, &p)),
        Frame::Hello(Hello {
            versions: Versions::V1,
            ..Hello::default()
        })
    );
}

#[test]
fn nil_optional_fields_are_absent() {
    let p = Mp::new()
        .map(4)
        .uint(0)
        .str("t")
        .uint(1)
        .nil()
        .uint(2)
        .nil()
        .uint(3)
        .nil()
        .0;
    assert_eq!(
        accepts(&raw_frame(2, 1, &p)),
        Frame::Invoke(Invoke {
            id: codec_id(1),
            tool: "t".into(),
            args: None,
            deadline_ms: 0,
            meta: None
        })
    );
    let p = Mp::new()
        .map(3)
        .uint(0)
        .str("x")
        .uint(1)
        .uint(0)
        .uint(2)
        .nil()
        .0;
    let Frame::Stream(s) = accepts(&raw_frame(3, 1, &p)) else {
        panic!()
    };
    assert!(!s.fin);
    let p = Mp::new()
        .map(4)
        .uint(0)
        .uint(2)
        .uint(1)
        .nil()
        .uint(2)
        .nil()
        .uint(3)
        .nil()
        .0;
    let Frame::Error(e) = accepts(&raw_frame(7, 0, &p)) else {
        panic!()
    };
    assert_eq!((e.message, e.retryable, e.frame_type), (None, false, None));
    let p = Mp::new()
        .map(3)
        .uint(0)
        .uint(0)
        .uint(1)
        .nil()
        .uint(2)
        .nil()
        .0;
    let Frame::Complete(c) = accepts(&raw_frame(6, 1, &p)) else {
        panic!()
    };
    assert_eq!((c.result, c.metrics), (None, Metrics::default()));
    let p = Mp::new()
        .map(8)
        .uint(0)
        .array(1)
        .uint(1)
        .uint(1)
        .nil()
        .uint(2)
        .nil()
        .uint(3)
        .nil()
        .uint(4)
        .nil()
        .uint(5)
        .nil()
        .uint(6)
        .nil()
        .uint(7)
        .nil()
        .0;
    assert_eq!(
        accepts(&raw_frame(1, 0, &p)),
        Frame::Hello(Hello {
            versions: Versions::V1,
            ..Hello::default()
        })
    );
    let p = Mp::new()
        .map(2)
        .uint(0)
        .uint(0)
        .uint(2)
        .map(2)
        .uint(0)
        .nil()
        .uint(3)
        .nil()
        .0;
    let Frame::Complete(c) = accepts(&raw_frame(6, 1, &p)) else {
        panic!()
    };
    assert_eq!(c.metrics, Metrics::default());
}

#[test]
fn non_canonical_encodings_are_accepted() {
    let seq_forms: [&[u8]; 9] = [
        &[0x05],
        &[0xcc, 5],
        &[0xcd, 0, 5],
        &[0xce, 0, 0, 0, 5],
        &[0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
        &[0xd0, 5],
        &[0xd1, 0, 5],
        &[0xd2, 0, 0, 0, 5],
        &[0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
    ];
    let expect = Frame::Stream(Stream {
        id: codec_id(1),
        data: Bytes::from_static(b"hi"),
        text: true,
        seq: 5,
        fin: false,
    });
    for seq in seq_forms {
        // Non-canonical seq values, keys, map headers and str headers.
        let bodies = [
            Mp::new().map(2).uint(0).str("hi").uint(1).raw(seq),
            Mp::new()
                .raw(&[0xde, 0, 2])
                .uint(0)
                .str("hi")
                .uint(1)
                .raw(seq),
            Mp::new()
                .raw(&[0xdf, 0, 0, 0, 2])
                .raw(&[0xcc, 0])
                .str("hi")
                .raw(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 1])
                .raw(seq),
            Mp::new()
                .map(2)
                .uint(1)
                .raw(seq)
                .uint(0)
                .raw(&[0xd9, 2])
                .raw(b"hi"),
            Mp::new()
                .map(2)
                .uint(0)
                .raw(&[0xda, 0, 2])
                .raw(b"hi")
                .uint(1)
                .raw(seq),
            Mp::new()
                .map(2)
                .uint(0)
                .raw(&[0xdb, 0, 0, 0, 2])
                .raw(b"hi")
                .uint(1)
                .raw(seq),
        ];
        for b in bodies {
            assert_eq!(accepts(&raw_frame(3, 1, &b.0)), expect, "{:02x?}", b.0);
        }
    }
    // bin 16 / bin 32 for short binary data.
    for hdr in [&[0xc5, 0, 2][..], &[0xc6, 0, 0, 0, 2]] {
        let p = Mp::new()
            .map(2)
            .uint(0)
            .raw(hdr)
            .raw(b"hi")
            .uint(1)
            .uint(5)
            .0;
        let Frame::Stream(s) = accepts(&raw_frame(3, 1, &p)) else {
            panic!()
        };
        assert_eq!((&s.data[..], s.text), (&b"hi"[..], false));
    }
    // array 16 / 32 for HELLO versions.
    for hdr in [&[0xdc, 0, 1][..], &[0xdd, 0, 0, 0, 1]] {
        let p = Mp::new().map(1).uint(0).raw(hdr).raw(&[0xd0, 1]).0;
        assert_eq!(
            accepts(&raw_frame(1, 0, &p)),
            Frame::Hello(Hello {
                versions: Versions::V1,
                ..Hello::default()
            })
        );
    }
}

#[test]
fn empty_payload_equals_empty_map() {
    for ty in [
        FrameType::Ping,
        FrameType::Pong,
        FrameType::Interrupt,
        FrameType::GoAway,
    ] {
        let id = valid_id(ty);
        let empty = accepts(&raw_frame(ty as u8, id, &[]));
        for map in [&[0x80][..], &[0xde, 0, 0], &[0xdf, 0, 0, 0, 0]] {
            assert_eq!(
                accepts(&raw_frame(ty as u8, id, map)),
                empty,
                "{ty:?} {map:02x?}"
            );
        }
    }
    // Encoders send length 0 for field-less frames (SPEC §4.4).
    assert_eq!(&encode_one(&Frame::PING)[..], &PING[..]);
    assert_eq!(
        &encode_one(&Frame::PONG)[..],
        &[0x19, 0, 0, 0, 0, 0, 0, 0][..]
    );
    // And an empty payload is an empty map for types with required fields too.
    rejects(&raw_frame(2, 1, &[]), missing("tool"));
}

#[test]
fn every_frame_type_has_its_first_byte() {
    // SPEC §3.1: first byte 0x10 | type.
    for (i, ty) in FrameType::ALL.into_iter().enumerate() {
        assert_eq!(ty as u8, i as u8 + 1);
        assert_eq!(FrameType::from_nibble(ty as u8), Some(ty));
        let b = raw_frame(ty as u8, valid_id(ty), &valid_payload(ty));
        assert_eq!(b[0], 0x11 + i as u8);
    }
    assert_eq!(FrameType::from_nibble(0), None);
    assert_eq!(FrameType::from_nibble(0xF), None);
}

// ───────────────────────────── regressions (codec bugs found by this suite) ─────────────────────────────

/// SPEC §4.3: unknown keys MUST be ignored, value included, and nested maps (HELLO
/// `limits`, COMPLETE `metrics`) follow the same rules; SPEC §5.6 defines metrics keys 0–3.
/// (`metrics` used to read every key < 32 with `uint`, rejecting a non-integer value.)
#[test]
fn unknown_metrics_keys_are_ignored() {
    let p = Mp::new()
        .map(2)
        .uint(0)
        .uint(0)
        .uint(2)
        .map(2)
        .uint(0)
        .uint(7)
        .uint(4)
        .str("gpu-seconds")
        .0;
    let Frame::Complete(c) = accepts(&raw_frame(6, 1, &p)) else {
        panic!()
    };
    assert_eq!(c.metrics.wall_us, Some(7));
}

/// SPEC §4.3: "An undefined key that appears twice is ignored both times", and nested maps
/// follow the same rules. (`Fields::nested` used to check duplicates for every key < 32.)
#[test]
fn repeated_unknown_nested_keys_are_ignored() {
    let p = Mp::new()
        .map(2)
        .uint(0)
        .array(1)
        .uint(1)
        .uint(2)
        .map(2)
        .uint(9)
        .uint(1)
        .uint(9)
        .uint(2)
        .0;
    accepts(&raw_frame(1, 0, &p));
}

/// `Versions` used to mask its argument with `& 0x0f`, so `insert(0)`/`insert(16)` set bit
/// 0, which `len()` counted but `iter()` (1..16) never yielded: the encoder then wrote an
/// array header for one more element than it wrote, and the whole payload was mis-framed.
#[test]
fn out_of_range_versions_do_not_corrupt_the_payload() {
    let mut v = Versions::V1;
    v.insert(16);
    let f = Frame::Hello(Hello {
        versions: v,
        agent: Some("x".into()),
        ..Hello::default()
    });
    let mut wire = encode_one(&f);
    match decode_frame(&mut wire, BIG).expect("item") {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(e.kind, DecodeErrorKind::Malformed(_)),
            "encoder produced a malformed payload: {e}"
        ),
    }
}

/// A peer could crash the stream decoder with 8 bytes: when a wrong-version header was whole
/// in the decoder's zero-copy `input`, `Decoder::check` poisoned the decoder and cleared
/// `input`, and `next_frame` then called `self.input.advance(HEADER_LEN)` on the empty
/// buffer, which panics in `bytes` ("cannot advance past `remaining`: 8 <= 0"). Byte-wise
/// input took the `partial` path and did not panic.
#[test]
fn decoder_wrong_version_with_whole_header_does_not_panic() {
    let mut dec = Decoder::new(1024);
    dec.feed(Bytes::from_static(&[0x28, 0, 0, 0, 0, 0, 0, 0]));
    let e = dec.next_frame().expect("item").expect_err("error");
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { version: 2 });
    assert_eq!((e.request_id, e.frame_type), (0, 8));
    assert!(dec.is_poisoned());
    assert_eq!(dec.next_frame(), None);

    // Same after a valid frame in the same chunk, and through `feed_slice`.
    let mut dec = Decoder::new(1024);
    let mut wire = PING.to_vec();
    wire.extend_from_slice(&header(0, 2, 0, 1, 0));
    wire.extend_from_slice(&PING);
    dec.feed_slice(&wire);
    assert_eq!(dec.next_frame(), Some(Ok(Frame::PING)));
    let e = dec.next_frame().expect("item").expect_err("error");
    assert_eq!(e.kind, DecodeErrorKind::UnsupportedVersion { version: 0 });
    assert_eq!(dec.next_frame(), None);
}
