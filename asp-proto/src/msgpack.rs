//! The subset of MessagePack that ASP payloads use (SPEC §4): a bounds-checked reader over a
//! payload slice and a writer over any [`BufMut`]-like sink.
//!
//! Values of schema type `any` are never interpreted: [`Reader::skip_value`] walks them
//! iteratively (a counter of pending values, no recursion), so a deeply nested value cannot
//! overflow the stack and the work is linear in the payload size.

use bytes::{BufMut, BytesMut};
use rmp::Marker;

use crate::error::{Invalid, Malformed};

/// A reader error before it is attributed to a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Structural: truncated, `0xc1`, … (SPEC §4.3 → MALFORMED_PAYLOAD).
    Malformed(Malformed),
    /// The value is well-formed but not what the field needs (→ INVALID_FIELD).
    Invalid(Invalid),
}

impl From<Malformed> for ReadError {
    fn from(m: Malformed) -> Self {
        ReadError::Malformed(m)
    }
}

pub(crate) type ReadResult<T> = Result<T, ReadError>;

/// Bounds-checked cursor over one payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = *self.buf.get(self.pos).ok_or(Malformed::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, Malformed> {
        self.buf.get(self.pos).copied().ok_or(Malformed::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, Malformed> {
        let s = self.take(n)?;
        Ok(s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn marker(&mut self) -> Result<Marker, Malformed> {
        match Marker::from_u8(self.byte()?) {
            Marker::Reserved => Err(Malformed::InvalidMarker),
            m => Ok(m),
        }
    }

    /// Consumes a `nil` if one is next. Optional fields treat nil as absent (SPEC §4.2).
    pub(crate) fn take_nil(&mut self) -> Result<bool, Malformed> {
        if self.peek()? == Marker::Null.to_u8() {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// The top-level map header. An empty payload is an empty map (SPEC §4.4).
    pub(crate) fn map_len(&mut self) -> Result<u32, Malformed> {
        if self.at_end() {
            return Ok(0);
        }
        match self.marker()? {
            Marker::FixMap(n) => Ok(u32::from(n)),
            Marker::Map16 => Ok(self.be(2)? as u32),
            Marker::Map32 => Ok(self.be(4)? as u32),
            _ => Err(Malformed::NotAMap),
        }
    }

    /// A nested map's header (HELLO `limits`, COMPLETE `metrics`).
    pub(crate) fn nested_map_len(&mut self) -> ReadResult<u32> {
        match self.marker()? {
            Marker::FixMap(n) => Ok(u32::from(n)),
            Marker::Map16 => Ok(self.be(2)? as u32),
            Marker::Map32 => Ok(self.be(4)? as u32),
            _ => Err(ReadError::Invalid(Invalid::WrongType)),
        }
    }

    pub(crate) fn array_len(&mut self) -> ReadResult<u32> {
        match self.marker()? {
            Marker::FixArray(n) => Ok(u32::from(n)),
            Marker::Array16 => Ok(self.be(2)? as u32),
            Marker::Array32 => Ok(self.be(4)? as u32),
            _ => Err(ReadError::Invalid(Invalid::WrongType)),
        }
    }

    /// A map key: any unsigned integer (SPEC §4.1). Keys beyond `u8` are unknown keys.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<u64, Malformed> {
        // Fast path: senders use positive fixint keys (SPEC §4.1).
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        match self.uint_slow() {
            Ok(k) => Ok(k),
            Err(ReadError::Malformed(m)) => Err(m),
            Err(ReadError::Invalid(_)) => Err(Malformed::NonIntegerKey),
        }
    }

    /// An unsigned integer in any encoding that holds a non-negative value (SPEC §4.2).
    #[inline]
    pub(crate) fn uint(&mut self) -> ReadResult<u64> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.uint_slow()
    }

    #[inline(never)]
    fn uint_slow(&mut self) -> ReadResult<u64> {
        let v = match self.marker()? {
            Marker::FixPos(n) => u64::from(n),
            Marker::U8 => self.be(1)?,
            Marker::U16 => self.be(2)?,
            Marker::U32 => self.be(4)?,
            Marker::U64 => self.be(8)?,
            Marker::I8 => signed(self.be(1)? as u8 as i8 as i64)?,
            Marker::I16 => signed(self.be(2)? as u16 as i16 as i64)?,
            Marker::I32 => signed(self.be(4)? as u32 as i32 as i64)?,
            Marker::I64 => signed(self.be(8)? as i64)?,
            Marker::FixNeg(_) => return Err(ReadError::Invalid(Invalid::OutOfRange)),
            other => {
                self.skip_after_marker(other)?;
                return Err(ReadError::Invalid(Invalid::WrongType));
            }
        };
        Ok(v)
    }

    pub(crate) fn bool(&mut self) -> ReadResult<bool> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            _ => Err(ReadError::Invalid(Invalid::WrongType)),
        }
    }

    /// A `str`: returns the byte range of its UTF-8 contents within the payload.
    pub(crate) fn str_range(&mut self) -> ReadResult<(usize, usize)> {
        match self.str_or_bin()? {
            (r, true) => Ok(r),
            (_, false) => Err(ReadError::Invalid(Invalid::WrongType)),
        }
    }

    /// A `bin`: returns the byte range of its contents.
    pub(crate) fn bin_range(&mut self) -> ReadResult<(usize, usize)> {
        match self.str_or_bin()? {
            (r, false) => Ok(r),
            (_, true) => Err(ReadError::Invalid(Invalid::WrongType)),
        }
    }

    /// A `str` or `bin` (STREAM data): its range and whether it is text. Text is checked
    /// for UTF-8 here (SPEC §4.2).
    pub(crate) fn str_or_bin(&mut self) -> ReadResult<((usize, usize), bool)> {
        let (len, text) = match self.marker()? {
            Marker::FixStr(n) => (usize::from(n), true),
            Marker::Str8 => (self.be(1)? as usize, true),
            Marker::Str16 => (self.be(2)? as usize, true),
            Marker::Str32 => (self.be(4)? as usize, true),
            Marker::Bin8 => (self.be(1)? as usize, false),
            Marker::Bin16 => (self.be(2)? as usize, false),
            Marker::Bin32 => (self.be(4)? as usize, false),
            other => {
                self.skip_after_marker(other)?;
                return Err(ReadError::Invalid(Invalid::WrongType));
            }
        };
        let start = self.pos;
        let s = self.take(len)?;
        if text && core::str::from_utf8(s).is_err() {
            return Err(ReadError::Invalid(Invalid::Utf8));
        }
        Ok(((start, self.pos), text))
    }

    /// Skips one complete value of any type; returns its byte range.
    pub(crate) fn skip_value(&mut self) -> Result<(usize, usize), Malformed> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.marker()?;
            pending += self.skip_after_marker(m)?;
            // Every pending value needs at least one byte: reject absurd counts early so a
            // 6-byte `array 32` claiming 4 billion elements costs nothing to refuse.
            if pending > (self.buf.len() - self.pos) as u64 {
                return Err(Malformed::Truncated);
            }
        }
        Ok((start, self.pos))
    }

    /// Skips the body of a value whose marker was read; returns how many nested values
    /// (array elements, map keys and values) follow.
    fn skip_after_marker(&mut self, m: Marker) -> Result<u64, Malformed> {
        let skip = |r: &mut Self, n: usize| r.take(n).map(|_| 0u64);
        match m {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                Ok(0)
            }
            Marker::U8 | Marker::I8 => skip(self, 1),
            Marker::U16 | Marker::I16 => skip(self, 2),
            Marker::U32 | Marker::I32 | Marker::F32 => skip(self, 4),
            Marker::U64 | Marker::I64 | Marker::F64 => skip(self, 8),
            Marker::FixStr(n) => skip(self, usize::from(n)),
            Marker::Str8 | Marker::Bin8 => {
                let n = self.be(1)? as usize;
                skip(self, n)
            }
            Marker::Str16 | Marker::Bin16 => {
                let n = self.be(2)? as usize;
                skip(self, n)
            }
            Marker::Str32 | Marker::Bin32 => {
                let n = self.be(4)? as usize;
                skip(self, n)
            }
            Marker::FixArray(n) => Ok(u64::from(n)),
            Marker::Array16 => self.be(2),
            Marker::Array32 => self.be(4),
            Marker::FixMap(n) => Ok(2 * u64::from(n)),
            Marker::Map16 => Ok(2 * self.be(2)?),
            Marker::Map32 => Ok(2 * self.be(4)?),
            Marker::FixExt1 => skip(self, 2),
            Marker::FixExt2 => skip(self, 3),
            Marker::FixExt4 => skip(self, 5),
            Marker::FixExt8 => skip(self, 9),
            Marker::FixExt16 => skip(self, 17),
            Marker::Ext8 => {
                let n = self.be(1)? as usize;
                skip(self, n + 1)
            }
            Marker::Ext16 => {
                let n = self.be(2)? as usize;
                skip(self, n + 1)
            }
            Marker::Ext32 => {
                let n = self.be(4)? as usize;
                skip(self, n.saturating_add(1))
            }
            Marker::Reserved => Err(Malformed::InvalidMarker),
        }
    }
}

fn signed(v: i64) -> ReadResult<u64> {
    u64::try_from(v).map_err(|_| ReadError::Invalid(Invalid::OutOfRange))
}

/// Where encoded bytes go: a real buffer, or a counter that only measures (so the queue can
/// account for a frame's size without encoding it twice).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_u8(&mut self, b: u8);
}

impl Sink for BytesMut {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
    #[inline]
    fn put_u8(&mut self, b: u8) {
        BufMut::put_u8(self, b);
    }
}

/// Counts bytes instead of writing them.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    #[inline]
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
}

/// MessagePack writer producing the shortest encodings (SPEC §4.2: "senders use the
/// shortest form").
pub(crate) struct Writer<'s, S: Sink>(pub(crate) &'s mut S);

impl<S: Sink> Writer<'_, S> {
    pub(crate) fn map_len(&mut self, n: u32) {
        if n < 16 {
            self.0.put_u8(Marker::FixMap(n as u8).to_u8());
        } else if n <= u32::from(u16::MAX) {
            self.0.put_u8(Marker::Map16.to_u8());
            self.0.put(&(n as u16).to_be_bytes());
        } else {
            self.0.put_u8(Marker::Map32.to_u8());
            self.0.put(&n.to_be_bytes());
        }
    }

    pub(crate) fn array_len(&mut self, n: u32) {
        if n < 16 {
            self.0.put_u8(Marker::FixArray(n as u8).to_u8());
        } else if n <= u32::from(u16::MAX) {
            self.0.put_u8(Marker::Array16.to_u8());
            self.0.put(&(n as u16).to_be_bytes());
        } else {
            self.0.put_u8(Marker::Array32.to_u8());
            self.0.put(&n.to_be_bytes());
        }
    }

    /// A key: always a positive fixint (SPEC §4.1).
    #[inline]
    pub(crate) fn key(&mut self, k: u8) {
        debug_assert!(k < 128);
        self.0.put_u8(k);
    }

    pub(crate) fn uint(&mut self, v: u64) {
        if v < 128 {
            self.0.put_u8(v as u8);
        } else if v <= u64::from(u8::MAX) {
            self.0.put(&[Marker::U8.to_u8(), v as u8]);
        } else if v <= u64::from(u16::MAX) {
            self.0.put_u8(Marker::U16.to_u8());
            self.0.put(&(v as u16).to_be_bytes());
        } else if v <= u64::from(u32::MAX) {
            self.0.put_u8(Marker::U32.to_u8());
            self.0.put(&(v as u32).to_be_bytes());
        } else {
            self.0.put_u8(Marker::U64.to_u8());
            self.0.put(&v.to_be_bytes());
        }
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.0
            .put_u8(if b { Marker::True } else { Marker::False }.to_u8());
    }

    pub(crate) fn str(&mut self, s: &[u8]) {
        let n = s.len();
        if n < 32 {
            self.0.put_u8(Marker::FixStr(n as u8).to_u8());
        } else if n <= usize::from(u8::MAX) {
            self.0.put(&[Marker::Str8.to_u8(), n as u8]);
        } else if n <= usize::from(u16::MAX) {
            self.0.put_u8(Marker::Str16.to_u8());
            self.0.put(&(n as u16).to_be_bytes());
        } else {
            self.0.put_u8(Marker::Str32.to_u8());
            self.0.put(&(n as u32).to_be_bytes());
        }
        self.0.put(s);
    }

    pub(crate) fn bin(&mut self, b: &[u8]) {
        let n = b.len();
        if n <= usize::from(u8::MAX) {
            self.0.put(&[Marker::Bin8.to_u8(), n as u8]);
        } else if n <= usize::from(u16::MAX) {
            self.0.put_u8(Marker::Bin16.to_u8());
            self.0.put(&(n as u16).to_be_bytes());
        } else {
            self.0.put_u8(Marker::Bin32.to_u8());
            self.0.put(&(n as u32).to_be_bytes());
        }
        self.0.put(b);
    }

    /// A pre-encoded value (schema type `any`), copied verbatim.
    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.0.put(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_rejects_huge_counts_without_work() {
        // array 32 claiming u32::MAX elements, then nothing.
        let buf = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Reader::new(&buf).skip_value(), Err(Malformed::Truncated));
    }

    #[test]
    fn skip_handles_deep_nesting_iteratively() {
        // 100 000 nested fixarrays of one element, ending in nil: no recursion, no overflow.
        let mut buf = vec![0x91u8; 100_000];
        buf.push(0xc0);
        let mut r = Reader::new(&buf);
        assert_eq!(r.skip_value(), Ok((0, buf.len())));
        assert!(r.at_end());
    }

    #[test]
    fn uint_accepts_every_encoding_of_a_non_negative_value() {
        for enc in [
            &[0x05][..],
            &[0xcc, 5],
            &[0xcd, 0, 5],
            &[0xce, 0, 0, 0, 5],
            &[0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
            &[0xd0, 5],
            &[0xd1, 0, 5],
            &[0xd2, 0, 0, 0, 5],
            &[0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
        ] {
            assert_eq!(Reader::new(enc).uint(), Ok(5), "{enc:02x?}");
        }
        assert_eq!(
            Reader::new(&[0xff]).uint(),
            Err(ReadError::Invalid(Invalid::OutOfRange))
        );
        assert_eq!(
            Reader::new(&[0xd0, 0xff]).uint(),
            Err(ReadError::Invalid(Invalid::OutOfRange))
        );
    }

    #[test]
    fn writer_uses_shortest_forms() {
        let mut b = BytesMut::new();
        let mut w = Writer(&mut b);
        w.uint(127);
        w.uint(128);
        w.uint(70_000);
        w.str(&[b'a'; 31]);
        assert_eq!(&b[..4], &[0x7f, 0xcc, 0x80, 0xce]);
        assert_eq!(b[8], 0xbf);
    }
}
