//! mote-guest: the `no_std` runtime a mote guest links.
//!
//! A guest is a `bootloader_api` kernel. This crate gives it what a program expects: an entry
//! point ([`entry!`]), [`print!`] and [`println!`], a heap (so `alloc` works), a panic handler that
//! reports the message and location and exits non-zero, handlers for every CPU exception,
//! [`exit`], and what a function needs: its [`input`], its [`output`], [`time`],
//! [`random_bytes`] and [`host_call`]; and for benchmarks, named timing samples for the host
//! ([`bench`](mod@crate::bench)).
//!
//! Under mote the guest runs in user mode (CPL3): the runtime carries a note that asks mote to
//! build the privileged state, so no privileged instruction runs on the start path and the
//! guest's own code runs at native speed.
//!
//! Under mote, console text and the exit code travel over mote's hypercalls (see `docs/abi.md`).
//! Elsewhere (QEMU, real hardware through the `bootloader` crate) the runtime finds no mote
//! CPUID signature and falls back to COM1 and the isa-debug-exit port, so one binary runs in both.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! mote_guest::entry!(main);
//!
//! fn main() {
//!     mote_guest::println!("Hello from a mote guest!");
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod bench;
pub mod console;
mod exceptions;
mod heap;
pub mod hypercall;
mod io;
mod platform;
#[doc(hidden)]
pub mod rt;
pub mod time;

#[doc(hidden)]
pub use bootloader_api;
pub use io::{
    HOST_CALL_RESPONSE_MAX, HostCallError, host_call, host_call_into, input, output, random_bytes,
    run_start,
};
pub use mote_abi::{HypercallError, RunStart};
pub use platform::under_mote;
pub use rt::{Termination, exit};

/// The boot configuration every mote guest is built with.
#[doc(hidden)]
pub const BOOT_CONFIG: bootloader_api::BootloaderConfig = {
    let mut config = bootloader_api::BootloaderConfig::new_default();
    config.kernel_stack_size = 64 * 1024;
    config
};

/// Declares the guest's `main`, and optionally an `init` that runs once before it.
///
/// `main` returns `()`, a `u32` exit code or a `Result<(), E>` with `E: Debug`; see
/// [`Termination`]. The runtime sets up the console and the heap, runs `init` if there is one,
/// tells mote the guest is ready for its input, calls `main`, hands the host the timing samples
/// still buffered ([`bench`](mod@crate::bench)), flushes the console and exits with `main`'s
/// code.
///
/// mote can snapshot a guest at the moment it is ready for input and restore that snapshot
/// for each run (`mote snapshot`, `Hypervisor::snapshot`, pools): whatever `init` builds (a
/// parsed table, a warmed-up cache) is then built once, not per run. `init` returns a state
/// that `main` takes:
///
/// ```ignore
/// mote_guest::entry!(main, init = load_table);
///
/// fn load_table() -> Table { Table::parse(TABLE_BYTES) }
///
/// fn main(table: Table) -> Result<(), mote_guest::HypercallError> {
///     mote_guest::output(table.lookup(mote_guest::input()))
/// }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!(@start || (), |()| $main());
    };
    ($main:path, init = $init:path) => {
        $crate::entry!(@start $init, $main);
    };
    (@start $init:expr, $main:expr) => {
        $crate::bootloader_api::entry_point!(__mote_guest_start, config = &$crate::BOOT_CONFIG);

        fn __mote_guest_start(boot_info: &'static mut $crate::bootloader_api::BootInfo) -> ! {
            $crate::rt::start(boot_info, $init, |state| {
                $crate::Termination::exit_code(($main)(state))
            })
        }
    };
}
