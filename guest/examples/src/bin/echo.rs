//! The simplest function: its output is its input.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    mote_guest::output(mote_guest::input())
}
