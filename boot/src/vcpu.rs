//! The first vCPU state, as plain data: long mode, paging on, segments loaded.

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

/// Everything the host sets on the first vCPU before its first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    /// Instruction pointer: the kernel's entry.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// First argument: the `BootInfo` address.
    pub rdi: u64,
    /// Flags (bit 1 is always set; interrupts off).
    pub rflags: u64,
    /// CR0: protected mode, paging, write-protect.
    pub cr0: u64,
    /// CR3: the PML4.
    pub cr3: u64,
    /// CR4: PAE.
    pub cr4: u64,
    /// EFER: long mode, no-execute.
    pub efer: u64,
    /// CS.
    pub code: Segment,
    /// DS, ES, FS, GS and SS.
    pub data: Segment,
    /// TR: KVM needs a valid busy 64-bit TSS even if the kernel never uses it.
    pub task: Segment,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR: empty; the kernel installs its own.
    pub idt: DescriptorTable,
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// GDT selectors, as the real loader uses them.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;
/// Where the TSS sits in the GDT page.
const TSS_OFFSET: u64 = 0x100;
const TSS_LIMIT: u32 = 0x67;

/// mote's GDT page: null, 64-bit code, data, then a 16-byte TSS descriptor; the TSS follows.
pub(crate) struct Gdt {
    base: u64,
}

impl Gdt {
    /// A GDT placed (and identity-mapped) at `base`.
    pub(crate) fn at(base: u64) -> Self {
        Self { base }
    }

    fn tss_base(&self) -> u64 {
        self.base + TSS_OFFSET
    }

    /// The bytes of the GDT page up to the end of the TSS.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let tss = self.tss_base();
        // A busy 64-bit TSS descriptor (type 0xB, present).
        let tss_low = u64::from(TSS_LIMIT)
            | ((tss & 0xFF_FFFF) << 16)
            | (0x8B << 40)
            | (((tss >> 24) & 0xFF) << 56);
        let tss_high = tss >> 32;
        let entries: [u64; 5] = [
            0,
            0x00AF_9B00_0000_FFFF, // 64-bit code, DPL0, accessed
            0x00CF_9300_0000_FFFF, // data, DPL0, accessed
            tss_low,
            tss_high,
        ];
        let mut bytes = vec![0u8; (TSS_OFFSET + u64::from(TSS_LIMIT) + 1) as usize];
        for (i, entry) in entries.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&entry.to_le_bytes());
        }
        // The TSS's I/O map base points past its end: no I/O permission bitmap.
        let iomap = TSS_OFFSET as usize + 0x66;
        bytes[iomap..iomap + 2].copy_from_slice(&(TSS_LIMIT as u16 + 1).to_le_bytes());
        bytes
    }
}

impl VcpuState {
    /// The state the real `bootloader` leaves a kernel in (BOOT-PROTOCOL.md §3): CPL0, long
    /// mode, interrupts off, RDI pointing at `BootInfo`.
    pub(crate) fn kernel_entry(cr3: u64, rip: u64, rsp: u64, boot_info: u64, gdt: &Gdt) -> Self {
        let code = Segment {
            selector: CODE_SELECTOR,
            base: 0,
            limit: 0xFFFF_FFFF,
            type_: 0xB,
            present: true,
            dpl: 0,
            db: false,
            s: true,
            l: true,
            g: true,
        };
        let data = Segment {
            selector: DATA_SELECTOR,
            type_: 0x3,
            db: true,
            l: false,
            ..code
        };
        let task = Segment {
            selector: TSS_SELECTOR,
            base: gdt.tss_base(),
            limit: TSS_LIMIT,
            type_: 0xB,
            present: true,
            dpl: 0,
            db: false,
            s: false,
            l: false,
            g: false,
        };
        Self {
            rip,
            rsp,
            rdi: boot_info,
            rflags: 0x2,
            cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA | EFER_NXE,
            code,
            data,
            task,
            gdt: DescriptorTable {
                base: gdt.base,
                limit: 5 * 8 - 1,
            },
            idt: DescriptorTable { base: 0, limit: 0 },
        }
    }
}
