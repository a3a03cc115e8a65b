//! Halts for good, the classic way a kernel ends: `cli; hlt`. With an interrupt controller
//! (`--irqchip`) `hlt` stays inside KVM, so this checks that mote still sees the halt and ends
//! the run at once rather than at its deadline. Its input changes how it halts:
//!
//! - `sti`: with interrupts on. Nothing is programmed to interrupt it, but something could be:
//!   the run must last until its deadline.
//! - `nmi` (with `--irqchip`): with interrupts off, after routing the 8259's line (LINT0) to the
//!   CPU as an NMI, which wakes a CPU whatever its interrupt flag: the run must last until its
//!   deadline too.
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::println;

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

/// The local APIC's spurious-interrupt vector register, with the APIC software-enabled
/// (while it is disabled, every LVT entry stays masked).
const SPURIOUS: u64 = 0xFEE0_00F0;
const APIC_ENABLED: u32 = 0x1FF;
/// The local APIC's LVT LINT0 register, and an unmasked entry that delivers an NMI.
const LVT_LINT0: u64 = 0xFEE0_0350;
const NMI: u32 = 0b100 << 8;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("halt");
    conformance::install_idt();
    let ramdisk = boot_info.ramdisk_addr.into_option().map(|address| {
        // SAFETY: the loader mapped the ramdisk there, ramdisk_len bytes long.
        unsafe { core::slice::from_raw_parts(address as *const u8, boot_info.ramdisk_len as usize) }
    });
    let input = ramdisk.unwrap_or_default();
    if input.starts_with(b"nmi") {
        let map = conformance::physical_memory_map(boot_info);
        // SAFETY: the local APIC's registers, mapped by the physical-memory map.
        unsafe {
            ((map.offset + SPURIOUS) as *mut u32).write_volatile(APIC_ENABLED);
            ((map.offset + LVT_LINT0) as *mut u32).write_volatile(NMI);
        }
        println!("LINT0 delivers NMIs");
    }
    let interrupts_on = input.starts_with(b"sti");
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
