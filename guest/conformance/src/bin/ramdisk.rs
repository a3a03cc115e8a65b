//! The default config, booted with a ramdisk holding b"mote conformance ramdisk\n": its
//! address and length are given, the bytes are there, and the mapping is writable (P|W|NX in
//! the real loader).
#![no_std]
#![no_main]

use bootloader_api::{BootInfo, entry_point};
use conformance::{PAGE, check, check_eq, println};

entry_point!(kernel_main);

const EXPECTED: &[u8] = b"mote conformance ramdisk\n";

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    conformance::begin("ramdisk");
    conformance::install_idt();
    let Some(&addr) = boot_info.ramdisk_addr.as_ref() else {
        conformance::fail(format_args!("ramdisk_addr is None"))
    };
    let len = boot_info.ramdisk_len;
    println!("ramdisk at {addr:#x}, {len} bytes");
    check!(
        addr.is_multiple_of(PAGE),
        "ramdisk_addr {addr:#x} is not page-aligned"
    );
    check_eq!(len, EXPECTED.len() as u64, "ramdisk_len");
    let ramdisk = addr as *mut u8;
    let mut bytes = [0u8; EXPECTED.len()];
    for (i, byte) in bytes.iter_mut().enumerate() {
        // SAFETY: the loader mapped `len` bytes at `addr`.
        *byte = unsafe { ramdisk.add(i).read_volatile() };
    }
    check_eq!(&bytes[..], EXPECTED, "the ramdisk's bytes");
    // Writable, as the real loader maps it: flip the first byte and put it back.
    // SAFETY: the ramdisk is mapped, and this kernel is its only user.
    unsafe {
        ramdisk.write_volatile(!bytes[0]);
        check_eq!(
            ramdisk.read_volatile(),
            !bytes[0],
            "the ramdisk's first byte after a write"
        );
        ramdisk.write_volatile(bytes[0]);
    }
    conformance::pass()
}
