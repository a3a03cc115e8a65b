//! The ACPI tables a PC kernel expects to find: RSDP, XSDT, MADT and FADT, built with the
//! rust-vmm `acpi_tables` crate. Only for kernels that unwrap `rsdp_addr`; off by default.

use acpi_tables::Aml;
use acpi_tables::fadt::FADTBuilder;
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;

/// Where the tables go: the BIOS read-only area, where kernels look for an RSDP.
pub(crate) const ACPI_BASE: u64 = 0xE_0000;

/// Where the RSDP goes: 16-byte aligned in the BIOS area, as a BIOS places it, and strictly
/// above 0xE0000 (the `bootloader` crate's test kernels check `rsdp > 0xE0000`).
pub(crate) const RSDP_ADDRESS: u64 = 0xF_0000;
const _: () = assert!(RSDP_ADDRESS > ACPI_BASE && RSDP_ADDRESS.is_multiple_of(16));

/// The end of the BIOS area the tables live in; reserved in the memory map.
pub(crate) const ACPI_END: u64 = 0x10_0000;

const OEM_ID: [u8; 6] = *b"MOTE  ";
const OEM_TABLE_ID: [u8; 8] = *b"MOTEVMM ";
const OEM_REVISION: u32 = 1;
/// The local APIC's MMIO page, as the MADT names it.
pub(crate) const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
/// The I/O APIC's MMIO page, as the MADT names it.
pub(crate) const IO_APIC_ADDRESS: u32 = 0xFEC0_0000;
/// The size of each APIC's MMIO range.
const APIC_MMIO_SIZE: u64 = 0x1000;

/// The MMIO ranges the MADT names (`start`, `end`): reserved in the memory map, read from here
/// so that the map and the MADT never disagree.
pub(crate) fn madt_mmio() -> [(u64, u64); 2] {
    [IO_APIC_ADDRESS, LOCAL_APIC_ADDRESS].map(|base| {
        let base = u64::from(base);
        (base, base + APIC_MMIO_SIZE)
    })
}

/// FADT flag: hardware-reduced ACPI (no PM timer, no SCI): mote emulates no ACPI hardware.
const HW_REDUCED_ACPI: u32 = 1 << 20;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The tables, laid out from [`ACPI_BASE`]: MADT, FADT and the XSDT listing them, then the
/// RSDP at [`RSDP_ADDRESS`].
pub(crate) fn tables() -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LOCAL_APIC_ADDRESS),
    );
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    madt.add_structure(IoApic::new(0, IO_APIC_ADDRESS, 0));
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    fadt.flags = HW_REDUCED_ACPI.into();
    let fadt = fadt.finalize();

    let madt_bytes = bytes(&madt);
    let fadt_bytes = bytes(&fadt);
    let madt_address = ACPI_BASE;
    let fadt_address = madt_address + align8(madt_bytes.len() as u64);
    let xsdt_address = fadt_address + align8(fadt_bytes.len() as u64);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(madt_address);
    xsdt.add_entry(fadt_address);
    let rsdp = Rsdp::new(OEM_ID, xsdt_address);

    let mut out = Vec::new();
    for (address, table) in [
        (madt_address, madt_bytes),
        (fadt_address, fadt_bytes),
        (xsdt_address, bytes(&xsdt)),
        (RSDP_ADDRESS, bytes(&rsdp)),
    ] {
        out.resize((address - ACPI_BASE) as usize, 0);
        out.extend_from_slice(&table);
    }
    out
}

fn align8(value: u64) -> u64 {
    value.next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_rsdp_leads_to_an_xsdt_listing_madt_and_fadt_all_checksummed() {
        let tables = tables();
        assert!((tables.len() as u64) < ACPI_END - ACPI_BASE);
        let rsdp = &tables[(RSDP_ADDRESS - ACPI_BASE) as usize..][..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ revision");
        assert_eq!(checksum(&rsdp[..20]), 0);
        assert_eq!(checksum(rsdp), 0);
        let at = |address: u64| (address - ACPI_BASE) as usize;
        let xsdt_address = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = &tables[at(xsdt_address)..];
        assert_eq!(&xsdt[..4], b"XSDT");
        let xsdt = &xsdt[..u32_at(xsdt, 4) as usize];
        assert_eq!(checksum(xsdt), 0);
        let mut signatures = Vec::new();
        for entry in xsdt[36..].chunks(8) {
            let address = u64::from_le_bytes(entry.try_into().unwrap());
            let table = &tables[at(address)..];
            let table = &table[..u32_at(table, 4) as usize];
            assert_eq!(checksum(table), 0, "{:?}", &table[..4]);
            signatures.push(table[..4].to_vec());
        }
        assert_eq!(signatures, [b"APIC".to_vec(), b"FACP".to_vec()]);
    }
}
