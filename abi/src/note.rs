//! The runtime note: how a guest asks mote to run it in user mode (CPL3).
//!
//! A guest that carries this note in a section named [`SECTION`] is entered at CPL3. mote then
//! builds the privileged state itself: a GDT with user segments, a TSS whose RSP0 points at a
//! kernel stack of [`kernel_stack_size`](offsets::KERNEL_STACK_SIZE) bytes and whose IST1 points
//! at a double-fault stack, an IDT whose 32 exception vectors enter the note's handlers at CPL0,
//! and the `syscall` MSRs if the note names a syscall entry. Guest pages are mapped USER; mote's
//! own structures are not.
//!
//! The note is a packed little-endian record; addresses in it are link-time addresses that the
//! kernel's own `R_X86_64_RELATIVE` relocations adjust, so mote reads it after relocating.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | [`MAGIC`] |
//! | 8 | 4 | [`VERSION`] |
//! | 12 | 4 | flags (none defined; must be 0) |
//! | 16 | 8 | kernel stack size in bytes (stack for exception handlers and the syscall stub) |
//! | 24 | 8 | syscall entry address, or 0 for none |
//! | 32 | 8 × 32 | exception handler addresses by vector, 0 for none |
//! | 288 | 4 | written by mote at load: the host's [`ABI_VERSION`](crate::ABI_VERSION) |
//! | 292 | 4 | written by mote at load: host flags ([`HOST_FLAG_SNAPSHOT`]) |
//! | 296 | 8 | written by mote at load: TSC frequency in kHz, 0 if unknown |
//!
//! The last three fields are how a user-mode guest learns about its host: CPUID is not a
//! reliable channel at CPL3 (some hypervisors, kvm_pvm among them, run it natively there), so the
//! runtime reads them from its own note instead. The section must therefore be writable data.

/// The name of the section holding the note.
pub const SECTION: &str = ".mote_runtime";

/// The note's first bytes.
pub const MAGIC: [u8; 8] = *b"MOTE-RT\0";

/// The note layout version this crate describes.
pub const VERSION: u32 = 1;

/// Number of exception vectors the note gives handlers for.
pub const EXCEPTION_VECTORS: usize = 32;

/// The note's size in bytes.
pub const SIZE: usize = offsets::TSC_KHZ + 8;

/// Field offsets.
pub mod offsets {
    /// [`MAGIC`](super::MAGIC).
    pub const MAGIC: usize = 0;
    /// [`VERSION`](super::VERSION), u32.
    pub const VERSION: usize = 8;
    /// Flags, u32.
    pub const FLAGS: usize = 12;
    /// Kernel stack size, u64.
    pub const KERNEL_STACK_SIZE: usize = 16;
    /// Syscall entry, u64.
    pub const SYSCALL_ENTRY: usize = 24;
    /// Exception handlers, 32 × u64.
    pub const EXCEPTION_HANDLERS: usize = 32;
    /// Host ABI version, u32, written by mote.
    pub const HOST_ABI_VERSION: usize = EXCEPTION_HANDLERS + 8 * super::EXCEPTION_VECTORS;
    /// Host flags, u32, written by mote (was reserved and 0 before snapshots).
    pub const HOST_FLAGS: usize = HOST_ABI_VERSION + 4;
    /// TSC frequency in kHz, u64, written by mote.
    pub const TSC_KHZ: usize = HOST_ABI_VERSION + 8;
}

/// Host flag: mote boots this guest to snapshot it, so the guest must call
/// [`ReadyForInput`](crate::Hypercall::ReadyForInput) once it is initialised, and take its
/// input from that call on. Without the flag (a cold run) the input is already in the ramdisk,
/// and a guest may skip the call (and its exit).
pub const HOST_FLAG_SNAPSHOT: u32 = 1 << 0;

/// The largest kernel stack a note may ask for.
pub const KERNEL_STACK_MAX: u64 = 1 << 20;

/// Selectors of the GDT mote builds for a user-mode guest. The layout is what `syscall` and
/// `sysret` need: STAR selects kernel CS = 0x08, SS = 0x10 and user SS = 0x18, CS = 0x20.
pub mod selectors {
    /// Kernel code (64-bit, DPL0).
    pub const KERNEL_CODE: u16 = 0x08;
    /// Kernel data (DPL0).
    pub const KERNEL_DATA: u16 = 0x10;
    /// User data (DPL3), with RPL 3.
    pub const USER_DATA: u16 = 0x18 | 3;
    /// User code (64-bit, DPL3), with RPL 3.
    pub const USER_CODE: u16 = 0x20 | 3;
    /// The TSS (16 bytes).
    pub const TSS: u16 = 0x28;
}

/// The interrupt-stack-table slot of the double-fault handler's stack.
pub const DOUBLE_FAULT_IST: u8 = 1;

/// Exception vectors for which the CPU pushes an error code.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Whether the CPU pushes an error code for exception `vector` (double fault, invalid TSS,
/// segment not present, stack-segment, general protection, page fault, alignment check,
/// control protection, VMM communication, security).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The name of an exception vector.
pub const fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "non-maskable interrupt",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point error",
        20 => "virtualization exception",
        21 => "control protection exception",
        _ => "reserved exception",
    }
}
