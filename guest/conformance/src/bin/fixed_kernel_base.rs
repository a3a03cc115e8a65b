//! `mappings.kernel_base = FixedAddress(0x2000_0000_0000)`: the PIE kernel is relocated by
//! exactly that offset (the real loader uses the address itself as the offset, not
//! address - lowest vaddr), so its code and data lie in [base, base + image size).
#![no_std]
#![no_main]

use bootloader_api::config::Mapping;
use bootloader_api::{BootInfo, BootloaderConfig, entry_point};
use conformance::{check, check_eq, println};

/// A multiple of every p_align of the kernel (4 KiB here), as the protocol requires.
const KERNEL_BASE: u64 = 0x2000_0000_0000;

const CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config
};

entry_point!(kernel_main, config = &CONFIG);

static DATA: [u8; 8] = *b"constant";
static RELOCATED: fn() -> u64 = conformance::code_address;

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("fixed_kernel_base");
    conformance::install_idt();
    let code = conformance::code_address();
    let data = core::hint::black_box(&DATA).as_ptr() as u64;
    println!(
        "kernel_image_offset {:#x}, code at {code:#x}, data at {data:#x}, file {} bytes",
        boot_info.kernel_image_offset, boot_info.kernel_len
    );
    check_eq!(boot_info.kernel_image_offset, KERNEL_BASE);
    // The image is no larger than the file here (no big .bss), so [base, base + file size)
    // bounds it, as in the real bootloader's fixed_kernel_address test.
    let image = KERNEL_BASE..KERNEL_BASE + boot_info.kernel_len;
    check!(
        image.contains(&code),
        "code at {code:#x} is outside {image:#x?}"
    );
    check!(
        image.contains(&data),
        "a static at {data:#x} is outside {image:#x?}"
    );
    let relocated = core::hint::black_box(&RELOCATED) as *const fn() -> u64;
    // SAFETY: a static, read through a pointer so that the compiler cannot fold it.
    let relocated = unsafe { relocated.read_volatile() } as usize as u64;
    check_eq!(
        relocated,
        code,
        "a function pointer in data after relocation"
    );
    // SAFETY: DATA is a static; read it where it is mapped.
    let bytes = unsafe { core::ptr::read_volatile(data as *const [u8; 8]) };
    check_eq!(
        &bytes,
        b"constant",
        "a static read at its relocated address"
    );
    conformance::pass()
}
