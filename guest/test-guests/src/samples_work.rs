//! What `samples-work-1x` and `samples-work-2x` share: a fixed integer loop measured 200 times as
//! timing samples named `work`, the 2x guest's loop twice as long as the 1x guest's, so the
//! host's samples must show the difference. `init` takes one sample named `init`, which a run
//! restored from a snapshot must not see again.

use core::hint::black_box;

use mote_guest::bench;

/// How many samples of `work` a run reports.
pub const SAMPLES: u32 = 200;

/// Loop iterations per unit of work: tens of thousands of cycles, far above the timer's
/// overhead and jitter.
const ITERATIONS: u64 = 10_000;

/// `units` × [`ITERATIONS`] steps of a linear congruential generator. Each step needs the one
/// before, and `black_box` hides every step's result from the compiler (otherwise it jumps
/// eight steps at a time with precomputed constants), as well as the seed and the count: the
/// loop runs exactly that many times, one multiply and add each.
fn work(units: u64) -> u64 {
    let mut state = black_box(1u64);
    for i in 0..black_box(units * ITERATIONS) {
        state = black_box(
            state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(i),
        );
    }
    state
}

/// Runs once, before the snapshot point.
pub fn init() {
    bench::measure("init", || work(1));
}

/// Takes the run's samples of `units` units of work each.
pub fn run(units: u64) {
    let mut last = 0;
    for _ in 0..SAMPLES {
        last = bench::measure("work", || work(units));
    }
    mote_guest::println!("samples-work-{units}x: {SAMPLES} samples, last state {last:#x}");
}
