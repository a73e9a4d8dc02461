//! Bytes ↔ frames (SPEC §3, §4, §5).
//!
//! - [`encode`] writes one frame into a caller-provided [`BytesMut`];
//!   [`encoded_len`] measures it without writing.
//! - [`decode_frame`] takes frames off a buffer of whole frames (one WebSocket message,
//!   SPEC §2.1).
//! - [`Decoder`] reassembles frames from a byte stream in any chunking (SPEC §2.2).
//!
//! Decoded payload fields are [`Bytes`] slices of the input: decoding a STREAM frame from a
//! [`Bytes`] buffer allocates nothing.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, Invalid, Malformed};
use crate::frame::*;
use crate::msgpack::{Counter, ReadError, Reader, Sink, Writer};
use crate::ErrorCode;

/// Header size in bytes (SPEC §3.1).
pub const HEADER_LEN: usize = 8;

/// The protocol version this crate speaks (SPEC §3.2).
pub const VERSION: u8 = 1;

/// A parsed 8-byte header (SPEC §3.1), before any check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// High nibble of byte 0.
    pub version: u8,
    /// Low nibble of byte 0 (raw: may be a reserved code).
    pub frame_type: u8,
    /// Byte 1.
    pub flags: u8,
    /// Bytes 2–3, big-endian.
    pub request_id: u16,
    /// Bytes 4–7, big-endian.
    pub len: u32,
}

impl Header {
    /// Parses the first 8 bytes of `b`, or `None` if there are fewer.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            version: h[0] >> 4,
            frame_type: h[0] & 0x0f,
            flags: h[1],
            request_id: u16::from_be_bytes([h[2], h[3]]),
            len: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        })
    }

    /// Steps 1–5 of SPEC §3.7, in that order.
    pub fn check(&self, max_payload: u32) -> Result<FrameType, DecodeErrorKind> {
        if self.version != VERSION {
            return Err(DecodeErrorKind::UnsupportedVersion {
                version: self.version,
            });
        }
        if self.len > max_payload {
            return Err(DecodeErrorKind::FrameTooLarge {
                len: self.len,
                max: max_payload,
            });
        }
        let ty =
            FrameType::from_nibble(self.frame_type).ok_or(DecodeErrorKind::UnknownFrameType)?;
        if self.flags != 0 {
            return Err(DecodeErrorKind::ReservedFlags { flags: self.flags });
        }
        if !ty.id_rule().allows(RequestId(self.request_id)) {
            return Err(DecodeErrorKind::InvalidId);
        }
        Ok(ty)
    }

    fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            request_id: self.request_id,
            frame_type: self.frame_type,
            kind,
        }
    }
}

// ───────────────────────────── encoding ─────────────────────────────

/// Appends `frame` (header and payload) to `buf`. Never fails: field limits are the
/// sender's business (the connection checks them before queueing).
pub fn encode(frame: &Frame, buf: &mut BytesMut) {
    let start = buf.len();
    let ty = frame.frame_type() as u8;
    let id = frame.request_id().0.to_be_bytes();
    buf.extend_from_slice(&[(VERSION << 4) | ty, 0, id[0], id[1], 0, 0, 0, 0]);
    write_payload(frame, &mut Writer(buf));
    // Patch the length now that the payload is written: one pass, no size pre-computation.
    let len = u32::try_from(buf.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    if let Some(slot) = buf.get_mut(start + 4..start + HEADER_LEN) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// The number of bytes [`encode`] would write for `frame`.
pub fn encoded_len(frame: &Frame) -> usize {
    let mut c = Counter::default();
    write_payload(frame, &mut Writer(&mut c));
    HEADER_LEN + c.0
}

/// Counts `Some`/true fields, for the map header.
fn n(present: &[bool]) -> u32 {
    present.iter().filter(|p| **p).count() as u32
}

/// Writes a map header, or nothing for an empty map (SPEC §4.4: length 0 payload).
fn map<S: Sink>(w: &mut Writer<'_, S>, len: u32) {
    if len > 0 {
        w.map_len(len);
    }
}

fn write_payload<S: Sink>(frame: &Frame, w: &mut Writer<'_, S>) {
    match frame {
        Frame::Hello(h) => {
            map(
                w,
                n(&[
                    true,
                    !h.capabilities.is_empty(),
                    !h.limits.is_empty(),
                    h.heartbeat_ms.is_some(),
                    h.connection_id.is_some(),
                    h.resume_token.is_some(),
                    h.tools != 0,
                    h.agent.is_some(),
                ]),
            );
            w.key(0);
            w.array_len(h.versions.len());
            for v in h.versions.iter() {
                w.uint(u64::from(v));
            }
            if !h.capabilities.is_empty() {
                w.key(1);
                w.array_len(h.capabilities.len() as u32);
                for c in &h.capabilities {
                    w.str(c.as_bytes());
                }
            }
            if !h.limits.is_empty() {
                let l = &h.limits;
                w.key(2);
                w.map_len(n(&[
                    l.max_frame_payload.is_some(),
                    l.max_inflight.is_some(),
                    l.max_tools.is_some(),
                    l.max_chunk.is_some(),
                    l.initial_window.is_some(),
                    l.replay_buffer.is_some(),
                    l.resume_window_ms.is_some(),
                ]));
                let fields = [
                    l.max_frame_payload.map(u64::from),
                    l.max_inflight.map(u64::from),
                    l.max_tools.map(u64::from),
                    l.max_chunk.map(u64::from),
                    l.initial_window.map(u64::from),
                    l.replay_buffer.map(u64::from),
                    l.resume_window_ms.map(u64::from),
                ];
                for (k, v) in fields.iter().enumerate() {
                    if let Some(v) = v {
                        w.key(k as u8);
                        w.uint(*v);
                    }
                }
            }
            if let Some(hb) = h.heartbeat_ms {
                w.key(3);
                w.uint(u64::from(hb));
            }
            if let Some(c) = &h.connection_id {
                w.key(4);
                w.str(c.as_bytes());
            }
            if let Some(t) = &h.resume_token {
                w.key(5);
                w.bin(t);
            }
            if h.tools != 0 {
                w.key(6);
                w.uint(u64::from(h.tools));
            }
            if let Some(a) = &h.agent {
                w.key(7);
                w.str(a.as_bytes());
            }
        }
        Frame::Invoke(f) => {
            map(
                w,
                n(&[true, f.args.is_some(), f.deadline_ms != 0, f.meta.is_some()]),
            );
            w.key(0);
            w.str(f.tool.as_bytes());
            if let Some(a) = &f.args {
                w.key(1);
                w.raw(a.as_bytes());
            }
            if f.deadline_ms != 0 {
                w.key(2);
                w.uint(u64::from(f.deadline_ms));
            }
            if let Some(m) = &f.meta {
                w.key(3);
                w.raw(m.as_bytes());
            }
        }
        Frame::Stream(f) => {
            w.map_len(if f.fin { 3 } else { 2 });
            w.key(0);
            if f.text {
                w.str(&f.data);
            } else {
                w.bin(&f.data);
            }
            w.key(1);
            w.uint(u64::from(f.seq));
            if f.fin {
                w.key(2);
                w.bool(true);
            }
        }
        Frame::Interrupt(f) => {
            map(w, n(&[f.reason.is_some()]));
            if let Some(r) = &f.reason {
                w.key(0);
                w.str(r.as_bytes());
            }
        }
        Frame::ToolDef(f) => {
            map(
                w,
                n(&[
                    true,
                    true,
                    !f.description.is_empty(),
                    f.input_schema.is_some(),
                    f.annotations.is_some(),
                ]),
            );
            w.key(0);
            w.uint(f.op as u64);
            w.key(1);
            w.str(f.name.as_bytes());
            if !f.description.is_empty() {
                w.key(2);
                w.str(f.description.as_bytes());
            }
            if let Some(s) = &f.input_schema {
                w.key(3);
                w.raw(s.as_bytes());
            }
            if let Some(a) = &f.annotations {
                w.key(4);
                w.raw(a.as_bytes());
            }
        }
        Frame::Complete(f) => {
            map(w, n(&[true, f.result.is_some(), !f.metrics.is_empty()]));
            w.key(0);
            w.uint(f.status as u64);
            if let Some(r) = &f.result {
                w.key(1);
                w.raw(r.as_bytes());
            }
            if !f.metrics.is_empty() {
                let m = &f.metrics;
                let fields = [m.wall_us, m.cpu_us, m.input_tokens, m.output_tokens];
                w.key(2);
                w.map_len(fields.iter().filter(|v| v.is_some()).count() as u32);
                for (k, v) in fields.iter().enumerate() {
                    if let Some(v) = v {
                        w.key(k as u8);
                        w.uint(*v);
                    }
                }
            }
        }
        Frame::Error(f) => {
            map(
                w,
                n(&[
                    true,
                    f.message.is_some(),
                    f.retryable,
                    f.frame_type.is_some(),
                ]),
            );
            w.key(0);
            w.uint(u64::from(f.code.0));
            if let Some(m) = &f.message {
                w.key(1);
                w.str(m.as_bytes());
            }
            if f.retryable {
                w.key(2);
                w.bool(true);
            }
            if let Some(t) = f.frame_type {
                w.key(3);
                w.uint(u64::from(t));
            }
        }
        Frame::Ping(h) | Frame::Pong(h) => {
            if let Some(r) = h.received {
                map(w, 1);
                w.key(0);
                w.uint(r);
            }
        }
        Frame::Request(f) => {
            map(w, n(&[true, f.body.is_some(), f.invocation.is_some()]));
            w.key(0);
            w.str(f.kind.as_bytes());
            if let Some(b) = &f.body {
                w.key(1);
                w.raw(b.as_bytes());
            }
            if let Some(i) = f.invocation {
                w.key(2);
                w.uint(u64::from(i.0));
            }
        }
        Frame::Reply(f) => {
            map(w, n(&[true, f.body.is_some()]));
            w.key(0);
            w.uint(f.status as u64);
            if let Some(b) = &f.body {
                w.key(1);
                w.raw(b.as_bytes());
            }
        }
        Frame::Credit(f) => {
            w.map_len(1);
            w.key(0);
            w.uint(u64::from(f.bytes));
        }
        Frame::GoAway(f) => {
            map(w, n(&[f.reason.is_some(), f.timeout_ms != 0]));
            if let Some(r) = &f.reason {
                w.key(0);
                w.str(r.as_bytes());
            }
            if f.timeout_ms != 0 {
                w.key(1);
                w.uint(u64::from(f.timeout_ms));
            }
        }
        Frame::Resume(f) => {
            map(w, n(&[f.token.is_some(), true]));
            if let Some(t) = &f.token {
                w.key(0);
                w.bin(t);
            }
            w.key(1);
            w.uint(f.received);
        }
    }
}

// ───────────────────────────── decoding ─────────────────────────────

type KResult<T> = Result<T, DecodeErrorKind>;

/// Attributes a reader error to a field (SPEC §4.2 vs §4.3).
fn at(field: &'static str) -> impl Fn(ReadError) -> DecodeErrorKind {
    move |e| match e {
        ReadError::Malformed(m) => DecodeErrorKind::Malformed(m),
        ReadError::Invalid(reason) => DecodeErrorKind::InvalidField { field, reason },
    }
}

fn invalid(field: &'static str, reason: Invalid) -> DecodeErrorKind {
    DecodeErrorKind::InvalidField { field, reason }
}

fn required<T>(v: Option<T>, field: &'static str) -> KResult<T> {
    v.ok_or(DecodeErrorKind::MissingField { field })
}

/// Field-reading context over one payload.
struct Fields<'a> {
    r: Reader<'a>,
    payload: &'a Bytes,
}

impl<'a> Fields<'a> {
    /// Walks the top-level map, calling `f(key, self)` for each defined key (`< 32` and in
    /// `known`), skipping unknown ones (SPEC §4.3) and rejecting duplicates and trailing
    /// bytes.
    fn each(
        payload: &'a Bytes,
        known: u32,
        mut f: impl FnMut(u8, &mut Fields<'a>) -> KResult<()>,
    ) -> KResult<()> {
        let mut this = Fields {
            r: Reader::new(payload),
            payload,
        };
        let entries = this.r.map_len().map_err(DecodeErrorKind::Malformed)?;
        let mut seen = 0u32;
        for _ in 0..entries {
            let key = this.r.key().map_err(DecodeErrorKind::Malformed)?;
            match u8::try_from(key) {
                Ok(k) if k < 32 && known & (1 << k) != 0 => {
                    if seen & (1 << k) != 0 {
                        return Err(DecodeErrorKind::Malformed(Malformed::DuplicateKey(k)));
                    }
                    seen |= 1 << k;
                    f(k, &mut this)?;
                }
                _ => {
                    this.r.skip_value().map_err(DecodeErrorKind::Malformed)?;
                }
            }
        }
        if !this.r.at_end() {
            return Err(DecodeErrorKind::Malformed(Malformed::TrailingBytes));
        }
        Ok(())
    }

    /// `true` (and consumed) if the value is nil: an absent optional field (SPEC §4.2).
    fn nil(&mut self) -> KResult<bool> {
        self.r.take_nil().map_err(DecodeErrorKind::Malformed)
    }

    fn uint(&mut self, field: &'static str, lo: u64, hi: u64) -> KResult<Option<u64>> {
        if self.nil()? {
            return Ok(None);
        }
        let v = self.r.uint().map_err(at(field))?;
        if v < lo || v > hi {
            return Err(invalid(field, Invalid::OutOfRange));
        }
        Ok(Some(v))
    }

    fn u32(&mut self, field: &'static str, lo: u32) -> KResult<Option<u32>> {
        Ok(self
            .uint(field, u64::from(lo), u64::from(u32::MAX))?
            .map(|v| v as u32))
    }

    fn u16(&mut self, field: &'static str, lo: u16, hi: u16) -> KResult<Option<u16>> {
        Ok(self
            .uint(field, u64::from(lo), u64::from(hi))?
            .map(|v| v as u16))
    }

    fn bool(&mut self, field: &'static str) -> KResult<Option<bool>> {
        if self.nil()? {
            return Ok(None);
        }
        self.r.bool().map(Some).map_err(at(field))
    }

    fn slice(&self, (a, b): (usize, usize)) -> Bytes {
        self.payload.slice(a..b)
    }

    fn text(&mut self, field: &'static str, min: usize, max: usize) -> KResult<Option<Text>> {
        if self.nil()? {
            return Ok(None);
        }
        let (a, b) = self.r.str_range().map_err(at(field))?;
        check_len(field, b - a, min, max)?;
        Ok(Some(Text::from_checked(self.slice((a, b)))))
    }

    fn bin(&mut self, field: &'static str, min: usize, max: usize) -> KResult<Option<Bytes>> {
        if self.nil()? {
            return Ok(None);
        }
        let (a, b) = self.r.bin_range().map_err(at(field))?;
        check_len(field, b - a, min, max)?;
        Ok(Some(self.slice((a, b))))
    }

    fn any(&mut self) -> KResult<Option<RawValue>> {
        if self.nil()? {
            return Ok(None);
        }
        let range = self.r.skip_value().map_err(DecodeErrorKind::Malformed)?;
        Ok(Some(RawValue::from_checked(self.slice(range))))
    }

    /// A nested map with integer keys (HELLO `limits`, COMPLETE `metrics`).
    fn nested(
        &mut self,
        field: &'static str,
        known: u32,
        mut f: impl FnMut(u8, &mut Self) -> KResult<()>,
    ) -> KResult<bool> {
        if self.nil()? {
            return Ok(false);
        }
        let entries = self.r.nested_map_len().map_err(at(field))?;
        let mut seen = 0u32;
        for _ in 0..entries {
            let key = self.r.key().map_err(DecodeErrorKind::Malformed)?;
            // SPEC §4.3 applies to nested maps too: undefined keys are skipped (even when
            // repeated), defined ones may appear once.
            match u8::try_from(key) {
                Ok(k) if k < 32 && known & (1 << k) != 0 => {
                    if seen & (1 << k) != 0 {
                        return Err(DecodeErrorKind::Malformed(Malformed::DuplicateKey(k)));
                    }
                    seen |= 1 << k;
                    f(k, self)?;
                }
                _ => {
                    self.r.skip_value().map_err(DecodeErrorKind::Malformed)?;
                }
            }
        }
        Ok(true)
    }
}

fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> KResult<()> {
    if len < min {
        Err(invalid(field, Invalid::Empty))
    } else if len > max {
        Err(invalid(field, Invalid::TooLong))
    } else {
        Ok(())
    }
}

/// Bit mask of keys `0..n`.
const fn keys(n: u32) -> u32 {
    (1 << n) - 1
}

/// Step 6 of SPEC §3.7: the payload of a frame whose header passed [`Header::check`].
#[inline(always)]
pub fn decode_payload(ty: FrameType, id: RequestId, payload: &Bytes) -> KResult<Frame> {
    Ok(match ty {
        FrameType::Hello => Frame::Hello(hello(payload)?),
        FrameType::Invoke => {
            let (mut tool, mut args, mut deadline, mut meta) = (None, None, None, None);
            Fields::each(payload, keys(4), |k, f| {
                match k {
                    0 => tool = f.text("tool", 1, 128)?,
                    1 => args = f.any()?,
                    2 => deadline = f.u32("deadline_ms", 0)?,
                    _ => meta = f.any()?,
                }
                Ok(())
            })?;
            Frame::Invoke(Invoke {
                id,
                tool: required(tool, "tool")?,
                args,
                deadline_ms: deadline.unwrap_or(0),
                meta,
            })
        }
        FrameType::Stream => {
            if let Some(f) = stream_fast(id, payload, 0, payload.len()) {
                return Ok(Frame::Stream(f));
            }
            let (mut data, mut seq, mut fin) = (None, None, None);
            Fields::each(payload, keys(3), |k, f| {
                match k {
                    0 => {
                        if !f.nil()? {
                            let (range, text) = f.r.str_or_bin().map_err(at("data"))?;
                            data = Some((f.slice(range), text));
                        }
                    }
                    1 => seq = f.u32("seq", 0)?,
                    _ => fin = f.bool("final")?,
                }
                Ok(())
            })?;
            let (data, text) = required(data, "data")?;
            let fin = fin.unwrap_or(false);
            // SPEC §5.3: only the final chunk may be empty, so every other STREAM consumes
            // flow-control window (which is what exempts STREAM from rate limiting, §10).
            if data.is_empty() && !fin {
                return Err(invalid("data", Invalid::Empty));
            }
            Frame::Stream(Stream {
                id,
                data,
                text,
                seq: required(seq, "seq")?,
                fin,
            })
        }
        FrameType::Interrupt => {
            let mut reason = None;
            Fields::each(payload, keys(1), |_, f| {
                reason = f.text("reason", 0, 1024)?;
                Ok(())
            })?;
            Frame::Interrupt(Interrupt { id, reason })
        }
        FrameType::ToolDef => {
            let (mut op, mut name, mut desc, mut schema, mut ann) = (None, None, None, None, None);
            Fields::each(payload, keys(5), |k, f| {
                match k {
                    0 => op = f.uint("op", 0, 2)?,
                    1 => name = f.text("name", 1, 128)?,
                    2 => desc = f.text("description", 0, 65535)?,
                    3 => schema = f.any()?,
                    _ => ann = f.any()?,
                }
                Ok(())
            })?;
            let op = match required(op, "op")? {
                0 => ToolOp::Add,
                1 => ToolOp::Update,
                _ => ToolOp::Remove,
            };
            Frame::ToolDef(ToolDef {
                op,
                name: required(name, "name")?,
                description: desc.unwrap_or_default(),
                input_schema: schema,
                annotations: ann,
            })
        }
        FrameType::Complete => {
            let (mut status, mut result, mut metrics) = (None, None, Metrics::default());
            Fields::each(payload, keys(3), |k, f| {
                match k {
                    0 => status = f.uint("status", 0, 2)?,
                    1 => result = f.any()?,
                    _ => {
                        f.nested("metrics", keys(4), |mk, f| {
                            let v = f.uint("metrics", 0, u64::MAX)?;
                            match mk {
                                0 => metrics.wall_us = v,
                                1 => metrics.cpu_us = v,
                                2 => metrics.input_tokens = v,
                                _ => metrics.output_tokens = v,
                            }
                            Ok(())
                        })?;
                    }
                }
                Ok(())
            })?;
            let status = match required(status, "status")? {
                0 => Status::Ok,
                1 => Status::Cancelled,
                _ => Status::Failed,
            };
            Frame::Complete(Complete {
                id,
                status,
                result,
                metrics,
            })
        }
        FrameType::Error => {
            let (mut code, mut message, mut retryable, mut frame_type) = (None, None, None, None);
            Fields::each(payload, keys(4), |k, f| {
                match k {
                    0 => code = f.u16("code", 1, u16::MAX)?,
                    1 => message = f.text("message", 0, 1024)?,
                    2 => retryable = f.bool("retryable")?,
                    _ => frame_type = f.uint("frame_type", 0, 15)?.map(|v| v as u8),
                }
                Ok(())
            })?;
            Frame::Error(ErrorFrame {
                id,
                code: ErrorCode(required(code, "code")?),
                message,
                retryable: retryable.unwrap_or(false),
                frame_type,
            })
        }
        FrameType::Ping | FrameType::Pong => {
            // SPEC §5.8: only `received` (a resume acknowledgement, §11.1); unknown keys
            // are ignored but must be well-formed.
            let mut received = None;
            Fields::each(payload, keys(1), |_, f| {
                received = f.uint("received", 0, u64::MAX)?;
                Ok(())
            })?;
            let h = Heartbeat { received };
            if ty == FrameType::Ping {
                Frame::Ping(h)
            } else {
                Frame::Pong(h)
            }
        }
        FrameType::Request => {
            let (mut kind, mut body, mut inv) = (None, None, None);
            Fields::each(payload, keys(3), |k, f| {
                match k {
                    0 => kind = f.text("kind", 1, 64)?,
                    1 => body = f.any()?,
                    _ => inv = f.u16("invocation", 1, 0x7fff)?.map(RequestId),
                }
                Ok(())
            })?;
            Frame::Request(Request {
                id,
                kind: required(kind, "kind")?,
                body,
                invocation: inv,
            })
        }
        FrameType::Reply => {
            let (mut status, mut body) = (None, None);
            Fields::each(payload, keys(2), |k, f| {
                match k {
                    0 => status = f.uint("status", 0, 2)?,
                    _ => body = f.any()?,
                }
                Ok(())
            })?;
            let status = match required(status, "status")? {
                0 => ReplyStatus::Answered,
                1 => ReplyStatus::Cancelled,
                _ => ReplyStatus::Declined,
            };
            Frame::Reply(Reply { id, status, body })
        }
        FrameType::Credit => {
            let mut bytes = None;
            Fields::each(payload, keys(1), |_, f| {
                bytes = f.u32("bytes", 1)?;
                Ok(())
            })?;
            Frame::Credit(Credit {
                id,
                bytes: required(bytes, "bytes")?,
            })
        }
        FrameType::GoAway => {
            let (mut reason, mut timeout) = (None, None);
            Fields::each(payload, keys(2), |k, f| {
                match k {
                    0 => reason = f.text("reason", 0, 1024)?,
                    _ => timeout = f.u32("timeout_ms", 0)?,
                }
                Ok(())
            })?;
            Frame::GoAway(GoAway {
                reason,
                timeout_ms: timeout.unwrap_or(0),
            })
        }
        FrameType::Resume => {
            let (mut token, mut received) = (None, None);
            Fields::each(payload, keys(2), |k, f| {
                match k {
                    0 => token = f.bin("token", 1, 64)?,
                    _ => received = f.uint("received", 0, u64::MAX)?,
                }
                Ok(())
            })?;
            Frame::Resume(Resume {
                token,
                received: required(received, "received")?,
            })
        }
    })
}

fn hello(payload: &Bytes) -> KResult<Hello> {
    let mut h = Hello::default();
    let mut have_versions = false;
    Fields::each(payload, keys(8), |k, f| {
        match k {
            0 => {
                if f.nil()? {
                    return Ok(());
                }
                let n = f.r.array_len().map_err(at("versions"))?;
                if n == 0 {
                    return Err(invalid("versions", Invalid::Empty));
                }
                if n > 16 {
                    return Err(invalid("versions", Invalid::TooLong));
                }
                for _ in 0..n {
                    let v = f.r.uint().map_err(at("versions"))?;
                    if !(1..=15).contains(&v) {
                        return Err(invalid("versions", Invalid::OutOfRange));
                    }
                    h.versions.insert(v as u8);
                }
                have_versions = true;
            }
            1 => {
                if f.nil()? {
                    return Ok(());
                }
                let n = f.r.array_len().map_err(at("capabilities"))?;
                if n > 32 {
                    return Err(invalid("capabilities", Invalid::TooLong));
                }
                h.capabilities.reserve(n as usize);
                for _ in 0..n {
                    let (a, b) = f.r.str_range().map_err(at("capabilities"))?;
                    check_len("capabilities", b - a, 0, 64)?;
                    h.capabilities.push(Text::from_checked(f.slice((a, b))));
                }
            }
            2 => {
                let l = &mut h.limits;
                f.nested("limits", keys(7), |lk, f| {
                    match lk {
                        0 => l.max_frame_payload = f.u32("limits.max_frame_payload", 64)?,
                        1 => l.max_inflight = f.u16("limits.max_inflight", 1, 0x7fff)?,
                        2 => l.max_tools = f.u16("limits.max_tools", 0, u16::MAX)?,
                        3 => l.max_chunk = f.u32("limits.max_chunk", 1)?,
                        4 => l.initial_window = f.u32("limits.initial_window", 1)?,
                        5 => l.replay_buffer = f.u32("limits.replay_buffer", 0)?,
                        _ => l.resume_window_ms = f.u32("limits.resume_window_ms", 0)?,
                    }
                    Ok(())
                })?;
            }
            3 => h.heartbeat_ms = f.u32("heartbeat_ms", 0)?,
            4 => h.connection_id = f.text("connection_id", 1, 64)?,
            5 => h.resume_token = f.bin("resume_token", 1, 64)?,
            6 => h.tools = f.u16("tools", 0, u16::MAX)?.unwrap_or(0),
            _ => h.agent = f.text("agent", 0, 256)?,
        }
        Ok(())
    })?;
    if !have_versions {
        return Err(DecodeErrorKind::MissingField { field: "versions" });
    }
    Ok(h)
}

/// Takes one frame off the front of `buf`, a buffer of whole frames such as one WebSocket
/// message (SPEC §2.1). Returns `None` when `buf` is empty.
///
/// A message that ends inside a frame gives the fatal [`DecodeErrorKind::Truncated`] and
/// empties `buf`. A frame that fails a check is removed from `buf` and returned as an error,
/// so the caller can report it and go on with the next frame (SPEC §3.7).
pub fn decode_frame(buf: &mut Bytes, max_payload: u32) -> Option<Result<Frame, DecodeError>> {
    if buf.is_empty() {
        return None;
    }
    let Some(h) = Header::parse(buf) else {
        let e = DecodeError {
            request_id: 0,
            frame_type: buf.first().map_or(0, |b| b & 0x0f),
            kind: DecodeErrorKind::Truncated,
        };
        buf.clear();
        return Some(Err(e));
    };
    if h.version != VERSION {
        buf.clear();
        return Some(Err(
            h.error(DecodeErrorKind::UnsupportedVersion { version: h.version })
        ));
    }
    let total = HEADER_LEN as u64 + u64::from(h.len);
    if (buf.len() as u64) < total {
        buf.clear();
        return Some(Err(h.error(DecodeErrorKind::Truncated)));
    }
    let mut frame = buf.split_to(total as usize);
    Some(match h.check(max_payload) {
        Err(kind) => Err(h.error(kind)),
        Ok(ty) => {
            frame.advance(HEADER_LEN);
            decode_payload(ty, RequestId(h.request_id), &frame).map_err(|k| h.error(k))
        }
    })
}

/// Incremental decoder for a byte stream (SPEC §2.2): feed bytes in any chunking, take
/// whole frames out.
///
/// Memory is bounded by `8 + max_payload`: the header is checked before any payload byte is
/// buffered, and a frame over the limit is skipped as its bytes arrive (SPEC §3.6).
/// Input given as [`Bytes`] that holds whole frames is decoded in place, without copying.
///
/// ```
/// use asp_proto::{codec, Decoder, Frame};
/// use bytes::BytesMut;
///
/// let mut wire = BytesMut::new();
/// codec::encode(&Frame::PING, &mut wire);
/// codec::encode(&Frame::PONG, &mut wire);
///
/// let mut dec = Decoder::new(1 << 20);
/// for b in wire.iter() {
///     dec.feed_slice(&[*b]); // one byte at a time works
/// }
/// assert_eq!(dec.next_frame(), Some(Ok(Frame::PING)));
/// assert_eq!(dec.next_frame(), Some(Ok(Frame::PONG)));
/// assert_eq!(dec.next_frame(), None);
/// ```
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    /// Unconsumed input, decoded in place.
    input: Bytes,
    /// An incomplete frame, copied out of earlier input.
    partial: BytesMut,
    /// Payload bytes of a rejected frame still to discard.
    skip: u64,
    /// Set after a fatal error: the framing is lost and input is ignored.
    poisoned: bool,
}

impl Decoder {
    /// A decoder that rejects payloads larger than `max_payload`.
    pub fn new(max_payload: u32) -> Decoder {
        Decoder {
            max_payload,
            input: Bytes::new(),
            partial: BytesMut::new(),
            skip: 0,
            poisoned: false,
        }
    }

    /// Changes the payload limit (for frames whose header has not been read yet).
    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    /// Adds input. Call [`Decoder::next_frame`] until it returns `None` before feeding more
    /// to keep the zero-copy path; feeding earlier is correct but copies.
    pub fn feed(&mut self, data: Bytes) {
        if self.poisoned || data.is_empty() {
            return;
        }
        if self.input.is_empty() {
            self.input = data;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + data.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&data);
            self.input = joined.freeze();
        }
    }

    /// Adds input from a slice (copied once).
    pub fn feed_slice(&mut self, data: &[u8]) {
        self.feed(Bytes::copy_from_slice(data));
    }

    /// Bytes held but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.input.len() + self.partial.len()
    }

    /// Whether the decoder stopped after a fatal error.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The next frame, an error for a rejected frame (decoding continues after it unless it
    /// [is fatal](DecodeErrorKind::is_fatal)), or `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        loop {
            if self.poisoned {
                self.input.clear();
                return None;
            }
            if self.skip > 0 {
                let n = self.skip.min(self.input.len() as u64);
                self.input.advance(n as usize);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if !self.partial.is_empty() {
                return self.continue_partial();
            }
            if self.input.is_empty() {
                return None;
            }
            let Some(h) = Header::parse(&self.input) else {
                self.stash(HEADER_LEN);
                return None;
            };
            if let Err(e) = self.check(&h) {
                // A fatal error already dropped the input; a frame error skips the header here
                // and its payload as it arrives.
                if !self.poisoned {
                    self.input.advance(HEADER_LEN);
                }
                return Some(Err(e));
            }
            let total = HEADER_LEN + h.len as usize;
            if self.input.len() < total {
                self.stash(total);
                continue;
            }
            let frame = self.input.split_to(total);
            return Some(self.finish(&h, frame));
        }
    }

    /// Header checks, at the moment the header is complete: a bad frame's payload is never
    /// buffered, only skipped.
    fn check(&mut self, h: &Header) -> Result<(), DecodeError> {
        match h.check(self.max_payload) {
            Ok(_) => Ok(()),
            Err(kind) => {
                if kind.is_fatal() {
                    self.poisoned = true;
                    self.input.clear();
                    self.partial.clear();
                } else {
                    self.skip = u64::from(h.len);
                }
                Err(h.error(kind))
            }
        }
    }

    /// Moves the incomplete frame at the front of `input` into `partial`, reserving room for
    /// `total` bytes (≤ 8 + max_payload, checked).
    fn stash(&mut self, total: usize) {
        self.partial.reserve(total);
        self.partial.extend_from_slice(&self.input);
        self.input.clear();
    }

    fn fill_partial(&mut self, upto: usize) {
        let need = upto
            .saturating_sub(self.partial.len())
            .min(self.input.len());
        self.partial
            .extend_from_slice(self.input.get(..need).unwrap_or_default());
        self.input.advance(need);
    }

    fn continue_partial(&mut self) -> Option<Result<Frame, DecodeError>> {
        self.fill_partial(HEADER_LEN);
        let h = Header::parse(&self.partial)?;
        if self.partial.len() == HEADER_LEN {
            // Header just completed (or still only the header): check it once.
            if let Err(e) = self.check(&h) {
                self.partial.clear();
                return Some(Err(e));
            }
        }
        let total = HEADER_LEN + h.len as usize;
        self.partial
            .reserve(total.saturating_sub(self.partial.len()));
        self.fill_partial(total);
        if self.partial.len() < total {
            return None;
        }
        let frame = self.partial.split().freeze();
        Some(self.finish(&h, frame))
    }

    fn finish(&self, h: &Header, mut frame: Bytes) -> Result<Frame, DecodeError> {
        // The header passed `check` already; re-deriving the type cannot fail.
        let ty = h.check(u32::MAX).map_err(|k| h.error(k))?;
        frame.advance(HEADER_LEN);
        decode_payload(ty, RequestId(h.request_id), &frame).map_err(|k| h.error(k))
    }
}

/// The STREAM payload exactly as [`encode`] writes it (fixmap, keys 0, 1 and optionally 2 in
/// order, data as fixstr/str 8/bin 8, seq in shortest form), parsed without the generic map
/// walker: the hot path of token streaming. Anything else — other encodings, errors, an
/// empty non-final chunk (SPEC §5.3) — returns `None` and takes the generic path, which
/// accepts every valid encoding and names every error.
///
/// The payload is `p[from..to]`; the data comes out as a slice of `p`.
#[inline(always)]
fn stream_fast(id: RequestId, p: &Bytes, from: usize, to: usize) -> Option<Stream> {
    let b: &[u8] = p.get(from..to)?;
    let with_fin = match *b.first()? {
        0x82 => false,
        0x83 => true,
        _ => return None,
    };
    if *b.get(1)? != 0 {
        return None;
    }
    let marker = *b.get(2)?;
    let (text, len, start) = match marker {
        0xa0..=0xbf => (true, usize::from(marker & 0x1f), 3),
        0xd9 => (true, usize::from(*b.get(3)?), 4),
        0xc4 => (false, usize::from(*b.get(3)?), 4),
        _ => return None,
    };
    let end = start + len;
    let data = b.get(start..end)?;
    // ASCII is valid UTF-8 and much cheaper to check; tokens are mostly ASCII.
    if text && !data.is_ascii() && core::str::from_utf8(data).is_err() {
        return None;
    }
    if *b.get(end)? != 1 {
        return None;
    }
    let (seq, n) = match *b.get(end + 1)? {
        v @ 0..=0x7f => (u32::from(v), 1),
        0xcc => (u32::from(*b.get(end + 2)?), 2),
        0xcd => (
            u32::from(u16::from_be_bytes(
                b.get(end + 2..end + 4)?.try_into().ok()?,
            )),
            3,
        ),
        0xce => (
            u32::from_be_bytes(b.get(end + 2..end + 6)?.try_into().ok()?),
            5,
        ),
        _ => return None,
    };
    let mut i = end + 1 + n;
    let fin = if with_fin {
        if *b.get(i)? != 2 {
            return None;
        }
        let v = match *b.get(i + 1)? {
            0xc2 => false,
            0xc3 => true,
            _ => return None,
        };
        i += 2;
        v
    } else {
        false
    };
    if i != b.len() || (len == 0 && !fin) {
        return None;
    }
    Some(Stream {
        id,
        data: p.slice(from + start..from + end),
        text,
        seq,
        fin,
    })
}

/// Takes one STREAM frame off the front of `buf` if its header passes SPEC §3.7 steps 1–5
/// and its payload is in the encoding [`stream_fast`] reads — without slicing the frame out
/// of `buf` first or building a [`Frame`] (the receive hot path: one reference-count
/// increment per chunk, for its data). Otherwise `None`, and `buf` is untouched:
/// [`decode_frame`] then decodes it, or names what is wrong with it.
#[inline]
pub(crate) fn take_stream(buf: &mut Bytes, max_payload: u32) -> Option<Stream> {
    let h = Header::parse(buf)?;
    if h.frame_type != FrameType::Stream as u8 || h.check(max_payload).is_err() {
        return None;
    }
    let total = HEADER_LEN + h.len as usize;
    let s = stream_fast(RequestId(h.request_id), buf, HEADER_LEN, total)?;
    buf.advance(total);
    Some(s)
}

/// The encoded length of the STREAM frame [`encode_stream`] writes (header included).
pub(crate) fn stream_len(n: usize, text: bool, seq: u32, fin: bool) -> usize {
    let marker = match (text, n) {
        (true, 0..=31) => 1,
        (_, 0..=0xff) => 2,
        (_, 0x100..=0xffff) => 3,
        _ => 5,
    };
    let seq_len = match seq {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    };
    HEADER_LEN + 2 + marker + n + 1 + seq_len + if fin { 2 } else { 0 }
}

/// Appends a STREAM frame, byte for byte what [`encode`] writes for
/// `Frame::Stream(Stream { id, data, text, seq, fin })`, with one capacity check and no
/// `Frame` value (the send hot path).
pub(crate) fn encode_stream(
    buf: &mut BytesMut,
    id: RequestId,
    data: &[u8],
    text: bool,
    seq: u32,
    fin: bool,
) {
    let n = data.len();
    // At most: header, map and key, 5-byte data marker, key and 5-byte seq, `final`.
    buf.reserve(HEADER_LEN + 14 + n);
    let start = buf.len();
    let id = id.0.to_be_bytes();
    buf.extend_from_slice(&[
        (VERSION << 4) | FrameType::Stream as u8,
        0,
        id[0],
        id[1],
        0,
        0,
        0,
        0,
    ]);
    buf.extend_from_slice(&[if fin { 0x83 } else { 0x82 }, 0x00]);
    // The forms `msgpack::Writer::{str, bin, uint}` choose.
    match (text, n) {
        (true, 0..=31) => buf.extend_from_slice(&[0xa0 | n as u8]),
        (true, 32..=0xff) => buf.extend_from_slice(&[0xd9, n as u8]),
        (false, 0..=0xff) => buf.extend_from_slice(&[0xc4, n as u8]),
        (true, 0x100..=0xffff) => {
            buf.extend_from_slice(&[0xda]);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        (false, 0x100..=0xffff) => {
            buf.extend_from_slice(&[0xc5]);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        (true, _) => {
            buf.extend_from_slice(&[0xdb]);
            buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        (false, _) => {
            buf.extend_from_slice(&[0xc6]);
            buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    buf.extend_from_slice(data);
    buf.extend_from_slice(&[0x01]);
    match seq {
        0..=0x7f => buf.extend_from_slice(&[seq as u8]),
        0x80..=0xff => buf.extend_from_slice(&[0xcc, seq as u8]),
        0x100..=0xffff => {
            buf.extend_from_slice(&[0xcd]);
            buf.extend_from_slice(&(seq as u16).to_be_bytes());
        }
        _ => {
            buf.extend_from_slice(&[0xce]);
            buf.extend_from_slice(&seq.to_be_bytes());
        }
    }
    if fin {
        buf.extend_from_slice(&[0x02, 0xc3]);
    }
    let len = u32::try_from(buf.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    if let Some(slot) = buf.get_mut(start + 4..start + HEADER_LEN) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use proptest::prelude::*;

    fn general(id: u16, data: &[u8], text: bool, seq: u32, fin: bool) -> BytesMut {
        let mut b = BytesMut::new();
        encode(
            &Frame::Stream(Stream {
                id: RequestId(id),
                data: Bytes::copy_from_slice(data),
                text,
                seq,
                fin,
            }),
            &mut b,
        );
        b
    }

    #[test]
    fn stream_len_is_what_encode_stream_writes() {
        for n in [0usize, 1, 31, 32, 255, 256, 65535, 65536] {
            for (text, seq, fin) in [(true, 0, false), (false, 200, true), (true, 70000, true)] {
                let mut b = BytesMut::new();
                encode_stream(&mut b, RequestId(1), &vec![b'a'; n], text, seq, fin);
                assert_eq!(
                    stream_len(n, text, seq, fin),
                    b.len(),
                    "{n} {text} {seq} {fin}"
                );
            }
        }
    }

    #[test]
    fn encode_stream_writes_what_encode_writes() {
        let lens = [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000];
        let seqs = [0, 127, 128, 255, 256, 65_535, 65_536, u32::MAX];
        for len in lens {
            let data = vec![b'a'; len];
            for seq in seqs {
                for (text, fin) in [(false, false), (false, true), (true, false), (true, true)] {
                    let mut fast = BytesMut::from(&b"prefix"[..]);
                    encode_stream(&mut fast, RequestId(513), &data, text, seq, fin);
                    let want = general(513, &data, text, seq, fin);
                    assert_eq!(
                        &fast[6..],
                        &want[..],
                        "len {len} seq {seq} text {text} fin {fin}"
                    );
                }
            }
        }
    }

    proptest! {
        /// `take_stream` takes exactly what `decode_frame` decodes as the same STREAM, and
        /// leaves everything else (other frames, any error) untouched for it.
        #[test]
        fn take_stream_agrees_with_decode_frame(
            id in any::<u16>(),
            len in 0usize..300,
            text in any::<bool>(),
            seq in any::<u32>(),
            fin in any::<bool>(),
            max in prop_oneof![Just(u32::MAX), 0u32..400],
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut wire = general(id, &data, text, seq, fin).to_vec();
            for (at, v) in flips {
                let i = at.index(wire.len());
                wire[i] = v;
            }
            if cut.index(4) == 0 {
                let keep = cut.index(wire.len() + 1);
                wire.truncate(keep);
            }
            wire.extend_from_slice(&trailing);
            let wire = Bytes::from(wire);

            let mut fast_buf = wire.clone();
            let fast = take_stream(&mut fast_buf, max);
            let mut slow_buf = wire.clone();
            let slow = decode_frame(&mut slow_buf, max);
            match fast {
                Some(s) => {
                    prop_assert_eq!(slow, Some(Ok(Frame::Stream(s))));
                    prop_assert_eq!(fast_buf, slow_buf);
                }
                None => prop_assert_eq!(fast_buf, wire),
            }
        }
    }
}
