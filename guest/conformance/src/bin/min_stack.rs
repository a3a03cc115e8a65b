//! `kernel_stack_size = 4096`: the loader gives exactly one page of stack, and the kernel
//! still runs (nested calls, a line on the console).
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{check, check_eq, println};

const STACK_SIZE: u64 = 4096;

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.kernel_stack_size = STACK_SIZE;
    config
};

entry_point!(kernel_main, config = &CONFIG);

/// Recurses `depth` times with a small frame each time; returns the lowest RSP seen.
#[inline(never)]
fn nest(depth: u32) -> u64 {
    let frame = core::hint::black_box([depth as u8; 64]);
    let rsp = conformance::rsp();
    let below = if depth == 0 { rsp } else { nest(depth - 1) };
    core::hint::black_box(frame);
    below.min(rsp)
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("min_stack");
    conformance::install_idt();
    let rsp = conformance::rsp();
    let bottom = boot_info.kernel_stack_bottom;
    let len = boot_info.kernel_stack_len;
    println!("stack {bottom:#x}..{:#x}, rsp {rsp:#x}", bottom + len);
    check_eq!(len, STACK_SIZE, "kernel_stack_len");
    check!(bottom != 0, "kernel_stack_bottom is 0");
    check!(
        (bottom..bottom + len).contains(&rsp),
        "rsp {rsp:#x} is outside the stack"
    );
    let lowest = nest(8);
    println!("8 nested calls went down to rsp {lowest:#x}");
    check!(
        (bottom..bottom + len).contains(&lowest),
        "rsp {lowest:#x} left the stack"
    );
    conformance::pass()
}
