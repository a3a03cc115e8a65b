//! `BootInfo` as `bootloader_api` 0.11 lays it out, written as bytes at explicit offsets.
//!
//! The crate's own types cannot be built on the host (they are `non_exhaustive`, hold private
//! fields and capture host pointers), so this module writes a zeroed buffer field by field. A
//! unit test reads the result back through the crate's real `BootInfo` type.

use crate::config::ApiVersion;

/// Size of `BootInfo` itself; the memory regions follow it.
pub const BOOT_INFO_SIZE: u64 = 232;
/// Size of one `MemoryRegion`.
pub const MEMORY_REGION_SIZE: u64 = 24;

/// `MemoryRegionKind` tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionKind {
    /// Free for the kernel to use.
    Usable,
    /// Used by the loader (mote): page tables, the kernel image, the stack, `BootInfo`.
    Bootloader,
    /// A BIOS (e820) memory type, for firmware areas such as the ACPI tables (2: reserved).
    UnknownBios(u32),
}

/// One physical memory region, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the region is.
    pub kind: RegionKind,
}

/// Everything `BootInfo` says, as plain values.
#[derive(Clone, Debug)]
pub struct BootInfoFields {
    /// Written into `api_version`.
    pub api_version: ApiVersion,
    /// Guest-virtual address of the `BootInfo` itself; the regions follow it.
    pub address: u64,
    /// The memory map.
    pub regions: Vec<MemoryRegion>,
    /// `tls_template`: address, file size, memory size.
    pub tls_template: Option<(u64, u64, u64)>,
    /// `ramdisk_addr` and `ramdisk_len`.
    pub ramdisk: Option<(u64, u64)>,
    /// `framebuffer`: its guest-virtual address and its shape.
    pub framebuffer: Option<(u64, crate::Framebuffer)>,
    /// `physical_memory_offset`.
    pub physical_memory_offset: Option<u64>,
    /// `recursive_index`.
    pub recursive_index: Option<u16>,
    /// `rsdp_addr` (physical).
    pub rsdp: Option<u64>,
    /// `kernel_addr`: physical address of the ELF file.
    pub kernel_addr: u64,
    /// `kernel_len`: size of the ELF file.
    pub kernel_len: u64,
    /// `kernel_image_offset`: the relocation offset.
    pub kernel_image_offset: u64,
    /// `kernel_stack_bottom`: lowest stack byte, above the guard page.
    pub kernel_stack_bottom: u64,
    /// `kernel_stack_len`.
    pub kernel_stack_len: u64,
    /// `_test_sentinel`.
    pub test_sentinel: u64,
}

/// `PixelFormat::Bgr`.
const PIXEL_FORMAT_BGR: u32 = 1;

/// `Optional<T>` tags: note `Some` is 0.
const SOME: u32 = 0;
const NONE: u32 = 1;

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl BootInfoFields {
    /// The bytes of `BootInfo` followed by the memory regions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let size = BOOT_INFO_SIZE + MEMORY_REGION_SIZE * self.regions.len() as u64;
        let mut b = vec![0u8; size as usize];
        let v = self.api_version;
        put_u16(&mut b, 0, v.major);
        put_u16(&mut b, 2, v.minor);
        put_u16(&mut b, 4, v.patch);
        b[6] = u8::from(v.pre_release);
        // memory_regions: pointer and length.
        put_u64(&mut b, 8, self.address + BOOT_INFO_SIZE);
        put_u64(&mut b, 16, self.regions.len() as u64);
        match self.framebuffer {
            Some((address, info)) => {
                put_u32(&mut b, 24, SOME);
                put_u64(&mut b, 32, address);
                put_u64(&mut b, 40, info.len());
                put_u64(&mut b, 48, u64::from(info.width));
                put_u64(&mut b, 56, u64::from(info.height));
                put_u32(&mut b, 64, PIXEL_FORMAT_BGR);
                put_u64(&mut b, 72, u64::from(info.bytes_per_pixel));
                put_u64(&mut b, 80, u64::from(info.stride));
            }
            None => put_u32(&mut b, 24, NONE),
        }
        match self.physical_memory_offset {
            Some(offset) => {
                put_u32(&mut b, 88, SOME);
                put_u64(&mut b, 96, offset);
            }
            None => put_u32(&mut b, 88, NONE),
        }
        match self.recursive_index {
            Some(index) => {
                put_u32(&mut b, 104, SOME);
                put_u16(&mut b, 108, index);
            }
            None => put_u32(&mut b, 104, NONE),
        }
        match self.rsdp {
            Some(address) => {
                put_u32(&mut b, 112, SOME);
                put_u64(&mut b, 120, address);
            }
            None => put_u32(&mut b, 112, NONE),
        }
        match self.tls_template {
            Some((start, file_size, mem_size)) => {
                put_u32(&mut b, 128, SOME);
                put_u64(&mut b, 136, start);
                put_u64(&mut b, 144, file_size);
                put_u64(&mut b, 152, mem_size);
            }
            None => put_u32(&mut b, 128, NONE),
        }
        match self.ramdisk {
            Some((address, len)) => {
                put_u32(&mut b, 160, SOME);
                put_u64(&mut b, 168, address);
                put_u64(&mut b, 176, len);
            }
            None => put_u32(&mut b, 160, NONE),
        }
        put_u64(&mut b, 184, self.kernel_addr);
        put_u64(&mut b, 192, self.kernel_len);
        put_u64(&mut b, 200, self.kernel_image_offset);
        put_u64(&mut b, 208, self.kernel_stack_bottom);
        put_u64(&mut b, 216, self.kernel_stack_len);
        put_u64(&mut b, 224, self.test_sentinel);
        for (i, region) in self.regions.iter().enumerate() {
            let at = (BOOT_INFO_SIZE + MEMORY_REGION_SIZE * i as u64) as usize;
            put_u64(&mut b, at, region.start);
            put_u64(&mut b, at + 8, region.end);
            let (tag, payload) = match region.kind {
                RegionKind::Usable => (0, 0),
                RegionKind::Bootloader => (1, 0),
                RegionKind::UnknownBios(kind) => (3, kind),
            };
            put_u32(&mut b, at + 16, tag);
            put_u32(&mut b, at + 20, payload);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bootloader_api::BootInfo;
    use bootloader_api::info::{MemoryRegionKind, Optional};

    #[test]
    fn layout_matches_the_crate() {
        assert_eq!(size_of::<BootInfo>() as u64, BOOT_INFO_SIZE);
        assert_eq!(
            size_of::<bootloader_api::info::MemoryRegion>() as u64,
            MEMORY_REGION_SIZE
        );
        assert_eq!(std::mem::offset_of!(BootInfo, tls_template), 128);
        assert_eq!(std::mem::offset_of!(BootInfo, ramdisk_len), 176);
        assert_eq!(std::mem::offset_of!(BootInfo, kernel_addr), 184);
        assert_eq!(std::mem::offset_of!(BootInfo, kernel_stack_len), 216);
        assert_eq!(std::mem::offset_of!(BootInfo, _test_sentinel), 224);
    }

    #[test]
    fn the_crate_reads_back_what_was_written() {
        let fields = BootInfoFields {
            api_version: ApiVersion {
                major: 0,
                minor: 11,
                patch: 17,
                pre_release: false,
            },
            address: 0x1000,
            regions: vec![
                MemoryRegion {
                    start: 0,
                    end: 0x10_0000,
                    kind: RegionKind::Usable,
                },
                MemoryRegion {
                    start: 0x10_0000,
                    end: 0x20_0000,
                    kind: RegionKind::Bootloader,
                },
            ],
            tls_template: Some((0x8000, 0x10, 0x20)),
            ramdisk: Some((0x180_0000_0000, 77)),
            framebuffer: Some((
                0x200_0000_0000,
                crate::Framebuffer {
                    physical: 0x30_0000,
                    width: 640,
                    height: 480,
                    stride: 640,
                    bytes_per_pixel: 4,
                },
            )),
            physical_memory_offset: Some(0x280_0000_0000),
            recursive_index: Some(7),
            rsdp: Some(0xE_0000),
            kernel_addr: 0x10_0000,
            kernel_len: 1234,
            kernel_image_offset: 0x80_0000_0000,
            kernel_stack_bottom: 0x100_0000_1000,
            kernel_stack_len: 0x5000,
            test_sentinel: 0xb001_b001_b001,
        };
        let bytes = fields.to_bytes();
        assert_eq!(bytes.len(), 232 + 2 * 24);
        // SAFETY: `bytes` holds at least size_of::<BootInfo>() bytes, read_unaligned copes with
        // any alignment, and every field was written with a valid bit pattern (Optional and enum
        // tags in range); the pointer inside is never dereferenced.
        let info: BootInfo = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        assert_eq!(info.api_version.version_minor(), 11);
        assert_eq!(info.api_version.version_patch(), 17);
        assert!(!info.api_version.pre_release());
        let Optional::Some(framebuffer) = &info.framebuffer else {
            panic!("no framebuffer")
        };
        assert_eq!(framebuffer.buffer().as_ptr() as u64, 0x200_0000_0000);
        let shape = framebuffer.info();
        assert_eq!((shape.width, shape.height, shape.stride), (640, 480, 640));
        assert_eq!(shape.byte_len, 640 * 480 * 4);
        assert_eq!(shape.bytes_per_pixel, 4);
        assert_eq!(shape.pixel_format, bootloader_api::info::PixelFormat::Bgr);
        assert!(matches!(
            info.physical_memory_offset,
            Optional::Some(0x280_0000_0000)
        ));
        assert!(matches!(info.recursive_index, Optional::Some(7)));
        assert!(matches!(info.rsdp_addr, Optional::Some(0xE_0000)));
        let Optional::Some(tls) = info.tls_template else {
            panic!("no TLS template")
        };
        assert_eq!(
            (tls.start_addr, tls.file_size, tls.mem_size),
            (0x8000, 0x10, 0x20)
        );
        assert!(matches!(info.ramdisk_addr, Optional::Some(0x180_0000_0000)));
        assert_eq!(info.ramdisk_len, 77);
        assert_eq!(info.kernel_addr, 0x10_0000);
        assert_eq!(info.kernel_len, 1234);
        assert_eq!(info.kernel_image_offset, 0x80_0000_0000);
        assert_eq!(info.kernel_stack_bottom, 0x100_0000_1000);
        assert_eq!(info.kernel_stack_len, 0x5000);
        assert_eq!(info._test_sentinel, 0xb001_b001_b001);
        // The regions, read back through the crate's type.
        // SAFETY: as above; the region array starts at byte 232 and holds two valid entries.
        let second: bootloader_api::info::MemoryRegion =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(232 + 24).cast()) };
        assert_eq!(second.start, 0x10_0000);
        assert_eq!(second.end, 0x20_0000);
        assert_eq!(second.kind, MemoryRegionKind::Bootloader);
        assert_eq!(
            u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            0x1000 + 232
        );
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 2);
    }
}
