//! Guest RAM: anonymous memory for a cold run; for a snapshot, one sealed memfd that every VM
//! restored from it maps copy-on-write; and what a pool needs to put a VM's memory back.
//!
//! A VM restored from a snapshot maps the snapshot's memfd `MAP_PRIVATE`: pages the guest only
//! reads stay the snapshot's (one copy in the page cache, shared by every VM), and the first write
//! to a page, by the guest or by mote on its behalf, gives that VM a copy of its own. A pool puts
//! the snapshot's contents back into those copies ([`SnapshotMemory::copy_into`]), finding the
//! pages from KVM's dirty log ([`dirty_ranges`]) and from mote's record of its own writes
//! ([`HostWrites`]), or drops them (`madvise(MADV_DONTNEED)`, [`discard`]): the next touch maps
//! the snapshot's page again, and KVM's MMU notifier drops the VM's own mappings of them. The
//! kernel can also list a mapping's copies ([`written_ranges`]: `PAGEMAP_SCAN` (Linux 6.7) as
//! ranges, `/proc/self/pagemap` page by page where the ioctl is missing), which sees the guest's
//! writes and mote's alike: debug builds check the pool's record against it.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};

use mote_boot::paging::PAGE_SIZE;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::Error;

/// Guest RAM: one mapping starting at guest-physical 0.
pub(crate) type GuestRam = vm_memory::GuestMemoryMmap;

/// Anonymous guest RAM of `size` bytes, backed lazily (`MAP_NORESERVE`): untouched RAM costs
/// nothing.
pub(crate) fn anonymous(size: u64) -> Result<GuestRam, Error> {
    GuestRam::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|e| Error::Memory(e.to_string()))
}

/// The host address and length of guest RAM's one region.
fn region(ram: &GuestRam) -> Result<(*mut u8, u64), Error> {
    let region = ram
        .iter()
        .next()
        .ok_or_else(|| Error::Internal("guest RAM has no region".into()))?;
    let address = region
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .map_err(|e| Error::Memory(e.to_string()))?;
    Ok((address, region.len()))
}

/// A snapshot's memory: a memfd with every page the guest had at its snapshot point. Sealed
/// once the snapshot is taken, so that nothing (mote included) can change it while VMs map it.
#[derive(Debug)]
pub(crate) struct SnapshotMemory {
    file: Arc<File>,
    size: u64,
}

impl SnapshotMemory {
    /// An empty memfd of `size` bytes, and a shared mapping of it to boot the guest into.
    pub(crate) fn create(size: u64) -> Result<(Self, GuestRam), Error> {
        let memory = Self::empty(size)?;
        let ram = memory.map(libc::MAP_SHARED)?;
        Ok((memory, ram))
    }

    /// An empty memfd of `size` bytes (holes read as zero and cost nothing).
    pub(crate) fn empty(size: u64) -> Result<Self, Error> {
        let fail = |what: &str, e: io::Error| Error::Memory(format!("{what}: {e}"));
        // SAFETY: the name is a NUL-terminated string; memfd_create returns a new descriptor or
        // -1, and nothing else owns the descriptor.
        let file = unsafe {
            let fd = libc::memfd_create(
                c"mote-snapshot".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if fd < 0 {
                return Err(fail("cannot create a memfd", io::Error::last_os_error()));
            }
            File::from_raw_fd(fd)
        };
        file.set_len(size)
            .map_err(|e| fail("cannot size the snapshot's memfd", e))?;
        Ok(Self {
            file: Arc::new(file),
            size,
        })
    }

    /// Seals the memfd: its contents and size can no longer change. Every writable shared
    /// mapping of it must be gone.
    pub(crate) fn seal(&self) -> Result<(), Error> {
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS on a descriptor this value owns; it changes no memory of ours.
        if unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(Error::Memory(format!(
                "cannot seal the snapshot's memory: {}",
                io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// A copy-on-write mapping for one VM: writes stay private to it.
    pub(crate) fn map_private(&self) -> Result<GuestRam, Error> {
        self.map(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
    }

    fn map(&self, flags: i32) -> Result<GuestRam, Error> {
        let region = vm_memory::mmap::MmapRegionBuilder::new(self.size as usize)
            .with_file_offset(FileOffset::from_arc(Arc::clone(&self.file), 0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .build()
            .map_err(|e| Error::Memory(format!("cannot map the snapshot's memory: {e}")))?;
        let region = vm_memory::GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| Error::Internal("snapshot memory does not fit at address 0".into()))?;
        GuestRam::from_regions(vec![region]).map_err(|e| Error::Memory(e.to_string()))
    }

    /// The size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Reads `buffer.len()` bytes at `offset`.
    pub(crate) fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buffer, offset)
    }

    /// Copies the snapshot's contents of `ranges` (guest-physical) into `ram`, over whatever a
    /// run left there.
    pub(crate) fn copy_into(&self, ram: &GuestRam, ranges: &[Range<u64>]) -> Result<(), Error> {
        let mut buffer = Vec::new();
        for range in ranges {
            if range.end > self.size || range.start >= range.end {
                return Err(Error::Internal(format!("bad range {range:?} to restore")));
            }
            buffer.resize((range.end - range.start) as usize, 0);
            self.file
                .read_exact_at(&mut buffer, range.start)
                .and_then(|()| {
                    vm_memory::Bytes::write_slice(ram, &buffer, GuestAddress(range.start))
                        .map_err(io::Error::other)
                })
                .map_err(|e| Error::Memory(format!("cannot restore guest memory: {e}")))?;
        }
        Ok(())
    }

    /// Whether `ram` holds the snapshot's bytes over `range` (guest-physical).
    pub(crate) fn holds(&self, ram: &GuestRam, range: Range<u64>) -> Result<bool, Error> {
        let len = (range.end - range.start) as usize;
        let (mut ours, mut theirs) = (vec![0u8; len], vec![0u8; len]);
        self.file
            .read_exact_at(&mut ours, range.start)
            .map_err(|e| Error::Memory(format!("cannot read the snapshot: {e}")))?;
        vm_memory::Bytes::read_slice(ram, &mut theirs, GuestAddress(range.start))
            .map_err(|e| Error::Memory(format!("cannot read guest memory: {e}")))?;
        Ok(ours == theirs)
    }

    /// Writes `bytes` at `offset` (before sealing).
    pub(crate) fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// The ranges of the file that hold data, in order: holes (never-written pages) read as
    /// zero and need not be copied.
    pub(crate) fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        let fd = self.file.as_raw_fd();
        let mut ranges = Vec::new();
        let mut at = 0i64;
        let size = self.size as i64;
        while at < size {
            // SAFETY: lseek on a descriptor this value owns; it moves only the file offset.
            let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
            if data < 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENXIO) {
                    break; // no data past `at`
                }
                return Err(error);
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 {
                return Err(io::Error::last_os_error());
            }
            let end = hole.min(size);
            ranges.push(data as u64..end as u64);
            at = end;
        }
        Ok(ranges)
    }
}

/// Guest-physical ranges (page-aligned, ascending, coalesced) that a copy-on-write mapping of a
/// snapshot holds private copies of: every page written since the mapping was made or last
/// reset.
pub(crate) fn written_ranges(ram: &GuestRam) -> Result<Vec<Range<u64>>, Error> {
    let (address, len) = region(ram)?;
    let start = address as u64;
    let ranges = match scan_with_ioctl(start, len) {
        Some(result) => result,
        None => scan_pagemap_file(start, len),
    }
    .map_err(|e| Error::Memory(format!("cannot list the pages a run wrote: {e}")))?;
    Ok(ranges
        .into_iter()
        .map(|r| r.start - start..r.end - start)
        .collect())
}

/// Drops the private copies of `ranges` (guest-physical): the snapshot's pages show through
/// again.
pub(crate) fn discard(ram: &GuestRam, ranges: &[Range<u64>]) -> Result<(), Error> {
    let (address, len) = region(ram)?;
    for range in ranges {
        if range.end > len || range.start >= range.end {
            return Err(Error::Internal(format!("bad range {range:?} to discard")));
        }
        // SAFETY: the range lies inside guest RAM's mapping (checked above), which this VM owns;
        // MADV_DONTNEED on a private file mapping drops the private copies, and nothing in the
        // host holds a reference into guest RAM across this call.
        let result = unsafe {
            libc::madvise(
                address.add(range.start as usize).cast(),
                (range.end - range.start) as usize,
                libc::MADV_DONTNEED,
            )
        };
        if result != 0 {
            return Err(Error::Memory(format!(
                "cannot reset guest memory: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Opens `/proc/self/pagemap` now, for [`written_ranges`] to use later on a thread that a
/// seccomp filter keeps from opening files. An error shows when the ranges are asked for.
pub(crate) fn open_pagemap() {
    let _ = pagemap();
}

/// `/proc/self/pagemap`, opened once.
fn pagemap() -> io::Result<&'static File> {
    static PAGEMAP: OnceLock<Result<File, i32>> = OnceLock::new();
    match PAGEMAP.get_or_init(|| {
        File::open("/proc/self/pagemap").map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }) {
        Ok(file) => Ok(file),
        Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
    }
}

/// `struct pm_scan_arg` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct PageScan {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
pub(crate) const PAGEMAP_SCAN: libc::c_ulong =
    (3 << 30) | (96 << 16) | ((b'f' as libc::c_ulong) << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// Regions asked for per ioctl; a scan that fills them goes on where it stopped.
const SCAN_BATCH: usize = 64;

/// Lists the private (anonymous: present or swapped, not file) pages of `start..start + len`
/// with `PAGEMAP_SCAN`; `None` where the kernel lacks the ioctl.
fn scan_with_ioctl(start: u64, len: u64) -> Option<io::Result<Vec<Range<u64>>>> {
    static UNSUPPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if UNSUPPORTED.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let pagemap = match pagemap() {
        Ok(file) => file,
        Err(e) => return Some(Err(e)),
    };
    let end = start + len;
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut regions = [PageRegion::default(); SCAN_BATCH];
    let mut at = start;
    while at < end {
        let mut scan = PageScan {
            size: std::mem::size_of::<PageScan>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: SCAN_BATCH as u64,
            category_inverted: PAGE_IS_FILE,
            category_mask: PAGE_IS_FILE,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..PageScan::default()
        };
        // SAFETY: `scan` is a valid pm_scan_arg whose `vec` points at `regions`, SCAN_BATCH
        // page_region entries that outlive the call; the kernel writes at most `vec_len` of them
        // and `walk_end` in `scan`, nothing else.
        let filled = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut scan) };
        if filled < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) if ranges.is_empty() => {
                    UNSUPPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                _ => Some(Err(error)),
            };
        }
        for region in &regions[..filled as usize] {
            push_coalesced(&mut ranges, region.start..region.end);
        }
        if scan.walk_end <= at {
            return Some(Err(io::Error::other("PAGEMAP_SCAN made no progress")));
        }
        at = scan.walk_end;
    }
    Some(Ok(ranges))
}

/// The same list from `/proc/self/pagemap`, 8 bytes per page.
fn scan_pagemap_file(start: u64, len: u64) -> io::Result<Vec<Range<u64>>> {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE_OR_SHARED: u64 = 1 << 61;
    /// Pages read per system call.
    const CHUNK: u64 = 4096;
    let pagemap = pagemap()?;
    let mut ranges = Vec::new();
    let mut entries = vec![0u8; (CHUNK * 8) as usize];
    let pages = len / PAGE_SIZE;
    let mut page = 0;
    while page < pages {
        let count = CHUNK.min(pages - page);
        let bytes = &mut entries[..(count * 8) as usize];
        pagemap.read_exact_at(bytes, (start / PAGE_SIZE + page) * 8)?;
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(entry.try_into().unwrap_or_default());
            let private = entry & (PRESENT | SWAPPED) != 0
                && (entry & SWAPPED != 0 || entry & FILE_OR_SHARED == 0);
            if private {
                let address = start + (page + i as u64) * PAGE_SIZE;
                push_coalesced(&mut ranges, address..address + PAGE_SIZE);
            }
        }
        page += count;
    }
    Ok(ranges)
}

fn push_coalesced(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Pages in `ranges`.
pub(crate) fn page_count(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum()
}

/// How many ranges [`HostWrites`] holds before it first merges them.
const COMPACT_AT: usize = 1024;

/// The guest-physical pages mote itself wrote into a VM's memory during a run (input,
/// `random` results, host-call replies): KVM's dirty log sees only the guest's own writes.
#[derive(Debug, Default)]
pub(crate) struct HostWrites {
    ranges: Vec<Range<u64>>,
}

impl HostWrites {
    /// Notes a write of `len` bytes at guest-physical `address`.
    pub(crate) fn record(&mut self, address: u64, len: u64) {
        if len == 0 {
            return;
        }
        let start = address / PAGE_SIZE * PAGE_SIZE;
        let end = address.saturating_add(len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        match self.ranges.last_mut() {
            // Writes in a row (a transfer split page by page) make one range.
            Some(last) if last.end == start => last.end = end,
            _ => self.ranges.push(start..end),
        }
        // A guest making many scattered writes in one run must not grow the record without
        // bound: merged, it holds at most one range per page of guest memory.
        if self.ranges.len() >= COMPACT_AT && self.ranges.len().is_power_of_two() {
            self.ranges = union(&self.ranges, &[]);
        }
    }

    /// The pages written since the last call, sorted and coalesced.
    pub(crate) fn take(&mut self) -> Vec<Range<u64>> {
        union(&std::mem::take(&mut self.ranges), &[])
    }
}

/// The pages a KVM dirty bitmap (one bit per page, from guest-physical 0) marks, as ranges.
pub(crate) fn dirty_ranges(bitmap: &[u64]) -> Vec<Range<u64>> {
    let mut ranges = Vec::new();
    for (word_index, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let bit = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let address = (word_index as u64 * 64 + bit) * PAGE_SIZE;
            push_coalesced(&mut ranges, address..address + PAGE_SIZE);
        }
    }
    ranges
}

/// The union of two lists of sorted ranges, sorted and coalesced (overlapping or adjacent
/// ranges become one).
pub(crate) fn union(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut all: Vec<Range<u64>> = a.iter().chain(b).cloned().collect();
    all.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(all.len());
    for range in all {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn snapshot_with(pages: &[(u64, u8)]) -> SnapshotMemory {
        let (memory, ram) = SnapshotMemory::create(64 * PAGE_SIZE).unwrap();
        for &(page, value) in pages {
            ram.write_obj(value, GuestAddress(page * PAGE_SIZE))
                .unwrap();
        }
        drop(ram);
        memory.seal().unwrap();
        memory
    }

    #[test]
    fn a_private_mapping_sees_the_snapshot_and_keeps_its_writes_to_itself() {
        let memory = snapshot_with(&[(1, 0xAA)]);
        let a = memory.map_private().unwrap();
        let b = memory.map_private().unwrap();
        a.write_obj(0x55u8, GuestAddress(PAGE_SIZE)).unwrap();
        assert_eq!(a.read_obj::<u8>(GuestAddress(PAGE_SIZE)).unwrap(), 0x55);
        assert_eq!(b.read_obj::<u8>(GuestAddress(PAGE_SIZE)).unwrap(), 0xAA);
        let mut byte = [0u8];
        memory.file.read_exact_at(&mut byte, PAGE_SIZE).unwrap();
        assert_eq!(byte, [0xAA]);
    }

    #[test]
    fn sealed_memory_refuses_writes_and_shared_mappings() {
        let memory = snapshot_with(&[]);
        assert!(memory.file.write_all_at(b"x", 0).is_err());
        assert!(memory.map(libc::MAP_SHARED).is_err());
    }

    fn check_scan(scan: impl Fn(u64, u64) -> io::Result<Vec<Range<u64>>>) {
        let memory = snapshot_with(&[(3, 1), (4, 1)]);
        let ram = memory.map_private().unwrap();
        // Reads map the snapshot's pages and are not writes.
        for page in 0..10 {
            ram.read_obj::<u8>(GuestAddress(page * PAGE_SIZE)).unwrap();
        }
        for page in [2, 3, 4, 9, 63] {
            ram.write_obj(7u8, GuestAddress(page * PAGE_SIZE + 100))
                .unwrap();
        }
        let (address, len) = region(&ram).unwrap();
        let found: Vec<_> = scan(address as u64, len)
            .unwrap()
            .into_iter()
            .map(|r| (r.start - address as u64) / PAGE_SIZE..(r.end - address as u64) / PAGE_SIZE)
            .collect();
        assert_eq!(found, [2..5, 9..10, 63..64]);
    }

    #[test]
    fn the_pagemap_file_lists_written_pages() {
        check_scan(scan_pagemap_file);
    }

    #[test]
    fn pagemap_scan_lists_written_pages_where_the_kernel_has_it() {
        check_scan(|start, len| {
            scan_with_ioctl(start, len).unwrap_or_else(|| scan_pagemap_file(start, len))
        });
    }

    #[test]
    fn discarding_written_pages_brings_the_snapshot_back() {
        let memory = snapshot_with(&[(5, 0x11)]);
        let ram = memory.map_private().unwrap();
        ram.write_obj(0x22u8, GuestAddress(5 * PAGE_SIZE)).unwrap();
        ram.write_obj(0x33u8, GuestAddress(6 * PAGE_SIZE)).unwrap();
        let written = written_ranges(&ram).unwrap();
        assert_eq!(written, vec![5 * PAGE_SIZE..7 * PAGE_SIZE]);
        assert_eq!(page_count(&written), 2);
        discard(&ram, &written).unwrap();
        assert_eq!(
            ram.read_obj::<u8>(GuestAddress(5 * PAGE_SIZE)).unwrap(),
            0x11
        );
        assert_eq!(ram.read_obj::<u8>(GuestAddress(6 * PAGE_SIZE)).unwrap(), 0);
        assert_eq!(written_ranges(&ram).unwrap(), []);
    }

    #[test]
    fn data_ranges_skip_holes() {
        let memory = snapshot_with(&[(0, 1), (1, 1), (10, 1)]);
        let ranges = memory.data_ranges().unwrap();
        let pages: u64 = ranges.iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum();
        assert!(ranges.iter().all(|r| r.start % PAGE_SIZE == 0));
        assert!((3..=64).contains(&pages), "{ranges:?}");
        assert!(ranges.iter().any(|r| r.contains(&(10 * PAGE_SIZE))));
    }

    #[test]
    fn host_writes_dirty_bits_and_unions_become_page_ranges() {
        let mut writes = HostWrites::default();
        writes.record(0x5FFF, 2);
        writes.record(0x1000, 1);
        writes.record(0x2000, 0);
        writes.record(0x7000, 0x1000);
        assert_eq!(writes.take(), vec![0x1000..0x2000, 0x5000..0x8000]);
        assert_eq!(writes.take(), vec![]);
        // Many scattered writes to a few pages keep the record small.
        for i in 0..100_000u64 {
            writes.record((i % 7) * 2 * PAGE_SIZE, 8);
        }
        assert!(
            writes.ranges.len() < 2 * COMPACT_AT,
            "{}",
            writes.ranges.len()
        );
        assert_eq!(writes.take().len(), 7);
        let bitmap = [0b1011u64, 1 << 63];
        let dirty = dirty_ranges(&bitmap);
        assert_eq!(dirty, vec![0..0x2000, 0x3000..0x4000, 0x7F000..0x80000]);
        assert_eq!(
            union(&dirty, &[0x1000..0x3000, 0x90000..0x91000]),
            vec![0..0x4000, 0x7F000..0x80000, 0x90000..0x91000]
        );
    }

    #[test]
    fn copying_the_snapshot_back_restores_written_pages_in_place() {
        let memory = snapshot_with(&[(2, 0x11)]);
        let ram = memory.map_private().unwrap();
        ram.write_obj(0x22u8, GuestAddress(2 * PAGE_SIZE)).unwrap();
        ram.write_obj(0x33u8, GuestAddress(3 * PAGE_SIZE)).unwrap();
        memory
            .copy_into(&ram, std::slice::from_ref(&(2 * PAGE_SIZE..4 * PAGE_SIZE)))
            .unwrap();
        assert_eq!(
            ram.read_obj::<u8>(GuestAddress(2 * PAGE_SIZE)).unwrap(),
            0x11
        );
        assert_eq!(ram.read_obj::<u8>(GuestAddress(3 * PAGE_SIZE)).unwrap(), 0);
        // The copies stay the VM's own: nothing to fault in on the next write.
        assert_eq!(
            written_ranges(&ram).unwrap(),
            vec![2 * PAGE_SIZE..4 * PAGE_SIZE]
        );
        let beyond = 0..64 * PAGE_SIZE + 1;
        assert!(
            memory
                .copy_into(&ram, std::slice::from_ref(&beyond))
                .is_err()
        );
    }
}
