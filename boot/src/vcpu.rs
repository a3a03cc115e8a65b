//! The first vCPU state as plain data, and the descriptor tables it points at.
//!
//! Two entry modes: a plain `bootloader_api` kernel starts at CPL0 exactly as the real
//! bootloader leaves it; a guest carrying mote's runtime note starts at CPL3, with mote's GDT,
//! TSS and IDT already in place (see `mote_abi::note`).

use mote_abi::note::{DOUBLE_FAULT_IST, EXCEPTION_VECTORS, selectors};

/// A segment register as KVM's `kvm_segment` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit, in bytes.
    pub limit: u32,
    /// Descriptor type (the 4-bit type field).
    pub type_: u8,
    /// Present.
    pub present: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (D/B).
    pub db: bool,
    /// Code or data segment (S); false for system segments such as the TSS.
    pub s: bool,
    /// 64-bit code segment (L).
    pub l: bool,
    /// Granularity: the limit counts 4 KiB units.
    pub g: bool,
}

/// A descriptor-table register (GDTR or IDTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit: size in bytes minus one.
    pub limit: u16,
}

/// The model-specific registers `syscall` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallMsrs {
    /// `IA32_STAR`: the kernel and user selectors.
    pub star: u64,
    /// `IA32_LSTAR`: the syscall entry point.
    pub lstar: u64,
    /// `IA32_FMASK`: RFLAGS bits cleared on entry.
    pub fmask: u64,
}

/// MSR numbers of [`SyscallMsrs`].
pub mod msr {
    /// `IA32_STAR`.
    pub const STAR: u32 = 0xC000_0081;
    /// `IA32_LSTAR`.
    pub const LSTAR: u32 = 0xC000_0082;
    /// `IA32_FMASK`.
    pub const FMASK: u32 = 0xC000_0084;
}

/// Everything the host sets on the first vCPU before its first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    /// Instruction pointer: the kernel's entry.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// First argument: the `BootInfo` address.
    pub rdi: u64,
    /// Flags (bit 1 is always set; interrupts off; IOPL 3 in user mode).
    pub rflags: u64,
    /// CR0: protected mode, paging, write-protect.
    pub cr0: u64,
    /// CR3: the PML4.
    pub cr3: u64,
    /// CR4: PAE, OSFXSR and OSXMMEXCPT (SSE enabled).
    pub cr4: u64,
    /// EFER: long mode, no-execute (and syscall in user mode).
    pub efer: u64,
    /// CS.
    pub code: Segment,
    /// DS, ES, FS, GS and SS.
    pub data: Segment,
    /// TR: KVM needs a valid busy 64-bit TSS even if the kernel never uses it.
    pub task: Segment,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR: empty for a plain kernel, mote's IDT for a user-mode guest.
    pub idt: DescriptorTable,
    /// The `syscall` MSRs, for a user-mode guest whose note names a syscall entry.
    pub syscall: Option<SyscallMsrs>,
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
/// FXSAVE/FXRSTOR and SSE instructions are allowed.
const CR4_OSFXSR: u64 = 1 << 9;
/// Unmasked SSE floating-point exceptions raise #XM.
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_FIXED: u64 = 1 << 1;
const RFLAGS_IOPL3: u64 = 3 << 12;
/// RFLAGS bits `syscall` clears: TF, IF, DF, AC.
const SYSCALL_FMASK: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 18);

/// Where the TSS sits in the GDT page.
const TSS_OFFSET: u64 = 0x100;
/// Size of the TSS proper; a user-mode guest's I/O permission bitmap follows it.
const TSS_SIZE: u32 = 0x68;
/// The I/O permission bitmap: one bit per port, all clear (allowed), then the 0xFF byte the
/// architecture requires after it.
const IO_BITMAP_SIZE: u32 = 0x2000 + 1;

/// Bytes the GDT, the TSS and (in user mode) the I/O bitmap take from the start of the GDT
/// frames.
pub(crate) fn system_tables_size(user_mode: bool) -> u64 {
    TSS_OFFSET + u64::from(tss_limit(user_mode)) + 1
}

fn tss_limit(user_mode: bool) -> u32 {
    if user_mode {
        TSS_SIZE + IO_BITMAP_SIZE - 1
    } else {
        TSS_SIZE - 1
    }
}

/// Kernel stacks of a user-mode guest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelStacks {
    /// Top of the stack exceptions from CPL3 switch to (TSS.RSP0).
    pub rsp0: u64,
    /// Top of the double-fault stack (TSS.IST1).
    pub ist1: u64,
}

/// mote's GDT page: the GDT, then the TSS. Identity-mapped, read-only, supervisor-only.
pub(crate) struct Gdt {
    base: u64,
    stacks: Option<KernelStacks>,
}

fn descriptor_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

impl Gdt {
    /// A GDT at `base`; with kernel stacks, the user-mode layout of `mote_abi::note::selectors`.
    pub(crate) fn at(base: u64, stacks: Option<KernelStacks>) -> Self {
        Self { base, stacks }
    }

    fn tss_base(&self) -> u64 {
        self.base + TSS_OFFSET
    }

    fn tss_selector(&self) -> u16 {
        if self.stacks.is_some() {
            selectors::TSS
        } else {
            0x18
        }
    }

    fn tss_limit(&self) -> u32 {
        tss_limit(self.stacks.is_some())
    }

    fn entries(&self) -> Vec<u64> {
        let tss = self.tss_base();
        let limit = u64::from(self.tss_limit());
        // A busy 64-bit TSS descriptor (type 0xB, present) spans two entries.
        let tss_low = (limit & 0xFFFF)
            | ((tss & 0xFF_FFFF) << 16)
            | (0x8B << 40)
            | ((limit >> 16) << 48)
            | (((tss >> 24) & 0xFF) << 56);
        let tss_high = tss >> 32;
        let kernel_code = 0x00AF_9B00_0000_FFFF; // 64-bit code, DPL0, accessed
        let kernel_data = 0x00CF_9300_0000_FFFF; // data, DPL0, accessed
        match self.stacks {
            None => vec![0, kernel_code, kernel_data, tss_low, tss_high],
            Some(_) => vec![
                0,
                kernel_code,
                kernel_data,
                0x00CF_F300_0000_FFFF, // user data, DPL3, accessed
                0x00AF_FB00_0000_FFFF, // user 64-bit code, DPL3, accessed
                tss_low,
                tss_high,
            ],
        }
    }

    /// The bytes of the GDT frames up to the end of the TSS (and its I/O bitmap).
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut bytes = descriptor_bytes(&self.entries());
        let user_mode = self.stacks.is_some();
        bytes.resize(system_tables_size(user_mode) as usize, 0);
        let tss = TSS_OFFSET as usize;
        if let Some(stacks) = self.stacks {
            bytes[tss + 4..tss + 12].copy_from_slice(&stacks.rsp0.to_le_bytes());
            let ist = tss + 0x24 + 8 * (usize::from(DOUBLE_FAULT_IST) - 1);
            bytes[ist..ist + 8].copy_from_slice(&stacks.ist1.to_le_bytes());
            // User mode may use every port: IOPL 3 says so, and so does the bitmap, for
            // hypervisors that keep IOPL from the guest (kvm_pvm does).
            if let Some(last) = bytes.last_mut() {
                *last = 0xFF;
            }
        }
        // The I/O map base: right after the TSS. Without a bitmap it points at the limit, so
        // only IOPL decides.
        bytes[tss + 0x66..tss + 0x68].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
        bytes
    }

    fn register(&self) -> DescriptorTable {
        DescriptorTable {
            base: self.base,
            limit: (self.entries().len() * 8 - 1) as u16,
        }
    }

    fn task_segment(&self) -> Segment {
        Segment {
            selector: self.tss_selector(),
            base: self.tss_base(),
            limit: self.tss_limit(),
            type_: 0xB,
            present: true,
            ..Segment::default()
        }
    }
}

/// The bytes of an IDT whose exception vectors enter `handlers` at CPL0 (interrupt gates, so
/// interrupts stay off); the double fault runs on IST1.
pub(crate) fn idt_bytes(handlers: &[Option<u64>; EXCEPTION_VECTORS]) -> Vec<u8> {
    let mut bytes = vec![0u8; EXCEPTION_VECTORS * 16];
    for (vector, handler) in handlers.iter().enumerate() {
        let Some(address) = *handler else { continue };
        let ist = if vector == 8 { DOUBLE_FAULT_IST } else { 0 };
        let low = (address & 0xFFFF)
            | (u64::from(selectors::KERNEL_CODE) << 16)
            | (u64::from(ist) << 32)
            | (0x8E << 40) // present, DPL0, 64-bit interrupt gate
            | (((address >> 16) & 0xFFFF) << 48);
        let high = address >> 32;
        bytes[vector * 16..vector * 16 + 8].copy_from_slice(&low.to_le_bytes());
        bytes[vector * 16 + 8..vector * 16 + 16].copy_from_slice(&high.to_le_bytes());
    }
    bytes
}

fn flat_segment(selector: u16, dpl: u8, code: bool) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        type_: if code { 0xB } else { 0x3 },
        present: true,
        dpl,
        db: !code,
        s: true,
        l: code,
        g: true,
    }
}

impl VcpuState {
    /// The state the real `bootloader` leaves a kernel in (docs/boot-protocol.md): CPL0, long
    /// mode, interrupts off, RDI pointing at `BootInfo`.
    pub(crate) fn kernel_entry(cr3: u64, rip: u64, rsp: u64, boot_info: u64, gdt: &Gdt) -> Self {
        Self {
            rip,
            rsp,
            rdi: boot_info,
            rflags: RFLAGS_FIXED,
            cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            cr3,
            // SSE on, as UEFI firmware leaves it: kernels built soft-float never notice, and
            // guests that use SSE (in assembly, or built with it) can.
            cr4: CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
            efer: EFER_LME | EFER_LMA | EFER_NXE,
            code: flat_segment(0x08, 0, true),
            data: flat_segment(0x10, 0, false),
            task: gdt.task_segment(),
            gdt: gdt.register(),
            idt: DescriptorTable { base: 0, limit: 0 },
            syscall: None,
        }
    }

    /// A user-mode guest's state: CPL3 with IOPL 3 (so hypercall `out`s work), interrupts off,
    /// mote's IDT loaded, and `syscall` set up if the guest has a syscall entry.
    pub(crate) fn user_entry(
        kernel: Self,
        idt: DescriptorTable,
        syscall_entry: Option<u64>,
    ) -> Self {
        Self {
            rflags: RFLAGS_FIXED | RFLAGS_IOPL3,
            code: flat_segment(selectors::USER_CODE, 3, true),
            data: flat_segment(selectors::USER_DATA, 3, false),
            idt,
            efer: kernel.efer | syscall_entry.map_or(0, |_| EFER_SCE),
            syscall: syscall_entry.map(|lstar| SyscallMsrs {
                // sysret loads CS = STAR[63:48] + 16 and SS = STAR[63:48] + 8, both with RPL 3;
                // syscall loads CS = STAR[47:32] and SS = STAR[47:32] + 8.
                star: (u64::from(selectors::KERNEL_DATA) << 48)
                    | (u64::from(selectors::KERNEL_CODE) << 32),
                lstar,
                fmask: SYSCALL_FMASK,
            }),
            ..kernel
        }
    }
}
