//! CPU exceptions: entry stubs (naked functions), the runtime note that hands them to mote, and
//! the report every exception ends in.
//!
//! Under mote the guest runs at CPL3 and mote builds the IDT from the note's addresses. Booted
//! at CPL0 by anything else, the runtime installs the same stubs in an IDT of its own.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use mote_abi::note::{self, EXCEPTION_VECTORS};

/// The stack the CPU (and the stub) leave for the handler.
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Common tail of every stub: hand the frame to Rust on a 16-byte aligned stack, with the
/// direction flag clear as Rust code expects (an exception keeps whatever the guest had).
#[unsafe(naked)]
unsafe extern "C" fn exception_common() {
    naked_asm!(
        "cld",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {handler}",
        "ud2",
        handler = sym exception_handler,
    );
}

macro_rules! stubs {
    ($($vector:literal $name:ident $($error:ident)?;)*) => {
        $(
            #[unsafe(naked)]
            unsafe extern "C" fn $name() {
                naked_asm!(
                    stubs!(@push $($error)?),
                    "push {vector}",
                    "jmp {common}",
                    vector = const $vector,
                    common = sym exception_common,
                );
            }
        )*
        /// The stub of each vector, in vector order.
        const STUBS: [unsafe extern "C" fn(); EXCEPTION_VECTORS] = [$($name),*];
    };
    // Vectors without an error code push a zero in its place, so every frame looks alike.
    (@push error_code) => { "" };
    (@push) => { "push 0" };
}

stubs! {
    0 vector_0; 1 vector_1; 2 vector_2; 3 vector_3; 4 vector_4; 5 vector_5; 6 vector_6;
    7 vector_7; 8 vector_8 error_code; 9 vector_9; 10 vector_10 error_code;
    11 vector_11 error_code; 12 vector_12 error_code; 13 vector_13 error_code;
    14 vector_14 error_code; 15 vector_15; 16 vector_16; 17 vector_17 error_code;
    18 vector_18; 19 vector_19; 20 vector_20; 21 vector_21 error_code; 22 vector_22;
    23 vector_23; 24 vector_24; 25 vector_25; 26 vector_26; 27 vector_27; 28 vector_28;
    29 vector_29 error_code; 30 vector_30 error_code; 31 vector_31;
}

/// The runtime note (layout: `mote_abi::note`). The addresses in it are fixed up by the
/// kernel's own relocations; mote reads it after relocating.
#[repr(C)]
struct RuntimeNote {
    magic: [u8; 8],
    version: u32,
    flags: u32,
    kernel_stack_size: u64,
    /// No syscall stub: hypercalls are a direct `out` (`crate::hypercall`).
    syscall_entry: Option<unsafe extern "C" fn()>,
    exception_handlers: [unsafe extern "C" fn(); EXCEPTION_VECTORS],
    /// Written by mote before the guest starts.
    host_abi_version: AtomicU32,
    host_flags: AtomicU32,
    /// Written by mote before the guest starts.
    tsc_khz: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<RuntimeNote>() == note::SIZE);

/// Stack for exception handlers, allocated by mote.
const KERNEL_STACK_SIZE: u64 = 16 * 1024;

#[unsafe(link_section = ".mote_runtime")]
#[used]
static RUNTIME_NOTE: RuntimeNote = RuntimeNote {
    magic: note::MAGIC,
    version: note::VERSION,
    flags: 0,
    kernel_stack_size: KERNEL_STACK_SIZE,
    syscall_entry: None,
    exception_handlers: STUBS,
    host_abi_version: AtomicU32::new(0),
    host_flags: AtomicU32::new(0),
    tsc_khz: AtomicU64::new(0),
};

/// What mote wrote into the note: its ABI version (0 if no mote filled it in) and the TSC
/// frequency in kHz. Reading the note also keeps it in the linked kernel, which drops what
/// nothing refers to.
pub(crate) fn host_info() -> (u32, u32, u64) {
    (
        RUNTIME_NOTE.host_abi_version.load(Ordering::Relaxed),
        RUNTIME_NOTE.host_flags.load(Ordering::Relaxed),
        RUNTIME_NOTE.tsc_khz.load(Ordering::Relaxed),
    )
}

fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: exception handlers run at CPL0, where reading CR2 is allowed and harmless.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags))
    };
    cr2
}

extern "C" fn exception_handler(frame: &ExceptionFrame) -> ! {
    let vector = frame.vector as u8;
    let cr2 = if vector == 14 || vector == 8 {
        read_cr2()
    } else {
        0
    };
    crate::rt::report_exception(vector, frame.error_code, frame.rip, cr2)
}

/// Installs an IDT with the same stubs, for a kernel running at CPL0 (booted without mote's
/// user mode). Under mote's user mode the host has already loaded one.
pub(crate) fn install_own_idt() {
    use x86_64::VirtAddr;
    use x86_64::structures::idt::InterruptDescriptorTable;

    static IDT: spin::Once<InterruptDescriptorTable> = spin::Once::new();
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        let address = |vector: usize| VirtAddr::new(STUBS[vector] as usize as u64);
        // SAFETY (every set_handler_addr below): each stub is a valid exception entry for its
        // vector: it builds a uniform frame and never returns.
        unsafe {
            idt.divide_error.set_handler_addr(address(0));
            idt.debug.set_handler_addr(address(1));
            idt.non_maskable_interrupt.set_handler_addr(address(2));
            idt.breakpoint.set_handler_addr(address(3));
            idt.overflow.set_handler_addr(address(4));
            idt.bound_range_exceeded.set_handler_addr(address(5));
            idt.invalid_opcode.set_handler_addr(address(6));
            idt.device_not_available.set_handler_addr(address(7));
            idt.double_fault.set_handler_addr(address(8));
            idt.invalid_tss.set_handler_addr(address(10));
            idt.segment_not_present.set_handler_addr(address(11));
            idt.stack_segment_fault.set_handler_addr(address(12));
            idt.general_protection_fault.set_handler_addr(address(13));
            idt.page_fault.set_handler_addr(address(14));
            idt.x87_floating_point.set_handler_addr(address(16));
            idt.alignment_check.set_handler_addr(address(17));
            idt.machine_check.set_handler_addr(address(18));
            idt.simd_floating_point.set_handler_addr(address(19));
            idt.virtualization.set_handler_addr(address(20));
            idt.cp_protection_exception.set_handler_addr(address(21));
        }
        idt
    });
    idt.load();
}
