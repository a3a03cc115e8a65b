//! Raises an exception with no IDT installed: the CPU triple-faults and the VM shuts down.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    mote_guest::println!("about to triple-fault");
    // SAFETY: deliberately undefined: the point is the fault.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}
