//! Inbound rate limiting (SPEC §10): a fixed one-second window of frame counts.

use core::time::Duration;

use crate::time::Instant;

/// What the rate limiter says about one inbound frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateVerdict {
    /// Within the limit.
    Ok,
    /// The first frame beyond the limit in this window: warn the peer once.
    FirstOver,
    /// Beyond the limit (INVOKE/REQUEST are refused).
    Over,
    /// Beyond the hard limit: close with FLOOD.
    Flood,
}

/// Frames counted in a window that starts with the first frame after the previous window
/// ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateWindow {
    start: Instant,
    count: u32,
}

impl RateWindow {
    pub(crate) fn new(now: Instant) -> Self {
        RateWindow {
            start: now,
            count: 0,
        }
    }

    pub(crate) fn on_frame(&mut self, now: Instant, limit: u32, flood: u32) -> RateVerdict {
        if now >= self.start + Duration::from_secs(1) {
            self.start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > flood.max(limit) {
            RateVerdict::Flood
        } else if self.count == limit.saturating_add(1) {
            RateVerdict::FirstOver
        } else if self.count > limit {
            RateVerdict::Over
        } else {
            RateVerdict::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let mut w = RateWindow::new(Instant::ZERO);
        let t = Instant::from_millis(10);
        assert_eq!(w.on_frame(t, 2, 4), RateVerdict::Ok);
        assert_eq!(w.on_frame(t, 2, 4), RateVerdict::Ok);
        assert_eq!(w.on_frame(t, 2, 4), RateVerdict::FirstOver);
        assert_eq!(w.on_frame(t, 2, 4), RateVerdict::Over);
        assert_eq!(w.on_frame(t, 2, 4), RateVerdict::Flood);
        assert_eq!(
            w.on_frame(Instant::from_millis(1010), 2, 4),
            RateVerdict::Ok
        );
    }
}
