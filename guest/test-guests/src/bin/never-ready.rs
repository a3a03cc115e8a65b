//! Never becomes ready for input: its `init` spins forever, so it cannot be snapshotted.
#![no_std]
#![no_main]

mote_guest::entry!(main, init = init);

fn init() {
    loop {
        core::hint::spin_loop();
    }
}

fn main(_: ()) {}
