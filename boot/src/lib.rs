//! mote-boot: from a `bootloader_api` kernel ELF to guest memory contents and the first vCPU
//! state.
//!
//! mote is the bootloader of its guests. This crate does the bootloader's work, purely: it parses
//! and relocates a kernel once ([`PreparedImage::new`]), then lays it into any
//! [`vm_memory::GuestMemoryBackend`] as many times as asked ([`PreparedImage::load`]), each time
//! returning the register state to start the vCPU with ([`VcpuState`]). It knows nothing of KVM.
//!
//! `docs/boot-protocol.md` describes what a kernel finds when it starts.
#![warn(missing_docs)]

mod acpi;
mod boot_info;
pub mod config;
mod elf;
mod memory_map;
pub mod paging;
mod vcpu;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use boot_info::{MemoryRegion, RegionKind};
pub use config::{ApiVersion, BootConfig, Mapping};
pub use vcpu::{DescriptorTable, Segment, SyscallMsrs, VcpuState, msr};

use boot_info::{BOOT_INFO_SIZE, BootInfoFields, MEMORY_REGION_SIZE};
use elf::{ElfKernel, checked_page_ceil, page_ceil, page_floor};
use mote_abi::note;
use paging::{FrameAllocator, PAGE_SIZE, PageTableBuilder, flags};

/// Physical memory below this is left Usable; mote's own frames start here.
pub const LOADER_FRAMES_START: u64 = 0x10_0000;

/// The smallest guest memory mote accepts.
pub const MIN_MEMORY: u64 = 2 * 1024 * 1024;

/// What can go wrong turning an ELF file into a bootable guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The file does not start with the ELF magic.
    #[error("not an ELF file (no \\x7fELF magic at its start)")]
    NotElf,
    /// The ELF is for another machine.
    #[error("ELF file for machine {0}, not x86_64 (62)")]
    WrongMachine(u16),
    /// The ELF is malformed or uses something mote does not load.
    #[error("invalid kernel ELF: {0}")]
    BadElf(String),
    /// No `.bootloader-config` section.
    #[error(
        "no .bootloader-config section: the kernel was not built with \
         bootloader_api::entry_point! (or its section headers were stripped)"
    )]
    NoConfigSection,
    /// The `.bootloader-config` section is malformed.
    #[error("invalid .bootloader-config section: {0}")]
    BadConfig(String),
    /// No 512 GiB slot of the address space is left for a dynamic mapping.
    #[error(
        "no free 512 GiB slot is left for {0}: the config's fixed addresses and dynamic range \
         take them all"
    )]
    NoFreeSlot(&'static str),
    /// An address in the config or the ELF cannot be used.
    #[error("unusable virtual address {0:#x} (not canonical, misaligned or out of range)")]
    BadAddress(u64),
    /// Two things would be mapped at one virtual address.
    #[error("two mappings collide at virtual address {0:#x}")]
    MappingConflict(u64),
    /// The guest memory is too small for the kernel and what mote adds.
    #[error(
        "guest memory too small: the boot layout needs at least {needed:#x} bytes; give the \
         guest more memory"
    )]
    OutOfMemory {
        /// Bytes of guest-physical memory the layout reached.
        needed: u64,
    },
}

/// The most memory regions mote writes: low Usable, the ACPI area, mote's frames, high Usable.
const MAX_REGIONS: u64 = 4;

/// `BootInfo` with the largest memory map mote writes.
const BOOT_INFO_MAX_SIZE: u64 = BOOT_INFO_SIZE + MAX_REGIONS * MEMORY_REGION_SIZE;

/// The physical-memory map covers at least this much, as the real loader's does: kernels reach
/// the local APIC and I/O APIC (just below 4 GiB) through it.
const PHYSICAL_MAP_MIN: u64 = 4 << 30;

/// A kernel parsed, checked and relocated once, ready to be loaded any number of times.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    file: Vec<u8>,
    config: BootConfig,
    kernel: ElfKernel,
    /// Where everything goes. A kernel that asks for ASLR gets a fresh plan at each load.
    plan: Plan,
}

/// Where one load puts everything, and the segments relocated for it.
#[derive(Clone, Debug)]
struct Plan {
    segments: Vec<PreparedSegment>,
    /// Virtual pages made read-only after relocation.
    relro_pages: Option<std::ops::Range<u64>>,
    entry: u64,
    kernel_offset: u64,
    tls_template: Option<(u64, u64, u64)>,
    /// Address of the stack's guard page; the stack starts one page above.
    stack_guard: u64,
    stack_pages: u64,
    ramdisk_address: u64,
    framebuffer_address: u64,
    physical_memory_offset: Option<u64>,
    recursive_index: Option<usize>,
    boot_info_address: u64,
    /// Present if the kernel carries mote's runtime note: it is then run in user mode.
    runtime: Option<Runtime>,
}

/// SplitMix64: a small, good-enough generator for ASLR, seeded by the host.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// What a runtime note asks for, relocated and checked.
#[derive(Clone, Debug)]
struct Runtime {
    kernel_stack_pages: u64,
    syscall_entry: Option<u64>,
    exception_handlers: [Option<u64>; note::EXCEPTION_VECTORS],
    /// Where mote's kernel stacks go: a slot of their own.
    system_address: u64,
    /// The note's relocated address, where mote writes what the guest should know of it.
    note_address: u64,
}

/// One loadable segment, relocated.
#[derive(Clone, Debug)]
struct PreparedSegment {
    /// First virtual page.
    page: u64,
    page_count: u64,
    /// Where in the first page the bytes start.
    offset_in_page: u64,
    /// The file bytes with relocations applied.
    bytes: Vec<u8>,
    /// Relocations that land past the file bytes: (offset from the segment start, value).
    zero_fill_relocations: Vec<(u64, u64)>,
    leaf_flags: u64,
}

/// What [`PreparedImage::load`] produced.
#[derive(Clone, Debug)]
pub struct LoadedGuest {
    /// The state to start the vCPU in.
    pub vcpu: VcpuState,
    /// The memory map handed to the kernel.
    pub regions: Vec<MemoryRegion>,
    /// Guest-virtual address of `BootInfo`.
    pub boot_info_address: u64,
    /// Whether the guest starts in user mode (it carries mote's runtime note).
    pub user_mode: bool,
    /// Unmapped guard pages below each stack: a fault there is a stack overflow.
    pub guard_pages: Vec<GuardPage>,
    /// The framebuffer, if the load made one.
    pub framebuffer: Option<Framebuffer>,
    /// Where the ramdisk's frames are, if the load mapped one.
    pub ramdisk: Option<RamdiskFrames>,
    /// The debug gate's page (identity-mapped, kernel-only), if the load made one
    /// ([`LoadOptions::debug_gate`]).
    pub debug_gate: Option<u64>,
    /// How far this load moved the kernel from its link-time addresses (a debugger adds it to
    /// the kernel's symbols). With ASLR it differs from [`PreparedImage::kernel_offset`].
    pub kernel_offset: u64,
}

/// The physical frames behind the ramdisk: contiguous, mapped in order at its virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamdiskFrames {
    /// Guest-physical address of its first byte.
    pub physical: u64,
    /// Bytes mapped (whole pages).
    pub len: u64,
}

/// An unmapped page below a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardPage {
    /// Its guest-virtual address.
    pub address: u64,
    /// Which stack it guards.
    pub stack: &'static str,
}

impl GuardPage {
    /// Whether `address` falls in this guard page.
    pub fn contains(&self, address: u64) -> bool {
        (self.address..self.address + PAGE_SIZE).contains(&address)
    }
}

/// What varies from one load of an image to the next.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Bytes to hand the kernel as its `bootloader_api` ramdisk (mote's input).
    pub ramdisk: Option<&'a [u8]>,
    /// Map a ramdisk of at least this many bytes, even with fewer (or no) bytes to put in it:
    /// the window a snapshot's guest finds each run's input in.
    pub ramdisk_capacity: u64,
    /// The guest's TSC frequency in kHz (0 if unknown), told to a user-mode guest through its
    /// runtime note.
    pub tsc_khz: u64,
    /// Boot as the real bootloader would: ignore the runtime note and start at CPL0.
    pub plain: bool,
    /// A linear framebuffer of this width and height in pixels (4 bytes each, BGR), for kernels
    /// that expect firmware to have set one up.
    pub framebuffer: Option<(u32, u32)>,
    /// ACPI tables (RSDP, XSDT, MADT, FADT) and a PC's memory map, for kernels that expect
    /// firmware's.
    pub acpi: bool,
    /// The VM has KVM's in-kernel interrupt controllers (local APIC, I/O APIC, 8259 pair):
    /// the MADT lists them. Without, it lists no I/O APIC and no 8259s.
    pub irqchip: bool,
    /// Written to `BootInfo._test_sentinel`, as the real bootloader copies it from its
    /// run-time `BootConfig`.
    pub test_sentinel: u64,
    /// Randomness for a kernel whose config asks for ASLR; without it (or without `aslr` in the
    /// config) addresses are the same at every load.
    pub aslr_seed: Option<u64>,
    /// The guest is booted to be snapshotted: a user-mode guest is told so in its runtime note
    /// ([`mote_abi::note::HOST_FLAG_SNAPSHOT`]).
    pub snapshot: bool,
    /// A debugger watches the run: a user-mode guest's #DB and #BP (vectors 1 and 3) enter a
    /// gate of the loader's instead of the guest's handlers. The gate reports to the host with
    /// an `out` to [`DEBUG_GATE_PORT`] and stops there ([`LoadedGuest::debug_gate`]).
    pub debug_gate: bool,
}

/// The port the debug gate reports on (`out imm8, al`: the gate changes no register).
pub const DEBUG_GATE_PORT: u8 = 0xDB;

/// The gate's code: `out DEBUG_GATE_PORT, al`, then `ud2` (the host moves the vCPU on before
/// it runs). Vector 1's gate is at the page's start, vector 3's [`DEBUG_GATE_BP`] bytes in.
const DEBUG_GATE_CODE: [u8; 4] = [0xE6, DEBUG_GATE_PORT, 0x0F, 0x0B];

/// Where vector 3's gate starts in the gate's page.
pub const DEBUG_GATE_BP: u64 = 0x10;

/// Where a load put the framebuffer, for reading it back (a screenshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Guest-physical address of the first pixel.
    pub physical: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels per row.
    pub stride: u32,
    /// Bytes per pixel (4: blue, green, red, unused).
    pub bytes_per_pixel: u32,
}

impl Framebuffer {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height) * u64::from(self.bytes_per_pixel)
    }

    /// Whether it has no pixels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The 512 GiB slots of the top-level page table, for placing dynamic mappings.
struct SlotAllocator {
    used: [bool; 512],
}

const SLOT_SIZE: u64 = 1 << 39;

fn slot_of(address: u64) -> usize {
    ((address >> 39) & 0x1FF) as usize
}

fn slot_address(slot: usize) -> u64 {
    let address = (slot as u64) << 39;
    if slot >= 256 {
        address | 0xFFFF_0000_0000_0000
    } else {
        address
    }
}

impl SlotAllocator {
    fn new(config: &BootConfig) -> Self {
        let mut used = [false; 512];
        // Slot 0 holds mote's identity-mapped GDT page.
        used[0] = true;
        for (slot, used) in used.iter_mut().enumerate() {
            let start = slot_address(slot);
            let last = start + (SLOT_SIZE - 1);
            if config.dynamic_range_start.is_some_and(|s| start < s)
                || config.dynamic_range_end.is_some_and(|e| last > e)
            {
                *used = true;
            }
        }
        Self { used }
    }

    /// Marks the slots that `start..end` touches as used.
    fn reserve(&mut self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        let (first, last) = (slot_of(start), slot_of(end - 1));
        for slot in first..=last.max(first) {
            self.used[slot] = true;
        }
    }

    /// The address of a free slot, now used: the lowest one, or a random one with ASLR.
    fn take(&mut self, what: &'static str, random: Option<&mut Random>) -> Result<u64, BootError> {
        let free: Vec<usize> = (0..512).filter(|&slot| !self.used[slot]).collect();
        if free.is_empty() {
            return Err(BootError::NoFreeSlot(what));
        }
        let slot = match random {
            Some(random) => free[random.below(free.len() as u64) as usize],
            None => free[0],
        };
        self.used[slot] = true;
        Ok(slot_address(slot))
    }
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl PreparedImage {
    /// Parses, checks and relocates a kernel ELF.
    pub fn new(file: Vec<u8>) -> Result<Self, BootError> {
        let kernel = ElfKernel::parse(&file)?;
        let config = BootConfig::parse(&kernel.config)?;
        let plan = Plan::new(&file, &kernel, &config, None)?;
        Ok(Self {
            file,
            config,
            kernel,
            plan,
        })
    }
}

impl Plan {
    /// Places everything and relocates the kernel for that placement; with `random`, dynamic
    /// addresses are random (ASLR), else the lowest free ones.
    fn new(
        file: &[u8],
        kernel: &ElfKernel,
        config: &BootConfig,
        mut random: Option<&mut Random>,
    ) -> Result<Self, BootError> {
        let mut slots = SlotAllocator::new(config);
        let image_start = page_floor(kernel.segments[0].vaddr);
        let image_end = page_ceil(kernel.segments.iter().map(|s| s.end()).max().unwrap_or(0));
        // Under 16 bytes the first stack pointer (16-aligned, less a return address) would lie
        // in the guard page.
        if config.kernel_stack_size < 16 {
            return Err(BootError::BadConfig(format!(
                "kernel_stack_size {} is under 16 bytes: the stack would start in its guard page",
                config.kernel_stack_size
            )));
        }
        let stack_pages = checked_page_ceil(config.kernel_stack_size)
            .map(|size| size / PAGE_SIZE)
            .filter(|&pages| pages > 0)
            .ok_or_else(|| {
                BootError::BadConfig(format!(
                    "kernel_stack_size {} is zero or beyond the address space",
                    config.kernel_stack_size
                ))
            })?;
        // The stack and its guard page, in bytes.
        let stack_span = (stack_pages + 1)
            .checked_mul(PAGE_SIZE)
            .ok_or(BootError::BadConfig(
                "kernel_stack_size is too large".into(),
            ))?;
        // Fixed mappings take their slots before any dynamic one is handed out. Sizes that
        // depend on the run (framebuffer, ramdisk) reserve the slot their start is in.
        let fixed_ranges = [
            (Some(config.kernel_stack), stack_span),
            (Some(config.boot_info), BOOT_INFO_MAX_SIZE),
            (Some(config.framebuffer), 1),
            (Some(config.ramdisk_memory), 1),
            (config.physical_memory, PHYSICAL_MAP_MIN),
            (config.page_table_recursive, SLOT_SIZE),
        ];
        for (mapping, size) in fixed_ranges {
            if let Some(Mapping::FixedAddress(address)) = mapping {
                slots.reserve(address, address.saturating_add(size));
            }
        }
        let kernel_offset = match (kernel.position_independent, config.kernel_base) {
            (false, Mapping::Dynamic) => 0,
            (false, Mapping::FixedAddress(_)) => {
                return Err(BootError::BadConfig(
                    "kernel_base is fixed but the kernel is not position-independent (ET_EXEC)"
                        .into(),
                ));
            }
            (true, Mapping::FixedAddress(base)) => {
                if !base.is_multiple_of(kernel.max_align) {
                    return Err(BootError::BadAddress(base));
                }
                base
            }
            (true, Mapping::Dynamic) => {
                let free =
                    slots.take("a free 512 GiB slot for the kernel", random.as_deref_mut())?;
                // With ASLR, also a random aligned offset into the slot, leaving room for the
                // image.
                let room = SLOT_SIZE.saturating_sub(image_end - image_start) / kernel.max_align;
                let shift = match random.as_deref_mut() {
                    Some(random) if room > 0 => random.below(room) * kernel.max_align,
                    _ => 0,
                };
                align_up(free.wrapping_sub(image_start), kernel.max_align)
                    .and_then(|base| base.checked_add(shift))
                    .ok_or(BootError::BadAddress(free))?
            }
        };
        let relocated = |address: u64| {
            address
                .checked_add(kernel_offset)
                .filter(|&a| paging::is_canonical(a))
                .ok_or(BootError::BadAddress(address))
        };
        // The end of a range moved by the offset: its last byte moved, plus one, if that is still
        // an address.
        let relocated_end = |end: u64| {
            relocated(end - 1)?
                .checked_add(1)
                .filter(|&end| checked_page_ceil(end).is_some())
                .ok_or(BootError::BadAddress(end))
        };
        let (image_start, image_end) = (relocated(image_start)?, relocated_end(image_end)?);
        slots.reserve(image_start, image_end);

        let segments = Self::relocate(file, kernel, kernel_offset, relocated, relocated_end)?;
        let relro_pages = match &kernel.relro {
            Some(range) if !range.is_empty() => {
                Some(page_floor(relocated(range.start)?)..page_ceil(relocated_end(range.end)?))
            }
            _ => None,
        };
        let tls_template = match kernel.tls {
            Some((address, file_size, mem_size)) => {
                Some((relocated(address)?, file_size, mem_size))
            }
            None => None,
        };

        // The real loader's order: stack, framebuffer, ramdisk, physical-memory map, recursive
        // entry, BootInfo. The framebuffer and ramdisk get their slots even when a run has
        // neither, so that one prepared image has one layout.
        let mut place = |mapping: Mapping, align: u64, what: &'static str| match mapping {
            Mapping::Dynamic => slots.take(what, random.as_deref_mut()),
            Mapping::FixedAddress(address)
                if address.is_multiple_of(align) && paging::is_canonical(address) =>
            {
                Ok(address)
            }
            Mapping::FixedAddress(address) => Err(BootError::BadAddress(address)),
        };
        let stack_guard = place(config.kernel_stack, PAGE_SIZE, "a slot for the stack")?;
        // The whole stack (guard page first) must lie in canonical addresses.
        stack_guard
            .checked_add(stack_span)
            .filter(|&end| paging::is_canonical(end - 1) && paging::is_canonical(stack_guard))
            .ok_or(BootError::BadAddress(stack_guard))?;
        let framebuffer_address =
            place(config.framebuffer, PAGE_SIZE, "a slot for the framebuffer")?;
        let ramdisk_address = place(config.ramdisk_memory, PAGE_SIZE, "a slot for the ramdisk")?;
        let physical_memory_offset = config
            .physical_memory
            .map(|m| {
                place(
                    m,
                    paging::LARGE_PAGE_SIZE,
                    "a slot for the physical-memory map",
                )
            })
            .transpose()?;
        let recursive_index = config
            .page_table_recursive
            .map(|m| place(m, SLOT_SIZE, "a slot for the recursive entry").map(slot_of))
            .transpose()?;
        let boot_info_address = place(config.boot_info, 8, "a slot for BootInfo")?;
        let runtime = match kernel.runtime_note {
            Some(address) => Some(Runtime::read(
                &segments,
                relocated(address)?,
                slots.take("a slot for mote's kernel stacks", random)?,
            )?),
            None => None,
        };

        Ok(Self {
            ramdisk_address,
            framebuffer_address,
            physical_memory_offset,
            recursive_index,
            runtime,
            entry: relocated(kernel.entry)?,
            segments,
            relro_pages,
            kernel_offset,
            tls_template,
            stack_guard,
            stack_pages,
            boot_info_address,
        })
    }

    /// Copies each segment's file bytes and applies the relocations to the copies.
    fn relocate(
        file: &[u8],
        kernel: &ElfKernel,
        offset: u64,
        relocated: impl Fn(u64) -> Result<u64, BootError>,
        relocated_end: impl Fn(u64) -> Result<u64, BootError>,
    ) -> Result<Vec<PreparedSegment>, BootError> {
        let mut segments: Vec<PreparedSegment> = kernel
            .segments
            .iter()
            .map(|s| {
                let start = relocated(s.vaddr)?;
                let page = page_floor(start);
                let end = relocated_end(s.end())?;
                let mut leaf_flags = flags::PRESENT;
                if s.flags.writable {
                    leaf_flags |= flags::WRITABLE;
                }
                if !s.flags.executable {
                    leaf_flags |= flags::NO_EXECUTE;
                }
                Ok(PreparedSegment {
                    page,
                    page_count: (page_ceil(end) - page) / PAGE_SIZE,
                    offset_in_page: start - page,
                    bytes: file[s.file_range.clone()].to_vec(),
                    zero_fill_relocations: Vec::new(),
                    leaf_flags,
                })
            })
            .collect::<Result<_, BootError>>()?;
        for &(target, addend) in &kernel.relocations {
            let (index, segment) = kernel
                .segments
                .iter()
                .enumerate()
                .find(|(_, s)| s.vaddr <= target && target + 8 <= s.end())
                .ok_or(BootError::BadAddress(target))?;
            let at = target - segment.vaddr;
            let value = offset.wrapping_add_signed(addend);
            let prepared = &mut segments[index];
            match prepared.bytes.get_mut(at as usize..at as usize + 8) {
                Some(slot) => slot.copy_from_slice(&value.to_le_bytes()),
                // A target in the zero-filled part: written at load time. Growing the byte copy
                // instead would let a header claiming a huge segment make the host allocate it.
                None => prepared.zero_fill_relocations.push((at, value)),
            }
        }
        Ok(segments)
    }
}

/// What a prepared image is and where a load would put things (`mote inspect`).
#[derive(Clone, Debug)]
pub struct Description {
    /// Position-independent (ET_DYN) rather than at fixed addresses (ET_EXEC).
    pub position_independent: bool,
    /// Whether the kernel carries mote's runtime note (and so runs in user mode).
    pub user_mode: bool,
    /// The relocated entry point.
    pub entry: u64,
    /// How far the kernel is moved from its link-time addresses.
    pub kernel_offset: u64,
    /// The loadable segments, relocated: address, size in memory, writable, executable.
    pub segments: Vec<(u64, u64, bool, bool)>,
    /// Where each mapping goes (the framebuffer and ramdisk only if a run has them).
    pub placements: Vec<(&'static str, u64)>,
    /// ASLR: dynamic addresses change at every run.
    pub aslr: bool,
}

impl PreparedImage {
    /// What this image is and where a load puts things (without ASLR).
    pub fn describe(&self) -> Description {
        let plan = &self.plan;
        let mut placements = vec![
            ("stack guard page", plan.stack_guard),
            ("stack", plan.stack_guard.saturating_add(PAGE_SIZE)),
            ("framebuffer", plan.framebuffer_address),
            ("ramdisk", plan.ramdisk_address),
            ("BootInfo", plan.boot_info_address),
        ];
        if let Some(offset) = plan.physical_memory_offset {
            placements.push(("physical-memory map", offset));
        }
        if let Some(index) = plan.recursive_index {
            placements.push(("recursive page table", slot_address(index)));
        }
        if let Some(runtime) = &plan.runtime {
            placements.push(("mote kernel stacks", runtime.system_address));
        }
        placements.sort_by_key(|&(_, address)| address);
        Description {
            position_independent: self.kernel.position_independent,
            user_mode: plan.runtime.is_some(),
            entry: plan.entry,
            kernel_offset: plan.kernel_offset,
            segments: self
                .kernel
                .segments
                .iter()
                .map(|s| {
                    let address = s.vaddr.wrapping_add(plan.kernel_offset);
                    (address, s.mem_size, s.flags.writable, s.flags.executable)
                })
                .collect(),
            placements,
            aslr: self.config.aslr,
        }
    }

    /// The kernel's boot configuration.
    pub fn config(&self) -> &BootConfig {
        &self.config
    }

    /// The relocated entry point.
    pub fn entry(&self) -> u64 {
        self.plan.entry
    }

    /// How far the kernel was moved from its link-time addresses.
    pub fn kernel_offset(&self) -> u64 {
        self.plan.kernel_offset
    }

    /// Whether the kernel carries mote's runtime note and so runs in user mode.
    pub fn user_mode(&self) -> bool {
        self.plan.runtime.is_some()
    }

    /// A lower bound on the guest memory a load with a ramdisk of `ramdisk_len` bytes needs:
    /// low memory, the copy of the ELF file, the segments, the stack and the ramdisk. A load
    /// into less fails with [`BootError::OutOfMemory`]; one into more may still (page tables,
    /// `BootInfo` and the rest come on top), so this is for refusing early, not for sizing.
    pub fn min_memory(&self, ramdisk_len: u64) -> u64 {
        let segments: u64 = self
            .plan
            .segments
            .iter()
            .map(|segment| segment.page_count.saturating_mul(PAGE_SIZE))
            .fold(0, u64::saturating_add);
        LOADER_FRAMES_START
            .saturating_add(page_ceil(self.file.len() as u64))
            .saturating_add(segments)
            .saturating_add(self.plan.stack_pages.saturating_mul(PAGE_SIZE))
            .saturating_add(page_ceil(ramdisk_len))
            .max(MIN_MEMORY)
    }

    /// Lays the kernel out in `memory` and returns the state to start the vCPU in.
    ///
    /// `memory` must be one region starting at guest-physical 0 and must be zero-filled (as
    /// fresh anonymous memory is): only the bytes that are not zero are written.
    pub fn load<M: GuestMemoryBackend>(
        &self,
        memory: &M,
        options: &LoadOptions,
    ) -> Result<LoadedGuest, BootError> {
        // A kernel that asks for ASLR gets fresh random addresses at every load.
        let randomized;
        let plan = match options.aslr_seed {
            Some(seed) if self.config.aslr => {
                let mut random = Random(seed);
                randomized = Plan::new(&self.file, &self.kernel, &self.config, Some(&mut random))?;
                &randomized
            }
            _ => &self.plan,
        };
        // A plain boot ignores the runtime note: CPL0, as the real bootloader would start it.
        let runtime = plan.runtime.as_ref().filter(|_| !options.plain);
        let memory_size = memory.last_addr().0 + 1;
        if memory_size < MIN_MEMORY {
            return Err(BootError::OutOfMemory { needed: MIN_MEMORY });
        }
        // With firmware, mote's frames stay below the APIC ranges the memory map reserves.
        let frames_end = memory_map::frames_end(
            memory_size,
            LOADER_FRAMES_START,
            options.acpi,
            options.irqchip,
        );
        let mut frames = FrameAllocator::new(LOADER_FRAMES_START, frames_end & !(PAGE_SIZE - 1));
        let tables = PageTableBuilder::new(memory, &mut frames)?;
        let mut layout = Layout {
            memory,
            frames,
            tables,
        };
        // Pages a user-mode guest may touch are USER; mote's own structures never are.
        let user = if runtime.is_some() { flags::USER } else { 0 };

        // The ELF file itself, for `kernel_addr`.
        let kernel_addr = layout.copy(&self.file)?;

        for segment in &plan.segments {
            let frame = layout.frames.allocate(segment.page_count)?;
            let start = frame + segment.offset_in_page;
            layout.write(&segment.bytes, start)?;
            for &(at, value) in &segment.zero_fill_relocations {
                layout.write(&value.to_le_bytes(), start + at)?;
            }
            for i in 0..segment.page_count {
                let page = segment.page + i * PAGE_SIZE;
                let mut leaf_flags = segment.leaf_flags | user;
                if plan.relro_pages.as_ref().is_some_and(|r| r.contains(&page)) {
                    leaf_flags &= !flags::WRITABLE;
                }
                layout.map(page, frame + i * PAGE_SIZE, 1, leaf_flags)?;
            }
        }

        // Tell a user-mode guest about its host, in its own note (see `mote_abi::note`).
        if let Some(runtime) = runtime {
            let mut info = [0u8; 16];
            info[..4].copy_from_slice(&mote_abi::ABI_VERSION.to_le_bytes());
            let host_flags = if options.snapshot {
                note::HOST_FLAG_SNAPSHOT
            } else {
                0
            };
            info[4..8].copy_from_slice(&host_flags.to_le_bytes());
            info[8..].copy_from_slice(&options.tsc_khz.to_le_bytes());
            let at = runtime.note_address + note::offsets::HOST_ABI_VERSION as u64;
            let kernel = paging::Access {
                write: false,
                user: false,
            };
            let physical = paging::translate(memory, layout.tables.root(), at, kernel)
                .map_err(|_| BootError::BadAddress(at))?;
            // A segment's pages sit in contiguous frames, and the whole note lies in one
            // segment (checked when it was read), so the 16 bytes are contiguous here too.
            layout.write(&info, physical)?;
        }

        // The stack, above its unmapped guard page.
        let stack_bottom = plan
            .stack_guard
            .checked_add(PAGE_SIZE)
            .ok_or(BootError::BadAddress(plan.stack_guard))?;
        layout.allocate_and_map(
            stack_bottom,
            plan.stack_pages,
            flags::WRITABLE | flags::NO_EXECUTE | user,
        )?;
        let stack_top = stack_bottom
            .checked_add(self.config.kernel_stack_size)
            .ok_or(BootError::BadAddress(stack_bottom))?;
        // SysV function entry: RSP + 8 is 16-aligned, with a zero return address at [RSP].
        let rsp = (stack_top & !0xF) - 8;
        let mut guard_pages = vec![GuardPage {
            address: plan.stack_guard,
            stack: "stack",
        }];

        // The ramdisk (mote's input): writable for a plain kernel, as the real loader maps it;
        // read-only for a user-mode guest, whose input is not its to change.
        let bytes = options.ramdisk.unwrap_or_default();
        let window = checked_page_ceil(options.ramdisk_capacity.max(bytes.len() as u64))
            .ok_or(BootError::OutOfMemory { needed: u64::MAX })?;
        let (ramdisk, ramdisk_frames) = if options.ramdisk.is_some() || window > 0 {
            let pages = window / PAGE_SIZE;
            let frame = layout.frames.allocate(pages)?;
            layout.write(bytes, frame)?;
            let writable = if user == 0 { flags::WRITABLE } else { 0 };
            layout.map(
                plan.ramdisk_address,
                frame,
                pages,
                flags::NO_EXECUTE | writable | user,
            )?;
            (
                Some((plan.ramdisk_address, bytes.len() as u64)),
                Some(RamdiskFrames {
                    physical: frame,
                    len: window,
                }),
            )
        } else {
            (None, None)
        };

        // The framebuffer, in mote's frames (so never Usable), mapped where the config says.
        let framebuffer = match options.framebuffer {
            Some((width, height)) => {
                let info = Framebuffer {
                    physical: 0,
                    width,
                    height,
                    stride: width,
                    bytes_per_pixel: 4,
                };
                let pages = page_ceil(info.len()) / PAGE_SIZE;
                let physical = layout.allocate_and_map(
                    plan.framebuffer_address,
                    pages,
                    flags::WRITABLE | flags::NO_EXECUTE | user,
                )?;
                Some(Framebuffer { physical, ..info })
            }
            None => None,
        };

        // All of physical memory (at least 4 GiB, for the APICs), in 2 MiB pages. Never USER:
        // it holds the page tables.
        if let Some(offset) = plan.physical_memory_offset {
            let end = memory_size
                .max(PHYSICAL_MAP_MIN)
                .next_multiple_of(paging::LARGE_PAGE_SIZE);
            layout.tables.map_large_pages(
                &mut layout.frames,
                offset,
                0,
                end / paging::LARGE_PAGE_SIZE,
                flags::WRITABLE | flags::NO_EXECUTE,
            )?;
        }

        // ACPI tables in the BIOS area, where kernels look for the RSDP.
        if options.acpi {
            layout.write(&acpi::tables(options.irqchip), acpi::ACPI_BASE)?;
        }

        // Kernel stacks for a user-mode guest's exception handlers: supervisor-only, each above
        // a guard page.
        let kernel_stacks = match runtime {
            Some(runtime) => {
                let rsp0_bottom = runtime.system_address + PAGE_SIZE;
                layout.allocate_and_map(
                    rsp0_bottom,
                    runtime.kernel_stack_pages,
                    flags::WRITABLE | flags::NO_EXECUTE,
                )?;
                let rsp0 = rsp0_bottom + runtime.kernel_stack_pages * PAGE_SIZE;
                let ist1_bottom = rsp0 + PAGE_SIZE;
                layout.allocate_and_map(
                    ist1_bottom,
                    DOUBLE_FAULT_STACK_PAGES,
                    flags::WRITABLE | flags::NO_EXECUTE,
                )?;
                guard_pages.push(GuardPage {
                    address: runtime.system_address,
                    stack: "kernel stack",
                });
                guard_pages.push(GuardPage {
                    address: rsp0,
                    stack: "double-fault stack",
                });
                Some(vcpu::KernelStacks {
                    rsp0,
                    ist1: ist1_bottom + DOUBLE_FAULT_STACK_PAGES * PAGE_SIZE,
                })
            }
            None => None,
        };

        // The GDT and TSS (and the IDT of a user-mode guest), identity-mapped read-only like
        // the real loader's GDT.
        let gdt_pages = page_ceil(vcpu::system_tables_size(kernel_stacks.is_some())) / PAGE_SIZE;
        let gdt_frame = layout.frames.allocate(gdt_pages)?;
        let gdt = vcpu::Gdt::at(gdt_frame, kernel_stacks);
        layout.write(&gdt.bytes(), gdt_frame)?;
        layout.map(gdt_frame, gdt_frame, gdt_pages, flags::NO_EXECUTE)?;
        let mut debug_gate = None;
        let idt = match runtime {
            Some(runtime) => {
                let mut handlers = runtime.exception_handlers;
                if options.debug_gate {
                    let gate = layout.frames.allocate(1)?;
                    layout.write(&DEBUG_GATE_CODE, gate)?;
                    layout.write(&DEBUG_GATE_CODE, gate + DEBUG_GATE_BP)?;
                    layout.map(gate, gate, 1, 0)?;
                    handlers[1] = Some(gate);
                    handlers[3] = Some(gate + DEBUG_GATE_BP);
                    debug_gate = Some(gate);
                }
                let idt_frame = layout.frames.allocate(1)?;
                let bytes = vcpu::idt_bytes(&handlers);
                layout.write(&bytes, idt_frame)?;
                layout.map(idt_frame, idt_frame, 1, flags::NO_EXECUTE)?;
                Some(DescriptorTable {
                    base: idt_frame,
                    limit: (bytes.len() - 1) as u16,
                })
            }
            None => None,
        };

        // BootInfo and the memory map.
        let boot_info_page = page_floor(plan.boot_info_address);
        let boot_info_end = plan
            .boot_info_address
            .checked_add(BOOT_INFO_MAX_SIZE)
            .ok_or(BootError::BadAddress(plan.boot_info_address))?;
        let boot_info_pages = (page_ceil(boot_info_end) - boot_info_page) / PAGE_SIZE;
        let boot_info_frame = layout.allocate_and_map(
            boot_info_page,
            boot_info_pages,
            flags::WRITABLE | flags::NO_EXECUTE | user,
        )?;

        // The recursive entry goes in last, so that nothing can be mapped through it.
        if let Some(index) = plan.recursive_index {
            layout.tables.map_recursive(index as u64)?;
        }

        // Every frame mote used is below `used_end`.
        let used_end = layout.frames.next_free();
        let regions = memory_map::regions(
            memory_size,
            LOADER_FRAMES_START,
            used_end,
            options.acpi,
            options.irqchip,
        );
        let info = BootInfoFields {
            api_version: self.config.api_version,
            address: plan.boot_info_address,
            regions: regions.clone(),
            tls_template: plan.tls_template,
            ramdisk,
            framebuffer: framebuffer.map(|f| (plan.framebuffer_address, f)),
            physical_memory_offset: plan.physical_memory_offset,
            recursive_index: plan.recursive_index.map(|i| i as u16),
            rsdp: options.acpi.then_some(acpi::RSDP_ADDRESS),
            kernel_addr,
            kernel_len: self.file.len() as u64,
            kernel_image_offset: plan.kernel_offset,
            kernel_stack_bottom: stack_bottom,
            kernel_stack_len: self.config.kernel_stack_size,
            test_sentinel: options.test_sentinel,
        };
        layout.write(
            &info.to_bytes(),
            boot_info_frame + (plan.boot_info_address - boot_info_page),
        )?;

        let cr3 = layout.tables.root();
        let kernel = VcpuState::kernel_entry(cr3, plan.entry, rsp, plan.boot_info_address, &gdt);
        let vcpu = match (runtime, idt) {
            (Some(runtime), Some(idt)) => VcpuState::user_entry(kernel, idt, runtime.syscall_entry),
            _ => kernel,
        };
        Ok(LoadedGuest {
            vcpu,
            regions,
            boot_info_address: plan.boot_info_address,
            user_mode: runtime.is_some(),
            guard_pages,
            framebuffer,
            ramdisk: ramdisk_frames,
            debug_gate,
            kernel_offset: plan.kernel_offset,
        })
    }
}

/// Pages for the double-fault handler's stack.
const DOUBLE_FAULT_STACK_PAGES: u64 = 2;

impl Runtime {
    /// Reads and checks the runtime note at `address` (relocated) in the relocated segments.
    fn read(
        segments: &[PreparedSegment],
        address: u64,
        system_address: u64,
    ) -> Result<Self, BootError> {
        let bad = |why: &str| BootError::BadElf(format!("runtime note: {why}"));
        let bytes = segments
            .iter()
            .find_map(|s| {
                let start = s.page + s.offset_in_page;
                let at = address.checked_sub(start)? as usize;
                s.bytes.get(at..at.checked_add(note::SIZE)?)
            })
            .ok_or_else(|| bad("not inside a loaded segment's file bytes"))?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        if bytes[..8] != note::MAGIC {
            return Err(bad("wrong magic"));
        }
        let version = u32_at(note::offsets::VERSION);
        if version != note::VERSION {
            return Err(bad(&format!(
                "version {version}; this mote reads version {}",
                note::VERSION
            )));
        }
        if u32_at(note::offsets::FLAGS) != 0 {
            return Err(bad("unknown flags"));
        }
        let stack_size = u64_at(note::offsets::KERNEL_STACK_SIZE);
        if stack_size == 0 || stack_size > note::KERNEL_STACK_MAX {
            return Err(bad(&format!(
                "kernel stack size {stack_size} is not between 1 and {}",
                note::KERNEL_STACK_MAX
            )));
        }
        // Every entry point must be executable code of the kernel itself.
        let executable = |address: u64| {
            segments.iter().any(|s| {
                s.leaf_flags & flags::NO_EXECUTE == 0
                    && (s.page..s.page + s.page_count * PAGE_SIZE).contains(&address)
            })
        };
        let entry = |at: usize| match u64_at(at) {
            0 => Ok(None),
            address if executable(address) => Ok(Some(address)),
            address => Err(bad(&format!(
                "entry {address:#x} is not in executable code"
            ))),
        };
        let mut exception_handlers = [None; note::EXCEPTION_VECTORS];
        for (vector, handler) in exception_handlers.iter_mut().enumerate() {
            *handler = entry(note::offsets::EXCEPTION_HANDLERS + 8 * vector)?;
        }
        Ok(Self {
            kernel_stack_pages: page_ceil(stack_size) / PAGE_SIZE,
            syscall_entry: entry(note::offsets::SYSCALL_ENTRY)?,
            exception_handlers,
            system_address,
            note_address: address,
        })
    }
}

/// Physical frames and page tables while one load is under way.
struct Layout<'m, M: GuestMemoryBackend> {
    memory: &'m M,
    frames: FrameAllocator,
    tables: PageTableBuilder<'m, M>,
}

impl<M: GuestMemoryBackend> Layout<'_, M> {
    /// Writes `bytes` at guest-physical `address`, which lies in frames taken from `memory`.
    fn write(&self, bytes: &[u8], address: u64) -> Result<(), BootError> {
        self.memory
            .write_slice(bytes, GuestAddress(address))
            .map_err(|_| BootError::OutOfMemory {
                needed: address.saturating_add(bytes.len() as u64),
            })
    }

    /// Copies `bytes` into fresh frames; returns the first frame's address.
    fn copy(&mut self, bytes: &[u8]) -> Result<u64, BootError> {
        let frame = self
            .frames
            .allocate(page_ceil(bytes.len() as u64) / PAGE_SIZE)?;
        self.write(bytes, frame)?;
        Ok(frame)
    }

    fn map(&mut self, virt: u64, phys: u64, pages: u64, leaf_flags: u64) -> Result<(), BootError> {
        self.tables
            .map_range(&mut self.frames, virt, phys, pages, leaf_flags)
    }

    /// Maps `pages` fresh (zero) frames at `virt`; returns the first frame's address.
    fn allocate_and_map(
        &mut self,
        virt: u64,
        pages: u64,
        leaf_flags: u64,
    ) -> Result<u64, BootError> {
        let frame = self.frames.allocate(pages)?;
        self.map(virt, frame, pages, leaf_flags)?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests;
