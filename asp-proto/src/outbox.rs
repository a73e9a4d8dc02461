//! The transmit queue. Frames are encoded once, when queued, straight into the bytes that
//! `poll_transmit` hands out; a 12-byte record per frame keeps what the accounting needs when
//! the frame leaves (its size, type, id and STREAM data length). Queueing a STREAM chunk
//! therefore moves no `Frame` value around and encodes nothing twice.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::codec;
use crate::frame::{Frame, FrameType};

/// What is remembered about one queued frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queued {
    pub(crate) len: u32,
    pub(crate) ty: FrameType,
    pub(crate) id: u16,
    /// STREAM data bytes (for per-invocation queue accounting); 0 otherwise, and 0 for
    /// replayed frames, which were accounted for when first sent.
    pub(crate) data: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    bytes: BytesMut,
    frames: VecDeque<Queued>,
    /// Frames ever appended at the back (`push`, `push_stream`): the position a session
    /// snapshot covers (SPEC §11.4). Frames put in front are replays and answers, never held.
    pushed: u64,
}

impl Outbox {
    /// Encoded bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a frame; returns its encoded size.
    pub(crate) fn push(&mut self, frame: &Frame) -> usize {
        let start = self.bytes.len();
        codec::encode(frame, &mut self.bytes);
        let len = self.bytes.len() - start;
        self.pushed += 1;
        let data = match frame {
            Frame::Stream(s) => s.data.len() as u32,
            _ => 0,
        };
        self.frames.push_back(Queued {
            len: len as u32,
            ty: frame.frame_type(),
            id: frame.request_id().0,
            data,
        });
        len
    }

    /// Appends a STREAM frame (what `push(&Frame::Stream(..))` does, without the `Frame`);
    /// returns its encoded size.
    pub(crate) fn push_stream(
        &mut self,
        id: crate::frame::RequestId,
        data: &[u8],
        text: bool,
        seq: u32,
        fin: bool,
    ) -> usize {
        let start = self.bytes.len();
        codec::encode_stream(&mut self.bytes, id, data, text, seq, fin);
        let len = self.bytes.len() - start;
        self.pushed += 1;
        self.frames.push_back(Queued {
            len: len as u32,
            ty: FrameType::Stream,
            id: id.0,
            data: data.len() as u32,
        });
        len
    }

    /// Puts frames, already encoded, in front of everything queued, in the given order.
    pub(crate) fn push_front_encoded(&mut self, items: Vec<(Bytes, FrameType)>) {
        let extra: usize = items.iter().map(|(b, _)| b.len()).sum();
        let mut bytes = BytesMut::with_capacity(extra + self.bytes.len());
        for (b, ty) in items.iter().rev() {
            self.frames.push_front(Queued {
                len: b.len() as u32,
                ty: *ty,
                id: 0,
                data: 0,
            });
        }
        for (b, _) in &items {
            bytes.extend_from_slice(b);
        }
        bytes.extend_from_slice(&self.bytes);
        self.bytes = bytes;
    }

    /// Puts one frame in front of everything queued.
    pub(crate) fn push_front(&mut self, frame: &Frame) {
        let mut b = BytesMut::new();
        codec::encode(frame, &mut b);
        self.push_front_encoded(vec![(b.freeze(), frame.frame_type())]);
    }

    /// Frames ever appended at the back.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// Frames queued.
    pub(crate) fn frames(&self) -> usize {
        self.frames.len()
    }

    /// The queued frames' bytes and types, oldest first.
    pub(crate) fn encoded(&self) -> impl Iterator<Item = (&[u8], FrameType)> {
        let mut at = 0usize;
        self.frames.iter().map(move |q| {
            let end = at + q.len as usize;
            let b = self.bytes.get(at..end).unwrap_or_default();
            at = end;
            (b, q.ty)
        })
    }

    /// The records of the queued frames, oldest first.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Queued> {
        self.frames.iter()
    }

    /// Takes the first `n` frames, `len` bytes in total (from [`Outbox::records`]).
    pub(crate) fn take(
        &mut self,
        n: usize,
        len: usize,
    ) -> (BytesMut, std::collections::vec_deque::Drain<'_, Queued>) {
        // Everything at once (the usual case): hand the buffer over whole rather than
        // split it. A split shares the allocation, and the empty remainder would keep it
        // alive while the connection idles (SPEC §13.1, README: memory per idle
        // connection); a whole hand-over also skips the split's shared-buffer bookkeeping.
        let bytes = if len == self.bytes.len() {
            std::mem::take(&mut self.bytes)
        } else {
            self.bytes.split_to(len)
        };
        (bytes, self.frames.drain(..n))
    }

    /// Drops every queued frame of type `ty` (rare: a stale RESUME after a transport loss).
    pub(crate) fn remove_type(&mut self, ty: FrameType) {
        let mut bytes = BytesMut::with_capacity(self.bytes.len());
        let mut offset = 0;
        for q in &self.frames {
            let end = offset + q.len as usize;
            if q.ty != ty {
                bytes.extend_from_slice(self.bytes.get(offset..end).unwrap_or_default());
            }
            offset = end;
        }
        self.frames.retain(|q| q.ty != ty);
        self.bytes = bytes;
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.frames.clear();
    }
}
