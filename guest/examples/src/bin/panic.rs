//! Panics on purpose: mote reports the message and location and exits non-zero.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    let answer = 42;
    panic!("deliberate panic, answer = {answer}");
}
