//! Isolation between runs restored from one snapshot, in kernel mode (CPL0): a plain
//! `bootloader_api` kernel (no mote runtime) that checks what only kernel code can change: its
//! page tables (a page table entry pointing somewhere else), MSRs, debug registers, CR4, and its
//! general registers and flags. A polluting run writes a secret into all of them. See
//! `../isolation.rs` for the input; `triple-fault` ends the run in a triple fault instead, and
//! `pv-msr` writes one of KVM's paravirtual MSRs, `cpuid` reports what CPUID says, `mmio` reads
//! where nothing is, `pte` points a page table entry past the end of memory and reads there. Kernel-mode code is emulated on some hosts, so the work per run is kept
//! small (and no SSE: some hosts cannot emulate it).
#![no_std]
#![no_main]

#[path = "../isolation.rs"]
mod isolation;

use core::arch::{asm, naked_asm};
use core::ptr::addr_of_mut;

use bootloader_api::BootloaderConfig;
use bootloader_api::config::Mapping;
use isolation::{PATTERN, Registers, Report, fill, holds, parse};
use mote_abi::{HYPERCALL_PORT, Hypercall};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.kernel_stack_size = 64 * 1024;
    config
};
bootloader_api::entry_point!(main, config = &CONFIG);

const PAGE: usize = 4096;
/// What the page a polluting run maps in place of `DATA` holds at the snapshot point.
const OTHER_PATTERN: u8 = 0x5A;
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// A physical address far past any guest's memory, under every CPU's physical address width.
const PAST_MEMORY: u64 = 0x10_0000_0000;

#[repr(C, align(4096))]
struct Page([u8; PAGE]);

/// Checked through its virtual address: a polluting run points its page table entry at `OTHER`.
static mut DATA: Page = Page([0; PAGE]);
static mut OTHER: Page = Page([0; PAGE]);
static mut REGISTERS: Registers = Registers::ZERO;
static mut PHYSICAL_OFFSET: u64 = 0;
static mut DATA_ENTRY: u64 = 0;
static mut CR4: u64 = 0;

/// MSRs a kernel may write, with their values at the snapshot point.
const MSRS: [(u32, u64); 7] = [
    (0x175, 0x0000_7000_0000_1000),       // IA32_SYSENTER_ESP
    (0xC000_0081, 0x0023_0010_0000_0000), // STAR
    (0xC000_0082, 0xFFFF_8000_1234_5000), // LSTAR
    (0xC000_0084, 0x0000_0000_0004_7700), // FMASK
    (0xC000_0100, 0x0000_6000_0000_0000), // FS base
    (0xC000_0101, 0x0000_6100_0000_0000), // GS base
    (0xC000_0102, 0x0000_6200_0000_0000), // KERNEL_GS_BASE
];

/// Debug address registers DR0-DR3 at the snapshot point (DR7 stays 0x400: none enabled).
const DEBUG_ADDRESSES: [u64; 4] = [0x1000, 0x2000, 0x3000, 0x4000];

fn main(boot_info: &'static mut bootloader_api::BootInfo) -> ! {
    // SAFETY: kernel-mode set-up of this kernel's own state: its statics, its IDT, MSRs and
    // debug registers that nothing else uses, and its page tables through the physical-memory
    // map the loader made.
    unsafe {
        PHYSICAL_OFFSET = boot_info.physical_memory_offset.into_option().unwrap_or(0);
        install_idt();
        fill(addr_of_mut!(DATA).cast(), PAGE, PATTERN);
        fill(addr_of_mut!(OTHER).cast(), PAGE, OTHER_PATTERN);
        DATA_ENTRY = *leaf_entry(addr_of_mut!(DATA) as u64);
        for (msr, value) in MSRS {
            write_msr(msr, value);
        }
        write_debug_registers(DEBUG_ADDRESSES, 0x400);
        asm!("mov {}, cr4", out(reg) CR4, options(nomem, nostack));
        isolation::ready_with_known_registers(addr_of_mut!(REGISTERS));
    }
    // SAFETY: as above; the ramdisk holds `input_len` (r10 after ready_for_input) bytes.
    let input = unsafe {
        let len = addr_of_mut!(REGISTERS).read().r10 as usize;
        match boot_info.ramdisk_addr.into_option() {
            Some(address) if len > 0 => core::slice::from_raw_parts(address as *const u8, len),
            _ => &[],
        }
    };
    let mut report = Report::new();
    // SAFETY: reads of this kernel's own state.
    unsafe {
        let registers = addr_of_mut!(REGISTERS).read();
        report.expect(registers.hold_the_snapshot(false), "registers");
        report.expect(
            holds(addr_of_mut!(DATA).cast(), PAGE, PATTERN),
            "page table entry",
        );
        report.expect(
            *leaf_entry(addr_of_mut!(DATA) as u64) == DATA_ENTRY,
            "page tables",
        );
        report.expect(
            holds(addr_of_mut!(OTHER).cast(), PAGE, OTHER_PATTERN),
            "memory",
        );
        report.expect(
            MSRS.iter().all(|&(msr, value)| read_msr(msr) == value),
            "MSRs",
        );
        report.expect(
            debug_registers() == (DEBUG_ADDRESSES, 0x400),
            "debug registers",
        );
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        report.expect(cr4 == CR4, "CR4");
    }
    output(report.text());
    if input == b"triple-fault" {
        triple_fault();
    }
    if input == b"cpuid" {
        // What mote's CPUID table says to kernel mode: its signature, no VMX, no PMU.
        let signature = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_SIGNATURE);
        let vmx = core::arch::x86_64::__cpuid(1).ecx & (1 << 5) != 0;
        let pmu = core::arch::x86_64::__cpuid(0xA).eax != 0;
        let mote = [signature.ebx, signature.ecx, signature.edx] == mote_abi::signature_registers();
        output(if mote && !vmx && !pmu {
            b"mote, no vmx, no pmu\n"
        } else {
            b"another table\n"
        });
        exit(0)
    }
    if input == b"mmio" {
        // The local APIC's version register, through the physical-memory map: no memory and
        // no device is there under mote.
        // SAFETY: a read of a physical address the map covers; mote ends the run at it.
        let value = unsafe { ((PHYSICAL_OFFSET + 0xFEE0_0030) as *const u32).read_volatile() };
        output(&value.to_le_bytes());
        exit(0)
    }
    if input == b"pte" {
        // SAFETY: kernel mode, this kernel's own page tables; mote ends the run at the read.
        let value = unsafe {
            let entry = leaf_entry(addr_of_mut!(DATA) as u64);
            *entry = (*entry & !ADDRESS_MASK) | PAST_MEMORY;
            let data = addr_of_mut!(DATA) as u64;
            asm!("invlpg [{}]", in(reg) data, options(nostack));
            (data as *const u32).read_volatile()
        };
        output(&value.to_le_bytes());
        exit(0)
    }
    if input == b"pv-msr" {
        // KVM's kvmclock MSR: mote's CPUID table offers no KVM feature, so this should fault.
        // SAFETY: kernel mode; writing 0 turns kvmclock off, which this kernel never used.
        unsafe { write_msr(0x4B56_4D01, 0) };
        output(b"wrote KVM's MSR\n");
        exit(0)
    }
    let Some((secret, end)) = parse(input) else {
        exit(0)
    };
    let secret_word = u64::from_ne_bytes([secret; 8]);
    // SAFETY: as in `main`'s set-up; the entry written points at a page of this kernel's.
    unsafe {
        fill(addr_of_mut!(OTHER).cast(), PAGE, secret);
        let other_frame = *leaf_entry(addr_of_mut!(OTHER) as u64) & ADDRESS_MASK;
        let entry = leaf_entry(addr_of_mut!(DATA) as u64);
        *entry = (*entry & !ADDRESS_MASK) | other_frame;
        let data = addr_of_mut!(DATA) as u64;
        asm!("invlpg [{}]", in(reg) data, options(nostack));
        if !holds(addr_of_mut!(DATA).cast(), PAGE, secret) {
            output(b"the page table entry did not take\n");
        }
        for (msr, _) in MSRS {
            write_msr(msr, secret_word & 0x0000_7FFF_FFFF_F000);
        }
        write_debug_registers([secret_word & 0x0000_7FFF_FFFF_FFF0; 4], 0x401);
        asm!("mov rax, cr4", "or rax, 4", "mov cr4, rax", out("rax") _, options(nomem, nostack));
        isolation::end_with_secret_registers(end as u64, secret_word)
    }
}

/// The leaf page table entry of `virt` (this kernel is mapped in 4 KiB pages).
///
/// # Safety
/// `virt` must be mapped, and the physical-memory map in place.
unsafe fn leaf_entry(virt: u64) -> *mut u64 {
    let cr3: u64;
    // SAFETY: reads CR3.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let mut table = cr3 & ADDRESS_MASK;
    let mut level = 4;
    loop {
        let index = (virt >> (12 + 9 * (level - 1))) & 0x1FF;
        // SAFETY: `table` is a page table frame, seen through the physical-memory map.
        let entry = unsafe { (PHYSICAL_OFFSET + table + index * 8) as *mut u64 };
        if level == 1 {
            return entry;
        }
        // SAFETY: as above.
        table = unsafe { *entry } & ADDRESS_MASK;
        level -= 1;
    }
}

unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller writes an MSR this kernel owns.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack));
    }
}

unsafe fn read_msr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller reads an MSR that exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack));
    }
    u64::from(high) << 32 | u64::from(low)
}

unsafe fn write_debug_registers(addresses: [u64; 4], dr7: u64) {
    // SAFETY: kernel mode; breakpoints at these addresses are never reached.
    unsafe {
        asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}", "mov dr7, {}",
            in(reg) addresses[0], in(reg) addresses[1], in(reg) addresses[2],
            in(reg) addresses[3], in(reg) dr7, options(nomem, nostack));
    }
}

unsafe fn debug_registers() -> ([u64; 4], u64) {
    let (a, b, c, d, dr7): (u64, u64, u64, u64, u64);
    // SAFETY: kernel mode reads the debug registers.
    unsafe {
        asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3", "mov {}, dr7",
            out(reg) a, out(reg) b, out(reg) c, out(reg) d, out(reg) dr7,
            options(nomem, nostack));
    }
    ([a, b, c, d], dr7)
}

fn hypercall(call: Hypercall, a0: u64, a1: u64) {
    // SAFETY: an `out` to mote's port; the host writes rax only.
    unsafe {
        asm!("out dx, eax", in("dx") HYPERCALL_PORT, inlateout("eax") call as u32 => _,
            in("rdi") a0, in("rsi") a1, options(nostack));
    }
}

fn output(bytes: &[u8]) {
    hypercall(
        Hypercall::OutputWrite,
        bytes.as_ptr() as u64,
        bytes.len() as u64,
    );
}

fn exit(code: u32) -> ! {
    hypercall(Hypercall::Exit, u64::from(code), 0);
    loop {
        core::hint::spin_loop();
    }
}

/// An IDT whose #UD, #DF, #GP and #PF gates report through the `exception` call, so that a
/// fault ends the run as an exception (not a triple fault).
#[repr(C, align(16))]
struct Idt([u64; 2 * 15]);

static mut IDT: Idt = Idt([0; 2 * 15]);

macro_rules! handler {
    ($name:ident, $vector:literal, $push_error:literal) => {
        #[unsafe(naked)]
        unsafe extern "C" fn $name() {
            naked_asm!($push_error, "push {vector}", "jmp {common}",
                vector = const $vector, common = sym report_exception);
        }
    };
}
handler!(invalid_opcode, 6, "push 0");
handler!(double_fault, 8, "");
handler!(general_protection, 13, "");
handler!(page_fault, 14, "");

#[unsafe(naked)]
unsafe extern "C" fn report_exception() {
    naked_asm!(
        "mov rdi, [rsp]",
        "mov rsi, [rsp + 8]",
        "mov r8, [rsp + 16]",
        "mov r9, cr2",
        "mov eax, {call}",
        "mov edx, {port}",
        "out dx, eax",
        "2: jmp 2b",
        call = const Hypercall::Exception as u32,
        port = const HYPERCALL_PORT,
    );
}

/// Faults with no IDT to take it: the CPU shuts down.
fn triple_fault() -> ! {
    let empty = [0u8; 10];
    // SAFETY: deliberately fatal: an empty IDT, then an invalid opcode.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn, nostack)) }
}

unsafe fn install_idt() {
    let cs: u16;
    // SAFETY: reads CS.
    unsafe { asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack)) };
    let gate = |handler: unsafe extern "C" fn()| {
        let address = handler as usize as u64;
        let low = (address & 0xFFFF)
            | u64::from(cs) << 16
            | 0x8E00_u64 << 32
            | ((address >> 16) & 0xFFFF) << 48;
        [low, address >> 32]
    };
    for (vector, handler) in [
        (6, invalid_opcode as unsafe extern "C" fn()),
        (8, double_fault),
        (13, general_protection),
        (14, page_fault),
    ] {
        let [low, high] = gate(handler);
        // SAFETY: the IDT is this kernel's, set up before anything can fault.
        unsafe {
            (*addr_of_mut!(IDT)).0[vector * 2] = low;
            (*addr_of_mut!(IDT)).0[vector * 2 + 1] = high;
        }
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: addr_of_mut!(IDT) as u64,
    };
    // SAFETY: the IDT is a static with valid gates (or empty ones).
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    exit(101)
}
