//! `mappings.page_table_recursive = Some(Dynamic)`: PML4 entry `recursive_index` points at
//! the PML4 itself (present, writable, no-execute), so every page table can be read at a
//! fixed virtual address.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{NO_EXECUTE, PRESENT, WRITABLE, check, check_eq, println, table_index};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.page_table_recursive = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

/// Bits 12..52 of an entry.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The canonical address with these four table indices (PML4 first) and no page offset.
fn address(indices: [usize; 4]) -> u64 {
    let raw = indices
        .iter()
        .fold(0u64, |va, &index| (va << 9) | index as u64)
        << 12;
    // Sign-extend bit 47.
    (((raw << 16) as i64) >> 16) as u64
}

/// Reads the u64 at `va`, a page-table entry seen through the recursive mapping.
fn read(va: u64) -> u64 {
    // SAFETY: `va` is inside the recursive mapping, checked present level by level.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("recursive_map");
    conformance::install_idt();
    let Some(&index) = boot_info.recursive_index.as_ref() else {
        conformance::fail(format_args!("recursive_index is None"))
    };
    let i = usize::from(index);
    println!("recursive_index {i}");
    check!(i < 512, "recursive_index {i} is not a PML4 index");

    // The slot must not be one the kernel already uses.
    let code = conformance::code_address();
    let info = &raw const *boot_info as u64;
    for (what, va) in [
        ("the kernel image", code),
        ("the stack", boot_info.kernel_stack_bottom),
        ("BootInfo", info),
    ] {
        check!(
            table_index(va, 4) != i,
            "the recursive slot {i} is the slot of {what}"
        );
    }

    // PML4[i] seen through the recursive mapping: i, i, i, i is the PML4 itself.
    let pml4 = address([i, i, i, i]);
    let entry = read(pml4 + 8 * i as u64);
    println!(
        "PML4 at {pml4:#x}; PML4[{i}] = {entry:#x}; CR3 frame {:#x}",
        conformance::cr3_frame()
    );
    check_eq!(
        entry & ADDRESS_MASK,
        conformance::cr3_frame(),
        "the frame PML4[{i}] points at"
    );
    check_eq!(
        entry & (PRESENT | WRITABLE | NO_EXECUTE),
        PRESENT | WRITABLE | NO_EXECUTE,
        "the flags of PML4[{i}] (entry {entry:#x})"
    );

    // The whole walk to this code's page, one level a step: the leaf must be present and
    // executable, which also shows the mapping works at every depth.
    let [p4, p3, p2, p1] = [4, 3, 2, 1].map(|level| table_index(code, level));
    let levels = [
        ("PML4", address([i, i, i, i]) + 8 * p4 as u64),
        ("PDPT", address([i, i, i, p4]) + 8 * p3 as u64),
        ("PD", address([i, i, p4, p3]) + 8 * p2 as u64),
        ("PT", address([i, p4, p3, p2]) + 8 * p1 as u64),
    ];
    for (name, va) in levels {
        let entry = read(va);
        println!("{name} entry for {code:#x}, at {va:#x}: {entry:#x}");
        check!(
            entry & PRESENT != 0,
            "the {name} entry for code at {code:#x} is not present"
        );
        check!(
            entry & NO_EXECUTE == 0,
            "the {name} entry for code at {code:#x} is no-execute"
        );
        check!(
            name == "PT" || entry & conformance::HUGE == 0,
            "code at {code:#x} is in a huge page"
        );
    }
    conformance::pass()
}
