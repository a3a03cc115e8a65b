//! The default config: the page below `kernel_stack_bottom` is an unmapped guard page, so
//! reading it page-faults with CR2 in it (which passes, in the IDT's handler).
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{PAGE, check, println};

entry_point!(kernel_main);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("stack_guard");
    let bottom = boot_info.kernel_stack_bottom;
    check!(
        bottom != 0 && bottom.is_multiple_of(PAGE),
        "kernel_stack_bottom {bottom:#x}"
    );
    let guard = bottom - PAGE..bottom;
    println!(
        "stack bottom {bottom:#x}: reading {:#x}, in the guard page",
        bottom - 1
    );
    conformance::install_idt();
    conformance::expect_page_fault(guard.start, guard.end);
    // SAFETY: not safe at all: the page is meant to be unmapped, and the fault is the test.
    let byte = unsafe { core::ptr::read_volatile((bottom - 1) as *const u8) };
    conformance::fail(format_args!(
        "read {byte:#x} at {:#x}, below the stack, without a page fault: no guard page",
        bottom - 1
    ))
}
