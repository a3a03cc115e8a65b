//! Start-up, exit, panics and exception reports.

use core::fmt::{self, Debug, Write};

use crate::{bench, console, exceptions, heap, hypercall, io, platform, println, time};

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

/// Called by [`entry!`](crate::entry): sets up the runtime, runs `init`, starts the run (the
/// snapshot point), runs `main`, exits.
pub fn start<S>(
    boot_info: &'static mut bootloader_api::BootInfo,
    init: impl FnOnce() -> S,
    main: impl FnOnce(S) -> u32,
) -> ! {
    platform::detect();
    // In user mode, mote built the IDT from our note; at CPL0 the IDT is ours to install.
    if hypercall::cpl() != 3 {
        exceptions::install_own_idt();
    }
    if platform::under_mote() && platform::host_abi_version() != mote_abi::ABI_VERSION {
        println!(
            "mote-guest: the host speaks hypercall ABI version {}, this guest version {}",
            platform::host_abi_version(),
            mote_abi::ABI_VERSION
        );
        exit(1);
    }
    time::init();
    io::init(boot_info);
    heap::init();
    let state = init();
    io::start_run();
    // Time counts from the start of the run, in a restored run as in a cold one.
    time::init();
    let code = main(state);
    exit(code)
}

/// Hands the host the timing samples still buffered ([`bench`](mod@crate::bench)), flushes the
/// console and ends the guest with `code`.
pub fn exit(code: u32) -> ! {
    bench::flush();
    console::flush();
    if platform::under_mote() {
        hypercall::exit(code)
    }
    debug_exit(code == 0)
}

/// Ends the VM through isa-debug-exit, when not under mote: 0x10 reads as success and 0x11 as
/// failure under mote and the usual QEMU test setups.
fn debug_exit(success: bool) -> ! {
    let value: u32 = if success { 0x10 } else { 0x11 };
    // SAFETY: writing the isa-debug-exit port ends the VM; without one, nothing happens.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") mote_abi::DEBUG_EXIT_PORT, in("eax") value,
            options(nostack, preserves_flags));
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Formats into a fixed buffer, cutting what does not fit: a panic must not need the heap.
struct FixedWriter<const N: usize> {
    buffer: [u8; N],
    len: usize,
}

impl<const N: usize> Write for FixedWriter<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(N - self.len);
        self.buffer[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> FixedWriter<N> {
    fn as_str(&self) -> &str {
        // Cutting may split a character: keep the valid prefix.
        match core::str::from_utf8(&self.buffer[..self.len]) {
            Ok(text) => text,
            Err(error) => {
                core::str::from_utf8(&self.buffer[..error.valid_up_to()]).unwrap_or_default()
            }
        }
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::force_unlock();
    console::flush();
    let (file, line) = info
        .location()
        .map_or(("<unknown>", 0), |l| (l.file(), l.line()));
    if platform::under_mote() {
        let mut message = FixedWriter::<1024> {
            buffer: [0; 1024],
            len: 0,
        };
        let _ = write!(message, "{}", info.message());
        hypercall::abort(message.as_str(), file, line)
    }
    println!("panicked at {file}:{line}:\n{}", info.message());
    console::flush();
    debug_exit(false)
}

/// Called by every exception stub, at CPL0: report and end the run.
pub(crate) fn report_exception(vector: u8, error_code: u64, rip: u64, cr2: u64) -> ! {
    console::force_unlock();
    console::flush();
    if platform::under_mote() {
        let args = [u64::from(vector), error_code, rip, cr2, 0, 0];
        // SAFETY: the call takes plain numbers; at CPL0 `raw` makes a direct `out`.
        unsafe { hypercall::raw(mote_abi::Hypercall::Exception as u32, args) };
        loop {
            core::hint::spin_loop();
        }
    }
    let name = mote_abi::note::exception_name(vector);
    println!("exception {vector} ({name}) at {rip:#x}, error code {error_code:#x}, cr2 {cr2:#x}");
    console::flush();
    debug_exit(false)
}
