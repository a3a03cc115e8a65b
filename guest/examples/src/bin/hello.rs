//! The smallest useful guest: a greeting, some heap use, exit 0.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

mote_guest::entry!(main);

fn main() {
    mote_guest::println!("Hello from a mote guest!");
    let squares: Vec<u64> = (1..=10).map(|n| n * n).collect();
    mote_guest::println!(
        "sum of the first ten squares: {}",
        squares.iter().sum::<u64>()
    );
}
