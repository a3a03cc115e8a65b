//! Fuzzes the `.bootloader-config` a kernel carries, inside a real kernel: every config must be
//! refused with a `BootError` or boot into a layout the host can rely on. The ELF-level target
//! rarely produces a well-formed config; this one starts from one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mote_boot::{LoadOptions, PreparedImage, RegionKind};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The config's UUID: where the section starts inside the kernel file.
const CONFIG_UUID: [u8; 16] = [
    0x74, 0x3C, 0xA9, 0x61, 0x09, 0x36, 0x46, 0xA0, 0xBB, 0x55, 0x5C, 0x15, 0x89, 0x15, 0x25, 0x3D,
];
const CONFIG_LEN: usize = 133;

/// The `stock` guest (a plain bootloader_api kernel) and where its config sits.
fn kernel() -> &'static (Vec<u8>, usize) {
    static KERNEL: OnceLock<(Vec<u8>, usize)> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let path = "../guest/target/x86_64-unknown-none/release/stock";
        let file = std::fs::read(path).expect("build the guests first: cargo xtask build");
        let at = file
            .windows(16)
            .position(|w| w == CONFIG_UUID)
            .expect("the stock kernel carries a config");
        (file, at)
    })
}

fuzz_target!(|config: &[u8]| {
    let (file, at) = kernel();
    let mut file = file.clone();
    // Keep the UUID (else every input is refused at once) and the section's length.
    let body = &mut file[*at + 16..*at + CONFIG_LEN];
    let n = config.len().min(body.len());
    body[..n].copy_from_slice(&config[..n]);
    let Ok(image) = PreparedImage::new(file) else {
        return;
    };
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)])
        .expect("cannot map guest memory");
    let options = LoadOptions {
        ramdisk: Some(b"ramdisk"),
        framebuffer: Some((64, 32)),
        acpi: true,
        aslr_seed: config.first().map(|&b| u64::from(b)),
        ..LoadOptions::default()
    };
    if let Ok(guest) = image.load(&memory, &options) {
        // RAM is covered without a hole from 0; with firmware (acpi), the reserved APIC
        // ranges follow, above it, never Usable.
        let mut end = 0;
        for region in &guest.regions {
            assert!(region.end > region.start);
            if region.start < 8 << 20 {
                assert_eq!(region.start, end, "regions are contiguous from 0");
            } else {
                assert!(region.start >= end, "regions are sorted and disjoint");
                assert_ne!(region.kind, RegionKind::Usable, "no Usable region past RAM");
            }
            end = region.end;
        }
        let ram_end = guest
            .regions
            .iter()
            .filter(|region| region.start < 8 << 20)
            .map(|region| region.end)
            .max();
        assert_eq!(ram_end, Some(8 << 20), "regions cover guest memory");
    }
    let _ = image.describe();
});
