//! One monotonic clock for the whole simulator process (WeChat side and reference control plane),
//! so `wxagent bench` can subtract an injection time from a report's arrival time without two
//! clocks drifting apart.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call in this process (monotonic).
pub fn mono_us() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}
