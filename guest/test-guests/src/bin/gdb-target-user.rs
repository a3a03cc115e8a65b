//! The debugger's tests' user-mode guest (a `mote-guest` kernel, at CPL3): a named function that
//! is never inlined and a counter it writes, then exit code 7.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

mote_guest::entry!(main);

/// How often `gdb_user_function` ran.
#[unsafe(no_mangle)]
pub static GDB_USER_CALLS: AtomicU64 = AtomicU64::new(0);

/// Where the debugger's breakpoint goes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn gdb_user_function(x: u64) -> u64 {
    GDB_USER_CALLS.fetch_add(1, Ordering::Relaxed);
    x.wrapping_mul(3)
}

fn main() -> u32 {
    let mut total = 0u64;
    for i in 0..3 {
        total = total.wrapping_add(gdb_user_function(core::hint::black_box(i)));
    }
    if total == 9 { 7 } else { 1 }
}
