//! Booted with firmware (`--acpi`): the memory map has the shape a PC BIOS gives, which the
//! real bootloader's check_boot_info kernels count on (more than 4 regions). It is sorted and
//! non-overlapping; conventional memory below the EBDA is Usable (more than 16 frames); the
//! EBDA, the VGA window and the BIOS area up to 1 MiB are reserved (`UnknownBios(2)`, e820
//! type 2); so is the MMIO page of every APIC the MADT names, found by walking RSDP, XSDT and
//! MADT through the physical-memory map. No Usable region touches any of them.
#![no_std]
#![no_main]

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

const RESERVED: MemoryRegionKind = MemoryRegionKind::UnknownBios(2);

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Fails unless `[start, end)` lies wholly in one reserved region and in no Usable one.
fn reserved(regions: &[MemoryRegion], what: &str, start: u64, end: u64) {
    let inside = regions
        .iter()
        .any(|r| r.kind == RESERVED && r.start <= start && end <= r.end);
    check!(
        inside,
        "{what} ({start:#x}..{end:#x}) is not inside a reserved (UnknownBios(2)) region"
    );
    if let Some((from, to)) =
        conformance::overlapping(regions, MemoryRegionKind::Usable, start, end - start)
    {
        conformance::fail(format_args!(
            "{what} ({start:#x}..{end:#x}) overlaps the Usable region {from:#x}..{to:#x}"
        ));
    }
}

/// The ACPI table at `phys`: all of its bytes, by the length in its header.
fn table(map: &PhysMap, phys: u64) -> &'static [u8] {
    // SAFETY: ACPI tables are memory, which the map covers; nothing writes them.
    let header = unsafe { map.bytes(phys, 36) };
    let len = u32_at(header, 4) as usize;
    check!(len >= 36, "the table at {phys:#x} is {len} bytes long");
    // SAFETY: as above, for the length the header gives.
    unsafe { map.bytes(phys, len) }
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("pc_memory_map");
    conformance::install_idt();
    let map = conformance::physical_memory_map(boot_info);
    let regions = &boot_info.memory_regions;
    conformance::print_memory_map(regions);
    check!(
        regions.len() > 4,
        "{} memory regions; a PC's map has more than 4",
        regions.len()
    );
    for pair in regions.windows(2) {
        check!(
            pair[0].end <= pair[1].start,
            "regions {:#x}..{:#x} and {:#x}..{:#x} overlap or are out of order",
            pair[0].start,
            pair[0].end,
            pair[1].start,
            pair[1].end
        );
    }

    // Conventional memory, then the holes a PC leaves below 1 MiB.
    let low_usable: u64 = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable && r.start < 0x9_FC00)
        .map(|r| (r.end.min(0x9_FC00) - r.start) / PAGE)
        .sum();
    check!(
        low_usable > 16,
        "only {low_usable} Usable frames below the EBDA"
    );
    reserved(regions, "the EBDA", 0x9_FC00, 0xA_0000);
    reserved(regions, "the VGA window", 0xA_0000, 0xC_0000);
    reserved(regions, "the BIOS area", 0xC_0000, 0x10_0000);

    // Every APIC the MADT names has its MMIO page reserved.
    let Some(&rsdp) = boot_info.rsdp_addr.as_ref() else {
        conformance::fail(format_args!(
            "rsdp_addr is None: boot with firmware (--acpi)"
        ))
    };
    // SAFETY: the RSDP is memory below 1 MiB, which the map covers.
    let rsdp = unsafe { map.bytes(rsdp, 36) };
    let xsdt = table(&map, u64_at(rsdp, 24));
    check_eq!(&xsdt[0..4], b"XSDT", "the XSDT's signature");
    let madt = (36..xsdt.len())
        .step_by(8)
        .map(|at| table(&map, u64_at(xsdt, at)))
        .find(|t| &t[0..4] == b"APIC");
    let Some(madt) = madt else {
        conformance::fail(format_args!("the XSDT lists no MADT"))
    };
    let local = u64::from(u32_at(madt, 36));
    println!("MADT: local APIC at {local:#x}");
    reserved(regions, "the local APIC", local, local + PAGE);
    // An I/O APIC is named only when the VM has one (`--irqchip`); whatever is named is reserved.
    let mut at = 44;
    while at + 2 <= madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        check!(len >= 2, "a MADT structure of length {len}");
        if kind == 1 {
            let io_apic = u64::from(u32_at(madt, at + 4));
            println!("MADT: I/O APIC at {io_apic:#x}");
            reserved(regions, "an I/O APIC", io_apic, io_apic + PAGE);
        }
        at += len;
    }
    conformance::pass()
}
