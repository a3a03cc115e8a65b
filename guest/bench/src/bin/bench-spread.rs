//! `cargo xtask bench`'s figures for `mote bench`: what an empty `bench::measure` costs, and a
//! fixed compute workload timed many times in each run, whose run-to-run spread the benchmark
//! sets against the same workload timed the same way natively on the host.
//!
//! Input: the workload's rounds per sample (default 20000). Samples: `overhead` (one, the
//! calibrated cost of an empty measurement, which `measure` subtracts), `empty` (1000 empty
//! measurements, after that subtraction) and `compute` (100 timings of the workload).
#![no_std]
#![no_main]

use core::hint::black_box;

use mote_guest::bench;

include!("../compute.rs");

/// Empty measurements per run.
const EMPTY: usize = 1000;
/// Timings of the workload per run.
const COMPUTE: usize = 100;

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    let rounds = core::str::from_utf8(mote_guest::input())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(20_000u64);
    bench::sample("overhead", bench::overhead_cycles());
    for _ in 0..EMPTY {
        bench::measure("empty", || ());
    }
    for _ in 0..COMPUTE {
        bench::measure("compute", || workload(black_box(rounds)));
    }
    Ok(())
}
