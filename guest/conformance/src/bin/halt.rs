//! Halts for good, the classic way a kernel ends: `cli; hlt`. With an interrupt controller
//! (`--irqchip`) `hlt` stays inside KVM, so this checks that mote still sees the halt and ends
//! the run at once rather than at its deadline. Given the input `sti`, it halts with
//! interrupts on instead, and nothing ever wakes it: that run must last until its deadline.
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::println;

entry_point!(kernel_main);

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("halt");
    conformance::install_idt();
    let ramdisk = boot_info.ramdisk_addr.into_option().map(|address| {
        // SAFETY: the loader mapped the ramdisk there, ramdisk_len bytes long.
        unsafe { core::slice::from_raw_parts(address as *const u8, boot_info.ramdisk_len as usize) }
    });
    let interrupts_on = ramdisk.is_some_and(|input| input.starts_with(b"sti"));
    println!(
        "halting with interrupts {}",
        if interrupts_on { "on" } else { "off" }
    );
    loop {
        if interrupts_on {
            x86_64::instructions::interrupts::enable_and_hlt();
        } else {
            x86_64::instructions::interrupts::disable();
            x86_64::instructions::hlt();
        }
    }
}
