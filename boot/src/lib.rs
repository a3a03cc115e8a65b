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
pub use vcpu::{DescriptorTable, Segment, SyscallMsrs, VcpuState, msr};

use boot_info::{BOOT_INFO_SIZE, BootInfoFields, MEMORY_REGION_SIZE};
use elf::{ElfKernel, page_ceil, page_floor};
use mote_abi::note;
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
    ramdisk_address: u64,
    boot_info_address: u64,
    /// Present if the kernel carries mote's runtime note: it is then run in user mode.
    runtime: Option<Runtime>,
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
    /// The guest's TSC frequency in kHz (0 if unknown), told to a user-mode guest through its
    /// runtime note.
    pub tsc_khz: u64,
    /// Boot as the real bootloader would: ignore the runtime note and start at CPL0.
    pub plain: bool,
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
        // The real loader's order: stack, (framebuffer), ramdisk, then BootInfo.
        let ramdisk_address = match config.ramdisk_memory {
            Mapping::Dynamic => slots.take("a free 512 GiB slot for the ramdisk")?,
            Mapping::FixedAddress(address) if address.is_multiple_of(PAGE_SIZE) => address,
            Mapping::FixedAddress(address) => return Err(BootError::BadAddress(address)),
        };
        let boot_info_address = match config.boot_info {
            Mapping::Dynamic => slots.take("a free 512 GiB slot for BootInfo")?,
            Mapping::FixedAddress(address) if address.is_multiple_of(8) => address,
            Mapping::FixedAddress(address) => return Err(BootError::BadAddress(address)),
        };
        let runtime = match kernel.runtime_note {
            Some(address) => Some(Runtime::read(
                &segments,
                relocated(address)?,
                slots.take("a free 512 GiB slot for mote's kernel stacks")?,
            )?),
            None => None,
        };

        Ok(Self {
            ramdisk_address,
            runtime,
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

    /// Whether the kernel carries mote's runtime note and so runs in user mode.
    pub fn user_mode(&self) -> bool {
        self.runtime.is_some()
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
        // A plain boot ignores the runtime note: CPL0, as the real bootloader would start it.
        let runtime = self.runtime.as_ref().filter(|_| !options.plain);
        let memory_size = memory.last_addr().0 + 1;
        if memory_size < MIN_MEMORY {
            return Err(BootError::OutOfMemory { needed: MIN_MEMORY });
        }
        let mut frames = FrameAllocator::new(LOADER_FRAMES_START, memory_size & !(PAGE_SIZE - 1));
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

        for segment in &self.segments {
            let frame = layout.frames.allocate(segment.page_count)?;
            let start = frame + segment.offset_in_page;
            layout.write(&segment.bytes, start)?;
            for &(at, value) in &segment.zero_fill_relocations {
                layout.write(&value.to_le_bytes(), start + at)?;
            }
            for i in 0..segment.page_count {
                let page = segment.page + i * PAGE_SIZE;
                let mut leaf_flags = segment.leaf_flags | user;
                if self.relro_pages.as_ref().is_some_and(|r| r.contains(&page)) {
                    leaf_flags &= !flags::WRITABLE;
                }
                layout.map(page, frame + i * PAGE_SIZE, 1, leaf_flags)?;
            }
        }

        // Tell a user-mode guest about its host, in its own note (see `mote_abi::note`).
        if let Some(runtime) = runtime {
            let mut info = [0u8; 16];
            info[..4].copy_from_slice(&mote_abi::ABI_VERSION.to_le_bytes());
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
        let stack_bottom = self
            .stack_guard
            .checked_add(PAGE_SIZE)
            .ok_or(BootError::BadAddress(self.stack_guard))?;
        layout.allocate_and_map(
            stack_bottom,
            self.stack_pages,
            flags::WRITABLE | flags::NO_EXECUTE | user,
        )?;
        let stack_top = stack_bottom + self.config.kernel_stack_size;
        // SysV function entry: RSP + 8 is 16-aligned, with a zero return address at [RSP].
        let rsp = (stack_top & !0xF) - 8;
        let mut guard_pages = vec![GuardPage {
            address: self.stack_guard,
            stack: "stack",
        }];

        // The ramdisk (mote's input): writable for a plain kernel, as the real loader maps it;
        // read-only for a user-mode guest, whose input is not its to change.
        let ramdisk = match options.ramdisk {
            Some(bytes) => {
                let frame = layout.copy(bytes)?;
                let pages = page_ceil(bytes.len() as u64) / PAGE_SIZE;
                let writable = if user == 0 { flags::WRITABLE } else { 0 };
                layout.map(
                    self.ramdisk_address,
                    frame,
                    pages,
                    flags::NO_EXECUTE | writable | user,
                )?;
                Some((self.ramdisk_address, bytes.len() as u64))
            }
            None => None,
        };

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
        let idt = match runtime {
            Some(runtime) => {
                let idt_frame = layout.frames.allocate(1)?;
                let bytes = vcpu::idt_bytes(&runtime.exception_handlers);
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
        let boot_info_page = page_floor(self.boot_info_address);
        let boot_info_end = self
            .boot_info_address
            .checked_add(BOOT_INFO_MAX_SIZE)
            .ok_or(BootError::BadAddress(self.boot_info_address))?;
        let boot_info_pages = (page_ceil(boot_info_end) - boot_info_page) / PAGE_SIZE;
        let boot_info_frame = layout.allocate_and_map(
            boot_info_page,
            boot_info_pages,
            flags::WRITABLE | flags::NO_EXECUTE | user,
        )?;

        // Every frame mote used is below `used_end`.
        let used_end = layout.frames.next_free();
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
            ramdisk,
            kernel_addr,
            kernel_len: self.file.len() as u64,
            kernel_image_offset: self.kernel_offset,
            kernel_stack_bottom: stack_bottom,
            kernel_stack_len: self.config.kernel_stack_size,
        };
        layout.write(
            &info.to_bytes(),
            boot_info_frame + (self.boot_info_address - boot_info_page),
        )?;

        let cr3 = layout.tables.root();
        let kernel = VcpuState::kernel_entry(cr3, self.entry, rsp, self.boot_info_address, &gdt);
        let vcpu = match (runtime, idt) {
            (Some(runtime), Some(idt)) => VcpuState::user_entry(kernel, idt, runtime.syscall_entry),
            _ => kernel,
        };
        Ok(LoadedGuest {
            vcpu,
            regions,
            boot_info_address: self.boot_info_address,
            user_mode: runtime.is_some(),
            guard_pages,
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
