//! The default config: what every kernel can rely on. The BootInfo basics (version, memory
//! map, kernel file, relocation, stack) and the CPU state at entry.
#![no_std]
#![no_main]

use core::arch::asm;

use bootloader_api::info::MemoryRegionKind;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{PAGE, check, check_eq, println};

entry_point!(kernel_main);

/// A function pointer in data: the loader's relocation must make it the function's real address.
static RELOCATED: fn() -> u64 = conformance::code_address;

/// `.bss`: the loader must hand it over zeroed.
static mut ZEROED: [u64; 1024] = [0; 1024];

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("default_settings");
    conformance::install_idt();
    let local = 0u8;
    let local = core::hint::black_box(&local) as *const u8 as u64;
    let rsp = conformance::rsp();

    // The version: the one in the kernel's own config (bytes 16..23 of `.bootloader-config`),
    // which for a real bootloader of the same release is the loader's version too.
    let config = BootloaderConfig::new_default().serialize();
    let field = |at: usize| u16::from_le_bytes([config[at], config[at + 1]]);
    let version = &boot_info.api_version;
    println!(
        "api_version {}.{}.{} pre_release {}",
        version.version_major(),
        version.version_minor(),
        version.version_patch(),
        version.pre_release()
    );
    check_eq!(version.version_major(), field(16), "api_version major");
    check_eq!(version.version_minor(), field(18), "api_version minor");
    check_eq!(version.version_patch(), field(20), "api_version patch");
    check_eq!(
        version.pre_release(),
        config[22] != 0,
        "api_version pre_release"
    );
    check_eq!(
        (version.version_major(), version.version_minor()),
        (0u16, 11u16)
    );

    // BootInfo itself: 8-aligned, and the region array next to it 8-aligned and non-null.
    let info_va = &raw const *boot_info as u64;
    check!(info_va.is_multiple_of(8), "BootInfo at {info_va:#x}");
    let regions = &boot_info.memory_regions;
    let regions_va = regions.as_ptr() as u64;
    check!(
        regions_va != 0 && regions_va.is_multiple_of(8),
        "memory regions at {regions_va:#x}"
    );

    // The memory map: sorted, non-overlapping, non-empty regions, some of them Usable.
    println!("{} memory regions:", regions.len());
    conformance::print_memory_map(regions);
    check!(!regions.is_empty(), "the memory map is empty");
    for r in regions.iter() {
        check!(
            r.start < r.end,
            "empty or inverted region {:#x}..{:#x}",
            r.start,
            r.end
        );
    }
    for pair in regions.windows(2) {
        check!(
            pair[0].end <= pair[1].start,
            "regions {:#x}..{:#x} and {:#x}..{:#x} are unsorted or overlap",
            pair[0].start,
            pair[0].end,
            pair[1].start,
            pair[1].end
        );
    }
    check!(
        regions.iter().any(|r| r.kind == MemoryRegionKind::Usable),
        "no Usable region"
    );

    // The raw kernel file: physical, page-aligned, and in no Usable frame.
    println!(
        "kernel file at phys {:#x}, {} bytes; image offset {:#x}",
        boot_info.kernel_addr, boot_info.kernel_len, boot_info.kernel_image_offset
    );
    check!(boot_info.kernel_addr != 0, "kernel_addr is 0");
    check!(
        boot_info.kernel_addr.is_multiple_of(PAGE),
        "kernel_addr {:#x} is not page-aligned",
        boot_info.kernel_addr
    );
    check!(boot_info.kernel_len != 0, "kernel_len is 0");
    if let Some((start, end)) = conformance::overlapping(
        regions,
        MemoryRegionKind::Usable,
        boot_info.kernel_addr,
        boot_info.kernel_len,
    ) {
        conformance::fail(format_args!(
            "the kernel file lies in the Usable region {start:#x}..{end:#x}"
        ));
    }

    // A PIE kernel is relocated to a non-zero base, and its relocations are applied.
    let code = conformance::code_address();
    check!(
        boot_info.kernel_image_offset != 0,
        "kernel_image_offset is 0: a PIE kernel must be relocated to a non-zero base"
    );
    check!(
        boot_info.kernel_image_offset.is_multiple_of(PAGE),
        "kernel_image_offset {:#x} is not page-aligned",
        boot_info.kernel_image_offset
    );
    check!(
        code > boot_info.kernel_image_offset,
        "code at {code:#x} lies below the image offset {:#x}",
        boot_info.kernel_image_offset
    );
    let relocated = core::hint::black_box(&RELOCATED) as *const fn() -> u64;
    // SAFETY: a static, read through a pointer so that the compiler cannot fold it.
    let relocated = unsafe { relocated.read_volatile() } as usize as u64;
    check_eq!(
        relocated,
        code,
        "a function pointer in data after relocation"
    );
    let zeroed = &raw const ZEROED;
    for i in [0usize, 511, 1023] {
        // SAFETY: reads a static that nothing writes.
        let word = unsafe { (zeroed as *const u64).add(i).read_volatile() };
        check_eq!(word, 0u64, ".bss word {i}");
    }

    // The stack: the default size, page-aligned, and RSP inside it.
    let bottom = boot_info.kernel_stack_bottom;
    let len = boot_info.kernel_stack_len;
    println!("stack {bottom:#x}..{:#x}, rsp {rsp:#x}", bottom + len);
    check!(bottom != 0, "kernel_stack_bottom is 0");
    check!(
        bottom.is_multiple_of(PAGE),
        "kernel_stack_bottom {bottom:#x} is not page-aligned"
    );
    check_eq!(len, BootloaderConfig::new_default().kernel_stack_size);
    check!(
        (bottom..bottom + len).contains(&rsp),
        "rsp {rsp:#x} is outside the stack"
    );
    check!(
        (bottom..bottom + len).contains(&local),
        "a local at {local:#x} is outside the stack"
    );

    // What the default config does not ask for is absent.
    check!(
        boot_info.physical_memory_offset.as_ref().is_none(),
        "physical_memory_offset is Some"
    );
    check!(
        boot_info.recursive_index.as_ref().is_none(),
        "recursive_index is Some"
    );
    check!(
        boot_info.tls_template.as_ref().is_none(),
        "tls_template is Some without PT_TLS"
    );
    check!(
        boot_info.ramdisk_addr.as_ref().is_none(),
        "ramdisk_addr is Some without a ramdisk"
    );
    check_eq!(boot_info.ramdisk_len, 0u64);

    check_cpu_state();
    conformance::pass()
}

/// Long mode at CPL0 with paging, write protection and no-execute on, interrupts off, and the
/// real loader's selectors (CS 0x08, SS 0x10).
fn check_cpu_state() {
    let (cr0, cr4, cs, ss, rflags): (u64, u64, u64, u64, u64);
    // SAFETY: reads registers; the kernel runs at CPL0.
    unsafe {
        asm!(
            "mov {cr0}, cr0",
            "mov {cr4}, cr4",
            "mov {cs:e}, cs",
            "mov {ss:e}, ss",
            "pushfq",
            "pop {rflags}",
            cr0 = out(reg) cr0,
            cr4 = out(reg) cr4,
            cs = out(reg) cs,
            ss = out(reg) ss,
            rflags = out(reg) rflags,
        )
    };
    let efer: u64;
    // SAFETY: reading EFER at CPL0 is allowed and harmless.
    unsafe {
        let (low, high): (u32, u32);
        asm!("rdmsr", in("ecx") 0xC000_0080u32, out("eax") low, out("edx") high,
             options(nomem, nostack, preserves_flags));
        efer = u64::from(high) << 32 | u64::from(low);
    }
    println!("cr0 {cr0:#x} cr4 {cr4:#x} efer {efer:#x} cs {cs:#x} ss {ss:#x} rflags {rflags:#x}");
    const PE: u64 = 1;
    const WP: u64 = 1 << 16;
    const PG: u64 = 1 << 31;
    check_eq!(cr0 & (PE | WP | PG), PE | WP | PG, "CR0 PE, WP and PG");
    check!(cr4 & (1 << 5) != 0, "CR4.PAE is clear");
    const LME: u64 = 1 << 8;
    const LMA: u64 = 1 << 10;
    const NXE: u64 = 1 << 11;
    check_eq!(
        efer & (LME | LMA | NXE),
        LME | LMA | NXE,
        "EFER LME, LMA and NXE"
    );
    check!(
        rflags & (1 << 9) == 0,
        "interrupts are enabled (rflags {rflags:#x})"
    );
    check_eq!(cs & 0xFFFF, 0x08u64, "CS");
    check_eq!(ss & 0xFFFF, 0x10u64, "SS");
}
