//! Calls the host function `inner`, then spins forever: a run whose deadline must hold even if
//! the host function runs a guest of its own on the same thread.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    let _ = mote_guest::host_call("inner", b"");
    loop {
        core::hint::spin_loop();
    }
}
