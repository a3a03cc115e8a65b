//! Booted with an interrupt controller (`--irqchip`): the local APIC timer. Finds the xAPIC
//! (CPUID says there is one; `IA32_APIC_BASE` says it is enabled at 0xFEE00000), masks the
//! 8259s, enables the APIC through its spurious-interrupt vector register, runs its timer in
//! periodic mode (divide by 16, a 10 ms period at KVM's 1 GHz APIC bus), and halts with
//! interrupts on until its handler has counted 10 ticks. The APIC's registers are reached
//! through the physical-memory map.
#![no_std]
#![no_main]

use core::sync::atomic::Ordering;

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{LAPIC_EOI, TICKS, check, check_eq, println};

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config
};

entry_point!(kernel_main, config = &CONFIG);

const TICKS_WANTED: u64 = 10;
const TIMER_VECTOR: u8 = 48;
const SPURIOUS_VECTOR: u8 = 0xFF;

/// Local APIC registers.
const EOI: u64 = 0xB0;
const SPURIOUS: u64 = 0xF0;
const LVT_TIMER: u64 = 0x320;
const INITIAL_COUNT: u64 = 0x380;
const DIVIDE_CONFIG: u64 = 0x3E0;
/// SVR: the APIC is software-enabled.
const APIC_ENABLE: u32 = 1 << 8;
/// LVT timer: periodic mode; masked.
const PERIODIC: u32 = 1 << 17;
const MASKED: u32 = 1 << 16;
/// Divide configuration 0b0011: divide by 16.
const DIVIDE_BY_16: u32 = 0x3;
/// 10 ms at 1 GHz / 16.
const COUNT: u32 = 625_000;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("lapic_timer");
    conformance::install_idt();
    let map = conformance::physical_memory_map(boot_info);

    let cpuid = core::arch::x86_64::__cpuid(1);
    check!(
        cpuid.edx & (1 << 9) != 0,
        "CPUID leaf 1 reports no local APIC"
    );
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC; these kernels run at CPL0.
    let apic_base = unsafe { x86_64::registers::model_specific::Msr::new(0x1B).read() };
    println!("IA32_APIC_BASE {apic_base:#x}");
    check!(apic_base & (1 << 11) != 0, "the local APIC is disabled");
    let physical = apic_base & 0x000F_FFFF_FFFF_F000;
    check_eq!(physical, 0xFEE0_0000u64, "the local APIC's base");

    let apic = map.offset + physical;
    let register = |offset: u64| (apic + offset) as *mut u32;
    // SAFETY: the local APIC's registers, mapped by the physical-memory map; 32-bit accesses.
    let write = |offset: u64, value: u32| unsafe { register(offset).write_volatile(value) };
    // SAFETY: as above.
    let read = |offset: u64| unsafe { register(offset).read_volatile() };
    println!("local APIC version {:#x}", read(0x30));

    conformance::mask_pic(0xFFFF);
    LAPIC_EOI.store(apic + EOI, Ordering::SeqCst);
    conformance::set_interrupt_handler(TIMER_VECTOR, conformance::lapic_timer_entry);
    conformance::set_interrupt_handler(SPURIOUS_VECTOR, conformance::spurious_entry);
    write(SPURIOUS, APIC_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(DIVIDE_CONFIG, DIVIDE_BY_16);
    write(LVT_TIMER, PERIODIC | u32::from(TIMER_VECTOR));
    write(INITIAL_COUNT, COUNT);
    conformance::wait_for_ticks(TICKS_WANTED);
    write(LVT_TIMER, MASKED);
    write(INITIAL_COUNT, 0);
    println!("{} local APIC timer ticks", TICKS.load(Ordering::SeqCst));
    conformance::pass()
}
