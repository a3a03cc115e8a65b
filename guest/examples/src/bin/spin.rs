//! Never ends: spins with interrupts off, making no exit at all. Only a deadline stops it
//! (`mote run --timeout 1s`).
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    mote_guest::println!("spinning forever");
    loop {
        core::hint::spin_loop();
    }
}
