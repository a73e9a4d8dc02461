//! The few MessagePack writes the relay binding makes for `/invoke` and `/reply` bodies
//! (SPEC §15.2, §15.5), over `rmp`'s encoders, which pick the shortest form as SPEC §4.2 asks.

use bytes::{BufMut, BytesMut};

/// Appends MessagePack values to a buffer. Writing to memory cannot fail, so the `io`
/// results of `rmp`'s encoders are dropped.
pub(crate) struct Writer<'b>(pub(crate) &'b mut BytesMut);

impl Writer<'_> {
    pub(crate) fn map_len(&mut self, n: u32) {
        let _ = rmp::encode::write_map_len(&mut (&mut *self.0).writer(), n);
    }

    pub(crate) fn uint(&mut self, v: u64) {
        let _ = rmp::encode::write_uint(&mut (&mut *self.0).writer(), v);
    }

    pub(crate) fn str(&mut self, s: &[u8]) {
        // `s` is UTF-8 from a `&str` at every call site; the length prefix is what differs.
        let _ = rmp::encode::write_str_len(&mut (&mut *self.0).writer(), s.len() as u32);
        self.0.put_slice(s);
    }

    pub(crate) fn bin(&mut self, b: &[u8]) {
        let _ = rmp::encode::write_bin_len(&mut (&mut *self.0).writer(), b.len() as u32);
        self.0.put_slice(b);
    }

    /// A pre-encoded value, copied verbatim.
    pub(crate) fn raw(&mut self, b: &[u8]) {
        self.0.put_slice(b);
    }
}
