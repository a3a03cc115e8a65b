//! Fuzzes mote-boot's ELF and `.bootloader-config` loader with arbitrary kernel files.
//!
//! `mote run` hands any file it is given to [`PreparedImage::new`], so every input must either
//! be refused with a `BootError` or load into guest memory in a layout the host and the guest
//! can rely on. A panic, or a broken invariant below, is a bug in mote-boot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mote_boot::paging::{self, Access, PAGE_SIZE};
use mote_boot::{LoadOptions, LoadedGuest, PreparedImage};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest memory for each load: above mote's minimum, and small so that each run is cheap and
/// the loader's out-of-memory paths are reachable.
const MEMORY_SIZE: u64 = 4 * 1024 * 1024;

fuzz_target!(|bytes: &[u8]| {
    let Ok(image) = PreparedImage::new(bytes.to_vec()) else {
        return;
    };
    // Fresh anonymous memory is zero-filled, as `load` requires.
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY_SIZE as usize)])
        .expect("cannot map 4 MiB of guest memory");
    // No ramdisk and no TSC frequency: this target fuzzes the kernel file alone.
    if let Ok(guest) = image.load(&memory, &LoadOptions::default()) {
        check_invariants(&memory, &guest);
    }
});

/// What must hold after every successful load, whatever the kernel file said.
fn check_invariants(memory: &GuestMemoryMmap, guest: &LoadedGuest) {
    // The memory map covers all of memory, in order, without gaps or overlaps.
    let regions = &guest.regions;
    assert!(!regions.is_empty(), "empty memory map");
    assert_eq!(
        regions[0].start, 0,
        "memory map does not start at 0: {regions:?}"
    );
    assert_eq!(
        regions[regions.len() - 1].end,
        MEMORY_SIZE,
        "memory map does not end at the memory size: {regions:?}"
    );
    for region in regions {
        assert!(
            region.start < region.end,
            "empty or reversed region: {regions:?}"
        );
    }
    for pair in regions.windows(2) {
        assert_eq!(
            pair[0].end, pair[1].start,
            "memory map not contiguous: {regions:?}"
        );
    }

    // The page tables the vCPU starts on lie inside guest memory.
    let cr3 = guest.vcpu.cr3;
    assert!(
        cr3.is_multiple_of(PAGE_SIZE) && cr3 + PAGE_SIZE <= MEMORY_SIZE,
        "cr3 {cr3:#x} outside guest memory"
    );

    // The kernel finds BootInfo, writable, through those tables.
    let write = Access {
        write: true,
        user: false,
    };
    match paging::translate(memory, cr3, guest.boot_info_address, write) {
        Ok(physical) => assert!(
            physical < MEMORY_SIZE,
            "BootInfo {:#x} maps to {physical:#x}, outside guest memory",
            guest.boot_info_address
        ),
        Err(error) => panic!("BootInfo does not translate: {error}"),
    }
}
