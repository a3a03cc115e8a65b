//! A plain `bootloader_api` kernel (no mote runtime, so it runs at CPL0 with no IDT) that
//! raises an exception: the CPU triple-faults and the VM shuts down.
#![no_std]
#![no_main]

bootloader_api::entry_point!(main);

fn main(_boot_info: &'static mut bootloader_api::BootInfo) -> ! {
    // SAFETY: deliberately undefined: the point is the fault.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
