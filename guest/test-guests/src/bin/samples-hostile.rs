//! Misuses the `samples` hypercall and the runtime's `bench` module, as its input says:
//!
//! - `bad-calls`: bad pointers, bad names and counts over the limit, each checked against its
//!   documented error, then a good call of three samples (`good`: 1, 2, 3) and one of none.
//!   Exits 0 only if every answer was right.
//! - `name-flood`: one sample under each of 257 names; only mote's name limit stops it.
//! - `sample-flood`: batches of 8192 samples named `flood`, forever; only mote's sample limit
//!   stops it.
//! - `runtime`: through `bench`: names the host would refuse (dropped quietly), 20 names of
//!   600 samples each one after another (`name-00` to `name-19`, values 0 to 599), then 50
//!   rounds of one sample under each name in turn (values 1000 to 1049): more names than the
//!   runtime buffers at once, whose samples must still arrive whole and in order.
#![no_std]
#![no_main]

use mote_abi::{Hypercall, HypercallError, SAMPLES_PER_CALL_MAX};
use mote_guest::hypercall::{check, raw, samples};
use mote_guest::{bench, println};

mote_guest::entry!(main);

const NAMES: [&str; 20] = [
    "name-00", "name-01", "name-02", "name-03", "name-04", "name-05", "name-06", "name-07",
    "name-08", "name-09", "name-10", "name-11", "name-12", "name-13", "name-14", "name-15",
    "name-16", "name-17", "name-18", "name-19",
];

/// 65 bytes: one more than a name may have.
const LONG_NAME: &str = "a name of sixty-five bytes, one more than the host ever accepts!!";

static BATCH: [u64; SAMPLES_PER_CALL_MAX as usize] = [7; SAMPLES_PER_CALL_MAX as usize];

fn expect(what: &str, got: Result<u64, HypercallError>, want: Result<u64, HypercallError>) -> bool {
    let ok = got == want;
    println!("{what}: {got:?} {}", if ok { "ok" } else { "WRONG" });
    ok
}

/// A `samples` call with raw arguments.
fn call(name: u64, name_len: u64, cycles: u64, count: u64) -> Result<u64, HypercallError> {
    let args = [name, name_len, cycles, count, 0, 0];
    // SAFETY: the host must refuse bad arguments without touching memory, and only reads the
    // guest's memory for good ones.
    check(unsafe { raw(Hypercall::Samples as u32, args) })
}

fn bad_calls() -> u32 {
    use HypercallError::*;
    let name = "good";
    let (name_at, name_len) = (name.as_ptr() as u64, name.len() as u64);
    let cycles = [1u64, 2, 3];
    let cycles_at = cycles.as_ptr() as u64;
    let not_utf8 = [0xFFu8, 0xFE];
    let mut all_ok = true;
    all_ok &= expect(
        "name at an unmapped address",
        call(0x10, 4, cycles_at, 1),
        Err(BadAddress),
    );
    all_ok &= expect(
        "samples at an unmapped address",
        call(name_at, name_len, 0x10, 1),
        Err(BadAddress),
    );
    all_ok &= expect(
        "samples at a non-canonical address",
        call(name_at, name_len, 1 << 63, 1),
        Err(BadAddress),
    );
    all_ok &= expect(
        "samples wrapping the address space",
        call(name_at, name_len, u64::MAX - 7, 2),
        Err(BadAddress),
    );
    all_ok &= expect(
        "a name of 65 bytes",
        call(
            LONG_NAME.as_ptr() as u64,
            LONG_NAME.len() as u64,
            cycles_at,
            1,
        ),
        Err(InvalidArgument),
    );
    all_ok &= expect(
        "an empty name",
        call(name_at, 0, cycles_at, 1),
        Err(InvalidArgument),
    );
    all_ok &= expect(
        "a name that is not UTF-8",
        call(not_utf8.as_ptr() as u64, 2, cycles_at, 1),
        Err(InvalidArgument),
    );
    all_ok &= expect(
        "8193 samples in one call",
        call(
            name_at,
            name_len,
            BATCH.as_ptr() as u64,
            SAMPLES_PER_CALL_MAX + 1,
        ),
        Err(InvalidArgument),
    );
    all_ok &= expect(
        "u64::MAX samples in one call",
        call(name_at, name_len, cycles_at, u64::MAX),
        Err(InvalidArgument),
    );
    if mote_guest::hypercall::cpl() == 3 {
        // The GDT page is mapped for the kernel only: a user-mode guest may not name it.
        let gdt = x86_64::instructions::tables::sgdt();
        all_ok &= expect(
            "samples in supervisor-only memory",
            call(name_at, name_len, gdt.base.as_u64(), 1),
            Err(BadAddress),
        );
    }
    all_ok &= expect("three good samples", samples(name, &cycles), Ok(3));
    all_ok &= expect("no samples at all", samples(name, &[]), Ok(0));
    if all_ok { 0 } else { 1 }
}

fn name_flood() -> u32 {
    let mut name = *b"flood-000";
    for i in 0..=256u32 {
        name[6] = b'0' + (i / 100) as u8;
        name[7] = b'0' + (i / 10 % 10) as u8;
        name[8] = b'0' + (i % 10) as u8;
        let name = core::str::from_utf8(&name).unwrap_or("flood");
        if let Err(error) = samples(name, &[u64::from(i)]) {
            println!("{name}: {error:?}");
            return 1;
        }
    }
    println!("257 names went in: the name limit did not hold");
    1
}

fn sample_flood() -> u32 {
    loop {
        if let Err(error) = samples("flood", &BATCH) {
            println!("a batch was refused: {error:?}");
            return 1;
        }
    }
}

fn runtime() -> u32 {
    // Names the host would refuse are dropped before they cost an exit; measure still
    // returns what its closure returns.
    bench::sample("", 1);
    bench::sample(LONG_NAME, 1);
    let answer = bench::measure(LONG_NAME, || 42);
    for name in NAMES {
        for value in 0..600 {
            bench::sample(name, value);
        }
    }
    for round in 0..50 {
        for name in NAMES {
            bench::sample(name, 1000 + round);
        }
    }
    println!(
        "runtime: measure gave {answer}, timer overhead {} ticks",
        bench::overhead_cycles()
    );
    if answer == 42 { 0 } else { 1 }
}

fn main() -> u32 {
    let which = core::str::from_utf8(mote_guest::input())
        .unwrap_or("")
        .trim();
    match which {
        "bad-calls" => bad_calls(),
        "name-flood" => name_flood(),
        "sample-flood" => sample_flood(),
        "runtime" => runtime(),
        _ => 2,
    }
}
