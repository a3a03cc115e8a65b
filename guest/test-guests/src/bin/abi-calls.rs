//! Exercises the calls whose results only the host can check: `ready`, the wall clock,
//! monotonic time, random bytes, the input and what the run started with (generation and
//! seed), and reports what it saw as its output.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use mote_guest::time;

mote_guest::entry!(main);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), mote_guest::HypercallError> {
    mote_guest::hypercall::ready();
    let wall = time::wall_clock().map_or(0, |t| t.as_nanos());
    let before = time::monotonic();
    let mut spin = 0u64;
    for i in 0..1_000_000u64 {
        spin = core::hint::black_box(spin.wrapping_add(i));
    }
    let after = time::monotonic();
    let mut random = [0u8; 32];
    mote_guest::random_bytes(&mut random)?;
    let start = mote_guest::run_start().expect("under mote, main has a run start");
    let report = format!(
        "wall_ns={wall}\ntsc_khz={}\nmonotonic_advanced={}\nrandom={}\ninput_len={}\n\
         generation={}\nseed={}\n",
        time::tsc_khz().unwrap_or(0),
        u8::from(after > before),
        hex(&random),
        mote_guest::input().len(),
        start.generation,
        hex(&start.seed),
    );
    mote_guest::output(report.as_bytes())
}
