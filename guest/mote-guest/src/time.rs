//! Time. Monotonic time comes from the TSC and costs no exit; the wall clock is one hypercall.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use crate::{hypercall, platform};

static TSC_AT_START: AtomicU64 = AtomicU64::new(0);

pub(crate) fn init() {
    TSC_AT_START.store(tsc(), Ordering::Relaxed);
}

/// The time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter (mote leaves CR4.TSD clear, so it works at CPL3).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TSC frequency in kHz, or `None` if the host did not say.
pub fn tsc_khz() -> Option<u64> {
    match platform::tsc_khz() {
        0 => None,
        khz => Some(khz),
    }
}

/// Converts TSC ticks to time (zero if the TSC frequency is unknown).
pub fn ticks_to_duration(ticks: u64) -> Duration {
    match tsc_khz() {
        Some(khz) => Duration::from_nanos((u128::from(ticks) * 1_000_000 / u128::from(khz)) as u64),
        None => Duration::ZERO,
    }
}

/// Time since the run started (since `main` was entered), from the TSC: no exit.
pub fn monotonic() -> Duration {
    ticks_to_duration(tsc().wrapping_sub(TSC_AT_START.load(Ordering::Relaxed)))
}

/// The host's wall-clock time since the Unix epoch (one hypercall), or `None` when not under
/// mote.
pub fn wall_clock() -> Option<Duration> {
    platform::under_mote().then(|| Duration::from_nanos(hypercall::wall_clock_ns()))
}
