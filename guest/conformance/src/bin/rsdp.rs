//! Booted with ACPI: `rsdp_addr` is the physical address of an ACPI 2.0 RSDP in the BIOS area
//! (0xE0000..0x100000, where the real bootloader's BIOS path finds it), with valid checksums,
//! pointing at an XSDT that lists a MADT ("APIC") and a FADT ("FACP"). The tables are read
//! through the physical-memory map, which this kernel asks for, and none of them may lie in
//! a Usable region (the kernel would reuse those frames).
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{PhysMap, check, check_eq, println};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

/// The sum of the bytes, which a valid ACPI checksum makes 0.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &b| sum.wrapping_add(b))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Fails unless `[phys, phys + len)` is clear of every Usable region.
fn not_usable(regions: &[MemoryRegion], what: &str, phys: u64, len: u64) {
    if let Some((start, end)) =
        conformance::overlapping(regions, MemoryRegionKind::Usable, phys, len)
    {
        conformance::fail(format_args!(
            "{what} at {phys:#x}..{:#x} lies in the Usable region {start:#x}..{end:#x}",
            phys + len
        ));
    }
}

/// The header of the ACPI table at `phys` (checked: signature, length, checksum) and all of
/// its bytes.
fn table(map: &PhysMap, regions: &[MemoryRegion], phys: u64) -> &'static [u8] {
    check!(phys != 0, "a table address is 0");
    // SAFETY: ACPI tables are memory, which the map covers; nothing writes them.
    let header = unsafe { map.bytes(phys, 36) };
    let signature = core::str::from_utf8(&header[0..4]).unwrap_or("????");
    let len = u32_at(header, 4) as usize;
    println!(
        "  {signature} at {phys:#x}, {len} bytes, revision {}",
        header[8]
    );
    check!(
        len >= 36,
        "table {signature} at {phys:#x} is {len} bytes long"
    );
    // SAFETY: as above, for the length the header gives.
    let bytes = unsafe { map.bytes(phys, len) };
    check_eq!(checksum(bytes), 0u8, "the checksum of table {signature}");
    not_usable(regions, signature, phys, len as u64);
    bytes
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("rsdp");
    conformance::install_idt();
    let Some(&rsdp) = boot_info.rsdp_addr.as_ref() else {
        conformance::fail(format_args!("rsdp_addr is None"))
    };
    println!("rsdp_addr {rsdp:#x}");
    check!(
        rsdp > 0xE0000 && rsdp < 0x10_0000,
        "rsdp_addr {rsdp:#x} is not above 0xE0000 and below 0x100000 (the real bootloader's \
         test kernels assert rsdp > 0xE0000, strictly)"
    );
    check!(
        rsdp.is_multiple_of(16),
        "rsdp_addr {rsdp:#x} is not 16-byte aligned"
    );
    let map = conformance::physical_memory_map(boot_info);
    let regions = &boot_info.memory_regions;

    // SAFETY: the RSDP is memory below 1 MiB, which the map covers; nothing writes it.
    let header = unsafe { map.bytes(rsdp, 20) };
    check_eq!(&header[0..8], b"RSD PTR ", "the RSDP signature");
    check_eq!(
        checksum(header),
        0u8,
        "the checksum of the RSDP's first 20 bytes"
    );
    let revision = header[15];
    check!(
        revision >= 2,
        "RSDP revision {revision}: expected ACPI 2.0 (2) or later"
    );
    // SAFETY: as above; an ACPI 2.0 RSDP is 36 bytes or more.
    let rsdp_bytes = unsafe { map.bytes(rsdp, 36) };
    let length = u32_at(rsdp_bytes, 20);
    check!(length >= 36, "RSDP length {length}");
    // SAFETY: as above, for the length the RSDP gives.
    let rsdp_bytes = unsafe { map.bytes(rsdp, length as usize) };
    check_eq!(checksum(rsdp_bytes), 0u8, "the RSDP's extended checksum");
    not_usable(regions, "the RSDP", rsdp, u64::from(length));
    let rsdt = u32_at(rsdp_bytes, 16);
    let xsdt = u64_at(rsdp_bytes, 24);
    println!("RSDP revision {revision}, RSDT {rsdt:#x}, XSDT {xsdt:#x}; tables:");
    check!(xsdt != 0, "the RSDP's XSDT address is 0");

    if rsdt != 0 {
        let rsdt = table(&map, regions, u64::from(rsdt));
        check_eq!(&rsdt[0..4], b"RSDT", "the signature at the RSDT address");
    }
    let xsdt = table(&map, regions, xsdt);
    check_eq!(&xsdt[0..4], b"XSDT", "the signature at the XSDT address");
    let entries = (xsdt.len() - 36) / 8;
    let (mut madt, mut fadt) = (false, false);
    for i in 0..entries {
        let listed = table(&map, regions, u64_at(xsdt, 36 + 8 * i));
        madt |= &listed[0..4] == b"APIC";
        fadt |= &listed[0..4] == b"FACP";
    }
    check!(madt, "the XSDT lists no MADT (APIC)");
    check!(fadt, "the XSDT lists no FADT (FACP)");
    conformance::pass()
}
