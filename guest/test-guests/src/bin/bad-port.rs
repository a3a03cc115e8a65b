//! Writes to a port nobody serves: mote must end the run and name the port.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    mote_guest::println!("writing to port 0x1234");
    // SAFETY: an `out` to an unserved port; under mote it ends the run.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") 0x1234u16, in("al") 0xABu8, options(nomem, nostack))
    };
}
