//! Loader tests on hand-built ELF files, checked by walking the page tables the loader wrote.

use super::*;
use crate::paging::{Access, WalkError, translate};
use vm_memory::GuestMemoryMmap;

const MIB: u64 = 1024 * 1024;

/// Builds a small static-PIE kernel ELF the way rust-lld lays one out:
/// a read-execute segment at 0x1000 (code, config, relocations), a read-write segment at
/// 0x2000 (a relocated pointer, `.dynamic`, then `.bss` up to 0x5000).
struct TestElf {
    e_type: u16,
    machine: u16,
    config: Vec<u8>,
    relocation_type: u32,
    relro: bool,
    tls: bool,
    /// Moves the data segment onto the code segment's page.
    overlap: bool,
    with_config_section: bool,
    /// Carry a runtime note (run in user mode).
    runtime_note: bool,
    /// Make the note's double-fault handler point at data instead of code.
    note_handler_in_data: bool,
}

/// The runtime note's place in the data segment, and the code addresses it names.
const NOTE_VADDR: u64 = DATA_VADDR + 0x100;
const SYSCALL_ENTRY: u64 = CODE_VADDR + 1;
const PAGE_FAULT_HANDLER: u64 = CODE_VADDR + 2;
const DOUBLE_FAULT_HANDLER: u64 = CODE_VADDR + 3;

const CODE: [u8; 4] = [0x0F, 0x0B, 0xF4, 0xCC]; // ud2; hlt; int3
const CODE_VADDR: u64 = 0x1000;
const DATA_VADDR: u64 = 0x2000;
const DATA_MEM_SIZE: u64 = 0x3000;
/// The relocated pointer in the data segment points at this link-time address.
const POINTER_TARGET: u64 = 0x1002;

impl TestElf {
    fn new() -> Self {
        Self {
            e_type: object::elf::ET_DYN,
            machine: object::elf::EM_X86_64,
            config: bootloader_api::BootloaderConfig::new_default()
                .serialize()
                .to_vec(),
            relocation_type: object::elf::R_X86_64_RELATIVE,
            relro: true,
            tls: false,
            overlap: false,
            with_config_section: true,
            runtime_note: false,
            note_handler_in_data: false,
        }
    }

    fn with_config(mut self, edit: impl FnOnce(&mut bootloader_api::BootloaderConfig)) -> Self {
        let mut config = bootloader_api::BootloaderConfig::new_default();
        edit(&mut config);
        self.config = config.serialize().to_vec();
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut f = vec![0u8; 0x3200];
        let put16 =
            |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        // ELF header.
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little-endian
        f[6] = 1; // version
        put16(&mut f, 16, self.e_type);
        put16(&mut f, 18, self.machine);
        put32(&mut f, 20, 1);
        put64(&mut f, 24, CODE_VADDR); // entry
        put64(&mut f, 32, 0x40); // phoff
        put64(&mut f, 40, 0x3000); // shoff
        put16(&mut f, 52, 64); // ehsize
        put16(&mut f, 54, 56); // phentsize
        put16(&mut f, 58, 64); // shentsize
        put16(&mut f, 62, 1); // shstrndx

        // Program headers: type, flags, offset, vaddr, paddr, filesz, memsz, align.
        let data_vaddr = if self.overlap { 0x1800 } else { DATA_VADDR };
        let mut headers = vec![
            (
                object::elf::PT_LOAD,
                5,
                0x1000,
                CODE_VADDR,
                0x100,
                0x100,
                0x1000,
            ),
            (
                object::elf::PT_LOAD,
                6,
                0x2000,
                data_vaddr,
                0x300,
                DATA_MEM_SIZE,
                0x1000,
            ),
            (
                object::elf::PT_DYNAMIC,
                6,
                0x2040,
                data_vaddr + 0x40,
                0x40,
                0x40,
                8,
            ),
        ];
        if self.relro {
            headers.push((
                object::elf::PT_GNU_RELRO,
                4,
                0x2000,
                data_vaddr,
                0x80,
                0x80,
                1,
            ));
        }
        if self.tls {
            headers.push((
                object::elf::PT_TLS,
                4,
                0x2080,
                data_vaddr + 0x80,
                0x10,
                0x40,
                8,
            ));
        }
        put16(&mut f, 56, headers.len() as u16);
        for (i, &(kind, flags, offset, vaddr, filesz, memsz, align)) in headers.iter().enumerate() {
            let at = 0x40 + i * 56;
            put32(&mut f, at, kind);
            put32(&mut f, at + 4, flags);
            put64(&mut f, at + 8, offset);
            put64(&mut f, at + 16, vaddr);
            put64(&mut f, at + 24, vaddr);
            put64(&mut f, at + 32, filesz);
            put64(&mut f, at + 40, memsz);
            put64(&mut f, at + 48, align);
        }

        // Code segment: code, the config, the relocation table.
        f[0x1000..0x1004].copy_from_slice(&CODE);
        f[0x1010..0x1010 + self.config.len()].copy_from_slice(&self.config);
        let mut relocations = vec![(data_vaddr, POINTER_TARGET)];
        if self.runtime_note {
            // The note's entry addresses are link-time addresses fixed up by relocations.
            let handlers = mote_abi::note::offsets::EXCEPTION_HANDLERS as u64;
            let double_fault = if self.note_handler_in_data {
                DATA_VADDR + 8
            } else {
                DOUBLE_FAULT_HANDLER
            };
            relocations.extend([
                (
                    NOTE_VADDR + mote_abi::note::offsets::SYSCALL_ENTRY as u64,
                    SYSCALL_ENTRY,
                ),
                (NOTE_VADDR + handlers + 8 * 14, PAGE_FAULT_HANDLER),
                (NOTE_VADDR + handlers + 8 * 8, double_fault),
            ]);
            let note = 0x2000 + (NOTE_VADDR - DATA_VADDR) as usize;
            f[note..note + 8].copy_from_slice(&mote_abi::note::MAGIC);
            put32(&mut f, note + 8, mote_abi::note::VERSION);
            put64(&mut f, note + 16, 0x2000); // kernel stack size
        }
        for (i, (target, addend)) in relocations.iter().enumerate() {
            let rela = 0x10A0 + i * 24;
            put64(&mut f, rela, *target); // r_offset
            put64(&mut f, rela + 8, u64::from(self.relocation_type)); // r_info: symbol 0
            put64(&mut f, rela + 16, *addend); // r_addend
        }

        // Data segment: the pointer (link-time value 0), then .dynamic.
        let dynamic = [
            (u64::from(object::elf::DT_RELA), CODE_VADDR + 0xA0),
            (
                u64::from(object::elf::DT_RELASZ),
                24 * relocations.len() as u64,
            ),
            (u64::from(object::elf::DT_RELAENT), 24),
            (u64::from(object::elf::DT_NULL), 0),
        ];
        for (i, (tag, value)) in dynamic.iter().enumerate() {
            put64(&mut f, 0x2040 + i * 16, *tag);
            put64(&mut f, 0x2048 + i * 16, *value);
        }
        f[0x2080..0x2090].copy_from_slice(b"tls-initial-data");

        // Sections: null, .shstrtab, .bootloader-config, .mote_runtime.
        let names = b"\0.shstrtab\0.bootloader-config\0.mote_runtime\0";
        f[0x3100..0x3100 + names.len()].copy_from_slice(names);
        let config_name = if self.with_config_section { 11 } else { 1 };
        let mut sections = vec![
            (0u32, 0u32, 0u64, 0u64, 0u64),
            (1, object::elf::SHT_STRTAB, 0, 0x3100, names.len() as u64),
            (
                config_name,
                object::elf::SHT_PROGBITS,
                CODE_VADDR + 0x10,
                0x1010,
                self.config.len() as u64,
            ),
        ];
        if self.runtime_note {
            let size = mote_abi::note::SIZE as u64;
            sections.push((30, object::elf::SHT_PROGBITS, NOTE_VADDR, 0x2100, size));
        }
        put16(&mut f, 60, sections.len() as u16); // shnum
        for (i, &(name, kind, addr, offset, size)) in sections.iter().enumerate() {
            let at = 0x3000 + i * 64;
            put32(&mut f, at, name);
            put32(&mut f, at + 4, kind);
            put64(&mut f, at + 16, addr);
            put64(&mut f, at + 24, offset);
            put64(&mut f, at + 32, size);
        }
        f
    }
}

fn memory(size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
}

fn load(elf: &TestElf) -> (PreparedImage, GuestMemoryMmap, LoadedGuest) {
    let image = PreparedImage::new(elf.build()).unwrap();
    let memory = memory(16 * MIB);
    let options = LoadOptions {
        tsc_khz: 2_000_000,
        ..LoadOptions::default()
    };
    let loaded = image.load(&memory, &options).unwrap();
    (image, memory, loaded)
}

const KERNEL_READ: Access = Access {
    write: false,
    user: false,
};
const KERNEL_WRITE: Access = Access {
    write: true,
    user: false,
};

/// The leaf entry that maps `virt` (4 KiB pages only, as mote builds them).
fn leaf_entry(memory: &GuestMemoryMmap, cr3: u64, virt: u64) -> u64 {
    let mut table = cr3;
    let mut entry = 0;
    for level in [4u32, 3, 2, 1] {
        let index = (virt >> (12 + 9 * (level - 1))) & 0x1FF;
        entry = memory
            .read_obj::<u64>(GuestAddress(table + index * 8))
            .unwrap();
        assert!(
            entry & flags::PRESENT != 0,
            "{virt:#x} unmapped at level {level}"
        );
        table = entry & 0x000F_FFFF_FFFF_F000;
    }
    entry
}

fn read_u64(memory: &GuestMemoryMmap, cr3: u64, virt: u64) -> u64 {
    let physical = translate(memory, cr3, virt, KERNEL_READ).unwrap();
    memory.read_obj(GuestAddress(physical)).unwrap()
}

#[test]
fn a_pie_kernel_is_relocated_to_a_nonzero_base() {
    let (image, memory, loaded) = load(&TestElf::new());
    let offset = image.kernel_offset();
    assert_eq!(
        offset + CODE_VADDR,
        0x80_0000_0000,
        "the image starts at the lowest free slot after slot 0"
    );
    assert_eq!(loaded.vcpu.rip, offset + CODE_VADDR);
    let code = translate(&memory, loaded.vcpu.cr3, loaded.vcpu.rip, KERNEL_READ).unwrap();
    let mut bytes = [0u8; 4];
    memory.read_slice(&mut bytes, GuestAddress(code)).unwrap();
    assert_eq!(bytes, CODE);
    // The R_X86_64_RELATIVE target now holds base + addend.
    assert_eq!(
        read_u64(&memory, loaded.vcpu.cr3, offset + DATA_VADDR),
        offset + POINTER_TARGET
    );
}

#[test]
fn segments_are_mapped_with_their_rights_and_relro_is_read_only() {
    let (image, memory, loaded) = load(&TestElf::new());
    let (cr3, offset) = (loaded.vcpu.cr3, image.kernel_offset());
    let code = leaf_entry(&memory, cr3, offset + CODE_VADDR);
    assert_eq!(code & flags::WRITABLE, 0, "code is not writable");
    assert_eq!(code & flags::NO_EXECUTE, 0, "code is executable");
    let relro = leaf_entry(&memory, cr3, offset + DATA_VADDR);
    assert_eq!(relro & flags::WRITABLE, 0, "the RELRO page is read-only");
    assert_ne!(relro & flags::NO_EXECUTE, 0);
    let bss = leaf_entry(&memory, cr3, offset + DATA_VADDR + 0x1000);
    assert_ne!(bss & flags::WRITABLE, 0, "bss is writable");
    assert_ne!(bss & flags::NO_EXECUTE, 0, "bss is not executable");
    assert!(
        translate(
            &memory,
            cr3,
            offset + DATA_VADDR + DATA_MEM_SIZE,
            KERNEL_READ
        )
        .is_err()
    );
}

#[test]
fn without_relro_the_data_segment_stays_writable() {
    let elf = TestElf {
        relro: false,
        ..TestElf::new()
    };
    let (image, memory, loaded) = load(&elf);
    let data = leaf_entry(&memory, loaded.vcpu.cr3, image.kernel_offset() + DATA_VADDR);
    assert_ne!(data & flags::WRITABLE, 0);
}

#[test]
fn bss_is_zero_even_in_a_memory_that_was_dirty() {
    let (image, memory, loaded) = load(&TestElf::new());
    let cr3 = loaded.vcpu.cr3;
    let start = image.kernel_offset() + DATA_VADDR + 0x300;
    let end = image.kernel_offset() + DATA_VADDR + DATA_MEM_SIZE;
    for virt in (start..end).step_by(8) {
        assert_eq!(read_u64(&memory, cr3, virt), 0, "bss byte at {virt:#x}");
    }
}

#[test]
fn the_stack_sits_above_an_unmapped_guard_page() {
    let elf = TestElf::new().with_config(|c| c.kernel_stack_size = 0x3000);
    let (_, memory, loaded) = load(&elf);
    let (cr3, rsp) = (loaded.vcpu.cr3, loaded.vcpu.rsp);
    assert_eq!((rsp + 8) % 16, 0, "SysV alignment at function entry");
    assert_eq!(read_u64(&memory, cr3, rsp), 0, "a zero return address");
    let stack_bottom = (rsp + 8) - 0x3000;
    assert!(translate(&memory, cr3, stack_bottom, KERNEL_WRITE).is_ok());
    assert!(translate(&memory, cr3, rsp, KERNEL_WRITE).is_ok());
    assert_eq!(
        translate(&memory, cr3, stack_bottom - 1, KERNEL_READ),
        Err(WalkError::NotMapped(stack_bottom - 1)),
        "the guard page is unmapped"
    );
    assert!(translate(&memory, cr3, rsp + 8, KERNEL_READ).is_err());
}

/// Reads the BootInfo the loader wrote, through the guest's page tables.
fn boot_info_bytes(memory: &GuestMemoryMmap, loaded: &LoadedGuest) -> Vec<u8> {
    let physical = translate(memory, loaded.vcpu.cr3, loaded.vcpu.rdi, KERNEL_READ).unwrap();
    let mut bytes = vec![0u8; 232 + 3 * 24];
    memory
        .read_slice(&mut bytes, GuestAddress(physical))
        .unwrap();
    bytes
}

#[test]
fn boot_info_describes_the_boot() {
    let elf = TestElf {
        tls: true,
        ..TestElf::new()
    }
    .with_config(|c| c.kernel_stack_size = 0x4000);
    let file = elf.build();
    let (image, memory, loaded) = load(&elf);
    let bytes = boot_info_bytes(&memory, &loaded);
    // SAFETY: the buffer holds a whole BootInfo written by the loader with valid tags; the
    // pointers inside are guest addresses and are never dereferenced.
    let info: bootloader_api::BootInfo = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    // The version comes from the kernel's own config (bytes 16..22).
    let config = &elf.config;
    let version = |at: usize| u16::from_le_bytes([config[at], config[at + 1]]);
    assert_eq!(info.api_version.version_major(), version(16));
    assert_eq!(info.api_version.version_minor(), version(18));
    assert_eq!(info.api_version.version_patch(), version(20));
    assert_eq!((version(18), version(20)), (11, 17));
    assert_eq!(info.kernel_len, file.len() as u64);
    assert_eq!(info.kernel_image_offset, image.kernel_offset());
    assert_eq!(info.kernel_stack_len, 0x4000);
    assert_eq!(info.kernel_stack_bottom, loaded.vcpu.rsp + 8 - 0x4000);
    let bootloader_api::info::Optional::Some(tls) = info.tls_template else {
        panic!("no TLS template");
    };
    assert_eq!(tls.start_addr, image.kernel_offset() + DATA_VADDR + 0x80);
    assert_eq!((tls.file_size, tls.mem_size), (0x10, 0x40));
    // The ELF file itself is in guest memory at kernel_addr.
    let mut copy = vec![0u8; file.len()];
    memory
        .read_slice(&mut copy, GuestAddress(info.kernel_addr))
        .unwrap();
    assert_eq!(copy, file);
    // The regions pointer follows BootInfo.
    assert_eq!(
        u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        loaded.vcpu.rdi + 232
    );
}

#[test]
fn the_memory_map_covers_ram_and_marks_every_frame_mote_used() {
    let (_, memory, loaded) = load(&TestElf::new());
    let regions = &loaded.regions;
    assert_eq!(regions[0].start, 0);
    assert_eq!(regions.last().unwrap().end, 16 * MIB);
    for pair in regions.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "sorted, contiguous, no overlap");
    }
    // The regions in guest memory say the same.
    let bytes = boot_info_bytes(&memory, &loaded);
    assert_eq!(
        u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        regions.len() as u64
    );
    for (i, region) in regions.iter().enumerate() {
        let at = 232 + i * 24;
        let word = |o: usize| u64::from_le_bytes(bytes[at + o..at + o + 8].try_into().unwrap());
        assert_eq!(word(0), region.start);
        assert_eq!(word(8), region.end);
        let tag = match region.kind {
            RegionKind::Usable => 0,
            RegionKind::Bootloader => 1,
            RegionKind::UnknownBios(_) => 3,
        };
        assert_eq!(word(16) as u32, tag);
    }
    let kind_of = |physical: u64| {
        regions
            .iter()
            .find(|r| (r.start..r.end).contains(&physical))
            .map(|r| r.kind)
    };
    let cr3 = loaded.vcpu.cr3;
    let used = [
        cr3,
        translate(&memory, cr3, loaded.vcpu.rip, KERNEL_READ).unwrap(),
        translate(&memory, cr3, loaded.vcpu.rsp, KERNEL_READ).unwrap(),
        translate(&memory, cr3, loaded.vcpu.rdi, KERNEL_READ).unwrap(),
        loaded.vcpu.gdt.base,
    ];
    for physical in used {
        assert_eq!(
            kind_of(physical),
            Some(RegionKind::Bootloader),
            "{physical:#x}"
        );
    }
    assert_eq!(kind_of(16 * MIB - 1), Some(RegionKind::Usable));
}

#[test]
fn the_first_vcpu_state_is_long_mode_at_cpl0() {
    let (_, memory, loaded) = load(&TestElf::new());
    let vcpu = loaded.vcpu;
    assert_eq!(vcpu.cr0, 0x8001_0033);
    assert_eq!(vcpu.cr4 & 0x20, 0x20, "PAE");
    assert_eq!(vcpu.efer, 0xD00, "LME, LMA, NXE");
    assert_eq!(vcpu.rflags & 0x200, 0, "interrupts off");
    assert!(vcpu.code.l && vcpu.code.dpl == 0 && vcpu.code.selector == 8);
    assert_eq!(vcpu.data.selector, 0x10);
    // The GDT is identity-mapped and holds the descriptors the selectors name.
    let gdt = translate(&memory, vcpu.cr3, vcpu.gdt.base, KERNEL_READ).unwrap();
    assert_eq!(gdt, vcpu.gdt.base);
    let code: u64 = memory.read_obj(GuestAddress(gdt + 8)).unwrap();
    assert_eq!(code, 0x00AF_9B00_0000_FFFF);
}

#[test]
fn an_exec_kernel_loads_at_its_own_addresses() {
    let elf = TestElf {
        e_type: object::elf::ET_EXEC,
        ..TestElf::new()
    };
    let (image, _, loaded) = load(&elf);
    assert_eq!(image.kernel_offset(), 0);
    assert_eq!(loaded.vcpu.rip, CODE_VADDR);
}

#[test]
fn a_fixed_kernel_base_is_used_as_the_offset() {
    let elf = TestElf::new().with_config(|c| {
        c.mappings.kernel_base = bootloader_api::config::Mapping::FixedAddress(0x4000_0000)
    });
    let (image, memory, loaded) = load(&elf);
    assert_eq!(image.kernel_offset(), 0x4000_0000);
    assert_eq!(
        read_u64(&memory, loaded.vcpu.cr3, 0x4000_0000 + DATA_VADDR),
        0x4000_0000 + POINTER_TARGET
    );
}

#[test]
fn a_fixed_stack_address_is_honoured() {
    let elf = TestElf::new().with_config(|c| {
        c.mappings.kernel_stack = bootloader_api::config::Mapping::FixedAddress(0x7000_0000)
    });
    let (_, memory, loaded) = load(&elf);
    assert!(translate(&memory, loaded.vcpu.cr3, 0x7000_0000, KERNEL_READ).is_err());
    assert!(translate(&memory, loaded.vcpu.cr3, 0x7000_1000, KERNEL_WRITE).is_ok());
}

#[test]
fn bad_files_are_clear_errors() {
    let not_elf = PreparedImage::new(b"#!/bin/sh\necho hi\n".to_vec());
    assert!(matches!(not_elf, Err(BootError::NotElf)), "{not_elf:?}");
    assert!(matches!(
        PreparedImage::new(Vec::new()),
        Err(BootError::NotElf)
    ));
    let arm = TestElf {
        machine: object::elf::EM_AARCH64,
        ..TestElf::new()
    };
    assert!(matches!(
        PreparedImage::new(arm.build()),
        Err(BootError::WrongMachine(183))
    ));
    let no_config = TestElf {
        with_config_section: false,
        ..TestElf::new()
    };
    assert!(matches!(
        PreparedImage::new(no_config.build()),
        Err(BootError::NoConfigSection)
    ));
    let absolute = TestElf {
        relocation_type: object::elf::R_X86_64_64,
        ..TestElf::new()
    };
    assert!(matches!(
        PreparedImage::new(absolute.build()),
        Err(BootError::BadElf(_))
    ));
    let overlap = TestElf {
        overlap: true,
        ..TestElf::new()
    };
    assert!(matches!(
        PreparedImage::new(overlap.build()),
        Err(BootError::BadElf(_))
    ));
    let mut truncated = TestElf::new().build();
    truncated.truncate(0x2080);
    assert!(PreparedImage::new(truncated).is_err());
    let misaligned = TestElf::new().with_config(|c| {
        c.mappings.physical_memory = Some(bootloader_api::config::Mapping::FixedAddress(
            0x1000_0000_1000,
        ))
    });
    assert!(matches!(
        PreparedImage::new(misaligned.build()),
        Err(BootError::BadAddress(0x1000_0000_1000))
    ));
}

#[test]
fn every_truncation_of_a_good_file_is_an_error_not_a_panic() {
    let file = TestElf::new().build();
    for len in (0..file.len()).step_by(7) {
        let _ = PreparedImage::new(file[..len].to_vec());
    }
}

#[test]
fn too_little_memory_is_an_error() {
    let image = PreparedImage::new(TestElf::new().build()).unwrap();
    assert!(matches!(
        image.load(&memory(MIB), &LoadOptions::default()),
        Err(BootError::OutOfMemory { .. })
    ));
    let huge_stack = TestElf::new().with_config(|c| c.kernel_stack_size = 64 * MIB);
    let image = PreparedImage::new(huge_stack.build()).unwrap();
    assert!(matches!(
        image.load(&memory(4 * MIB), &LoadOptions::default()),
        Err(BootError::OutOfMemory { .. })
    ));
}

#[test]
fn one_image_loads_many_times_identically() {
    let image = PreparedImage::new(TestElf::new().build()).unwrap();
    let first = image
        .load(&memory(4 * MIB), &LoadOptions::default())
        .unwrap();
    let second = image
        .load(&memory(4 * MIB), &LoadOptions::default())
        .unwrap();
    assert_eq!(first.vcpu, second.vcpu);
    assert_eq!(first.regions, second.regions);
}

fn user_elf() -> TestElf {
    TestElf {
        runtime_note: true,
        ..TestElf::new()
    }
}

#[test]
fn a_runtime_note_starts_the_guest_in_user_mode() {
    let (image, memory, loaded) = load(&user_elf());
    assert!(image.user_mode() && loaded.user_mode);
    let (vcpu, offset) = (loaded.vcpu, image.kernel_offset());
    assert_eq!(vcpu.code.selector, mote_abi::note::selectors::USER_CODE);
    assert_eq!(vcpu.code.dpl, 3);
    assert_eq!(vcpu.data.selector, mote_abi::note::selectors::USER_DATA);
    assert_eq!(
        vcpu.rflags & 0x3000,
        0x3000,
        "IOPL 3: hypercall outs work at CPL3"
    );
    assert_eq!(vcpu.rflags & 0x200, 0, "interrupts off");
    assert_eq!(vcpu.efer & 1, 1, "syscall enabled");
    let syscall = vcpu.syscall.expect("the note names a syscall entry");
    assert_eq!(syscall.lstar, offset + SYSCALL_ENTRY);
    assert_eq!(syscall.star >> 48, 0x10);
    assert_eq!((syscall.star >> 32) & 0xFFFF, 0x08);
    // The guest's pages are USER; mote's tables are not.
    let cr3 = vcpu.cr3;
    let user = Access {
        write: false,
        user: true,
    };
    assert!(translate(&memory, cr3, vcpu.rip, user).is_ok());
    assert!(
        translate(
            &memory,
            cr3,
            vcpu.rsp,
            Access {
                write: true,
                user: true
            }
        )
        .is_ok()
    );
    assert!(translate(&memory, cr3, vcpu.rdi, user).is_ok(), "BootInfo");
    assert!(translate(&memory, cr3, vcpu.gdt.base, user).is_err());
    assert!(translate(&memory, cr3, vcpu.idt.base, user).is_err());
    assert!(translate(&memory, cr3, vcpu.idt.base, KERNEL_READ).is_ok());
    // mote told the guest its ABI version and TSC frequency through the note.
    let note = offset + NOTE_VADDR;
    let host_fields = note + mote_abi::note::offsets::HOST_ABI_VERSION as u64;
    let abi = read_u64(&memory, cr3, host_fields) as u32;
    assert_eq!(abi, mote_abi::ABI_VERSION);
    let tsc = read_u64(&memory, cr3, note + mote_abi::note::offsets::TSC_KHZ as u64);
    assert_eq!(tsc, 2_000_000);
}

#[test]
fn a_debugged_user_mode_guest_takes_db_and_bp_at_motes_gate() {
    let image = PreparedImage::new(user_elf().build()).unwrap();
    let memory_of = memory;
    let memory = memory_of(4 * MIB);
    let options = LoadOptions {
        debug_gate: true,
        ..LoadOptions::default()
    };
    let loaded = image.load(&memory, &options).unwrap();
    let gate = loaded.debug_gate.expect("a gate");
    let vcpu = loaded.vcpu;
    let target = |vector: u64| {
        let low: u64 = memory
            .read_obj(GuestAddress(vcpu.idt.base + vector * 16))
            .unwrap();
        let high: u64 = memory
            .read_obj(GuestAddress(vcpu.idt.base + vector * 16 + 8))
            .unwrap();
        (low & 0xFFFF) | ((low >> 48) << 16) | (high << 32)
    };
    assert_eq!(target(1), gate);
    assert_eq!(target(3), gate + crate::DEBUG_GATE_BP);
    assert_eq!(target(14), image.kernel_offset() + PAGE_FAULT_HANDLER);
    // `out DEBUG_GATE_PORT, al` at both, on a page the kernel can run and the guest cannot.
    for at in [gate, gate + crate::DEBUG_GATE_BP] {
        let code: [u8; 2] = memory.read_obj(GuestAddress(at)).unwrap();
        assert_eq!(code, [0xE6, crate::DEBUG_GATE_PORT]);
    }
    assert!(translate(&memory, vcpu.cr3, gate, KERNEL_READ).is_ok());
    let user = Access {
        write: false,
        user: true,
    };
    assert!(translate(&memory, vcpu.cr3, gate, user).is_err());
    assert!(translate(&memory, vcpu.cr3, gate, KERNEL_WRITE).is_err());
    // Without a debugger, and for a kernel-mode guest, no gate.
    let plain = image
        .load(&memory_of(4 * MIB), &LoadOptions::default())
        .unwrap();
    assert_eq!(plain.debug_gate, None);
}

#[test]
fn the_idt_and_tss_point_at_the_notes_handlers_and_mote_stacks() {
    let (image, memory, loaded) = load(&user_elf());
    let (vcpu, offset) = (loaded.vcpu, image.kernel_offset());
    assert_eq!(vcpu.idt.limit, 32 * 16 - 1);
    let gate = |vector: u64| {
        let low: u64 = memory
            .read_obj(GuestAddress(vcpu.idt.base + vector * 16))
            .unwrap();
        let high: u64 = memory
            .read_obj(GuestAddress(vcpu.idt.base + vector * 16 + 8))
            .unwrap();
        let target = (low & 0xFFFF) | ((low >> 48) << 16) | (high << 32);
        let ist = (low >> 32) & 7;
        let present = (low >> 47) & 1 == 1;
        (target, ist, present)
    };
    assert_eq!(gate(14), (offset + PAGE_FAULT_HANDLER, 0, true));
    assert_eq!(gate(8), (offset + DOUBLE_FAULT_HANDLER, 1, true));
    assert!(!gate(0).2, "no handler given, no gate");
    // TR points at a TSS whose RSP0 and IST1 are supervisor stacks above guard pages.
    let tss = vcpu.task.base;
    let rsp0: u64 = memory.read_obj(GuestAddress(tss + 4)).unwrap();
    let ist1: u64 = memory.read_obj(GuestAddress(tss + 0x24)).unwrap();
    for top in [rsp0, ist1] {
        assert!(translate(&memory, vcpu.cr3, top - 8, KERNEL_WRITE).is_ok());
        let user_write = Access {
            write: true,
            user: true,
        };
        assert!(translate(&memory, vcpu.cr3, top - 8, user_write).is_err());
    }
    assert_eq!(rsp0 - 0x2000 - 0x1000, loaded.guard_pages[1].address);
    for guard in &loaded.guard_pages {
        assert!(translate(&memory, vcpu.cr3, guard.address, KERNEL_READ).is_err());
    }
    assert!(loaded.guard_pages[0].contains(vcpu.rsp + 8 - 80 * 1024 - 1));
}

#[test]
fn a_bad_runtime_note_is_refused() {
    let in_data = TestElf {
        note_handler_in_data: true,
        ..user_elf()
    };
    let error = PreparedImage::new(in_data.build()).unwrap_err();
    assert!(
        error.to_string().contains("not in executable code"),
        "{error}"
    );
    let mut bad_magic = user_elf().build();
    bad_magic[0x2100] ^= 0xFF;
    let error = PreparedImage::new(bad_magic).unwrap_err();
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn the_ramdisk_is_mapped_where_boot_info_says() {
    let input = b"the function's input";
    for elf in [TestElf::new(), user_elf()] {
        let image = PreparedImage::new(elf.build()).unwrap();
        let memory = memory(16 * MIB);
        let options = LoadOptions {
            ramdisk: Some(input),
            tsc_khz: 1_000_000,
            ..LoadOptions::default()
        };
        let loaded = image.load(&memory, &options).unwrap();
        let bytes = boot_info_bytes(&memory, &loaded);
        // SAFETY: a BootInfo the loader wrote, with valid tags; never dereferenced.
        let info: bootloader_api::BootInfo =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let bootloader_api::info::Optional::Some(address) = info.ramdisk_addr else {
            panic!("no ramdisk");
        };
        assert_eq!(info.ramdisk_len, input.len() as u64);
        let physical = translate(&memory, loaded.vcpu.cr3, address, KERNEL_READ).unwrap();
        let mut read = vec![0u8; input.len()];
        memory
            .read_slice(&mut read, GuestAddress(physical))
            .unwrap();
        assert_eq!(read, input);
        let user_write = Access {
            write: true,
            user: image.user_mode(),
        };
        let writable = translate(&memory, loaded.vcpu.cr3, address, user_write).is_ok();
        assert_eq!(
            writable,
            !image.user_mode(),
            "input is read-only in user mode"
        );
    }
}

#[test]
fn a_relocation_into_bss_is_applied_without_copying_the_segment() {
    // Point the relocation into .bss, past the file bytes.
    let mut file = TestElf::new().build();
    let target = DATA_VADDR + 0x2000;
    file[0x10A0..0x10A8].copy_from_slice(&target.to_le_bytes());
    let image = PreparedImage::new(file).unwrap();
    let memory = memory(16 * MIB);
    let loaded = image.load(&memory, &LoadOptions::default()).unwrap();
    let offset = image.kernel_offset();
    assert_eq!(
        read_u64(&memory, loaded.vcpu.cr3, offset + target),
        offset + POINTER_TARGET
    );
}

#[test]
fn a_huge_claimed_segment_costs_no_host_memory() {
    // The data segment claims 16 TiB of memory and a relocation lands near its end: this must
    // be refused at load (no guest memory for it), not allocated on the host.
    let mut file = TestElf::new().build();
    let huge: u64 = 1 << 44;
    let data_header = 0x40 + 56;
    file[data_header + 40..data_header + 48].copy_from_slice(&huge.to_le_bytes());
    let target = DATA_VADDR + huge - 16;
    file[0x10A0..0x10A8].copy_from_slice(&target.to_le_bytes());
    let image = PreparedImage::new(file).unwrap();
    assert!(matches!(
        image.load(&memory(4 * MIB), &LoadOptions::default()),
        Err(BootError::OutOfMemory { .. })
    ));
}

#[test]
fn a_plain_boot_ignores_the_runtime_note() {
    let image = PreparedImage::new(user_elf().build()).unwrap();
    let memory = memory(16 * MIB);
    let options = LoadOptions {
        plain: true,
        ..LoadOptions::default()
    };
    let loaded = image.load(&memory, &options).unwrap();
    assert!(!loaded.user_mode);
    assert_eq!(loaded.vcpu.code.dpl, 0);
    assert_eq!(loaded.vcpu.idt.limit, 0);
    assert!(loaded.vcpu.syscall.is_none());
}

fn load_with(
    elf: &TestElf,
    options: &LoadOptions,
) -> (PreparedImage, GuestMemoryMmap, LoadedGuest) {
    let image = PreparedImage::new(elf.build()).unwrap();
    let memory = memory(16 * MIB);
    let loaded = image.load(&memory, options).unwrap();
    (image, memory, loaded)
}

/// BootInfo as the crate's own type.
fn boot_info(memory: &GuestMemoryMmap, loaded: &LoadedGuest) -> bootloader_api::BootInfo {
    let bytes = boot_info_bytes(memory, loaded);
    // SAFETY: a whole BootInfo the loader wrote, with valid tags; its pointers are guest
    // addresses and are never dereferenced.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
}

#[test]
fn the_physical_memory_map_covers_four_gib_in_large_pages() {
    use bootloader_api::config::Mapping as M;
    for (mapping, expected) in [
        (M::Dynamic, None),
        (M::FixedAddress(0x1000_0000_0000), Some(0x1000_0000_0000)),
    ] {
        let elf = TestElf::new().with_config(|c| c.mappings.physical_memory = Some(mapping));
        let (_, memory, loaded) = load(&elf);
        let bootloader_api::info::Optional::Some(offset) =
            boot_info(&memory, &loaded).physical_memory_offset
        else {
            panic!("no physical-memory offset");
        };
        if let Some(expected) = expected {
            assert_eq!(offset, expected);
        }
        let cr3 = loaded.vcpu.cr3;
        // The kernel's own page tables are visible through the map, and so is the top of 4 GiB.
        assert_eq!(translate(&memory, cr3, offset + cr3, KERNEL_WRITE), Ok(cr3));
        let apic = 0xFEE0_0000;
        assert!(matches!(
            translate(&memory, cr3, offset + apic, KERNEL_READ),
            Ok(a) if a == apic
        ));
        assert!(translate(&memory, cr3, offset + (4 << 30), KERNEL_READ).is_err());
        let user = Access {
            write: false,
            user: true,
        };
        assert!(translate(&memory, cr3, offset, user).is_err(), "never USER");
    }
}

#[test]
fn the_recursive_entry_points_at_the_pml4() {
    let elf = TestElf::new().with_config(|c| {
        c.mappings.page_table_recursive = Some(bootloader_api::config::Mapping::Dynamic)
    });
    let (_, memory, loaded) = load(&elf);
    let bootloader_api::info::Optional::Some(index) = boot_info(&memory, &loaded).recursive_index
    else {
        panic!("no recursive index");
    };
    let index = u64::from(index);
    let cr3 = loaded.vcpu.cr3;
    let entry: u64 = memory.read_obj(GuestAddress(cr3 + index * 8)).unwrap();
    assert_eq!(entry & 0x000F_FFFF_FFFF_F000, cr3);
    // Through the recursive address of the PML4 itself, the guest reads its own PML4.
    let sign = if index >= 256 {
        0xFFFF_0000_0000_0000
    } else {
        0
    };
    let pml4 = sign | (index << 39) | (index << 30) | (index << 21) | (index << 12);
    assert_eq!(translate(&memory, cr3, pml4, KERNEL_READ), Ok(cr3));
}

#[test]
fn a_framebuffer_is_mapped_and_described() {
    let options = LoadOptions {
        framebuffer: Some((320, 200)),
        ..LoadOptions::default()
    };
    let (_, memory, loaded) = load_with(&TestElf::new(), &options);
    let info = boot_info(&memory, &loaded);
    let bootloader_api::info::Optional::Some(framebuffer) = &info.framebuffer else {
        panic!("no framebuffer");
    };
    let shape = framebuffer.info();
    assert_eq!(
        (shape.width, shape.height, shape.bytes_per_pixel),
        (320, 200, 4)
    );
    let start = framebuffer.buffer().as_ptr() as u64;
    let last = start + shape.byte_len as u64 - 1;
    let ours = loaded.framebuffer.unwrap();
    let cr3 = loaded.vcpu.cr3;
    assert_eq!(
        translate(&memory, cr3, start, KERNEL_WRITE),
        Ok(ours.physical)
    );
    assert_eq!(
        translate(&memory, cr3, last, KERNEL_WRITE),
        Ok(ours.physical + ours.len() - 1)
    );
    let usable = loaded
        .regions
        .iter()
        .any(|r| r.kind == RegionKind::Usable && (r.start..r.end).contains(&ours.physical));
    assert!(!usable, "the framebuffer is never Usable memory");
}

#[test]
fn acpi_tables_sit_in_a_reserved_bios_area() {
    let options = LoadOptions {
        acpi: true,
        ..LoadOptions::default()
    };
    let (_, memory, loaded) = load_with(&TestElf::new(), &options);
    let info = boot_info(&memory, &loaded);
    let bootloader_api::info::Optional::Some(rsdp) = info.rsdp_addr else {
        panic!("no RSDP");
    };
    assert!(rsdp > 0xE_0000 && rsdp < 0x10_0000);
    let mut signature = [0u8; 8];
    memory
        .read_slice(&mut signature, GuestAddress(rsdp))
        .unwrap();
    assert_eq!(&signature, b"RSD PTR ");
    let region = loaded
        .regions
        .iter()
        .find(|r| (r.start..r.end).contains(&rsdp))
        .unwrap();
    assert_eq!(region.kind, RegionKind::UnknownBios(2));
    let low_usable: u64 = loaded
        .regions
        .iter()
        .filter(|r| r.kind == RegionKind::Usable && r.end <= 0x10_0000)
        .map(|r| r.end - r.start)
        .sum();
    assert!(low_usable / 4096 > 16, "lower memory stays free");
    for pair in loaded.regions.windows(2) {
        assert!(pair[0].end <= pair[1].start, "sorted, no overlap");
    }
    // RAM is covered without a hole; only the APIC ranges lie above it.
    let in_ram: Vec<_> = loaded
        .regions
        .iter()
        .filter(|r| r.end <= 16 * MIB)
        .collect();
    assert_eq!(in_ram[0].start, 0);
    assert_eq!(in_ram.last().unwrap().end, 16 * MIB);
    for pair in in_ram.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
    }
    let above: Vec<_> = loaded
        .regions
        .iter()
        .filter(|r| r.start >= 16 * MIB)
        .map(|r| (r.start, r.kind))
        .collect();
    // Without the irqchip the MADT names the local APIC only, and so does the map.
    assert_eq!(above, [(0xFEE0_0000, RegionKind::UnknownBios(2))]);
    // More than 4 regions, as the real bootloader's check_boot_info kernels assert.
    assert!(loaded.regions.len() > 4);

    let with_irqchip = LoadOptions {
        irqchip: true,
        ..options
    };
    let (_, _, loaded) = load_with(&TestElf::new(), &with_irqchip);
    let above: Vec<_> = loaded
        .regions
        .iter()
        .filter(|r| r.start >= 16 * MIB)
        .map(|r| (r.start, r.kind))
        .collect();
    assert_eq!(
        above,
        [
            (0xFEC0_0000, RegionKind::UnknownBios(2)),
            (0xFEE0_0000, RegionKind::UnknownBios(2))
        ]
    );
}

#[test]
fn aslr_randomizes_each_load_only_when_the_config_asks() {
    let with_seed = |elf: &TestElf, seed| {
        let options = LoadOptions {
            aslr_seed: seed,
            ..LoadOptions::default()
        };
        let (_, memory, loaded) = load_with(elf, &options);
        let info = boot_info(&memory, &loaded);
        (info.kernel_image_offset, loaded.vcpu.rsp, loaded.vcpu.rdi)
    };
    let fixed = TestElf::new();
    assert_eq!(with_seed(&fixed, Some(1)), with_seed(&fixed, Some(2)));
    let aslr = TestElf::new().with_config(|c| c.mappings.aslr = true);
    let deterministic = with_seed(&aslr, None);
    assert_eq!(deterministic, with_seed(&fixed, None));
    let first = with_seed(&aslr, Some(1));
    let second = with_seed(&aslr, Some(2));
    assert_ne!(first, second);
    assert_ne!(first, deterministic);
    assert_eq!(
        first,
        with_seed(&aslr, Some(1)),
        "the same seed, the same layout"
    );
    // The random offset keeps the image aligned, and the kernel still loads and relocates.
    assert_eq!(first.0 % 4096, (0x80_0000_0000u64 - CODE_VADDR) % 4096);
    let options = LoadOptions {
        aslr_seed: Some(7),
        ..LoadOptions::default()
    };
    let (_, memory, loaded) = load_with(&aslr, &options);
    let offset = boot_info(&memory, &loaded).kernel_image_offset;
    assert_eq!(
        read_u64(&memory, loaded.vcpu.cr3, offset + DATA_VADDR),
        offset + POINTER_TARGET
    );
}

#[test]
fn dynamic_addresses_stay_inside_the_dynamic_range() {
    let slot = |i: u64| i << 39;
    let elf = TestElf::new().with_config(|c| {
        c.mappings.dynamic_range_start = Some(slot(5));
        c.mappings.dynamic_range_end = Some(slot(11) - 1);
    });
    let (image, memory, loaded) = load(&elf);
    assert_eq!(image.kernel_offset() + CODE_VADDR, slot(5));
    let info = boot_info(&memory, &loaded);
    for address in [info.kernel_stack_bottom, loaded.vcpu.rdi] {
        assert!((slot(5)..slot(11)).contains(&address), "{address:#x}");
    }
    let cramped = TestElf::new().with_config(|c| {
        c.mappings.dynamic_range_start = Some(0x1000);
        c.mappings.dynamic_range_end = Some(0x2000);
    });
    let error = PreparedImage::new(cramped.build()).unwrap_err();
    assert!(matches!(error, BootError::NoFreeSlot(_)), "{error}");
}

/// Configs and headers that reach the top of the address space: refused, never an arithmetic
/// overflow (a panic in debug builds).
#[test]
fn addresses_at_the_top_of_the_address_space_are_refused() {
    use bootloader_api::config::Mapping as M;
    let huge_stack = TestElf::new().with_config(|c| c.kernel_stack_size = u64::MAX);
    assert!(matches!(
        PreparedImage::new(huge_stack.build()),
        Err(BootError::BadConfig(_))
    ));
    let top_base = TestElf::new()
        .with_config(|c| c.mappings.kernel_base = M::FixedAddress(0xFFFF_FFFF_FFFF_F000));
    assert!(PreparedImage::new(top_base.build()).is_err());
    for guard in [0xFFFF_FFFF_FFFF_F000, 0xFFFF_FFFF_FFFF_E000] {
        let top_stack = TestElf::new().with_config(|c| {
            c.kernel_stack_size = 4096;
            c.mappings.kernel_stack = M::FixedAddress(guard);
        });
        let image = PreparedImage::new(top_stack.build());
        assert!(matches!(image, Err(BootError::BadAddress(_))), "{image:?}");
    }
    // An ET_EXEC segment in the last page of the address space.
    let mut last_page = TestElf {
        e_type: object::elf::ET_EXEC,
        ..TestElf::new()
    }
    .build();
    let code_header = 0x40;
    last_page[code_header + 16..code_header + 24]
        .copy_from_slice(&0xFFFF_FFFF_FFFF_F000u64.to_le_bytes());
    last_page[code_header + 40..code_header + 48].copy_from_slice(&0xFFFu64.to_le_bytes());
    assert!(matches!(
        PreparedImage::new(last_page),
        Err(BootError::BadElf(_))
    ));
    // A relocation table whose address wraps when its length is added.
    let mut wrapping_table = TestElf::new().build();
    let dynamic = 0x2040;
    wrapping_table[dynamic + 8..dynamic + 16]
        .copy_from_slice(&0xFFFF_FFFF_FFFF_EFF8u64.to_le_bytes());
    assert!(PreparedImage::new(wrapping_table).is_err());
}

#[test]
fn a_ramdisk_capacity_maps_an_empty_window_of_whole_pages() {
    let options = LoadOptions {
        ramdisk_capacity: 3 * PAGE_SIZE + 1,
        tsc_khz: 1_000_000,
        ..LoadOptions::default()
    };
    let (_, memory, loaded) = load_with(&user_elf(), &options);
    let frames = loaded.ramdisk.expect("a window");
    assert_eq!(frames.len, 4 * PAGE_SIZE);
    let info = boot_info(&memory, &loaded);
    let bootloader_api::info::Optional::Some(address) = info.ramdisk_addr else {
        panic!("no ramdisk");
    };
    assert_eq!(info.ramdisk_len, 0, "nothing is in the window yet");
    for page in 0..4 {
        let virt = address + page * PAGE_SIZE;
        let user_read = Access {
            write: false,
            user: true,
        };
        let physical = translate(&memory, loaded.vcpu.cr3, virt, user_read).unwrap();
        assert_eq!(
            physical,
            frames.physical + page * PAGE_SIZE,
            "contiguous, in order"
        );
    }
    // Input shorter than the window goes at its start; longer input widens it.
    let options = LoadOptions {
        ramdisk: Some(&[7u8; 5000]),
        ramdisk_capacity: PAGE_SIZE,
        tsc_khz: 1_000_000,
        ..LoadOptions::default()
    };
    let (_, memory, loaded) = load_with(&user_elf(), &options);
    let frames = loaded.ramdisk.unwrap();
    assert_eq!(frames.len, 2 * PAGE_SIZE);
    assert_eq!(
        memory
            .read_obj::<u8>(GuestAddress(frames.physical + 4999))
            .unwrap(),
        7
    );
    assert_eq!(boot_info(&memory, &loaded).ramdisk_len, 5000);
    // Neither input nor capacity: no ramdisk.
    let (_, _, loaded) = load(&user_elf());
    assert_eq!(loaded.ramdisk, None);
}

/// Every entry of the tables at `table` (a table of `level`), recursively.
fn each_entry(memory: &GuestMemoryMmap, table: u64, level: u32, seen: &mut Vec<(u32, u64)>) {
    for index in 0..512 {
        let entry: u64 = memory.read_obj(GuestAddress(table + index * 8)).unwrap();
        if entry & flags::PRESENT == 0 {
            continue;
        }
        let next = entry & 0x000F_FFFF_FFFF_F000;
        let leaf = level == 1 || entry & flags::HUGE != 0;
        seen.push((if leaf { 0 } else { level }, entry));
        // The recursive entry points back at the PML4: do not walk it again.
        if !leaf && next != table {
            each_entry(memory, next, level - 1, seen);
        }
    }
}

#[test]
fn every_entry_has_its_accessed_bit_and_every_leaf_its_dirty_bit_preset() {
    let options = LoadOptions {
        ramdisk: Some(b"input"),
        tsc_khz: 1_000_000,
        ..LoadOptions::default()
    };
    let elf = user_elf().with_config(|c| {
        c.mappings.physical_memory = Some(bootloader_api::config::Mapping::Dynamic);
    });
    let (_, memory, loaded) = load_with(&elf, &options);
    let mut entries = Vec::new();
    each_entry(&memory, loaded.vcpu.cr3, 4, &mut entries);
    assert!(entries.iter().filter(|(level, _)| *level == 0).count() > 100);
    for (level, entry) in entries {
        assert_ne!(entry & flags::ACCESSED, 0, "level {level} entry {entry:#x}");
        if level == 0 {
            assert_ne!(entry & flags::DIRTY, 0, "leaf {entry:#x}");
        }
    }
}

#[test]
fn a_stack_too_small_to_hold_its_first_frame_is_refused() {
    for size in [1, 8, 15] {
        let elf = TestElf::new().with_config(|c| c.kernel_stack_size = size);
        let refused = PreparedImage::new(elf.build());
        assert!(
            matches!(&refused, Err(BootError::BadConfig(why)) if why.contains("guard page")),
            "{size}: {refused:?}"
        );
    }
    let elf = TestElf::new().with_config(|c| c.kernel_stack_size = 16);
    let (_, _, loaded) = load(&elf);
    assert_eq!(loaded.vcpu.rsp % 16, 8, "SysV entry alignment");
}

#[test]
fn fixed_addresses_must_be_canonical() {
    use bootloader_api::config::Mapping as Api;
    // 512 GiB-aligned but in the non-canonical hole: it would have landed in some slot.
    let hole = 0x0000_8000_0000_0000;
    let edits: [fn(&mut bootloader_api::BootloaderConfig); 3] = [
        |c| c.mappings.page_table_recursive = Some(Api::FixedAddress(0x0000_8000_0000_0000)),
        |c| c.mappings.boot_info = Api::FixedAddress(0x0000_8000_0000_0000),
        |c| c.mappings.ramdisk_memory = Api::FixedAddress(0x0000_8000_0000_0000),
    ];
    for edit in edits {
        let refused = PreparedImage::new(TestElf::new().with_config(edit).build());
        assert!(
            matches!(refused, Err(BootError::BadAddress(a)) if a == hole),
            "{refused:?}"
        );
    }
}

#[test]
fn segments_that_share_file_bytes_are_refused_before_anything_is_copied() {
    let mut file = TestElf::new().build();
    let len = file.len() as u64;
    // The data segment (the second program header) claims the whole file, which the code
    // segment's bytes are part of.
    let data = 0x40 + 56;
    file[data + 8..data + 16].copy_from_slice(&0u64.to_le_bytes()); // offset
    file[data + 32..data + 40].copy_from_slice(&len.to_le_bytes()); // filesz
    file[data + 40..data + 48].copy_from_slice(&len.to_le_bytes()); // memsz
    let refused = PreparedImage::new(file);
    assert!(
        matches!(&refused, Err(BootError::BadElf(why)) if why.contains("share file bytes")),
        "{refused:?}"
    );
}

#[test]
fn min_memory_is_a_lower_bound_that_grows_with_the_ramdisk() {
    let image = PreparedImage::new(TestElf::new().build()).unwrap();
    let bare = image.min_memory(0);
    assert!(bare >= MIN_MEMORY);
    assert!(image.min_memory(16 * MIB) >= LOADER_FRAMES_START + 16 * MIB);
    assert_eq!(
        image.min_memory(16 * MIB + 1),
        image.min_memory(16 * MIB) + 4096
    );
    // A ramdisk that needs more than the memory fails to load; one that fits loads.
    let ramdisk = vec![1u8; (15 * MIB) as usize];
    let options = LoadOptions {
        ramdisk: Some(&ramdisk),
        ..LoadOptions::default()
    };
    assert!(image.min_memory(ramdisk.len() as u64) <= 16 * MIB + MIB);
    let small = memory(8 * MIB);
    assert!(image.min_memory(ramdisk.len() as u64) > 8 * MIB);
    assert!(matches!(
        image.load(&small, &options),
        Err(BootError::OutOfMemory { .. })
    ));
    let big = memory(32 * MIB);
    assert!(image.min_memory(ramdisk.len() as u64) <= 32 * MIB);
    image.load(&big, &options).unwrap();
}
