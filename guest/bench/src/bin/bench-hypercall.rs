//! Times no-op hypercall round trips inside the guest with the TSC; output: `ns_per_call=<n>\n`.
//! Input: the number of calls (default 1000).
#![no_std]
#![no_main]

extern crate alloc;

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    let calls = core::str::from_utf8(mote_guest::input())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000u64)
        .max(1);
    let start = mote_guest::time::tsc();
    for _ in 0..calls {
        mote_guest::hypercall::nop();
    }
    let ticks = mote_guest::time::tsc() - start;
    let ns = mote_guest::time::ticks_to_duration(ticks).as_nanos() / u128::from(calls);
    mote_guest::output(alloc::format!("ns_per_call={ns}\n").as_bytes())
}
