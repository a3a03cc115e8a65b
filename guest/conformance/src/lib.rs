//! What the conformance kernels share. Each kernel is a plain `bootloader_api` kernel (no mote
//! crate): it checks one feature of the boot protocol from inside and reports the way the
//! real bootloader's test kernels do, with a line on COM1 and a write to the isa-debug-exit
//! port 0xF4 (0x10 = pass, 0x11 = fail).
//!
//! Guest code at CPL0 may be emulated (about 1 µs an instruction), so the checks here touch
//! as little memory as they can.
#![no_std]

use core::arch::{asm, naked_asm};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};
use x86_64::VirtAddr;
use x86_64::instructions::port::Port;
use x86_64::structures::idt::InterruptDescriptorTable;

/// A 4 KiB page.
pub const PAGE: u64 = 4096;

/// The isa-debug-exit port and the values the real bootloader's tests write to it.
const DEBUG_EXIT_PORT: u16 = 0xF4;
const PASS: u32 = 0x10;
const FAIL: u32 = 0x11;

/// COM1, set up afresh for every line: cheap next to the rest, and nothing to share between
/// a line and a panic that interrupts it.
fn console() -> Option<Uart16550Tty<PioBackend>> {
    // SAFETY: COM1 exists on a PC; these kernels are single-threaded with interrupts off, and
    // each use of the port finishes before the next one starts.
    unsafe { Uart16550Tty::new_port(0x3F8, Config::default()) }.ok()
}

/// Writes one line to COM1 (errors are ignored: there is nowhere to report them).
pub fn print_line(args: fmt::Arguments<'_>) {
    if let Some(mut com1) = console() {
        let _ = com1.write_fmt(args);
        let _ = com1.write_str("\n");
    }
}

/// Prints a line on COM1.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

/// Announces the kernel by name.
pub fn begin(name: &str) {
    print_line(format_args!("conformance kernel {name}"));
}

fn debug_exit(value: u32) -> ! {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: 0xF4 is the isa-debug-exit device: writing it ends the VM.
    unsafe { port.write(value) };
    loop {
        x86_64::instructions::hlt();
    }
}

/// Every check held: say so and end the run with 0x10.
pub fn pass() -> ! {
    print_line(format_args!("PASS"));
    debug_exit(PASS)
}

/// A check failed: say why and end the run with 0x11.
pub fn fail(why: fmt::Arguments<'_>) -> ! {
    print_line(format_args!("FAIL: {why}"));
    debug_exit(FAIL)
}

/// Fails the kernel unless the condition holds; the message names the condition.
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            $crate::fail(format_args!("check failed: {}", stringify!($cond)))
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::fail(format_args!(
                "{} (check failed: {})",
                format_args!($($arg)+),
                stringify!($cond)
            ))
        }
    };
}

/// Fails the kernel unless the two values are equal; the message shows both.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => {
                if *left != *right {
                    $crate::fail(format_args!(
                        "{} = {:#x?}, expected {} = {:#x?}",
                        stringify!($left),
                        left,
                        stringify!($right),
                        right
                    ))
                }
            }
        }
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if *left != *right {
                    $crate::fail(format_args!(
                        "{}: {} = {:#x?}, expected {} = {:#x?}",
                        format_args!($($arg)+),
                        stringify!($left),
                        left,
                        stringify!($right),
                        right
                    ))
                }
            }
        }
    };
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail(format_args!("panic: {info}"))
}

/// The current stack pointer.
#[inline(always)]
pub fn rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// The address of a function of this kernel's code.
pub fn code_address() -> u64 {
    code_address as fn() -> u64 as usize as u64
}

/// The `[start, end)` of the regions of `kind` that overlap `[start, start + len)`, if any.
pub fn overlapping(
    regions: &[MemoryRegion],
    kind: MemoryRegionKind,
    start: u64,
    len: u64,
) -> Option<(u64, u64)> {
    let end = start.saturating_add(len.max(1));
    regions
        .iter()
        .find(|r| r.kind == kind && r.start < end && start < r.end)
        .map(|r| (r.start, r.end))
}

/// Prints the memory map, one line a region.
pub fn print_memory_map(regions: &[MemoryRegion]) {
    for r in regions {
        print_line(format_args!(
            "  {:#012x}..{:#012x} {:?}",
            r.start, r.end, r.kind
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Page tables, read through the physical-memory map.

/// Bits 12..52 of a page-table entry: the physical address it points at.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Entry flags.
pub const PRESENT: u64 = 1;
/// Entry flags.
pub const WRITABLE: u64 = 1 << 1;
/// Entry flags: a 1 GiB (PDPT) or 2 MiB (PD) page.
pub const HUGE: u64 = 1 << 7;
/// Entry flags.
pub const NO_EXECUTE: u64 = 1 << 63;

/// The physical address of the top page table (PML4), from CR3.
pub fn cr3_frame() -> u64 {
    let cr3: u64;
    // SAFETY: reads a register; these kernels run at CPL0.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    cr3 & ADDRESS_MASK
}

/// The index of `va` in the page table of `level` (4 = PML4 ... 1 = PT).
pub fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// Where a virtual address leads, walked in software.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    /// The physical address of `va`.
    pub phys: u64,
    /// The leaf entry.
    pub leaf: u64,
    /// The page size: 4 KiB, 2 MiB or 1 GiB.
    pub page_size: u64,
    /// The physical frames of the tables walked through, PML4 first; `tables_len` are valid.
    pub tables: [u64; 4],
    /// How many of `tables` are valid.
    pub tables_len: usize,
    /// Whether every level allows writes (what the CPU applies).
    pub writable: bool,
    /// Whether some level forbids execution (what the CPU applies).
    pub no_execute: bool,
}

/// The physical-memory map the loader made: phys `p` is at virtual `offset + p`.
#[derive(Clone, Copy, Debug)]
pub struct PhysMap {
    /// `BootInfo.physical_memory_offset`.
    pub offset: u64,
}

impl PhysMap {
    /// Reads a u64 of physical memory through the map.
    ///
    /// # Safety
    /// `phys` must be mapped by the map and be memory.
    pub unsafe fn read_u64(&self, phys: u64) -> u64 {
        // SAFETY: the caller's promise.
        unsafe { core::ptr::read_volatile((self.offset + phys) as *const u64) }
    }

    /// A byte slice of physical memory through the map.
    ///
    /// # Safety
    /// `[phys, phys + len)` must be mapped memory that nothing writes while the slice lives.
    pub unsafe fn bytes(&self, phys: u64, len: usize) -> &'static [u8] {
        // SAFETY: the caller's promise.
        unsafe { core::slice::from_raw_parts((self.offset + phys) as *const u8, len) }
    }

    /// The entry of `table` (a physical frame) at `index`.
    pub fn entry(&self, table: u64, index: usize) -> u64 {
        // SAFETY: page tables are memory, which the map covers.
        unsafe { self.read_u64(table + 8 * index as u64) }
    }

    /// Walks the current page tables (CR3) for `va`. `Err((level, entry))` names the first
    /// entry that is not present.
    pub fn walk(&self, va: u64) -> Result<Walk, (u32, u64)> {
        let mut walk = Walk {
            phys: 0,
            leaf: 0,
            page_size: 0,
            tables: [0; 4],
            tables_len: 0,
            writable: true,
            no_execute: false,
        };
        let mut table = cr3_frame();
        for level in (1..=4).rev() {
            walk.tables[walk.tables_len] = table;
            walk.tables_len += 1;
            let entry = self.entry(table, table_index(va, level));
            if entry & PRESENT == 0 {
                return Err((level, entry));
            }
            walk.writable &= entry & WRITABLE != 0;
            walk.no_execute |= entry & NO_EXECUTE != 0;
            let size = 1u64 << (12 + 9 * (level - 1));
            if level == 1 || (level <= 3 && entry & HUGE != 0) {
                walk.leaf = entry;
                walk.page_size = size;
                walk.phys = (entry & ADDRESS_MASK & !(size - 1)) + (va & (size - 1));
                return Ok(walk);
            }
            table = entry & ADDRESS_MASK;
        }
        unreachable!("level 1 always ends the walk")
    }
}

// ---------------------------------------------------------------------------------------------
// CPU exceptions: a small IDT whose handler fails the kernel with what happened, unless it is
// the page fault a kernel said it expects.

/// What the stub and the CPU left on the stack.
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

/// Common tail of the stubs: call the handler with the frame on a 16-byte aligned stack.
#[unsafe(naked)]
extern "C" fn exception_common() {
    naked_asm!(
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
            extern "C" fn $name() {
                naked_asm!(
                    stubs!(@push $($error)?),
                    "push {vector}",
                    "jmp {common}",
                    vector = const $vector,
                    common = sym exception_common,
                );
            }
        )*
    };
    // Vectors without an error code push a zero in its place, so every frame looks alike.
    (@push error_code) => { "" };
    (@push) => { "push 0" };
}

stubs! {
    0 divide_error;
    6 invalid_opcode;
    8 double_fault error_code;
    12 stack_segment_fault error_code;
    13 general_protection_fault error_code;
    14 page_fault error_code;
}

/// The range `[start, end)` a page fault is expected in; empty unless a kernel set it.
static EXPECTED_FAULT_START: AtomicU64 = AtomicU64::new(0);
static EXPECTED_FAULT_END: AtomicU64 = AtomicU64::new(0);

/// From now on, a page fault at an address in `[start, end)` on a page that is not present
/// passes the kernel.
pub fn expect_page_fault(start: u64, end: u64) {
    EXPECTED_FAULT_START.store(start, Ordering::SeqCst);
    EXPECTED_FAULT_END.store(end, Ordering::SeqCst);
}

fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reads a register; these kernels run at CPL0.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

extern "C" fn exception_handler(frame: &ExceptionFrame) -> ! {
    let cr2 = read_cr2();
    let name = match frame.vector {
        0 => "divide error",
        6 => "invalid opcode",
        8 => "double fault",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        _ => "exception",
    };
    if frame.vector == 14 {
        let start = EXPECTED_FAULT_START.load(Ordering::SeqCst);
        let end = EXPECTED_FAULT_END.load(Ordering::SeqCst);
        if (start..end).contains(&cr2) {
            // Error code bit 0: the page was present (a protection fault, not a missing page).
            check!(
                frame.error_code & 1 == 0,
                "page fault at {cr2:#x}, in the expected range, but on a present page \
                 (error code {:#x})",
                frame.error_code
            );
            print_line(format_args!(
                "page fault at {cr2:#x} (rip {:#x}, error code {:#x}): expected",
                frame.rip, frame.error_code
            ));
            pass();
        }
    }
    fail(format_args!(
        "CPU exception {} ({name}), error code {:#x}, rip {:#x}, rsp {:#x}, cs {:#x}, \
         rflags {:#x}, cr2 {cr2:#x}",
        frame.vector, frame.error_code, frame.rip, frame.rsp, frame.cs, frame.rflags
    ))
}

struct Idt(UnsafeCell<InterruptDescriptorTable>);

// SAFETY: written once, by `install_idt`, before the CPU uses it; the kernels are
// single-threaded.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(InterruptDescriptorTable::new()));

/// Loads an IDT that turns the common CPU exceptions into a failure with a message (instead
/// of a triple fault), or into a pass for the page fault [`expect_page_fault`] names.
pub fn install_idt() {
    let address = |stub: extern "C" fn()| VirtAddr::new(stub as usize as u64);
    // SAFETY: called once, before the IDT is loaded, by a single-threaded kernel.
    let idt = unsafe { &mut *IDT.0.get() };
    // SAFETY (each set_handler_addr): every stub is a valid exception entry for its vector: it
    // builds a uniform frame and never returns.
    unsafe {
        idt.divide_error.set_handler_addr(address(divide_error));
        idt.invalid_opcode.set_handler_addr(address(invalid_opcode));
        idt.double_fault.set_handler_addr(address(double_fault));
        idt.stack_segment_fault
            .set_handler_addr(address(stack_segment_fault));
        idt.general_protection_fault
            .set_handler_addr(address(general_protection_fault));
        idt.page_fault.set_handler_addr(address(page_fault));
    }
    // SAFETY: the IDT is a static: it outlives its use.
    unsafe { (*IDT.0.get()).load_unsafe() };
}

// ---------------------------------------------------------------------------------------------
// The physical-memory map (`mappings.physical_memory`).

/// The physical-memory map the kernel asked for (fails the kernel if it is missing).
pub fn physical_memory_map(boot_info: &bootloader_api::BootInfo) -> PhysMap {
    let Some(&offset) = boot_info.physical_memory_offset.as_ref() else {
        fail(format_args!("physical_memory_offset is None"))
    };
    print_line(format_args!("physical_memory_offset {offset:#x}"));
    PhysMap { offset }
}

/// A 2 MiB page.
pub const MIB_2: u64 = 2 << 20;
/// 4 GiB, the least the physical-memory map covers.
pub const GIB_4: u64 = 4 << 30;

/// Checks the physical-memory map as the protocol describes it and returns it: the offset is
/// given and 2 MiB-aligned; through it the kernel file starts with the ELF magic and the last
/// word of RAM can be read; and every 2 MiB of `[0, max(end of the highest region, 4 GiB))`
/// is mapped by a present, writable, no-execute 2 MiB page at the right frame (checked in the
/// page tables, without touching the addresses where nothing is behind the map).
pub fn check_physical_memory_map(boot_info: &bootloader_api::BootInfo) -> PhysMap {
    let map = physical_memory_map(boot_info);
    let offset = map.offset;
    check!(
        offset.is_multiple_of(MIB_2),
        "physical_memory_offset {offset:#x} is not 2 MiB-aligned"
    );

    // SAFETY: the kernel file is in RAM, which the map covers.
    let magic = unsafe { map.bytes(boot_info.kernel_addr, 4) };
    check_eq!(magic, b"\x7fELF", "the bytes at offset + kernel_addr");

    let regions = &boot_info.memory_regions;
    let ram_end = regions
        .iter()
        .filter(|r| {
            matches!(
                r.kind,
                MemoryRegionKind::Usable | MemoryRegionKind::Bootloader
            )
        })
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    check!(ram_end >= 8, "no RAM in the memory map");
    // SAFETY: the end of a Usable or Bootloader region is RAM, which the map covers.
    let _ = unsafe { map.read_u64((ram_end - 8) & !7) };

    let highest = regions.iter().map(|r| r.end).max().unwrap_or(0);
    let end = highest.max(GIB_4).next_multiple_of(MIB_2);
    print_line(format_args!(
        "checking the page tables for 2 MiB pages over phys [0, {end:#x})"
    ));
    let mut phys = 0;
    while phys < end {
        let va = offset + phys;
        let walk = match map.walk(va) {
            Ok(walk) => walk,
            Err((level, entry)) => fail(format_args!(
                "phys {phys:#x} is not mapped at offset + phys = {va:#x}: the level-{level} \
                 entry is {entry:#x}"
            )),
        };
        check_eq!(
            walk.page_size,
            MIB_2,
            "the page mapping phys {phys:#x} at {va:#x} (the protocol maps physical memory \
             with 2 MiB pages)"
        );
        check_eq!(walk.phys, phys, "where {va:#x} leads");
        check!(
            walk.writable && walk.no_execute,
            "the 2 MiB page at {va:#x} is not writable and no-execute (leaf entry {:#x})",
            walk.leaf
        );
        phys += MIB_2;
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Interrupts, for kernels booted with an interrupt controller (`mote run --irqchip`). Entry
// points are naked functions written in assembly, which stable Rust allows (not
// `extern "x86-interrupt"`); each one ends in `iretq`.

/// Timer interrupts taken so far, counted by the entry points below.
pub static TICKS: AtomicU64 = AtomicU64::new(0);

/// The virtual address of the local APIC's EOI register, for [`lapic_timer_entry`].
pub static LAPIC_EOI: AtomicU64 = AtomicU64::new(0);

/// IRQ 0 through the 8259 pair: counts a tick, then tells the master 8259 the interrupt is
/// done (non-specific EOI).
#[unsafe(naked)]
pub extern "C" fn pic_timer_entry() {
    naked_asm!(
        "push rax",
        "lock inc qword ptr [rip + {ticks}]",
        "mov al, 0x20",
        "out 0x20, al",
        "pop rax",
        "iretq",
        ticks = sym TICKS,
    );
}

/// The local APIC timer: counts a tick, then writes the local APIC's EOI register (whose
/// address [`LAPIC_EOI`] holds).
#[unsafe(naked)]
pub extern "C" fn lapic_timer_entry() {
    naked_asm!(
        "push rax",
        "lock inc qword ptr [rip + {ticks}]",
        "mov rax, qword ptr [rip + {eoi}]",
        "mov dword ptr [rax], 0",
        "pop rax",
        "iretq",
        ticks = sym TICKS,
        eoi = sym LAPIC_EOI,
    );
}

/// A spurious interrupt (8259 IRQ 7 or 15, the local APIC's spurious vector): nothing to
/// acknowledge.
#[unsafe(naked)]
pub extern "C" fn spurious_entry() {
    naked_asm!("iretq");
}

/// Points IDT entry `vector` (32 or above: an interrupt, not an exception) at `entry`, an
/// interrupt gate. Call it after [`install_idt`], with interrupts off.
pub fn set_interrupt_handler(vector: u8, entry: extern "C" fn()) {
    check!(vector >= 32, "vector {vector} is a CPU exception's");
    // SAFETY: the kernels are single-threaded and interrupts are off: nothing reads the entry
    // while it changes.
    let idt = unsafe { &mut *IDT.0.get() };
    // SAFETY: `entry` is an interrupt entry point: it saves what it uses and ends in iretq.
    unsafe { idt[vector].set_handler_addr(VirtAddr::new(entry as usize as u64)) };
}

/// Halts with interrupts on (`sti; hlt`: the interrupt shadow of `sti` lets no interrupt in
/// between) until [`TICKS`] reaches `count`; returns with interrupts off.
pub fn wait_for_ticks(count: u64) {
    loop {
        x86_64::instructions::interrupts::disable();
        if TICKS.load(Ordering::SeqCst) >= count {
            return;
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// The 8259 pair's ports.
const PIC_MASTER: u16 = 0x20;
const PIC_SLAVE: u16 = 0xA0;

/// Sets up the 8259 pair as PC kernels do: IRQs 0-7 at vectors `base`..`base + 8`, 8-15 at
/// `base + 8`.., the slave on the master's line 2; then masks every line but those `unmasked`
/// names (bit n: IRQ n).
pub fn init_pic(base: u8, unmasked: u16) {
    let write = |port: u16, value: u8| {
        // SAFETY: the 8259 ports; the kernels run single-threaded with interrupts off.
        unsafe { Port::<u8>::new(port).write(value) };
    };
    write(PIC_MASTER, 0x11); // ICW1: initialise, ICW4 follows
    write(PIC_SLAVE, 0x11);
    write(PIC_MASTER + 1, base); // ICW2: vector base
    write(PIC_SLAVE + 1, base + 8);
    write(PIC_MASTER + 1, 0x04); // ICW3: the slave is on line 2
    write(PIC_SLAVE + 1, 0x02); // ... and it is slave 2
    write(PIC_MASTER + 1, 0x01); // ICW4: 8086 mode
    write(PIC_SLAVE + 1, 0x01);
    mask_pic(!unmasked);
}

/// Masks the 8259 lines `masked` names (bit n: IRQ n), unmasks the rest.
pub fn mask_pic(masked: u16) {
    // SAFETY: the 8259s' data ports (OCW1, the mask).
    unsafe {
        Port::<u8>::new(PIC_MASTER + 1).write(masked as u8);
        Port::<u8>::new(PIC_SLAVE + 1).write((masked >> 8) as u8);
    }
}

/// The 8254 PIT's input clock, in Hz.
pub const PIT_HZ: u32 = 1_193_182;

/// Programs PIT channel 0 as a rate generator (mode 2) at about `hz` interrupts a second.
pub fn start_pit(hz: u32) {
    let divisor = (PIT_HZ / hz).clamp(1, 0xFFFF) as u16;
    // SAFETY: the PIT's command and channel 0 ports.
    unsafe {
        Port::<u8>::new(0x43).write(0x34); // channel 0, low then high byte, mode 2, binary
        Port::<u8>::new(0x40).write(divisor as u8);
        Port::<u8>::new(0x40).write((divisor >> 8) as u8);
    }
}
