//! A benchmark guest: hashes its input (or 4 KiB of its own when the input is empty) with
//! 64-bit FNV-1a 1000 times, each round a timing sample named `hash`, and sorts a copy of 64
//! numbers 1000 times, each a sample named `sort`. The samples go to the host
//! (`Outcome::samples`, `mote_guest::bench`); the console gets a one-line summary.
#![no_std]
#![no_main]

use core::hint::black_box;

use mote_guest::{bench, println, time};

mote_guest::entry!(main);

const ROUNDS: u32 = 1000;
const BUILT_IN_LEN: usize = 4096;
const SORTED_LEN: usize = 64;

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Bytes to hash when the input is empty: a fixed pattern, the same in every run.
fn built_in() -> [u8; BUILT_IN_LEN] {
    core::array::from_fn(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
}

/// Numbers to sort, out of order: a fixed xorshift sequence.
fn unsorted() -> [u32; SORTED_LEN] {
    let mut state = 0x9E37_79B9u32;
    core::array::from_fn(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    })
}

fn main() {
    let own = built_in();
    let input = mote_guest::input();
    let data: &[u8] = if input.is_empty() { &own } else { input };
    let numbers = unsorted();
    let started = time::monotonic();
    let mut hash = 0;
    for _ in 0..ROUNDS {
        hash = bench::measure("hash", || fnv1a(black_box(data)));
    }
    let mut smallest = 0;
    for _ in 0..ROUNDS {
        smallest = bench::measure("sort", || {
            let mut copy = black_box(numbers);
            copy.sort_unstable();
            copy[0]
        });
    }
    let elapsed = time::monotonic() - started;
    println!(
        "hashbench: {ROUNDS} rounds of FNV-1a over {} bytes (hash {hash:#018x}) and of sorting \
         {SORTED_LEN} numbers (smallest {smallest}) in {} µs; {} samples to the host, timer \
         overhead {} ticks",
        data.len(),
        elapsed.as_micros(),
        2 * ROUNDS,
        bench::overhead_cycles()
    );
}
