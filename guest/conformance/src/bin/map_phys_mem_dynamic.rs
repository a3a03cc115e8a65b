//! `mappings.physical_memory = Some(Dynamic)`: all physical memory, and at least 4 GiB of
//! physical address space, mapped with 2 MiB pages at an offset the loader picks.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("map_phys_mem_dynamic");
    conformance::install_idt();
    conformance::check_physical_memory_map(boot_info);
    conformance::pass()
}
