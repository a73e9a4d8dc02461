//! Bodies of the relay's `fuzz/` targets: the parsers of what a function sends back, which
//! the relay must treat as untrusted (SPEC §15.3–§15.5). Compiled only under `cfg(fuzzing)`
//! (cargo-fuzz sets it); they panic on purpose when an invariant breaks.
//!
//! - [`frames_body`]: an `application/vnd.asp.frames` response body (SPEC §15.3).
//! - [`push_body`]: an admin push body (SPEC §15.5) and the cutting of pushed STREAMs.
//! - [`head_and_trailers`]: a response's status, header fields, body and trailer fields:
//!   metrics (`X-Cpu-Time`, token counts), state (`X-Asp-State`, SPEC §15.4), plain and
//!   failed bodies.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use asp_proto::codec::decode_frame;
use asp_proto::error::ErrorScope;
use asp_proto::{Bytes, Instant};

use crate::binding::{
    base64_decode, cut_chunks, parse_millis, parse_push, status_error, CallLimits, Ending,
    PushFrame, RelayOut, StateUpdate, UpstreamCall, FRAMES_CONTENT_TYPE,
};

/// A tiny deterministic PRNG for read boundaries, seeded from the input.
struct Splits(u32);

impl Splits {
    fn next_len(&mut self, max: usize) -> usize {
        // xorshift32
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + (self.0 as usize) % max.max(1)
    }
}

/// Takes `n` bytes from the front of `data` (fewer at its end).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

/// Feeds `body` to `call` in reads of pseudo-random sizes (`seed`; 0 means one read).
fn feed(call: &mut UpstreamCall, body: &[u8], seed: u32, now: Instant) -> Vec<RelayOut> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut splits = Splits(seed | 1);
    while !rest.is_empty() && !call.is_ended() {
        let n = if seed == 0 {
            rest.len()
        } else {
            splits.next_len(64)
        };
        call.handle_body(Bytes::copy_from_slice(take(&mut rest, n)), now);
        out.extend(std::iter::from_fn(|| call.poll_output()));
    }
    out
}

/// Ends `call` with `trailers` and drains it; checks the output contract of
/// [`UpstreamCall`]: chunks within `max_chunk`, never empty unless `fin`, text valid UTF-8,
/// nothing after a `fin` chunk but the ending, exactly one ending and nothing after it, an
/// ERROR never of connection scope (SPEC §12.1) and its message within 1024 bytes.
fn finish(
    call: &mut UpstreamCall,
    mut out: Vec<RelayOut>,
    trailers: &[(&str, &[u8])],
    max_chunk: usize,
    now: Instant,
) -> Vec<RelayOut> {
    call.handle_end(trailers, now);
    out.extend(std::iter::from_fn(|| call.poll_output()));
    assert!(call.is_ended(), "handle_end must end the call");
    let ends = out.iter().filter(|o| matches!(o, RelayOut::End(_))).count();
    assert_eq!(ends, 1, "exactly one ending: {out:?}");
    assert!(
        matches!(out.last(), Some(RelayOut::End(_))),
        "the ending is last"
    );
    let mut fin_seen = false;
    for o in &out {
        match o {
            RelayOut::Chunk { data, text, fin } => {
                assert!(!fin_seen, "a chunk after the final one");
                assert!(data.len() <= max_chunk, "chunk over max_chunk");
                assert!(*fin || !data.is_empty(), "empty chunk without fin");
                if *text {
                    assert!(core::str::from_utf8(data).is_ok(), "text chunk not UTF-8");
                }
                fin_seen = *fin;
            }
            RelayOut::End(Ending::Error { code, message, .. }) => {
                assert_ne!(code.scope(), ErrorScope::Connection, "{code}: {message}");
                assert!(message.len() <= 1024, "ERROR message over 1024 bytes");
            }
            RelayOut::End(Ending::Complete { .. }) => {}
        }
    }
    call.handle_body(Bytes::from_static(b"late"), now);
    call.handle_end(&[], now);
    call.handle_error("late");
    assert!(call.poll_output().is_none(), "output after the ending");
    out
}

/// Input: byte 0 picks `max_chunk` (1..=256, or 64 KiB when 0), byte 1 `max_frame_payload`
/// (0..=255 bytes, or 1 MiB when 0), bytes 2..4 seed the read sizes; the rest is the body of
/// a 200 response with content type `application/vnd.asp.frames`.
///
/// Checks [`finish`]'s contract, and that the read boundaries change nothing: the output
/// equals that of the body read in one piece.
pub fn frames_body(data: &[u8]) {
    let mut data = data;
    let cfg = take(&mut data, 4);
    let byte = |i: usize| cfg.get(i).copied().unwrap_or(0);
    let max_chunk = match byte(0) {
        0 => 64 << 10,
        b => usize::from(b),
    };
    let max_frame_payload = match byte(1) {
        0 => 1 << 20,
        b => u32::from(b),
    };
    let seed = u32::from(byte(2)) << 8 | u32::from(byte(3));
    let limits = CallLimits {
        max_chunk,
        max_state: 64,
        max_frame_payload,
    };
    let head = [("content-type", FRAMES_CONTENT_TYPE.as_bytes())];
    let t0 = Instant::from_millis(1);
    let now = Instant::from_millis(2);
    let run = |seed: u32| {
        let mut call = UpstreamCall::start(200, &head, limits, t0);
        let out = feed(&mut call, data, seed, now);
        finish(&mut call, out, &[], max_chunk, now)
    };
    let pieces = run(seed);
    let whole = run(0);
    assert_eq!(pieces, whole, "the read boundaries changed the output");
    if let Some(RelayOut::End(Ending::Complete { metrics, .. })) = whole.last() {
        assert_eq!(metrics.wall_us, Some(1000), "wall time is the relay's own");
    }
}

/// Input: byte 0 picks `max_payload` (0..=255 bytes, or 1 MiB when 0), byte 1 `max_chunk`
/// for cutting pushed STREAMs (1..=255, 64 KiB when 0); the rest is a push body.
///
/// Checks: an accepted body holds at least one frame, exactly the frames `decode_frame`
/// finds, all of them TOOL_DEF, STREAM or REQUEST; a refused body names a frame index within
/// those decoded. Each pushed STREAM cut with `cut_chunks` gives pieces within `max_chunk`
/// whose concatenation is the data, text pieces valid UTF-8 (a character longer than
/// `max_chunk` goes as bytes), `fin` on the last piece only and only if the frame had it.
pub fn push_body(data: &[u8]) {
    let mut data = data;
    let cfg = take(&mut data, 2);
    let byte = |i: usize| cfg.get(i).copied().unwrap_or(0);
    let max_payload = match byte(0) {
        0 => 1 << 20,
        b => u32::from(b),
    };
    let max_chunk = match byte(1) {
        0 => 64 << 10,
        b => usize::from(b),
    };
    let body = Bytes::copy_from_slice(data);
    // What the core decodes, independently of the push rules.
    let mut decoded = 0usize;
    let mut buf = body.clone();
    while let Some(next) = decode_frame(&mut buf, max_payload) {
        if next.is_err() {
            break;
        }
        decoded += 1;
    }
    match parse_push(body, max_payload) {
        Ok(frames) => {
            assert!(!frames.is_empty(), "an accepted push has frames");
            assert_eq!(
                frames.len(),
                decoded,
                "all or nothing: every frame is taken"
            );
            for f in frames {
                let PushFrame::Stream {
                    data, text, fin, ..
                } = f
                else {
                    continue;
                };
                let pieces = cut_chunks(data.clone(), text, fin, max_chunk);
                let mut joined = Vec::with_capacity(data.len());
                let last = pieces.len().saturating_sub(1);
                for (i, p) in pieces.iter().enumerate() {
                    let RelayOut::Chunk {
                        data: d,
                        text: t,
                        fin: f,
                    } = p
                    else {
                        panic!("cut_chunks produced an ending");
                    };
                    assert!(d.len() <= max_chunk, "piece over max_chunk");
                    if *t {
                        assert!(core::str::from_utf8(d).is_ok(), "text piece not UTF-8");
                    }
                    assert_eq!(*f, fin && i == last, "fin only on the last piece");
                    joined.extend_from_slice(d);
                }
                assert_eq!(joined, data, "the pieces are the data");
            }
        }
        Err(e) => assert!(e.index <= decoded, "error index past the decoded frames"),
    }
}

/// The header names a function's response may carry, in the case the input picks.
const NAMES: [&str; 6] = [
    "content-type",
    "x-cpu-time",
    "x-input-tokens",
    "x-output-tokens",
    "x-asp-state",
    "x-other",
];

/// Content types worth a byte of input.
const MEDIA: [&[u8]; 5] = [
    b"text/plain; charset=utf-8",
    b"application/json",
    b"application/octet-stream",
    b"application/vnd.asp.frames",
    b"TEXT/EVENT-STREAM",
];

/// Reads `count` header fields: a name byte (which name, upper case if bit 7), a length
/// byte, then the value; name 0 with a value of one byte picks a known content type.
fn fields<'a>(data: &mut &'a [u8], count: u8) -> Vec<(&'static str, &'a [u8])> {
    let mut out = Vec::new();
    for _ in 0..count {
        let [n, len] = <[u8; 2]>::try_from(take(data, 2)).unwrap_or([0, 0]);
        let mut value = take(data, usize::from(len % 48));
        let idx = usize::from(n & 0x7f) % NAMES.len();
        if idx == 0 && value.len() == 1 {
            value = MEDIA[usize::from(value[0]) % MEDIA.len()];
        }
        let name = if n & 0x80 != 0 {
            // Header names are case-insensitive (RFC 9110 §5.1).
            [
                "CONTENT-TYPE",
                "X-CPU-TIME",
                "X-Input-Tokens",
                "X-OUTPUT-TOKENS",
                "X-Asp-State",
                "X-OTHER",
            ][idx]
        } else {
            NAMES[idx]
        };
        out.push((name, value));
    }
    out
}

/// The first field named `name`, any case.
fn first<'a>(fields: &[(&str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// What `X-Asp-State` in `fields` should do (SPEC §15.4), from the definition.
fn expected_state(fields: &[(&str, &[u8])], max_state: usize) -> StateUpdate {
    match first(fields, "x-asp-state").map(<[u8]>::trim_ascii) {
        None => StateUpdate::Unchanged,
        Some([]) => StateUpdate::Clear,
        Some(v) => match base64_decode(v) {
            Some(b) if b.len() > max_state => StateUpdate::TooLarge { len: b.len() },
            Some(b) => StateUpdate::Set(Bytes::from(b)),
            None => StateUpdate::Invalid,
        },
    }
}

/// Input: bytes 0..2 the status (its low 10 bits, so 0..=1023), byte 2 `max_chunk`
/// (1..=255, 64 KiB when 0), byte 3 `max_state` (0..=255), bytes 4..6 the read-size seed,
/// byte 6 the number of header fields (mod 8), byte 7 of trailer fields (mod 8), the fields
/// (see [`fields`]), then the body.
///
/// Checks [`finish`]'s contract and, for the head and trailers: the state update is the
/// trailer's if it has `X-Asp-State`, else the header's (SPEC §15.4), and a decoded state is
/// never over `max_state`; the metrics of a plain body are the trailer's where given, else
/// the header's (SPEC §15.3), `cpu_us` within the whole milliseconds given; a text body
/// (text/*, JSON, +json, ndjson) comes out as the lossy UTF-8 of the whole body however it was read, any
/// other non-frames body byte for byte; a non-2xx status ends in the ERROR `status_error`
/// names, with the body's start as message.
pub fn head_and_trailers(data: &[u8]) {
    let mut data = data;
    let cfg = take(&mut data, 8);
    let byte = |i: usize| cfg.get(i).copied().unwrap_or(0);
    let status = (u16::from(byte(0)) << 8 | u16::from(byte(1))) & 0x3ff;
    let max_chunk = match byte(2) {
        0 => 64 << 10,
        b => usize::from(b),
    };
    let max_state = usize::from(byte(3));
    let seed = u32::from(byte(4)) << 8 | u32::from(byte(5));
    let headers = fields(&mut data, byte(6) % 8);
    let trailers = fields(&mut data, byte(7) % 8);
    let body = data;
    let limits = CallLimits {
        max_chunk,
        max_state,
        max_frame_payload: 1 << 10,
    };
    let t0 = Instant::from_millis(5);
    let now = Instant::from_millis(9);

    let mut call = UpstreamCall::start(status, &headers, limits, t0);
    assert_eq!(
        call.take_state_update(),
        expected_state(&headers, max_state)
    );
    assert_eq!(
        call.take_state_update(),
        StateUpdate::Unchanged,
        "taken once"
    );
    let out = feed(&mut call, body, seed, now);
    let ended_early = call.is_ended();
    let out = finish(&mut call, out, &trailers, max_chunk, now);
    let trailer_state = expected_state(&trailers, max_state);
    let state = call.take_state_update();
    if !ended_early && trailer_state != StateUpdate::Unchanged {
        assert_eq!(state, trailer_state, "a trailer's state wins");
    } else {
        assert_eq!(
            state,
            StateUpdate::Unchanged,
            "the header's state was taken"
        );
    }
    if let StateUpdate::Set(b) = &state {
        assert!(b.len() <= max_state);
    }

    let media = first(&headers, "content-type")
        .and_then(|v| core::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let ending = match out.last() {
        Some(RelayOut::End(e)) => e.clone(),
        _ => unreachable!("finish checked the ending"),
    };
    if !(200..300).contains(&status) {
        let (code, retryable) = status_error(status);
        let Ending::Error {
            code: c,
            retryable: r,
            message,
        } = ending
        else {
            panic!("HTTP {status} must end in ERROR");
        };
        assert_eq!((c, r), (code, retryable), "HTTP {status}");
        assert!(!message.is_empty());
        return;
    }
    if media == FRAMES_CONTENT_TYPE {
        return; // `frames_body` covers frames bodies.
    }
    // SPEC §15.3: text/*, JSON, any application/*+json (RFC 6839) and newline-delimited JSON
    // stream as text.
    let text = media.starts_with("text/")
        || media == "application/json"
        || media == "application/x-ndjson"
        || media == "application/ndjson"
        || (media.starts_with("application/") && media.ends_with("+json"));
    let mut joined = Vec::new();
    for o in &out {
        if let RelayOut::Chunk { data, fin, .. } = o {
            assert!(!fin, "a plain body has no final chunk");
            joined.extend_from_slice(data);
        }
    }
    if text {
        assert_eq!(
            joined,
            String::from_utf8_lossy(body).as_bytes(),
            "a text body is its lossy UTF-8"
        );
    } else {
        assert_eq!(joined, body, "a byte body passes unchanged");
    }
    let Ending::Complete { metrics, .. } = ending else {
        panic!("a 2xx plain body completes");
    };
    assert_eq!(metrics.wall_us, Some(4000));
    // The trailer's value, if it parses, else the header's (SPEC §15.3).
    let pick = |name: &str, parse: fn(&[u8]) -> Option<u64>| {
        first(&trailers, name)
            .and_then(parse)
            .or_else(|| first(&headers, name).and_then(parse))
    };
    // Token counts: decimal digits only (no sign), surrounding blanks allowed.
    let uint = |v: &[u8]| {
        let v = core::str::from_utf8(v).ok()?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u64>().ok()
    };
    assert_eq!(metrics.input_tokens, pick("x-input-tokens", uint));
    assert_eq!(metrics.output_tokens, pick("x-output-tokens", uint));
    assert_eq!(metrics.cpu_us, pick("x-cpu-time", parse_millis));
    // The field the value came from: without an exponent, its whole milliseconds bound the
    // microseconds (rounded to the nearest µs, so up to the next whole millisecond).
    let cpu = [
        first(&trailers, "x-cpu-time"),
        first(&headers, "x-cpu-time"),
    ]
    .into_iter()
    .flatten()
    .find(|v| parse_millis(v).is_some());
    if let (Some(us), Some(v)) = (metrics.cpu_us, cpu) {
        let plain = core::str::from_utf8(v)
            .ok()
            .filter(|s| !s.contains(['e', 'E']));
        let ms = plain.and_then(|s| s.trim().split('.').next()?.parse::<u64>().ok());
        if let Some(lo) = ms.and_then(|ms| ms.checked_mul(1000)) {
            assert!(
                us >= lo && us <= lo.saturating_add(1000),
                "{us} µs from {v:?}"
            );
        }
    }
}
