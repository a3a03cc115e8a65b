//! An ET_EXEC kernel linked in the higher half (image base 0xFFFF_8000_0000_0000): the loader
//! maps it at its link addresses, without relocating (`kernel_image_offset` 0).
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{check, check_eq, println};

entry_point!(kernel_main);

const HIGHER_HALF: u64 = 0xFFFF_8000_0000_0000;

/// An absolute address the linker resolved: equal to the run-time one only if the kernel
/// runs where it was linked.
static LINKED: fn() -> u64 = conformance::code_address;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("higher_half");
    conformance::install_idt();
    let code = conformance::code_address();
    println!(
        "code at {code:#x}, kernel_image_offset {:#x}",
        boot_info.kernel_image_offset
    );
    check!(
        code >= HIGHER_HALF,
        "code at {code:#x} is below {HIGHER_HALF:#x}"
    );
    check_eq!(
        code & 0xFFFF_FFFF_F000_0000,
        HIGHER_HALF,
        "the 256 MiB the code lies in"
    );
    check_eq!(
        boot_info.kernel_image_offset,
        0u64,
        "kernel_image_offset of an ET_EXEC kernel"
    );
    let linked = core::hint::black_box(&LINKED) as *const fn() -> u64;
    // SAFETY: a static, read through a pointer so that the compiler cannot fold it.
    let linked = unsafe { linked.read_volatile() } as usize as u64;
    check_eq!(linked, code, "the link-time address of a function");
    conformance::pass()
}
