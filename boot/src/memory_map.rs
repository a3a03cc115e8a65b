//! The memory map handed to the kernel: mote's minimal one, or (with firmware, `LoadOptions::acpi`)
//! the layout a PC BIOS reports, with the low-memory holes and the APIC ranges reserved.

use crate::acpi;
use crate::boot_info::{MemoryRegion, RegionKind};

/// e820 type 2: reserved. The `bootloader` crate's BIOS path hands every non-usable e820 entry
/// on as `UnknownBios(type)`.
pub(crate) const RESERVED: RegionKind = RegionKind::UnknownBios(2);

/// The extended BIOS data area: the last KiB of conventional memory, as QEMU's BIOS reserves it.
pub(crate) const EBDA: (u64, u64) = (0x9_FC00, 0xA_0000);
/// The legacy VGA window (video memory, MMIO on a PC).
pub(crate) const VGA: (u64, u64) = (0xA_0000, 0xC_0000);
/// Option ROMs and the system BIOS; the ACPI tables live at its top ([`acpi::ACPI_BASE`]).
pub(crate) const BIOS: (u64, u64) = (0xC_0000, acpi::ACPI_END);
const _: () = assert!(acpi::ACPI_BASE >= BIOS.0 && acpi::ACPI_END == BIOS.1);

/// The ranges a PC reserves: the low-memory ones, then the MMIO the MADT names (of a VM with
/// or without KVM's interrupt controllers, `irqchip`). Sorted.
pub(crate) fn pc_reserved(irqchip: bool) -> Vec<(u64, u64)> {
    let mut ranges = vec![EBDA, VGA, BIOS];
    ranges.extend(acpi::madt_mmio(irqchip));
    ranges.sort_unstable();
    ranges
}

/// Where the frame allocator must stop so that none of mote's frames lands in a reserved range
/// above `start` (only the APIC ranges lie that high, above any memory mote gives a guest).
pub(crate) fn frames_end(memory_end: u64, start: u64, pc: bool, irqchip: bool) -> u64 {
    if !pc {
        return memory_end;
    }
    pc_reserved(irqchip)
        .iter()
        .filter(|&&(from, _)| from >= start)
        .map(|&(from, _)| from)
        .fold(memory_end, u64::min)
}

/// The memory map: `[0, low_end)` Usable, mote's frames `[frames_start, used_end)` Bootloader,
/// the rest of `memory_size` Usable; with `pc`, the PC's reserved ranges
/// ([`pc_reserved`]) carved out of whatever Usable memory they overlap and listed as reserved.
/// Sorted, non-overlapping; Usable regions never overlap a reserved range.
pub(crate) fn regions(
    memory_size: u64,
    frames_start: u64,
    used_end: u64,
    pc: bool,
    irqchip: bool,
) -> Vec<MemoryRegion> {
    let mut base = vec![
        MemoryRegion {
            start: 0,
            end: frames_start.min(memory_size),
            kind: RegionKind::Usable,
        },
        MemoryRegion {
            start: frames_start,
            end: used_end,
            kind: RegionKind::Bootloader,
        },
        MemoryRegion {
            start: used_end,
            end: memory_size,
            kind: RegionKind::Usable,
        },
    ];
    base.retain(|r| r.start < r.end);
    if !pc {
        return base;
    }
    let reserved = pc_reserved(irqchip);
    let mut regions = Vec::new();
    for region in base {
        if region.kind != RegionKind::Usable {
            regions.push(region);
            continue;
        }
        // What is left of the region once every reserved range is taken out of it.
        let mut at = region.start;
        for &(from, to) in &reserved {
            if to <= at || from >= region.end {
                continue;
            }
            if from > at {
                regions.push(MemoryRegion {
                    start: at,
                    end: from,
                    kind: RegionKind::Usable,
                });
            }
            at = at.max(to);
        }
        if at < region.end {
            regions.push(MemoryRegion {
                start: at,
                end: region.end,
                kind: RegionKind::Usable,
            });
        }
    }
    regions.extend(reserved.iter().map(|&(start, end)| MemoryRegion {
        start,
        end,
        kind: RESERVED,
    }));
    regions.sort_unstable_by_key(|r| r.start);
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn assert_sorted_and_disjoint(regions: &[MemoryRegion]) {
        for r in regions {
            assert!(r.start < r.end, "{r:?} is empty");
        }
        for pair in regions.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "{pair:?} overlap or are out of order"
            );
        }
    }

    #[test]
    fn without_firmware_the_map_is_low_memory_mote_and_the_rest() {
        let regions = regions(8 * MIB, MIB, 2 * MIB, false, false);
        assert_eq!(
            regions,
            [
                MemoryRegion {
                    start: 0,
                    end: MIB,
                    kind: RegionKind::Usable
                },
                MemoryRegion {
                    start: MIB,
                    end: 2 * MIB,
                    kind: RegionKind::Bootloader
                },
                MemoryRegion {
                    start: 2 * MIB,
                    end: 8 * MIB,
                    kind: RegionKind::Usable
                },
            ]
        );
    }

    #[test]
    fn a_pc_map_reserves_the_ebda_vga_bios_and_apic_ranges() {
        let regions = regions(8 * MIB, MIB, 2 * MIB, true, true);
        assert_sorted_and_disjoint(&regions);
        let spans: Vec<(u64, u64, RegionKind)> =
            regions.iter().map(|r| (r.start, r.end, r.kind)).collect();
        assert_eq!(
            spans,
            [
                (0, 0x9_FC00, RegionKind::Usable),
                (0x9_FC00, 0xA_0000, RESERVED),
                (0xA_0000, 0xC_0000, RESERVED),
                (0xC_0000, 0x10_0000, RESERVED),
                (MIB, 2 * MIB, RegionKind::Bootloader),
                (2 * MIB, 8 * MIB, RegionKind::Usable),
                (0xFEC0_0000, 0xFEC0_1000, RESERVED),
                (0xFEE0_0000, 0xFEE0_1000, RESERVED),
            ]
        );
        // What the real bootloader's check_boot_info kernels assert.
        assert!(regions.len() > 4);
    }

    #[test]
    fn usable_memory_never_overlaps_a_reserved_range() {
        // Even memory that reaches past the APICs (more than mote gives a guest today).
        let regions = regions(4096 * MIB, MIB, 3 * MIB, true, true);
        assert_sorted_and_disjoint(&regions);
        for (from, to) in pc_reserved(true) {
            for r in regions.iter().filter(|r| r.kind == RegionKind::Usable) {
                assert!(
                    r.end <= from || r.start >= to,
                    "{r:?} overlaps {from:#x}..{to:#x}"
                );
            }
            assert!(
                regions
                    .iter()
                    .any(|r| (r.start, r.end, r.kind) == (from, to, RESERVED))
            );
        }
        // RAM between and above the APIC ranges stays Usable.
        let usable = |at: u64| {
            regions
                .iter()
                .any(|r| r.kind == RegionKind::Usable && (r.start..r.end).contains(&at))
        };
        assert!(usable(0xFED0_0000));
        assert!(usable(0xFFFF_F000));
        assert!(!usable(0xFEE0_0000));
    }

    #[test]
    fn mote_frames_stop_below_the_apic_ranges_only_with_firmware() {
        assert_eq!(frames_end(4096 * MIB, MIB, false, true), 4096 * MIB);
        assert_eq!(frames_end(4096 * MIB, MIB, true, true), 0xFEC0_0000);
        // Without the irqchip the MADT names no I/O APIC: only the local APIC's page is held.
        assert_eq!(frames_end(4096 * MIB, MIB, true, false), 0xFEE0_0000);
        assert_eq!(frames_end(8 * MIB, MIB, true, true), 8 * MIB);
    }

    #[test]
    fn the_apic_ranges_are_the_ones_the_madt_names() {
        for irqchip in [false, true] {
            let tables = acpi::tables(irqchip);
            let madt = &tables[..u32::from_le_bytes(tables[4..8].try_into().unwrap()) as usize];
            assert_eq!(&madt[..4], b"APIC");
            let local = u64::from(u32::from_le_bytes(madt[36..40].try_into().unwrap()));
            let mut named = vec![local];
            // Interrupt controller structures: type, length, ...; type 1 is an I/O APIC, its
            // address at byte 4.
            let mut at = 44;
            while at < madt.len() {
                let (kind, len) = (madt[at], madt[at + 1] as usize);
                if kind == 1 {
                    named.push(u64::from(u32::from_le_bytes(
                        madt[at + 4..at + 8].try_into().unwrap(),
                    )));
                }
                at += len;
            }
            named.sort_unstable();
            let reserved: Vec<u64> = acpi::madt_mmio(irqchip)
                .iter()
                .map(|&(start, _)| start)
                .collect();
            assert_eq!(named, reserved, "irqchip: {irqchip}");
        }
    }
}
