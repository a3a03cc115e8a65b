//! `mappings.physical_memory = Some(Dynamic)`: every Usable frame is really free memory. First
//! the frames the kernel is running on (its code, data, stack, BootInfo and memory map, GDT,
//! page tables, the kernel file) must all lie outside Usable regions; then one u64 is written
//! to each Usable 4 KiB frame through the physical-memory map, all are read back, and
//! BootInfo must be unchanged.
#![no_std]
#![no_main]

use core::arch::asm;

use bootloader_api::config::Mapping;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{PAGE, PhysMap, check, check_eq, println};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

static DATA: [u8; 8] = *b"readonly";
static mut BSS: [u64; 4] = [0; 4];

fn usable(regions: &[MemoryRegion], what: &str, phys: u64, len: u64) {
    if let Some((start, end)) =
        conformance::overlapping(regions, MemoryRegionKind::Usable, phys, len)
    {
        conformance::fail(format_args!(
            "{what} uses phys {phys:#x}..{:#x}, inside the Usable region {start:#x}..{end:#x}",
            phys + len
        ));
    }
}

/// Fails if a page of `[va, va + len)`, or a page table that maps it, is in a Usable frame.
fn in_use(map: &PhysMap, regions: &[MemoryRegion], what: &str, va: u64, len: u64) {
    let mut page = va & !(PAGE - 1);
    while page < va + len.max(1) {
        let walk = match map.walk(page) {
            Ok(walk) => walk,
            Err((level, entry)) => conformance::fail(format_args!(
                "{what}: {page:#x} is not mapped (level-{level} entry {entry:#x})"
            )),
        };
        usable(regions, what, walk.phys & !(PAGE - 1), PAGE);
        for &table in &walk.tables[..walk.tables_len] {
            usable(regions, "a page table", table, PAGE);
        }
        page += PAGE;
    }
}

/// What is written to the first u64 of the frame at `phys`.
fn pattern(phys: u64) -> u64 {
    phys ^ 0x5A5A_A5A5_0F0F_F0F0
}

/// Calls `each` with every 4 KiB frame wholly inside a Usable region.
fn usable_frames(regions: &[MemoryRegion], mut each: impl FnMut(u64)) {
    for r in regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
    {
        let mut frame = r.start.next_multiple_of(PAGE);
        while frame + PAGE <= r.end {
            each(frame);
            frame += PAGE;
        }
    }
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("write_usable_memory");
    conformance::install_idt();
    let map = conformance::physical_memory_map(boot_info);
    let regions = &boot_info.memory_regions;
    conformance::print_memory_map(regions);

    // What the kernel runs on.
    let info = &raw const *boot_info as u64;
    let info_len = size_of::<BootInfo>() as u64;
    in_use(&map, regions, "BootInfo", info, info_len);
    let regions_len = size_of_val::<[MemoryRegion]>(regions) as u64;
    in_use(
        &map,
        regions,
        "the memory map",
        regions.as_ptr() as u64,
        regions_len,
    );
    let (bottom, len) = (boot_info.kernel_stack_bottom, boot_info.kernel_stack_len);
    in_use(&map, regions, "the stack", bottom, len);
    in_use(
        &map,
        regions,
        "the kernel's code",
        conformance::code_address(),
        1,
    );
    in_use(
        &map,
        regions,
        "the kernel's read-only data",
        DATA.as_ptr() as u64,
        8,
    );
    in_use(
        &map,
        regions,
        "the kernel's .bss",
        &raw const BSS as u64,
        32,
    );
    let mut gdtr = [0u8; 10];
    // SAFETY: stores the GDTR in a local.
    unsafe { asm!("sgdt [{}]", in(reg) gdtr.as_mut_ptr(), options(nostack, preserves_flags)) };
    let gdt_limit = u64::from(u16::from_le_bytes([gdtr[0], gdtr[1]]));
    let gdt = u64::from_le_bytes(gdtr[2..10].try_into().unwrap());
    in_use(&map, regions, "the GDT", gdt, gdt_limit + 1);
    usable(
        regions,
        "the kernel file",
        boot_info.kernel_addr,
        boot_info.kernel_len,
    );
    println!("nothing the kernel runs on is in a Usable frame");

    // Write every Usable frame, then read them all back.
    let version = boot_info.api_version;
    let first = regions[0];
    let count = regions.len();
    let mut frames = 0u64;
    usable_frames(regions, |frame| {
        // SAFETY: a Usable frame is free memory, mapped by the physical-memory map.
        unsafe { core::ptr::write_volatile((map.offset + frame) as *mut u64, pattern(frame)) };
        frames += 1;
    });
    println!(
        "wrote {frames} Usable frames ({} KiB)",
        frames * PAGE / 1024
    );
    usable_frames(regions, |frame| {
        // SAFETY: as above.
        let read = unsafe { map.read_u64(frame) };
        check_eq!(
            read,
            pattern(frame),
            "the u64 read back from frame {frame:#x}"
        );
    });
    println!("read them all back");

    // Nothing the kernel had was in those frames.
    check_eq!(
        boot_info.api_version,
        version,
        "api_version after the writes"
    );
    check_eq!(
        boot_info.memory_regions.len(),
        count,
        "the region count after the writes"
    );
    check_eq!(
        boot_info.memory_regions[0],
        first,
        "the first region after the writes"
    );
    check!(frames > 0, "no Usable frame");
    conformance::pass()
}
