//! The replay buffer for session resume (SPEC §11.1): the last counted frames sent, bounded
//! in encoded bytes. Frames hold `Bytes`, so keeping them costs reference counts, not copies.

use std::collections::VecDeque;

use crate::frame::Frame;

#[derive(Debug)]
pub(crate) struct Replay {
    /// (frame, encoded size), oldest first.
    frames: VecDeque<(Frame, usize)>,
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

    /// Records a frame just sent, dropping the oldest ones beyond the bound.
    pub(crate) fn push(&mut self, frame: Frame, size: usize) {
        self.frames.push_back((frame, size));
        self.bytes += size;
        while self.bytes > self.max_bytes {
            match self.frames.pop_front() {
                Some((_, s)) => {
                    self.bytes -= s;
                    self.first += 1;
                }
                None => break,
            }
        }
    }

    /// The frames with index ≥ `received`, if all are still held and `received ≤ sent`.
    /// They leave the buffer: re-sending them records them again.
    pub(crate) fn take_from(&mut self, received: u64, sent: u64) -> Option<Vec<(Frame, usize)>> {
        let end = self.first + self.frames.len() as u64;
        debug_assert_eq!(end, sent);
        if received > end || received < self.first {
            return None;
        }
        let keep = usize::try_from(received - self.first).ok()?;
        let tail: Vec<(Frame, usize)> = self.frames.drain(keep..).collect();
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

    #[test]
    fn bounded_and_replays_the_tail() {
        let mut r = Replay::new(30);
        for _ in 0..5 {
            r.push(Frame::Ping, 10);
        }
        // Only the last 3 (indices 2, 3, 4) fit.
        assert!(r.take_from(1, 5).is_none());
        let mut r2 = Replay::new(30);
        for _ in 0..5 {
            r2.push(Frame::Ping, 10);
        }
        assert_eq!(r2.take_from(3, 5).map(|v| v.len()), Some(2));
        assert!(Replay::new(30).take_from(1, 0).is_none());
    }
}
