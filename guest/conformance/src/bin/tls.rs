//! A kernel with a PT_TLS segment: the loader records it, unchanged, as `tls_template`
//! (start at image offset + p_vaddr, file and memory sizes from the segment).
//!
//! `#[thread_local]` is unstable, so the template comes from statics placed in the sections
//! that make the linker emit PT_TLS: `.tdata` (16 bytes of data) and `.tbss` (16 zero bytes).
//! They are only ever read through `tls_template`: the linker gives a symbol in a TLS section
//! its offset in the TLS block as value, so code cannot address it directly.
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{check, check_eq, println};

entry_point!(kernel_main);

const TEMPLATE: [u8; 16] = *b"thread-local-dat";

#[unsafe(link_section = ".tdata")]
static TLS_DATA: [u8; 16] = TEMPLATE;

#[unsafe(link_section = ".tbss")]
static TLS_BSS: [u8; 16] = [0; 16];

/// Keeps both statics in the link (the linker drops sections nothing refers to). The values
/// are the statics' offsets in the TLS block, not addresses: never dereference them.
static KEEP: [&[u8; 16]; 2] = [&TLS_DATA, &TLS_BSS];

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("tls");
    conformance::install_idt();
    core::hint::black_box(&KEEP);
    let Some(template) = boot_info.tls_template.as_ref() else {
        conformance::fail(format_args!("tls_template is None"))
    };
    let (start, file_size, mem_size) = (template.start_addr, template.file_size, template.mem_size);
    println!("tls_template at {start:#x}, file_size {file_size}, mem_size {mem_size}");
    check!(
        start >= boot_info.kernel_image_offset,
        "tls_template.start_addr {start:#x} lies below the image offset {:#x}",
        boot_info.kernel_image_offset
    );
    check_eq!(file_size, 16u64, "tls_template.file_size");
    check_eq!(mem_size, 32u64, "tls_template.mem_size");
    // SAFETY: the template is part of the loaded image.
    let bytes = unsafe { core::ptr::read_volatile(start as *const [u8; 16]) };
    check_eq!(bytes, TEMPLATE, "the bytes at tls_template.start_addr");
    conformance::pass()
}
