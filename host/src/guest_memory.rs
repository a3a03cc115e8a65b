//! Reading guest memory on a guest's behalf, through the guest's own page tables.
//!
//! Every address here comes from the guest. Nothing is trusted: ranges are checked for overflow
//! first, then translated page by page, and each physical chunk is read through `vm-memory`,
//! which refuses anything outside guest RAM.

use mote_abi::HypercallError;
use mote_boot::paging::{Access, PAGE_SIZE, translate};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::ram::{GuestRam, HostWrites};

/// The guest's address space as a hypercall sees it: its page tables and its privilege.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddressSpace {
    /// The guest's CR3.
    pub cr3: u64,
    /// The caller runs at CPL3: every level must allow USER access.
    pub user: bool,
}

/// Splits `address..address + len` into per-page chunks and gives each chunk's guest-physical
/// address and its offset in the range to `each`. Stops at the first error.
fn for_each_page(
    ram: &GuestRam,
    space: AddressSpace,
    write: bool,
    address: u64,
    len: u64,
    mut each: impl FnMut(u64, usize, usize) -> Result<(), HypercallError>,
) -> Result<(), HypercallError> {
    let end = address.checked_add(len).ok_or(HypercallError::BadAddress)?;
    let access = Access {
        write,
        user: space.user,
    };
    let mut virt = address;
    while virt < end {
        let chunk = (PAGE_SIZE - virt % PAGE_SIZE).min(end - virt) as usize;
        let physical =
            translate(ram, space.cr3, virt, access).map_err(|_| HypercallError::BadAddress)?;
        each(physical, (virt - address) as usize, chunk)?;
        virt += chunk as u64;
    }
    Ok(())
}

/// Appends `len` bytes at guest-virtual `address` to `out`. All or nothing: on error `out` is
/// left as it was.
pub(crate) fn read_virtual(
    ram: &GuestRam,
    space: AddressSpace,
    address: u64,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<(), HypercallError> {
    let start_len = out.len();
    let result = for_each_page(ram, space, false, address, len, |physical, _, chunk| {
        let at = out.len();
        out.resize(at + chunk, 0);
        ram.read_slice(&mut out[at..], GuestAddress(physical))
            .map_err(|_| HypercallError::BadAddress)
    });
    if result.is_err() {
        out.truncate(start_len);
    }
    result
}

/// Writes `bytes` at guest-virtual `address`, which must be writable by the caller. The whole
/// range is checked before the first byte is written. Each guest-physical range written is
/// recorded in `written`.
pub(crate) fn write_virtual(
    ram: &GuestRam,
    space: AddressSpace,
    address: u64,
    bytes: &[u8],
    written: &mut HostWrites,
) -> Result<(), HypercallError> {
    // Translate everything first, then write exactly where the translation said: writing may
    // change the guest's page tables (a buffer can overlap them), but not where this call writes.
    let mut chunks = Vec::new();
    for_each_page(
        ram,
        space,
        true,
        address,
        bytes.len() as u64,
        |physical, offset, chunk| {
            let in_ram =
                ram.check_range(GuestAddress(physical), chunk, vm_memory::Permissions::Write);
            if !in_ram {
                return Err(HypercallError::BadAddress);
            }
            chunks.push((physical, offset, chunk));
            Ok(())
        },
    )?;
    for (physical, offset, chunk) in chunks {
        written.record(physical, chunk as u64);
        ram.write_slice(&bytes[offset..offset + chunk], GuestAddress(physical))
            .map_err(|_| HypercallError::BadAddress)?;
    }
    Ok(())
}

/// Reads guest-virtual memory for a debugger, into `out`, as far as it is mapped: returns how
/// many bytes were read. Any mapped page can be read, whatever its privilege.
pub(crate) fn debugger_read(ram: &GuestRam, cr3: u64, address: u64, out: &mut [u8]) -> usize {
    let mut done = 0;
    while done < out.len() {
        let Some(virt) = address.checked_add(done as u64) else {
            break;
        };
        let chunk = (PAGE_SIZE - virt % PAGE_SIZE).min((out.len() - done) as u64) as usize;
        let Ok(physical) = translate(ram, cr3, virt, DEBUGGER) else {
            break;
        };
        if ram
            .read_slice(&mut out[done..done + chunk], GuestAddress(physical))
            .is_err()
        {
            break;
        }
        done += chunk;
    }
    done
}

/// Writes guest-virtual memory for a debugger: read-only pages too (a breakpoint's patch goes
/// into code), through the guest-physical address each page maps to. All or nothing: the whole
/// range is translated before the first byte is written. Each guest-physical range written is
/// recorded in `written`.
pub(crate) fn debugger_write(
    ram: &GuestRam,
    cr3: u64,
    address: u64,
    bytes: &[u8],
    written: &mut HostWrites,
) -> Result<(), HypercallError> {
    let end = address
        .checked_add(bytes.len() as u64)
        .ok_or(HypercallError::BadAddress)?;
    let mut chunks = Vec::new();
    let mut virt = address;
    while virt < end {
        let chunk = (PAGE_SIZE - virt % PAGE_SIZE).min(end - virt) as usize;
        let physical =
            translate(ram, cr3, virt, DEBUGGER).map_err(|_| HypercallError::BadAddress)?;
        if !ram.check_range(GuestAddress(physical), chunk, vm_memory::Permissions::Write) {
            return Err(HypercallError::BadAddress);
        }
        chunks.push((physical, (virt - address) as usize, chunk));
        virt += chunk as u64;
    }
    for (physical, offset, chunk) in chunks {
        written.record(physical, chunk as u64);
        ram.write_slice(&bytes[offset..offset + chunk], GuestAddress(physical))
            .map_err(|_| HypercallError::BadAddress)?;
    }
    Ok(())
}

/// A debugger's access: a read by the kernel, so that every mapped page is reachable.
const DEBUGGER: Access = Access {
    write: false,
    user: false,
};

#[cfg(test)]
mod tests {
    use super::*;
    use mote_boot::paging::{FrameAllocator, PageTableBuilder, flags};

    /// 1 MiB of RAM with one page mapped at 0x40_0000 -> 0x8_0000 holding "0123...".
    fn setup() -> (GuestRam, AddressSpace) {
        let ram = GuestRam::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut frames = FrameAllocator::new(0x1_0000, 0x2_0000);
        let mut tables = PageTableBuilder::new(&ram, &mut frames).unwrap();
        tables
            .map_page(&mut frames, 0x40_0000, 0x8_0000, flags::NO_EXECUTE)
            .unwrap();
        tables
            .map_page(&mut frames, 0x40_1000, 0x9_0000, flags::USER)
            .unwrap();
        let text: Vec<u8> = (0..PAGE_SIZE).map(|i| b'0' + (i % 10) as u8).collect();
        ram.write_slice(&text, GuestAddress(0x8_0000)).unwrap();
        ram.write_slice(b"next page", GuestAddress(0x9_0000))
            .unwrap();
        let space = AddressSpace {
            cr3: tables.root(),
            user: false,
        };
        (ram, space)
    }

    #[test]
    fn reads_across_pages() {
        let (ram, space) = setup();
        let mut out = b"before:".to_vec();
        read_virtual(&ram, space, 0x40_0FFE, 6, &mut out).unwrap();
        assert_eq!(out, b"before:45next");
    }

    #[test]
    fn unmapped_overflowing_and_noncanonical_ranges_fail_and_leave_output_alone() {
        let (ram, space) = setup();
        let mut out = b"kept".to_vec();
        for (address, len) in [
            (0x40_2000, 1),             // unmapped
            (0x40_1FFF, 2),             // runs into an unmapped page
            (0x40_0000, u64::MAX),      // overflows
            (u64::MAX - 1, 4),          // overflows
            (0x8000_0000_0000_0000, 1), // not canonical
        ] {
            assert_eq!(
                read_virtual(&ram, space, address, len, &mut out),
                Err(HypercallError::BadAddress),
                "{address:#x}+{len}"
            );
            assert_eq!(out, b"kept");
        }
        read_virtual(&ram, space, 0x40_0000, 0, &mut out).unwrap();
        assert_eq!(out, b"kept");
    }

    #[test]
    fn writes_need_writable_pages_and_are_all_or_nothing() {
        let (ram, space) = setup();
        // 0x40_0000 is read-only; 0x40_1000 is writable (USER implies nothing about W).
        assert_eq!(
            write_virtual(&ram, space, 0x40_0000, b"x", &mut HostWrites::default()),
            Err(HypercallError::BadAddress)
        );
        let ram_rw = GuestRam::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut frames = FrameAllocator::new(0x1_0000, 0x2_0000);
        let mut tables = PageTableBuilder::new(&ram_rw, &mut frames).unwrap();
        tables
            .map_page(&mut frames, 0x40_0000, 0x8_0000, flags::WRITABLE)
            .unwrap();
        let space = AddressSpace {
            cr3: tables.root(),
            user: false,
        };
        let mut written = HostWrites::default();
        write_virtual(&ram_rw, space, 0x40_0FFE, b"ab", &mut written).unwrap();
        assert_eq!(written.take(), vec![0x8_0000..0x8_1000]);
        // Runs into the unmapped next page: nothing may be written.
        assert_eq!(
            write_virtual(&ram_rw, space, 0x40_0FFC, b"wxyz12", &mut written),
            Err(HypercallError::BadAddress)
        );
        let mut out = Vec::new();
        read_virtual(&ram_rw, space, 0x40_0FFC, 4, &mut out).unwrap();
        assert_eq!(out, b"\0\0ab");
    }

    #[test]
    fn user_callers_need_user_pages() {
        let (ram, space) = setup();
        let user = AddressSpace {
            user: true,
            ..space
        };
        let mut out = Vec::new();
        assert_eq!(
            read_virtual(&ram, user, 0x40_0000, 1, &mut out),
            Err(HypercallError::BadAddress)
        );
        read_virtual(&ram, user, 0x40_1000, 4, &mut out).unwrap();
        assert_eq!(out, b"next");
    }

    #[test]
    fn a_debugger_reads_as_far_as_mapped_and_writes_read_only_pages() {
        let (ram, space) = setup();
        let mut out = [0u8; 8];
        assert_eq!(debugger_read(&ram, space.cr3, 0x40_1FFC, &mut out), 8 - 4);
        assert_eq!(&out[..4], b"\0\0\0\0");
        assert_eq!(debugger_read(&ram, space.cr3, 0x40_0FFE, &mut out), 8);
        assert_eq!(&out, b"45next p");
        assert_eq!(debugger_read(&ram, space.cr3, 0x40_2000, &mut out), 0);
        // 0x40_0000 is read-only to the guest.
        let mut written = HostWrites::default();
        debugger_write(&ram, space.cr3, 0x40_0001, &[0xCC], &mut written).unwrap();
        assert_eq!(written.take(), vec![0x8_0000..0x8_1000]);
        debugger_read(&ram, space.cr3, 0x40_0000, &mut out[..3]);
        assert_eq!(&out[..3], b"0\xCC2");
        assert_eq!(
            debugger_write(&ram, space.cr3, 0x40_1FFF, b"ab", &mut written),
            Err(HypercallError::BadAddress)
        );
        assert!(written.take().is_empty());
        assert_eq!(
            debugger_write(&ram, space.cr3, u64::MAX, b"ab", &mut written),
            Err(HypercallError::BadAddress)
        );
    }

    #[test]
    fn page_tables_pointing_outside_ram_are_refused() {
        let (ram, space) = setup();
        // Point the mapped leaf at a frame far beyond RAM, as a hostile guest could.
        let mut out = Vec::new();
        let bad = AddressSpace {
            cr3: 0x7FFF_0000_0000,
            ..space
        };
        assert_eq!(
            read_virtual(&ram, bad, 0x40_0000, 1, &mut out),
            Err(HypercallError::BadAddress)
        );
    }
}
