//! `mappings.physical_memory = Some(Dynamic)`: conventional memory below 1 MiB is left to
//! the kernel: more than 16 Usable 4 KiB frames there (what the real bootloader's
//! lower_memory_free test expects), each writable through the physical-memory map.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::info::MemoryRegionKind;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{PAGE, check, check_eq, println};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

const ONE_MIB: u64 = 0x10_0000;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("lower_memory_free");
    conformance::install_idt();
    let map = conformance::physical_memory_map(boot_info);
    conformance::print_memory_map(&boot_info.memory_regions);
    let mut count = 0u64;
    for r in boot_info.memory_regions.iter() {
        if r.kind != MemoryRegionKind::Usable || r.start >= ONE_MIB {
            continue;
        }
        let end = r.end.min(ONE_MIB);
        // Counted as the real test counts them.
        count += (end - r.start) / PAGE;
        // One u64 a whole frame, written and read back.
        let mut frame = r.start.next_multiple_of(PAGE);
        while frame + PAGE <= end {
            let va = (map.offset + frame) as *mut u64;
            // SAFETY: a Usable frame is free memory, mapped by the physical-memory map.
            unsafe {
                va.write_volatile(!frame);
                check_eq!(va.read_volatile(), !frame, "frame {frame:#x} read back");
            }
            frame += PAGE;
        }
    }
    println!("{count} Usable 4 KiB frames below 1 MiB");
    check!(
        count > 16,
        "only {count} Usable 4 KiB frames below 1 MiB; expected more than 16"
    );
    conformance::pass()
}
