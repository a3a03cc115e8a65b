//! `mappings.physical_memory = Some(FixedAddress(0x1000_0000_0000))`: the physical-memory map
//! at exactly that offset.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::check_eq;

const OFFSET: u64 = 0x1000_0000_0000;

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::FixedAddress(OFFSET));
    config
};

entry_point!(kernel_main, config = &CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("map_phys_mem_fixed");
    conformance::install_idt();
    check_eq!(boot_info.physical_memory_offset.into_option(), Some(OFFSET));
    conformance::check_physical_memory_map(boot_info);
    conformance::pass()
}
