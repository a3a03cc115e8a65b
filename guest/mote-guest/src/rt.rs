//! Start-up, exit and panics.

use core::fmt::Debug;

use crate::{console, heap, hypercall, platform, println};

/// What `main` may return; turned into the guest's exit code.
pub trait Termination {
    /// The exit code this value stands for.
    fn exit_code(self) -> u32;
}

impl Termination for () {
    fn exit_code(self) -> u32 {
        0
    }
}

impl Termination for u32 {
    fn exit_code(self) -> u32 {
        self
    }
}

impl<E: Debug> Termination for Result<(), E> {
    fn exit_code(self) -> u32 {
        match self {
            Ok(()) => 0,
            Err(error) => {
                println!("Error: {error:?}");
                1
            }
        }
    }
}

/// The exit code of a guest that panicked (as for a Rust test that panics).
const PANIC_EXIT_CODE: u32 = 101;

/// Called by [`entry!`](crate::entry): sets up the runtime, runs `main`, exits.
pub fn start(_boot_info: &'static mut bootloader_api::BootInfo, main: impl FnOnce() -> u32) -> ! {
    platform::detect();
    heap::init();
    let code = main();
    exit(code)
}

/// Flushes the console and ends the guest with `code`.
pub fn exit(code: u32) -> ! {
    console::flush();
    if platform::under_mote() {
        hypercall::exit(code)
    }
    // isa-debug-exit: 0x10 reads as success and 0x11 as failure under mote and the usual
    // QEMU test setups.
    let value: u32 = if code == 0 { 0x10 } else { 0x11 };
    // SAFETY: writing the isa-debug-exit port ends the VM; without one, nothing happens.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") mote_abi::DEBUG_EXIT_PORT, in("eax") value,
            options(nostack, preserves_flags));
    }
    loop {
        // SAFETY: nothing left to do; halt until the VM is torn down.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::force_unlock();
    match info.location() {
        Some(location) => println!("panicked at {location}:\n{}", info.message()),
        None => println!("panicked: {}", info.message()),
    }
    exit(PANIC_EXIT_CODE)
}
