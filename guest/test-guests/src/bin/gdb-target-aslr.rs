//! A kernel that asks for ASLR, for the debugger's tests: each run puts it somewhere else, and a
//! breakpoint on `gdb_aslr_function` hits only if mote tells GDB where (`qOffsets`). Exit code 9.
#![no_std]
#![no_main]

use core::arch::asm;

use bootloader_api::BootloaderConfig;
use mote_abi::{HYPERCALL_PORT, Hypercall};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.aslr = true;
    config
};
bootloader_api::entry_point!(main, config = &CONFIG);

/// Where the debugger's breakpoint goes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gdb_aslr_function(x: u64) -> u64 {
    x.wrapping_add(2)
}

fn main(_boot_info: &'static mut bootloader_api::BootInfo) -> ! {
    exit(gdb_aslr_function(core::hint::black_box(7)) as u32)
}

fn exit(code: u32) -> ! {
    // SAFETY: an `out` to mote's port: the exit call, which does not return.
    unsafe {
        asm!("out dx, eax", in("dx") HYPERCALL_PORT, in("eax") Hypercall::Exit as u32,
            in("rdi") u64::from(code), options(nostack, noreturn));
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    exit(101)
}
