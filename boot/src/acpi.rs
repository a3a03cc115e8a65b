//! The ACPI tables a PC kernel expects to find: RSDP, XSDT, MADT and FADT, built with the
//! rust-vmm `acpi_tables` crate. Only for kernels that unwrap `rsdp_addr`; off by default.
//!
//! The MADT describes the interrupt controllers the VM really has. With KVM's in-kernel
//! irqchip: the local APIC of vCPU 0, the I/O APIC at 0xFEC00000 (GSIs 0-23) and the 8259 pair
//! (`PCAT_COMPAT`). KVM's default routing sends ISA IRQ n to I/O APIC pin n and to 8259 pin n,
//! the PIT included (IRQ0 is GSI 0), so no interrupt source override is needed: an override
//! is exactly a statement that IRQ n is not GSI n. Without the irqchip: no I/O APIC and no
//! 8259s; the local APIC address field (which the ACPI specification requires) holds the
//! architectural 0xFEE00000 and the processor entry stays, since it is how the MADT counts
//! processors, but nothing serves that address (docs/boot-protocol.md).

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
/// Where x86 puts the local APIC (the `IA32_APIC_BASE` reset value), as the MADT names it.
pub(crate) const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
/// Where KVM's in-kernel I/O APIC answers (its fixed default base), as the MADT names it.
pub(crate) const IO_APIC_ADDRESS: u32 = 0xFEC0_0000;
/// The size of each APIC's MMIO range.
const APIC_MMIO_SIZE: u64 = 0x1000;

/// The MMIO ranges the MADT of a VM with (`irqchip`) or without KVM's interrupt controllers
/// names (`start`, `end`), in address order: reserved in the memory map, read from here so
/// that the map and the MADT never disagree.
pub(crate) fn madt_mmio(irqchip: bool) -> Vec<(u64, u64)> {
    let io_apic = irqchip.then_some(IO_APIC_ADDRESS);
    io_apic
        .into_iter()
        .chain([LOCAL_APIC_ADDRESS])
        .map(|base| {
            let base = u64::from(base);
            (base, base + APIC_MMIO_SIZE)
        })
        .collect()
}

/// FADT flag: hardware-reduced ACPI (no PM timer, no SCI): mote emulates no ACPI hardware.
const HW_REDUCED_ACPI: u32 = 1 << 20;

/// MADT flag: the PC's dual 8259 pair is there too.
const PCAT_COMPAT: u32 = 1;
/// Where the MADT's flags sit: after the 36-byte header and the local APIC address.
const MADT_FLAGS_OFFSET: usize = 40;
/// Where every ACPI table's checksum byte sits.
const CHECKSUM_OFFSET: usize = 9;

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The MADT of a VM with KVM's in-kernel irqchip (`irqchip`) or without any interrupt
/// controller (see the module's docs).
fn madt(irqchip: bool) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LOCAL_APIC_ADDRESS),
    );
    madt.add_structure(ProcessorLocalApic::new(0, 0, EnabledStatus::Enabled));
    if !irqchip {
        return bytes(&madt);
    }
    madt.add_structure(IoApic::new(0, IO_APIC_ADDRESS, 0));
    let mut madt = bytes(&madt);
    // acpi_tables has no setter for the MADT's flags: set PCAT_COMPAT and fix the checksum.
    madt[MADT_FLAGS_OFFSET..MADT_FLAGS_OFFSET + 4].copy_from_slice(&PCAT_COMPAT.to_le_bytes());
    madt[CHECKSUM_OFFSET] = 0;
    let sum = madt.iter().fold(0u8, |sum, b| sum.wrapping_add(*b));
    madt[CHECKSUM_OFFSET] = sum.wrapping_neg();
    madt
}

/// The tables, laid out from [`ACPI_BASE`]: MADT, FADT and the XSDT listing them, then the
/// RSDP at [`RSDP_ADDRESS`]. `irqchip`: the VM has KVM's in-kernel interrupt controllers.
pub(crate) fn tables(irqchip: bool) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    fadt.flags = HW_REDUCED_ACPI.into();
    let fadt = fadt.finalize();

    let madt_bytes = madt(irqchip);
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
        for irqchip in [false, true] {
            rsdp_leads_to_madt_and_fadt(irqchip);
        }
    }

    /// The MADT's interrupt controller structures, as `(type, bytes)`.
    fn structures(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut found = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let (kind, len) = (madt[at], madt[at + 1] as usize);
            assert!(
                len >= 2 && at + len <= madt.len(),
                "a structure runs past the table"
            );
            found.push((kind, madt[at..at + len].to_vec()));
            at += len;
        }
        found
    }

    #[test]
    fn with_the_irqchip_the_madt_has_the_local_apic_the_io_apic_and_the_8259s() {
        let madt = madt(true);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(u32_at(&madt, 4) as usize, madt.len());
        assert_eq!(checksum(&madt), 0);
        assert_eq!(u32_at(&madt, 36), 0xFEE0_0000, "local APIC address");
        assert_eq!(u32_at(&madt, 40), 1, "PCAT_COMPAT: the 8259s are there");
        let found = structures(&madt);
        assert_eq!(found.len(), 2, "{found:?}");
        // Processor local APIC: UID 0, APIC ID 0, enabled.
        assert_eq!(found[0].0, 0);
        assert_eq!(found[0].1, [0, 8, 0, 0, 1, 0, 0, 0]);
        // I/O APIC: ID 0 at 0xFEC00000, GSIs from 0.
        assert_eq!(found[1].0, 1);
        assert_eq!(found[1].1[2], 0, "I/O APIC ID");
        assert_eq!(u32_at(&found[1].1, 4), 0xFEC0_0000);
        assert_eq!(u32_at(&found[1].1, 8), 0, "GSI base");
        // KVM routes IRQ n to GSI n: no interrupt source override (type 2).
        assert!(found.iter().all(|(kind, _)| *kind != 2));
    }

    #[test]
    fn without_the_irqchip_the_madt_has_the_processor_and_no_io_apic_or_8259s() {
        let madt = madt(false);
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(u32_at(&madt, 4) as usize, madt.len());
        assert_eq!(checksum(&madt), 0);
        // The field is required; it holds the architectural address.
        assert_eq!(u32_at(&madt, 36), 0xFEE0_0000);
        assert_eq!(u32_at(&madt, 40), 0, "no PCAT_COMPAT: no 8259s");
        let found = structures(&madt);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, [0, 8, 0, 0, 1, 0, 0, 0]);
    }

    fn rsdp_leads_to_madt_and_fadt(irqchip: bool) {
        let tables = tables(irqchip);
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
