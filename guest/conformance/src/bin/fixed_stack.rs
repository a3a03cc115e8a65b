//! `mappings.kernel_stack = FixedAddress(0x3000_0000_0000)`: the guard page is at that
//! address and the stack starts one page above it.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{PAGE, check, check_eq, println};

const STACK_ADDRESS: u64 = 0x3000_0000_0000;

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.kernel_stack = Mapping::FixedAddress(STACK_ADDRESS);
    config
};

entry_point!(kernel_main, config = &CONFIG);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("fixed_stack");
    conformance::install_idt();
    let rsp = conformance::rsp();
    let local = 0u8;
    let local = core::hint::black_box(&local) as *const u8 as u64;
    let bottom = boot_info.kernel_stack_bottom;
    let len = boot_info.kernel_stack_len;
    println!("stack {bottom:#x}..{:#x}, rsp {rsp:#x}", bottom + len);
    check_eq!(
        bottom,
        STACK_ADDRESS + PAGE,
        "kernel_stack_bottom (guard page first)"
    );
    check_eq!(len, CONFIG.kernel_stack_size, "kernel_stack_len");
    check!(
        (bottom..bottom + len).contains(&rsp),
        "rsp {rsp:#x} is outside the stack"
    );
    check!(
        (bottom..bottom + len).contains(&local),
        "a local at {local:#x} is outside the stack"
    );
    conformance::pass()
}
