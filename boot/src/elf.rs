//! Reading a guest kernel's ELF file: what to load, where, and how to relocate it.
//!
//! Everything here is untrusted input. Every offset, size and address is checked before use and
//! every failure is a [`BootError`] that names the problem.

use object::LittleEndian as LE;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader, Rela, SectionHeader};

use crate::BootError;
use crate::paging::{PAGE_SIZE, is_canonical};

/// The name of the section `bootloader_api::entry_point!` puts the config in.
const CONFIG_SECTION: &[u8] = b".bootloader-config";

/// `DT_RELR`, which `object` 0.36 does not name.
const DT_RELR: u32 = 36;

/// At most this many program headers: more is not a kernel, it is an attack on the loader.
const MAX_PROGRAM_HEADERS: usize = 64;

/// How a loadable segment may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    /// Writable (PF_W).
    pub writable: bool,
    /// Executable (PF_X).
    pub executable: bool,
}

/// One `PT_LOAD` segment, at its link-time address.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Link-time virtual address of the first byte.
    pub vaddr: u64,
    /// Size in memory (the part past `file_range` is zero).
    pub mem_size: u64,
    /// The bytes of the file that the segment starts with.
    pub file_range: std::ops::Range<usize>,
    /// Access rights from the program header.
    pub flags: SegmentFlags,
}

impl Segment {
    /// Link-time address one past the last byte.
    pub fn end(&self) -> u64 {
        // Cannot overflow: checked when the segment was read.
        self.vaddr + self.mem_size
    }
}

/// The parts of a kernel ELF the loader needs, checked.
#[derive(Clone, Debug)]
pub struct ElfKernel {
    /// Position-independent (ET_DYN) rather than at fixed addresses (ET_EXEC).
    pub position_independent: bool,
    /// Link-time entry point.
    pub entry: u64,
    /// The loadable segments, sorted by address, not sharing any page.
    pub segments: Vec<Segment>,
    /// Link-time addresses where an `R_X86_64_RELATIVE` relocation writes `base + addend`.
    pub relocations: Vec<(u64, i64)>,
    /// Link-time range made read-only after relocation (`PT_GNU_RELRO`).
    pub relro: Option<std::ops::Range<u64>>,
    /// Link-time TLS template: address, file size, memory size (`PT_TLS`).
    pub tls: Option<(u64, u64, u64)>,
    /// The bytes of the `.bootloader-config` section.
    pub config: Vec<u8>,
    /// Link-time address of mote's runtime note, if the kernel carries one.
    pub runtime_note: Option<u64>,
    /// The largest segment alignment.
    pub max_align: u64,
}

fn bad(why: impl Into<String>) -> BootError {
    BootError::BadElf(why.into())
}

impl ElfKernel {
    /// Reads and checks a kernel ELF.
    pub fn parse(data: &[u8]) -> Result<Self, BootError> {
        if data.get(..4) != Some(&elf::ELFMAG[..]) {
            return Err(BootError::NotElf);
        }
        let header = FileHeader64::<LE>::parse(data)
            .map_err(|e| bad(format!("not a little-endian 64-bit ELF file ({e})")))?;
        let endian = header
            .endian()
            .map_err(|_| bad("not a little-endian ELF file"))?;
        let machine = header.e_machine(endian);
        if machine != elf::EM_X86_64 {
            return Err(BootError::WrongMachine(machine));
        }
        let position_independent = match header.e_type(endian) {
            elf::ET_DYN => true,
            elf::ET_EXEC => false,
            other => {
                return Err(bad(format!(
                    "ELF type {other} is neither ET_EXEC nor ET_DYN"
                )));
            }
        };
        let program_headers = header
            .program_headers(endian, data)
            .map_err(|e| bad(format!("unreadable program headers ({e})")))?;
        if program_headers.len() > MAX_PROGRAM_HEADERS {
            return Err(bad(format!(
                "{} program headers; at most {MAX_PROGRAM_HEADERS} are accepted",
                program_headers.len()
            )));
        }

        let mut kernel = Self {
            position_independent,
            entry: header.e_entry(endian),
            segments: Vec::new(),
            relocations: Vec::new(),
            relro: None,
            tls: None,
            config: Self::config_section(header, endian, data)?,
            runtime_note: Self::runtime_note(header, endian, data)?,
            max_align: PAGE_SIZE,
        };
        let mut dynamic = None;
        for ph in program_headers {
            match ph.p_type(endian) {
                elf::PT_LOAD => kernel.add_segment(ph, endian, data)?,
                elf::PT_TLS => {
                    if kernel.tls.is_some() {
                        return Err(bad("more than one PT_TLS segment"));
                    }
                    let (vaddr, file, mem) =
                        (ph.p_vaddr(endian), ph.p_filesz(endian), ph.p_memsz(endian));
                    if file > mem || vaddr.checked_add(mem).is_none() {
                        return Err(bad("the PT_TLS segment is malformed"));
                    }
                    kernel.tls = Some((vaddr, file, mem));
                }
                elf::PT_GNU_RELRO => {
                    let start = ph.p_vaddr(endian);
                    let end = start
                        .checked_add(ph.p_memsz(endian))
                        .ok_or_else(|| bad("the PT_GNU_RELRO range overflows"))?;
                    kernel.relro = Some(start..end);
                }
                elf::PT_DYNAMIC => dynamic = Some(*ph),
                elf::PT_INTERP => return Err(bad("it asks for an interpreter (PT_INTERP)")),
                _ => {}
            }
        }
        if kernel.segments.is_empty() {
            return Err(bad("it has no loadable (PT_LOAD) segment"));
        }
        // Each segment's file bytes are copied once per prepared image: segments that share
        // file bytes would make a small file cost many times its size (64 segments over one
        // 32 MiB range would take 2 GiB).
        let claimed: u64 = kernel
            .segments
            .iter()
            .map(|s| s.file_range.len() as u64)
            .sum();
        if claimed > data.len() as u64 {
            return Err(bad(format!(
                "its segments claim {claimed} file bytes, more than the file's {}: segments may \
                 not share file bytes",
                data.len()
            )));
        }
        kernel.segments.sort_by_key(|s| s.vaddr);
        for pair in kernel.segments.windows(2) {
            if page_floor(pair[1].vaddr) < page_ceil(pair[0].end()) {
                return Err(bad(format!(
                    "segments at {:#x} and {:#x} share a page or overlap",
                    pair[0].vaddr, pair[1].vaddr
                )));
            }
        }
        if !kernel.contains_executable(kernel.entry) {
            return Err(bad(format!(
                "the entry point {:#x} is not in an executable segment",
                kernel.entry
            )));
        }
        if let Some(ph) = dynamic {
            kernel.relocations = kernel.read_relocations(&ph, endian, data)?;
        }
        Ok(kernel)
    }

    /// Where the runtime note is, if there is one; its contents are read after relocation.
    fn runtime_note(
        header: &FileHeader64<LE>,
        endian: LE,
        data: &[u8],
    ) -> Result<Option<u64>, BootError> {
        let sections = header
            .sections(endian, data)
            .map_err(|e| bad(format!("unreadable section headers ({e})")))?;
        let Some((_, section)) =
            sections.section_by_name(endian, mote_abi::note::SECTION.as_bytes())
        else {
            return Ok(None);
        };
        if section.sh_size(endian) < mote_abi::note::SIZE as u64 {
            return Err(bad(format!(
                "the {} section is {} bytes, smaller than a runtime note",
                mote_abi::note::SECTION,
                section.sh_size(endian)
            )));
        }
        Ok(Some(section.sh_addr(endian)))
    }

    fn config_section(
        header: &FileHeader64<LE>,
        endian: LE,
        data: &[u8],
    ) -> Result<Vec<u8>, BootError> {
        let sections = header
            .sections(endian, data)
            .map_err(|e| bad(format!("unreadable section headers ({e})")))?;
        let (_, section) = sections
            .section_by_name(endian, CONFIG_SECTION)
            .ok_or(BootError::NoConfigSection)?;
        let bytes = section
            .data(endian, data)
            .map_err(|e| bad(format!("unreadable .bootloader-config section ({e})")))?;
        Ok(bytes.to_vec())
    }

    fn add_segment(
        &mut self,
        ph: &ProgramHeader64<LE>,
        endian: LE,
        data: &[u8],
    ) -> Result<(), BootError> {
        let vaddr = ph.p_vaddr(endian);
        let mem_size = ph.p_memsz(endian);
        let file_size = ph.p_filesz(endian);
        let offset = ph.p_offset(endian);
        let align = ph.p_align(endian);
        let what = || format!("the segment at {vaddr:#x}");
        if mem_size == 0 {
            return Ok(());
        }
        if file_size > mem_size {
            return Err(bad(format!("{} has more file bytes than memory", what())));
        }
        // The end, rounded up to a page, must still be an address: nothing may reach the last
        // page of the address space.
        let end = vaddr
            .checked_add(mem_size)
            .filter(|&end| checked_page_ceil(end).is_some())
            .ok_or_else(|| bad(format!("{} wraps around the address space", what())))?;
        if !is_canonical(vaddr) || !is_canonical(end - 1) {
            return Err(bad(format!("{} is not at a canonical address", what())));
        }
        let file_end = offset
            .checked_add(file_size)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| bad(format!("{} reaches past the end of the file", what())))?;
        if align > 1 {
            if !align.is_power_of_two() {
                return Err(bad(format!("{} has alignment {align:#x}", what())));
            }
            self.max_align = self.max_align.max(align);
        }
        let flags = ph.p_flags(endian);
        self.segments.push(Segment {
            vaddr,
            mem_size,
            file_range: offset as usize..file_end as usize,
            flags: SegmentFlags {
                writable: flags & elf::PF_W != 0,
                executable: flags & elf::PF_X != 0,
            },
        });
        Ok(())
    }

    fn contains_executable(&self, address: u64) -> bool {
        self.segments
            .iter()
            .any(|s| s.flags.executable && (s.vaddr..s.end()).contains(&address))
    }

    /// The segment holding the bytes `address..address + len`, if one does.
    pub fn segment_holding(&self, address: u64, len: u64) -> Option<&Segment> {
        let end = address.checked_add(len)?;
        self.segments
            .iter()
            .find(|s| s.vaddr <= address && end <= s.end())
    }

    /// The file offset of a link-time address inside a segment's file bytes.
    fn file_offset(&self, address: u64, len: u64) -> Option<usize> {
        let segment = self.segment_holding(address, len)?;
        let offset = (segment.file_range.start as u64).checked_add(address - segment.vaddr)?;
        (offset.checked_add(len)? <= segment.file_range.end as u64).then_some(offset as usize)
    }

    fn read_relocations(
        &self,
        ph: &ProgramHeader64<LE>,
        endian: LE,
        data: &[u8],
    ) -> Result<Vec<(u64, i64)>, BootError> {
        let entries = ph
            .dynamic(endian, data)
            .map_err(|e| bad(format!("unreadable PT_DYNAMIC ({e})")))?
            .unwrap_or(&[]);
        let (mut rela, mut rela_size, mut rela_ent) = (None, 0, 24);
        for entry in entries {
            let value = entry.d_val(endian);
            match u32::try_from(entry.d_tag(endian)) {
                Ok(elf::DT_NULL) => break,
                Ok(elf::DT_RELA) => rela = Some(value),
                Ok(elf::DT_RELASZ) => rela_size = value,
                Ok(elf::DT_RELAENT) => rela_ent = value,
                Ok(tag @ (elf::DT_REL | DT_RELR)) => {
                    return Err(bad(format!(
                        "it uses REL or RELR relocations (dynamic tag {tag}); only RELA is supported"
                    )));
                }
                _ => {}
            }
        }
        let Some(rela) = rela else {
            return Ok(Vec::new());
        };
        if rela_ent != 24 {
            return Err(bad(format!("DT_RELAENT is {rela_ent}, not 24")));
        }
        let offset = self
            .file_offset(rela, rela_size)
            .ok_or_else(|| bad("the relocation table is not inside the file"))?;
        let bytes = &data[offset..offset + rela_size as usize];
        let (table, _) = object::pod::slice_from_bytes::<elf::Rela64<LE>>(bytes, bytes.len() / 24)
            .map_err(|()| bad("the relocation table is misaligned"))?;
        let mut relocations = Vec::with_capacity(table.len());
        for entry in table {
            let kind = entry.r_type(endian, false);
            let symbol = entry.r_sym(endian, false);
            let target = entry.r_offset(endian);
            if kind != elf::R_X86_64_RELATIVE || symbol != 0 {
                return Err(bad(format!(
                    "relocation at {target:#x} has type {kind} and symbol {symbol}; \
                     only R_X86_64_RELATIVE without a symbol is supported"
                )));
            }
            if self.segment_holding(target, 8).is_none() {
                return Err(bad(format!(
                    "relocation at {target:#x} does not fall inside a loadable segment"
                )));
            }
            relocations.push((target, entry.r_addend(endian)));
        }
        Ok(relocations)
    }
}

/// Rounds an address down to its page.
pub(crate) fn page_floor(address: u64) -> u64 {
    address & !(PAGE_SIZE - 1)
}

/// Rounds an address up to a page boundary (saturating at the top of the address space).
pub(crate) fn page_ceil(address: u64) -> u64 {
    checked_page_ceil(address).unwrap_or(page_floor(u64::MAX))
}

/// Rounds an address up to a page boundary, if that is still an address.
pub(crate) fn checked_page_ceil(address: u64) -> Option<u64> {
    address.checked_add(PAGE_SIZE - 1).map(page_floor)
}
