//! The codec targets: `decode` and `roundtrip`.

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::codec::{self, decode_frame, encoded_len, Decoder, HEADER_LEN};
use crate::frame::*;
use crate::{DecodeError, DecodeErrorKind};

/// `max_payload` choices of the [`decode`] target, by selector.
const MAX_PAYLOADS: [u32; 8] = [1 << 20, 0, 1, 8, 16, 64, 255, 1024];

pub(super) fn encode_one(f: &Frame) -> Bytes {
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
pub(super) fn decode_message(msg: &Bytes, max: u32) -> Decoded {
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
