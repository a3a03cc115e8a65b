//! A kernel as a third party writes one: only `bootloader_api`, `uart_16550` and the
//! isa-debug-exit port, nothing from mote. mote must boot it as the real bootloader would.
#![no_std]
#![no_main]

use core::fmt::Write;

use bootloader_api::{BootInfo, entry_point};
use uart_16550::{Config, Uart16550Tty};
use x86_64::instructions::port::Port;

entry_point!(kernel_main);

fn exit_qemu(success: bool) -> ! {
    let mut port = Port::<u32>::new(0xF4);
    // SAFETY: 0xF4 is the isa-debug-exit device: writing it ends the VM.
    unsafe { port.write(if success { 0x10 } else { 0x11 }) };
    loop {
        x86_64::instructions::hlt();
    }
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // SAFETY: COM1 exists on a PC and this kernel is its only user.
    let Ok(mut serial) = (unsafe { Uart16550Tty::new_port(0x3F8, Config::default()) }) else {
        exit_qemu(false)
    };
    let _ = writeln!(serial, "Hello from a stock bootloader_api kernel");
    let regions = boot_info.memory_regions.len();
    let usable: u64 = boot_info
        .memory_regions
        .iter()
        .filter(|r| r.kind == bootloader_api::info::MemoryRegionKind::Usable)
        .map(|r| r.end - r.start)
        .sum();
    let _ = writeln!(
        serial,
        "{regions} memory regions, {} KiB usable",
        usable / 1024
    );
    exit_qemu(regions > 0 && usable > 0)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    exit_qemu(false)
}
