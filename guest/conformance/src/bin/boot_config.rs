//! Booted with a run-time boot config (the `bootloader` crate's `BootConfig`, as the JSON it
//! serialises to: `mote run --boot-config FILE.json`) that sets `_test_sentinel` to
//! 0xb001b001b001 and asks for a framebuffer of at least 800x600: `BootInfo._test_sentinel`
//! holds the sentinel, as the real bootloader copies it there, and the framebuffer is there
//! and at least that large.
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{check, check_eq, println};

entry_point!(kernel_main);

/// The sentinel the test's boot config sets.
const SENTINEL: u64 = 0xb001_b001_b001;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("boot_config");
    conformance::install_idt();
    let sentinel = boot_info._test_sentinel;
    println!("_test_sentinel {sentinel:#x}");
    check_eq!(sentinel, SENTINEL, "BootInfo._test_sentinel");
    let Some(framebuffer) = boot_info.framebuffer.as_ref() else {
        conformance::fail(format_args!(
            "no framebuffer, though the boot config asks for one of at least 800x600"
        ))
    };
    let info = framebuffer.info();
    println!("framebuffer {}x{}", info.width, info.height);
    check!(
        info.width >= 800 && info.height >= 600,
        "a {}x{} framebuffer is below the boot config's minimum of 800x600",
        info.width,
        info.height
    );
    conformance::pass()
}
