//! Times the shared compute workload inside the guest with the TSC; output:
//! `ns=<time>\nresult=<checksum>\n`. Input: the number of rounds (default 10000000).
#![no_std]
#![no_main]

extern crate alloc;

include!("../compute.rs");

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    let rounds = core::str::from_utf8(mote_guest::input())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10_000_000u64);
    let start = mote_guest::time::tsc();
    let result = workload(core::hint::black_box(rounds));
    let ticks = mote_guest::time::tsc() - start;
    let ns = mote_guest::time::ticks_to_duration(ticks).as_nanos();
    mote_guest::output(alloc::format!("ns={ns}\nresult={result}\n").as_bytes())
}
