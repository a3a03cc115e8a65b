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

mod boot_info;
pub mod config;
mod elf;
pub mod paging;
mod vcpu;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use boot_info::{MemoryRegion, RegionKind};
pub use config::{BootConfig, Mapping};
pub use vcpu::{DescriptorTable, Segment, VcpuState};

use boot_info::{BOOT_INFO_SIZE, BootInfoFields, MEMORY_REGION_SIZE};
use elf::{ElfKernel, page_ceil, page_floor};
use paging::{FrameAllocator, PAGE_SIZE, PageTableBuilder, flags};

/// Physical memory below this is left Usable; mote's own frames start here.
pub const LOADER_FRAMES_START: u64 = 0x10_0000;

/// The smallest guest memory mote accepts.
pub const MIN_MEMORY: u64 = 2 * 1024 * 1024;

/// What can go wrong turning an ELF file into a bootable guest.
#[derive(Debug, thiserror::Error)]
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
    /// The config asks for something mote does not do yet.
    #[error("the kernel's boot config asks for {0}, which mote does not support yet")]
    Unsupported(&'static str),
    /// An address in the config or the ELF cannot be used.
    #[error("unusable virtual address {0:#x} (not canonical, misaligned or out of range)")]
    BadAddress(u64),
    /// Two things would be mapped at one virtual address.
    #[error("two mappings collide at virtual address {0:#x}")]
    MappingConflict(u64),
    /// The guest memory is too small for the kernel and what mote adds.
    #[error("guest memory too small: the boot layout needs at least {needed:#x} bytes")]
    OutOfMemory {
        /// Bytes of guest-physical memory the layout reached.
        needed: u64,
    },
}

/// `BootInfo` with the largest memory map mote writes: low Usable, mote's frames, high Usable.
const BOOT_INFO_MAX_SIZE: u64 = BOOT_INFO_SIZE + 3 * MEMORY_REGION_SIZE;

/// A kernel parsed, checked and relocated once, ready to be loaded any number of times.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    file: Vec<u8>,
    config: BootConfig,
    segments: Vec<PreparedSegment>,
    /// Virtual pages made read-only after relocation.
    relro_pages: Option<std::ops::Range<u64>>,
    entry: u64,
    kernel_offset: u64,
    tls_template: Option<(u64, u64, u64)>,
    /// Address of the stack's guard page; the stack starts one page above.
    stack_guard: u64,
    stack_pages: u64,
    boot_info_address: u64,
}

/// One loadable segment, relocated.
#[derive(Clone, Debug)]
struct PreparedSegment {
    /// First virtual page.
    page: u64,
    page_count: u64,
    /// Where in the first page the bytes start.
    offset_in_page: u64,
    /// The file bytes with relocations applied (and possibly extended into .bss by one).
    bytes: Vec<u8>,
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

    /// The address of the lowest free slot, now used.
    fn take(&mut self, what: &'static str) -> Result<u64, BootError> {
        let slot = self
            .used
            .iter()
            .position(|used| !used)
            .ok_or(BootError::Unsupported(what))?;
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
        if config.physical_memory.is_some() {
            return Err(BootError::Unsupported("a physical-memory mapping"));
        }
        if config.page_table_recursive.is_some() {
            return Err(BootError::Unsupported("a recursive page-table mapping"));
        }

        let mut slots = SlotAllocator::new(&config);
        let image_start = page_floor(kernel.segments[0].vaddr);
        let image_end = page_ceil(kernel.segments.iter().map(|s| s.end()).max().unwrap_or(0));
        let stack_pages = page_ceil(config.kernel_stack_size) / PAGE_SIZE;
        if stack_pages == 0 {
            return Err(BootError::BadConfig("kernel_stack_size is 0".into()));
        }
        let fixed_ranges = [
            (config.kernel_stack, (stack_pages + 1) * PAGE_SIZE),
            (config.boot_info, BOOT_INFO_MAX_SIZE),
        ];
        for (mapping, size) in fixed_ranges {
            if let Mapping::FixedAddress(address) = mapping {
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
                let free = slots.take("a free 512 GiB slot for the kernel")?;
                align_up(free.wrapping_sub(image_start), kernel.max_align)
                    .ok_or(BootError::BadAddress(free))?
            }
        };
        let relocated = |address: u64| {
            address
                .checked_add(kernel_offset)
                .filter(|&a| paging::is_canonical(a))
                .ok_or(BootError::BadAddress(address))
        };
        let (image_start, image_end) = (relocated(image_start)?, relocated(image_end - 1)? + 1);
        slots.reserve(image_start, image_end);

        let segments = Self::relocate(&file, &kernel, kernel_offset, relocated)?;
        let relro_pages = match &kernel.relro {
            Some(range) if !range.is_empty() => {
                Some(page_floor(relocated(range.start)?)..page_ceil(relocated(range.end - 1)? + 1))
            }
            _ => None,
        };
        let tls_template = match kernel.tls {
            Some((address, file_size, mem_size)) => {
                Some((relocated(address)?, file_size, mem_size))
            }
            None => None,
        };

        let stack_guard = match config.kernel_stack {
            Mapping::Dynamic => slots.take("a free 512 GiB slot for the stack")?,
            Mapping::FixedAddress(address) if address.is_multiple_of(PAGE_SIZE) => address,
            Mapping::FixedAddress(address) => return Err(BootError::BadAddress(address)),
        };
        let boot_info_address = match config.boot_info {
            Mapping::Dynamic => slots.take("a free 512 GiB slot for BootInfo")?,
            Mapping::FixedAddress(address) if address.is_multiple_of(8) => address,
            Mapping::FixedAddress(address) => return Err(BootError::BadAddress(address)),
        };

        Ok(Self {
            entry: relocated(kernel.entry)?,
            file,
            config,
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
    ) -> Result<Vec<PreparedSegment>, BootError> {
        let mut segments: Vec<PreparedSegment> = kernel
            .segments
            .iter()
            .map(|s| {
                let start = relocated(s.vaddr)?;
                let page = page_floor(start);
                let end = relocated(s.end() - 1)? + 1;
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
            let at = (target - segment.vaddr) as usize;
            let bytes = &mut segments[index].bytes;
            if bytes.len() < at + 8 {
                bytes.resize(at + 8, 0);
            }
            let value = offset.wrapping_add_signed(addend);
            bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        Ok(segments)
    }

    /// The kernel's boot configuration.
    pub fn config(&self) -> &BootConfig {
        &self.config
    }

    /// The relocated entry point.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// How far the kernel was moved from its link-time addresses.
    pub fn kernel_offset(&self) -> u64 {
        self.kernel_offset
    }

    /// Lays the kernel out in `memory` and returns the state to start the vCPU in.
    ///
    /// `memory` must be one region starting at guest-physical 0 and must be zero-filled (as
    /// fresh anonymous memory is): only the bytes that are not zero are written.
    pub fn load<M: GuestMemoryBackend>(&self, memory: &M) -> Result<LoadedGuest, BootError> {
        let memory_size = memory.last_addr().0 + 1;
        if memory_size < MIN_MEMORY {
            return Err(BootError::OutOfMemory { needed: MIN_MEMORY });
        }
        // Every write below lands in frames the allocator took from inside `memory`.
        let out_of_memory = |_| BootError::OutOfMemory {
            needed: memory_size + 1,
        };
        let mut frames = FrameAllocator::new(LOADER_FRAMES_START, memory_size & !(PAGE_SIZE - 1));

        // The ELF file itself, for `kernel_addr`.
        let kernel_addr = frames.allocate(page_ceil(self.file.len() as u64) / PAGE_SIZE)?;
        memory
            .write_slice(&self.file, GuestAddress(kernel_addr))
            .map_err(out_of_memory)?;

        let mut tables = PageTableBuilder::new(memory, &mut frames)?;
        for segment in &self.segments {
            let frame = frames.allocate(segment.page_count)?;
            memory
                .write_slice(&segment.bytes, GuestAddress(frame + segment.offset_in_page))
                .map_err(out_of_memory)?;
            for i in 0..segment.page_count {
                let page = segment.page + i * PAGE_SIZE;
                let mut leaf_flags = segment.leaf_flags;
                if self.relro_pages.as_ref().is_some_and(|r| r.contains(&page)) {
                    leaf_flags &= !flags::WRITABLE;
                }
                tables.map_page(&mut frames, page, frame + i * PAGE_SIZE, leaf_flags)?;
            }
        }

        // The stack, above its unmapped guard page.
        let stack_bottom = self
            .stack_guard
            .checked_add(PAGE_SIZE)
            .ok_or(BootError::BadAddress(self.stack_guard))?;
        let stack_frames = frames.allocate(self.stack_pages)?;
        tables.map_range(
            &mut frames,
            stack_bottom,
            stack_frames,
            self.stack_pages,
            flags::WRITABLE | flags::NO_EXECUTE,
        )?;
        let stack_top = stack_bottom + self.config.kernel_stack_size;
        // SysV function entry: RSP + 8 is 16-aligned, with a zero return address at [RSP].
        let rsp = (stack_top & !0xF) - 8;

        // The GDT (and a TSS for TR), identity-mapped read-only like the real loader's.
        let gdt_frame = frames.allocate(1)?;
        let gdt = vcpu::Gdt::at(gdt_frame);
        memory
            .write_slice(&gdt.bytes(), GuestAddress(gdt_frame))
            .map_err(out_of_memory)?;
        tables.map_page(&mut frames, gdt_frame, gdt_frame, flags::NO_EXECUTE)?;

        // BootInfo and the memory map.
        let boot_info_size = BOOT_INFO_MAX_SIZE;
        let boot_info_page = page_floor(self.boot_info_address);
        let boot_info_end = self
            .boot_info_address
            .checked_add(boot_info_size)
            .ok_or(BootError::BadAddress(self.boot_info_address))?;
        let boot_info_pages = (page_ceil(boot_info_end) - boot_info_page) / PAGE_SIZE;
        let boot_info_frame = frames.allocate(boot_info_pages)?;
        tables.map_range(
            &mut frames,
            boot_info_page,
            boot_info_frame,
            boot_info_pages,
            flags::WRITABLE | flags::NO_EXECUTE,
        )?;

        // Every frame mote used is below `used_end`.
        let used_end = frames.next_free();
        let mut regions = vec![
            MemoryRegion {
                start: 0,
                end: LOADER_FRAMES_START,
                kind: RegionKind::Usable,
            },
            MemoryRegion {
                start: LOADER_FRAMES_START,
                end: used_end,
                kind: RegionKind::Bootloader,
            },
        ];
        if used_end < memory_size {
            regions.push(MemoryRegion {
                start: used_end,
                end: memory_size,
                kind: RegionKind::Usable,
            });
        }
        let info = BootInfoFields {
            api_version: self.config.api_version,
            address: self.boot_info_address,
            regions: regions.clone(),
            tls_template: self.tls_template,
            kernel_addr,
            kernel_len: self.file.len() as u64,
            kernel_image_offset: self.kernel_offset,
            kernel_stack_bottom: stack_bottom,
            kernel_stack_len: self.config.kernel_stack_size,
        };
        let info_physical = boot_info_frame + (self.boot_info_address - boot_info_page);
        memory
            .write_slice(&info.to_bytes(), GuestAddress(info_physical))
            .map_err(out_of_memory)?;

        Ok(LoadedGuest {
            vcpu: VcpuState::kernel_entry(
                tables.root(),
                self.entry,
                rsp,
                self.boot_info_address,
                &gdt,
            ),
            regions,
            boot_info_address: self.boot_info_address,
        })
    }
}

#[cfg(test)]
mod tests;
