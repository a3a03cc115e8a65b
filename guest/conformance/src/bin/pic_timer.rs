//! Booted with an interrupt controller (`--irqchip`): the tutorial way to a timer. Sets up the
//! 8259 pair (IRQs at vectors 32-47, only IRQ 0 unmasked) and the 8254 PIT (channel 0 at
//! 100 Hz), then halts with interrupts on until its IRQ 0 handler has counted 10 ticks.
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{TICKS, println};

entry_point!(kernel_main);

const TICKS_WANTED: u64 = 10;
const VECTOR_BASE: u8 = 32;

fn kernel_main(_boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("pic_timer");
    conformance::install_idt();
    conformance::set_interrupt_handler(VECTOR_BASE, conformance::pic_timer_entry);
    conformance::set_interrupt_handler(VECTOR_BASE + 7, conformance::spurious_entry);
    conformance::set_interrupt_handler(VECTOR_BASE + 15, conformance::spurious_entry);
    conformance::init_pic(VECTOR_BASE, 1 << 0);
    conformance::start_pit(100);
    conformance::wait_for_ticks(TICKS_WANTED);
    conformance::mask_pic(0xFFFF);
    println!(
        "{} PIT ticks through the 8259",
        TICKS.load(core::sync::atomic::Ordering::SeqCst)
    );
    conformance::pass()
}
