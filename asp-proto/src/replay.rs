//! The replay buffer for session resume (SPEC §11.1): the encoded bytes of the last counted
//! frames sent, bounded in bytes. The bytes are slices of what was transmitted, so keeping
//! them costs reference counts, not copies.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::frame::FrameType;

#[derive(Debug)]
pub(crate) struct Replay {
    /// Encoded frames, oldest first.
    frames: VecDeque<(Bytes, FrameType)>,
    /// Sent-count index of `frames[0]`.
    first: u64,
    bytes: usize,
    max_bytes: usize,
}

impl Replay {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Replay {
            frames: VecDeque::new(),
            first: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// The frames held, oldest first (for a session snapshot, SPEC §11.4).
    pub(crate) fn frames(&self) -> impl Iterator<Item = &Bytes> {
        self.frames.iter().map(|(b, _)| b)
    }

    /// Replaces the contents with `frames`, the first of which is sent-count index `first`
    /// (a restored snapshot, SPEC §11.4); the bound applies as to frames sent.
    pub(crate) fn restore(&mut self, first: u64, frames: Vec<(Bytes, FrameType)>) {
        self.frames.clear();
        self.bytes = 0;
        self.first = first;
        for (b, ty) in frames {
            self.push(b, ty);
        }
    }

    /// Encoded bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `len` more bytes fit beside what is held and `queued` bytes about to be
    /// sent. An empty buffer takes anything, so that one frame larger than the whole buffer
    /// is never refused for good (it is then the only frame held).
    pub(crate) fn has_room(&self, queued: usize, len: usize) -> bool {
        self.bytes + queued == 0 || self.bytes + queued + len <= self.max_bytes
    }

    /// SPEC §11.1: the peer acknowledged `received` counted frames (PING/PONG `received`):
    /// they never need a replay. `false` if it claims more than `sent`.
    pub(crate) fn ack(&mut self, received: u64, sent: u64) -> bool {
        if received > sent {
            return false;
        }
        while self.first < received {
            match self.frames.pop_front() {
                Some((b, _)) => {
                    self.bytes -= b.len();
                    self.first += 1;
                }
                // Already dropped (or never kept): nothing left to trim.
                None => {
                    self.first = received;
                    break;
                }
            }
        }
        true
    }

    /// Records a frame just sent, dropping the oldest ones beyond the bound (but never the
    /// newest: one frame larger than the bound stays replayable).
    pub(crate) fn push(&mut self, frame: Bytes, ty: FrameType) {
        self.bytes += frame.len();
        self.frames.push_back((frame, ty));
        while self.bytes > self.max_bytes && self.frames.len() > 1 {
            match self.frames.pop_front() {
                Some((b, _)) => {
                    self.bytes -= b.len();
                    self.first += 1;
                }
                None => break,
            }
        }
    }

    /// The frames with index ≥ `received`, if all are still held and `received ≤ sent`.
    /// They leave the buffer: re-sending them records them again.
    pub(crate) fn take_from(
        &mut self,
        received: u64,
        sent: u64,
    ) -> Option<Vec<(Bytes, FrameType)>> {
        let end = self.first + self.frames.len() as u64;
        if end != sent || received > end || received < self.first {
            return None;
        }
        let keep = usize::try_from(received - self.first).ok()?;
        let tail: Vec<(Bytes, FrameType)> = self.frames.drain(keep..).collect();
        // What remains was received by the peer: drop it, and restart counting from there.
        self.frames.clear();
        self.bytes = 0;
        self.first = received;
        Some(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ten() -> Bytes {
        Bytes::from_static(&[0; 10])
    }

    #[test]
    fn bounded_and_replays_the_tail() {
        let mut r = Replay::new(30);
        for _ in 0..5 {
            r.push(ten(), FrameType::Stream);
        }
        // Only the last 3 (indices 2, 3, 4) fit.
        assert!(r.take_from(1, 5).is_none());
        let mut r2 = Replay::new(30);
        for _ in 0..5 {
            r2.push(ten(), FrameType::Stream);
        }
        assert_eq!(r2.take_from(3, 5).map(|v| v.len()), Some(2));
        assert!(Replay::new(30).take_from(1, 0).is_none());
    }

    #[test]
    fn acknowledged_frames_leave_and_make_room() {
        let mut r = Replay::new(30);
        for _ in 0..3 {
            r.push(ten(), FrameType::Stream);
        }
        assert!(!r.has_room(0, 1));
        assert!(r.ack(2, 3));
        assert_eq!(r.bytes(), 10);
        assert!(r.has_room(0, 20));
        assert!(!r.ack(4, 3), "more than was sent");
        // The unacknowledged frame is still replayable; the acknowledged ones are not.
        assert!(r.take_from(1, 3).is_none());
        assert_eq!(r.take_from(2, 3).map(|v| v.len()), Some(1));
    }

    #[test]
    fn one_frame_larger_than_the_bound_is_kept() {
        let mut r = Replay::new(5);
        assert!(r.has_room(0, 10), "an empty buffer takes anything");
        r.push(ten(), FrameType::Stream);
        assert_eq!(r.take_from(0, 1).map(|v| v.len()), Some(1));
    }
}
