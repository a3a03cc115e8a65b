//! A guest for the debugger's tests: a named function that is never inlined, a static it reads
//! and a counter it writes, then exit code 7 (the test checks that mote passes the guest's code
//! on). With any input it calls the function forever instead, for a debugger to interrupt. It is a plain `bootloader_api` kernel, so it runs in kernel mode (CPL0): there KVM's
//! single-step and hardware breakpoints reach the host on every host mote runs on (see
//! docs/debugging.md for user mode).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use mote_abi::{HYPERCALL_PORT, Hypercall};

bootloader_api::entry_point!(main);

/// A value the debugger prints: "mote" in ASCII, as a little-endian number.
#[unsafe(no_mangle)]
pub static GDB_MAGIC: u64 = 0x6574_6f6d;

/// How often `gdb_target_function` ran.
#[unsafe(no_mangle)]
pub static GDB_CALLS: AtomicU64 = AtomicU64::new(0);

/// Where the debugger's breakpoint goes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gdb_target_function(x: u64) -> u64 {
    GDB_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: reading a static through a reference to it; volatile keeps the read in the code.
    let magic = unsafe { core::ptr::read_volatile(&GDB_MAGIC) };
    x.wrapping_mul(3).wrapping_add(magic)
}

fn main(boot_info: &'static mut bootloader_api::BootInfo) -> ! {
    if boot_info.ramdisk_len > 0 {
        let mut i = 0u64;
        loop {
            i = gdb_target_function(core::hint::black_box(i));
        }
    }
    let mut total = 0u64;
    for i in 0..3 {
        total = total.wrapping_add(gdb_target_function(core::hint::black_box(i)));
    }
    exit(if total == 3 * GDB_MAGIC + 9 { 7 } else { 1 })
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
