//! x86-64 4-level page tables in guest memory: building them, and walking them.
//!
//! The walker is what the host uses to turn a guest-virtual address from a hypercall into a
//! guest-physical one. The tables it walks may have been rewritten by the guest, so it trusts
//! nothing it reads: every entry is checked against guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::BootError;

/// The size of a page and of a page-table frame.
pub const PAGE_SIZE: u64 = 4096;

/// The size of a large page (a page-directory entry with the HUGE bit).
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;

/// Page-table entry bits.
pub mod flags {
    /// The entry is present.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes are allowed.
    pub const WRITABLE: u64 = 1 << 1;
    /// CPL3 may access.
    pub const USER: u64 = 1 << 2;
    /// The CPU has used the entry. Preset in every entry mote writes, so that the CPU's walks
    /// do not write the tables (which would make every run from a snapshot dirty them).
    pub const ACCESSED: u64 = 1 << 5;
    /// The CPU has written through the (leaf) entry. Preset in every leaf mote writes, for the
    /// same reason.
    pub const DIRTY: u64 = 1 << 6;
    /// The entry maps a large page (in a PDPT or PD).
    pub const HUGE: u64 = 1 << 7;
    /// Instruction fetches are not allowed (needs EFER.NXE).
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// What every leaf entry mote writes carries besides the caller's flags.
const LEAF_FLAGS: u64 = flags::PRESENT | flags::ACCESSED | flags::DIRTY;

/// The physical-address bits of an entry.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Whether an address is canonical for 48-bit virtual addresses.
pub fn is_canonical(address: u64) -> bool {
    let top = address >> 47;
    top == 0 || top == 0x1_FFFF
}

/// The index into the table of `level` (4 = PML4, 1 = PT) for an address.
fn table_index(address: u64, level: u32) -> u64 {
    (address >> (12 + 9 * (level - 1))) & 0x1FF
}

/// Hands out physical frames, upward from a start address. It writes nothing: a frame holds
/// what the memory held (zero, in fresh guest memory).
#[derive(Debug, Clone)]
pub struct FrameAllocator {
    next: u64,
    end: u64,
}

impl FrameAllocator {
    /// Allocates from the frames in `start..end` (both page-aligned).
    pub fn new(start: u64, end: u64) -> Self {
        Self { next: start, end }
    }

    /// Allocates `count` contiguous frames and returns the first one's address.
    pub fn allocate(&mut self, count: u64) -> Result<u64, BootError> {
        let size = count
            .checked_mul(PAGE_SIZE)
            .ok_or(BootError::OutOfMemory { needed: u64::MAX })?;
        let start = self.next;
        match start.checked_add(size) {
            Some(end) if end <= self.end => {
                self.next = end;
                Ok(start)
            }
            _ => Err(BootError::OutOfMemory {
                needed: start.saturating_add(size),
            }),
        }
    }

    /// The first frame not handed out yet.
    pub fn next_free(&self) -> u64 {
        self.next
    }
}

/// Builds page tables in guest memory. Each table is cleared as its frame is taken, then only
/// the entries that map something are written.
pub struct PageTableBuilder<'m, M: GuestMemoryBackend> {
    memory: &'m M,
    root: u64,
    /// The PML4 entry that points back at the PML4, once there is one (0: none yet).
    recursive_slot: u64,
}

impl<'m, M: GuestMemoryBackend> PageTableBuilder<'m, M> {
    /// Starts an empty address space, taking the PML4 frame from `frames`.
    pub fn new(memory: &'m M, frames: &mut FrameAllocator) -> Result<Self, BootError> {
        let mut builder = Self {
            memory,
            root: 0,
            recursive_slot: 0,
        };
        builder.root = builder.new_table(frames)?;
        Ok(builder)
    }

    /// Takes a frame for a table and clears it. Writing the table before reading any entry of it
    /// also matters to the host: guest memory is mostly fresh anonymous memory, where a read
    /// first maps the kernel's shared zero page and the write after it is a copy-on-write fault
    /// whose TLB flush interrupts every other CPU the process runs on (measured: such flushes
    /// were a sixth of a cold start's CPU time while the previous VM was being torn down).
    fn new_table(&self, frames: &mut FrameAllocator) -> Result<u64, BootError> {
        let frame = frames.allocate(1)?;
        self.memory
            .write_slice(&[0; PAGE_SIZE as usize], GuestAddress(frame))
            .map_err(|_| BootError::OutOfMemory {
                needed: frame + PAGE_SIZE,
            })?;
        Ok(frame)
    }

    /// The physical address of the PML4, for CR3.
    pub fn root(&self) -> u64 {
        self.root
    }

    fn read_entry(&self, address: u64) -> Result<u64, BootError> {
        self.memory
            .read_obj(GuestAddress(address))
            .map_err(|_| BootError::OutOfMemory {
                needed: address + 8,
            })
    }

    fn write_entry(&self, address: u64, entry: u64) -> Result<(), BootError> {
        self.memory
            .write_obj(entry, GuestAddress(address))
            .map_err(|_| BootError::OutOfMemory {
                needed: address + 8,
            })
    }

    /// The table of `level` that maps `virt` (3 = PDPT, 2 = PD, 1 = PT), created as needed.
    /// Intermediate entries are PRESENT|WRITABLE, plus USER if `user`.
    fn table_for(
        &mut self,
        frames: &mut FrameAllocator,
        virt: u64,
        level: u32,
        user: bool,
    ) -> Result<u64, BootError> {
        if !is_canonical(virt) {
            return Err(BootError::BadAddress(virt));
        }
        let table_flags =
            flags::PRESENT | flags::WRITABLE | flags::ACCESSED | if user { flags::USER } else { 0 };
        let mut table = self.root;
        for walked in (level + 1..=4).rev() {
            let slot = table + table_index(virt, walked) * 8;
            let entry = self.read_entry(slot)?;
            table = if entry & flags::PRESENT == 0 {
                let frame = self.new_table(frames)?;
                self.write_entry(slot, frame | table_flags)?;
                frame
            } else if entry & flags::HUGE != 0 || (walked == 4 && slot == self.recursive_slot) {
                // A large page (or the recursive entry) already covers this address.
                return Err(BootError::MappingConflict(virt));
            } else {
                if entry & table_flags != table_flags {
                    self.write_entry(slot, entry | table_flags)?;
                }
                entry & ADDRESS_MASK
            };
        }
        Ok(table)
    }

    /// Maps the 4 KiB page at `virt` to the frame at `phys` with `leaf_flags` (PRESENT is
    /// implied). Intermediate tables are PRESENT|WRITABLE, plus USER if the leaf is USER.
    /// Mapping a page twice is an error: it means two things were placed at one address.
    pub fn map_page(
        &mut self,
        frames: &mut FrameAllocator,
        virt: u64,
        phys: u64,
        leaf_flags: u64,
    ) -> Result<(), BootError> {
        debug_assert!(virt.is_multiple_of(PAGE_SIZE) && phys.is_multiple_of(PAGE_SIZE));
        let table = self.table_for(frames, virt, 1, leaf_flags & flags::USER != 0)?;
        let slot = table + table_index(virt, 1) * 8;
        if self.read_entry(slot)? & flags::PRESENT != 0 {
            return Err(BootError::MappingConflict(virt));
        }
        self.write_entry(slot, phys | leaf_flags | LEAF_FLAGS)
    }

    /// Maps `count` 2 MiB pages at `virt` to the physical range at `phys` (both 2 MiB-aligned),
    /// writing each page directory whole.
    pub fn map_large_pages(
        &mut self,
        frames: &mut FrameAllocator,
        virt: u64,
        phys: u64,
        count: u64,
        leaf_flags: u64,
    ) -> Result<(), BootError> {
        if !virt.is_multiple_of(LARGE_PAGE_SIZE) || !phys.is_multiple_of(LARGE_PAGE_SIZE) {
            return Err(BootError::BadAddress(virt));
        }
        let mut done = 0;
        while done < count {
            let at = virt
                .checked_add(done * LARGE_PAGE_SIZE)
                .ok_or(BootError::BadAddress(virt))?;
            let directory = self.table_for(frames, at, 2, leaf_flags & flags::USER != 0)?;
            let first = table_index(at, 2);
            let in_this_directory = (512 - first).min(count - done);
            let start = directory + first * 8;
            let mut existing = vec![0u8; in_this_directory as usize * 8];
            self.memory
                .read_slice(&mut existing, GuestAddress(start))
                .map_err(|_| BootError::OutOfMemory { needed: start })?;
            if existing.iter().any(|&b| b != 0) {
                return Err(BootError::MappingConflict(at));
            }
            let entries: Vec<u8> = (0..in_this_directory)
                .flat_map(|i| {
                    let frame = phys + (done + i) * LARGE_PAGE_SIZE;
                    (frame | leaf_flags | LEAF_FLAGS | flags::HUGE).to_le_bytes()
                })
                .collect();
            self.memory
                .write_slice(&entries, GuestAddress(start))
                .map_err(|_| BootError::OutOfMemory { needed: start })?;
            done += in_this_directory;
        }
        Ok(())
    }

    /// Points PML4 entry `index` at the PML4 itself (the recursive mapping), no-execute.
    pub fn map_recursive(&mut self, index: u64) -> Result<(), BootError> {
        let slot = self.root + (index & 0x1FF) * 8;
        if self.read_entry(slot)? & flags::PRESENT != 0 {
            return Err(BootError::MappingConflict(index << 39));
        }
        self.recursive_slot = slot;
        let entry =
            self.root | flags::PRESENT | flags::WRITABLE | flags::ACCESSED | flags::NO_EXECUTE;
        self.write_entry(slot, entry)
    }

    /// Maps `count` pages at `virt` to the contiguous frames at `phys`.
    pub fn map_range(
        &mut self,
        frames: &mut FrameAllocator,
        virt: u64,
        phys: u64,
        count: u64,
        leaf_flags: u64,
    ) -> Result<(), BootError> {
        for i in 0..count {
            let offset = i * PAGE_SIZE;
            let page = virt
                .checked_add(offset)
                .ok_or(BootError::BadAddress(virt))?;
            self.map_page(frames, page, phys + offset, leaf_flags)?;
        }
        Ok(())
    }
}

/// How the walker should check a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The access writes.
    pub write: bool,
    /// The access comes from CPL3 and needs USER on every level.
    pub user: bool,
}

/// Why a guest-virtual address does not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The address is not canonical.
    #[error("address {0:#x} is not canonical")]
    NotCanonical(u64),
    /// Some level has no present entry, or forbids the access.
    #[error("address {0:#x} is not mapped for this access")]
    NotMapped(u64),
    /// A table or the final frame lies outside guest memory.
    #[error("address {0:#x} maps outside guest memory")]
    OutsideMemory(u64),
}

/// The bits of a present entry of `level` that must be zero besides those above the physical
/// address: the page-size bit of a PML4 entry, and the low address bits of a large page (bit 12
/// is its PAT bit).
fn reserved_bits(level: u32, entry: u64) -> u64 {
    match level {
        4 => flags::HUGE,
        3 if entry & flags::HUGE != 0 => 0x3FFF_E000,
        2 if entry & flags::HUGE != 0 => 0x1F_E000,
        _ => 0,
    }
}

/// Translates a guest-virtual address to a guest-physical one through the tables at `cr3`.
pub fn translate<M: GuestMemoryBackend>(
    memory: &M,
    cr3: u64,
    virt: u64,
    access: Access,
) -> Result<u64, WalkError> {
    if !is_canonical(virt) {
        return Err(WalkError::NotCanonical(virt));
    }
    let mut table = cr3 & ADDRESS_MASK;
    for level in [4u32, 3, 2, 1] {
        let slot = GuestAddress(table + table_index(virt, level) * 8);
        let entry: u64 = memory
            .read_obj(slot)
            .map_err(|_| WalkError::OutsideMemory(virt))?;
        let allowed = entry & flags::PRESENT != 0
            && (!access.write || entry & flags::WRITABLE != 0)
            && (!access.user || entry & flags::USER != 0);
        if !allowed || entry & reserved_bits(level, entry) != 0 {
            // The CPU faults on an entry with a reserved bit set, as on one not present.
            return Err(WalkError::NotMapped(virt));
        }
        // A PDPT or PD entry may map a 1 GiB or 2 MiB page directly.
        if level != 1 && level != 4 && entry & flags::HUGE != 0 {
            let page_size = 1u64 << (12 + 9 * (level - 1));
            let base = entry & ADDRESS_MASK & !(page_size - 1);
            return Ok(base + (virt & (page_size - 1)));
        }
        table = entry & ADDRESS_MASK;
    }
    let physical = table + (virt & (PAGE_SIZE - 1));
    if !memory.address_in_range(GuestAddress(physical)) {
        return Err(WalkError::OutsideMemory(virt));
    }
    Ok(physical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    const READ: Access = Access {
        write: false,
        user: false,
    };

    /// A PML4 at 0x1000, a PDPT at 0x2000, a PD at 0x3000; `pdpt` and `pd` are written at the
    /// slots that map address 0.
    fn tables(pml4_flags: u64, pdpt: u64, pd: u64) -> GuestMemoryMmap {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        memory
            .write_obj(0x2000 | flags::PRESENT | pml4_flags, GuestAddress(0x1000))
            .unwrap();
        memory.write_obj(pdpt, GuestAddress(0x2000)).unwrap();
        memory.write_obj(pd, GuestAddress(0x3000)).unwrap();
        memory
    }

    #[test]
    fn tables_are_cleared_as_they_are_taken_whatever_the_memory_held() {
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        memory
            .write_slice(&vec![0xFF; 1 << 20], GuestAddress(0))
            .unwrap();
        let mut frames = FrameAllocator::new(0x1000, 0x80000);
        let mut tables = PageTableBuilder::new(&memory, &mut frames).unwrap();
        tables
            .map_range(&mut frames, 0x40_0000, 0x9_0000, 2, flags::WRITABLE)
            .unwrap();
        let root = tables.root();
        assert_eq!(translate(&memory, root, 0x40_1234, READ), Ok(0x9_1234));
        // Stale entries of the 0xFF memory would map, or fault on reserved bits, elsewhere.
        assert!(translate(&memory, root, 0x60_0000, READ).is_err());
        assert!(translate(&memory, root, 0x8000_0000, READ).is_err());
    }

    #[test]
    fn large_pages_translate_and_reserved_bits_make_them_absent() {
        let table = 0x3000 | flags::PRESENT;
        let large = 0x20_0000 | flags::PRESENT | flags::HUGE;
        let memory = tables(0, table, large);
        assert_eq!(translate(&memory, 0x1000, 0x1234, READ), Ok(0x20_1234));
        // The PAT bit of a large page is no reserved bit.
        let memory = tables(0, table, large | 1 << 12);
        assert_eq!(translate(&memory, 0x1000, 0x1234, READ), Ok(0x20_1234));
        for bad in [
            tables(0, table, large | 1 << 13),
            tables(0, table, large | 1 << 20),
            tables(0, 0x4000_0000 | flags::PRESENT | flags::HUGE | 1 << 13, 0),
            tables(flags::HUGE, table, large),
        ] {
            assert_eq!(
                translate(&bad, 0x1000, 0x1234, READ),
                Err(WalkError::NotMapped(0x1234))
            );
        }
        let gib = tables(0, 0x4000_0000 | flags::PRESENT | flags::HUGE, 0);
        assert_eq!(translate(&gib, 0x1000, 0x1234, READ), Ok(0x4000_1234));
    }
}
