//! Time as a value. The core never reads a clock: callers pass an [`Instant`] into every
//! `handle_*` call and the core answers with the next [`Instant`] it wants to be woken at
//! (`poll_timeout`).

use core::ops::Add;
use core::time::Duration;

/// A point on the caller's monotonic clock, in microseconds since an epoch the caller
/// chooses (e.g. when the connection was created).
///
/// A plain number rather than `std::time::Instant` so that tests and conformance vectors
/// can name exact times (`Instant::from_millis(30_000)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Instant {
        Instant(us)
    }

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}
