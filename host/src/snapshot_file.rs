//! Snapshot files: a [`Snapshot`](crate::Snapshot) written to disk, and read back by another
//! mote process on the same machine.
//!
//! The format is little-endian throughout:
//!
//! | what | bytes |
//! |---|---|
//! | magic `MOTESNAP` | 8 |
//! | format version ([`FORMAT_VERSION`]) | 4 |
//! | mote version, UTF-8, NUL-padded | 16 |
//! | memory size | 8 |
//! | TSC frequency in kHz | 4 |
//! | flags: 1 user mode, 2 plain boot, 4 framebuffer, 8 input window | 4 |
//! | input window: physical address, length | 8 + 8 |
//! | framebuffer: physical address, width, height | 8 + 4 + 4 |
//! | guard pages: count (≤ 8), then each: address (8), stack (1: 0 stack, 1 kernel stack, 2 double-fault stack) | 4 + 9 each |
//! | CPUID: count, then `kvm_cpuid_entry2` each | 4 + 40 each |
//! | `kvm_regs`, `kvm_sregs`, `kvm_xcrs`, `kvm_xsave`, `kvm_vcpu_events`, `kvm_debugregs` | as KVM lays them out |
//! | MP state | 4 |
//! | MSRs: count, then `kvm_msr_entry` each | 4 + 16 each |
//! | COM1: length, then the registers | 1 + up to 24 |
//! | memory: runs of pages, each: first page, page count, the pages; a count of 0 ends them | 16 + 4096 each page |
//! | CRC-32 of everything before | 4 |
//!
//! Reading never trusts the file: every count and address is checked before it is used, and the
//! pages are copied into a fresh memfd (never mapped from the file, which could change after it
//! was checked) while the checksum is computed; a file whose checksum does not match is refused
//! whole.

use std::io::{self, Read, Write};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use mote_boot::paging::PAGE_SIZE;
use mote_boot::{Framebuffer, GuardPage, RamdiskFrames};
use zerocopy::{FromBytes, IntoBytes};

use crate::serial::{SERIAL_STATE_MAX, Serial};
use crate::vcpu_state::SavedVcpu;
use crate::vm::GuestFacts;

/// The first bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"MOTESNAP";

/// The layout version this mote writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MOTE_VERSION_BYTES: usize = 16;
const MAX_GUARD_PAGES: u32 = 8;
const MAX_MSRS: u32 = 1024;
/// The names of the stacks guard pages guard, by their number in the file.
const STACKS: [&str; 3] = ["stack", "kernel stack", "double-fault stack"];

const FLAG_USER_MODE: u32 = 1;
const FLAG_PLAIN: u32 = 2;
const FLAG_FRAMEBUFFER: u32 = 4;
const FLAG_INPUT_WINDOW: u32 = 8;

/// Why a file cannot be read as a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// Reading or writing the file failed.
    #[error("cannot read or write it")]
    Io(#[source] io::Error),
    /// The file does not start with the snapshot magic.
    #[error("not a mote snapshot file (no MOTESNAP magic at its start)")]
    NotASnapshot,
    /// The file is in another layout version.
    #[error("snapshot file format version {found}; this mote reads version {FORMAT_VERSION}")]
    FormatVersion {
        /// The file's version.
        found: u32,
    },
    /// The file was written by another version of mote.
    #[error(
        "snapshot taken by mote {found}; this is mote {}: take the snapshot again with this one",
        env!("CARGO_PKG_VERSION")
    )]
    MoteVersion {
        /// The file's mote version.
        found: String,
    },
    /// The file ends early.
    #[error("the snapshot file is truncated")]
    Truncated,
    /// A field holds a value no snapshot can have.
    #[error("the snapshot file is corrupt: {0}")]
    Corrupt(String),
    /// The checksum does not match the contents.
    #[error("the snapshot file is corrupt: its checksum does not match its contents")]
    Checksum,
}

impl From<io::Error> for SnapshotFileError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotFileError::Truncated
        } else {
            SnapshotFileError::Io(error)
        }
    }
}

fn corrupt(what: impl Into<String>) -> SnapshotFileError {
    SnapshotFileError::Corrupt(what.into())
}

/// Everything a snapshot holds but its memory, to write.
pub(crate) struct Described<'a> {
    pub(crate) memory_size: u64,
    pub(crate) tsc_khz: u32,
    pub(crate) guest: &'a GuestFacts,
    pub(crate) cpuid: &'a [kvm_cpuid_entry2],
    pub(crate) vcpu: &'a SavedVcpu,
    pub(crate) serial: &'a Serial,
}

/// Everything a snapshot holds but its memory, as read.
pub(crate) struct Parts {
    pub(crate) memory_size: u64,
    pub(crate) tsc_khz: u32,
    pub(crate) guest: GuestFacts,
    pub(crate) cpuid: Vec<kvm_cpuid_entry2>,
    pub(crate) vcpu: SavedVcpu,
    pub(crate) serial: Serial,
}

/// Writes and checksums.
struct Checked<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Checked<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.inner.write_all(bytes)
    }

    fn u32(&mut self, value: u32) -> io::Result<()> {
        self.put(&value.to_le_bytes())
    }

    fn u64(&mut self, value: u64) -> io::Result<()> {
        self.put(&value.to_le_bytes())
    }
}

/// Writes `parts` and the memory whose pages `pages` yields, in ascending runs of whole pages
/// (`(first page, bytes)`), as a snapshot file.
pub(crate) fn write(
    out: impl Write,
    parts: &Described<'_>,
    pages: impl IntoIterator<Item = io::Result<(u64, Vec<u8>)>>,
) -> io::Result<()> {
    let mut out = Checked {
        inner: out,
        crc: crc32fast::Hasher::new(),
    };
    out.put(&MAGIC)?;
    out.u32(FORMAT_VERSION)?;
    let mut version = [0u8; MOTE_VERSION_BYTES];
    let ours = env!("CARGO_PKG_VERSION").as_bytes();
    version[..ours.len().min(MOTE_VERSION_BYTES)]
        .copy_from_slice(&ours[..ours.len().min(MOTE_VERSION_BYTES)]);
    out.put(&version)?;
    out.u64(parts.memory_size)?;
    out.u32(parts.tsc_khz)?;
    let guest = parts.guest;
    let flags = [
        (guest.user_mode, FLAG_USER_MODE),
        (guest.plain, FLAG_PLAIN),
        (guest.framebuffer.is_some(), FLAG_FRAMEBUFFER),
        (guest.input_window.is_some(), FLAG_INPUT_WINDOW),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |flags, (_, flag)| flags | flag);
    out.u32(flags)?;
    let window = guest.input_window.unwrap_or(RamdiskFrames {
        physical: 0,
        len: 0,
    });
    out.u64(window.physical)?;
    out.u64(window.len)?;
    let (fb_physical, fb_width, fb_height) = guest
        .framebuffer
        .map_or((0, 0, 0), |f| (f.physical, f.width, f.height));
    out.u64(fb_physical)?;
    out.u32(fb_width)?;
    out.u32(fb_height)?;
    out.u32(guest.guard_pages.len() as u32)?;
    for guard in &guest.guard_pages {
        out.u64(guard.address)?;
        let stack = STACKS.iter().position(|&s| s == guard.stack).unwrap_or(0);
        out.put(&[stack as u8])?;
    }
    out.u32(parts.cpuid.len() as u32)?;
    for entry in parts.cpuid {
        out.put(entry.as_bytes())?;
    }
    let vcpu = parts.vcpu;
    out.put(vcpu.regs.as_bytes())?;
    out.put(vcpu.sregs.as_bytes())?;
    out.put(vcpu.xcrs.as_bytes())?;
    out.put(vcpu.xsave.as_bytes())?;
    out.put(vcpu.events.as_bytes())?;
    out.put(vcpu.debugregs.as_bytes())?;
    out.u32(vcpu.mp_state.mp_state)?;
    let msrs = vcpu.msrs.as_slice();
    out.u32(msrs.len() as u32)?;
    for entry in msrs {
        out.put(entry.as_bytes())?;
    }
    let serial = parts.serial.to_bytes();
    out.put(&[serial.len() as u8])?;
    out.put(&serial)?;
    for run in pages {
        let (first, bytes) = run?;
        out.u64(first)?;
        out.u64(bytes.len() as u64 / PAGE_SIZE)?;
        out.put(&bytes)?;
    }
    out.u64(0)?;
    out.u64(0)?;
    let crc = out.crc.clone().finalize();
    out.inner.write_all(&crc.to_le_bytes())?;
    out.inner.flush()
}

/// Reads and checksums.
struct Verified<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Verified<R> {
    fn take(&mut self, buffer: &mut [u8]) -> Result<(), SnapshotFileError> {
        self.inner.read_exact(buffer)?;
        self.crc.update(buffer);
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotFileError> {
        let mut bytes = [0u8; N];
        self.take(&mut bytes)?;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, SnapshotFileError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, SnapshotFileError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotFileError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A KVM state struct, as KVM lays it out.
    fn state<T: FromBytes>(&mut self) -> Result<T, SnapshotFileError> {
        let mut bytes = vec![0u8; std::mem::size_of::<T>()];
        self.take(&mut bytes)?;
        T::read_from_bytes(&bytes).map_err(|_| corrupt("a vCPU state record"))
    }
}

/// Reads a snapshot file: returns what it holds but memory, and hands each stored page run to
/// `pages` as `(memory size, guest-physical address, bytes)`, in ascending order, all inside
/// the memory size. Nothing read may be used unless this returns `Ok`: the checksum is checked
/// last.
pub(crate) fn read(
    input: impl Read,
    min_memory: u64,
    max_memory: u64,
    mut pages: impl FnMut(u64, u64, &[u8]) -> io::Result<()>,
) -> Result<Parts, SnapshotFileError> {
    let mut input = Verified {
        inner: input,
        crc: crc32fast::Hasher::new(),
    };
    let magic = match input.array::<8>() {
        Ok(magic) => magic,
        Err(SnapshotFileError::Truncated) => return Err(SnapshotFileError::NotASnapshot),
        Err(error) => return Err(error),
    };
    if magic != MAGIC {
        return Err(SnapshotFileError::NotASnapshot);
    }
    let version = input.u32()?;
    if version != FORMAT_VERSION {
        return Err(SnapshotFileError::FormatVersion { found: version });
    }
    let mote = input.array::<MOTE_VERSION_BYTES>()?;
    let mote_len = mote
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(MOTE_VERSION_BYTES);
    let mote = String::from_utf8_lossy(&mote[..mote_len]).into_owned();
    if mote != env!("CARGO_PKG_VERSION") {
        return Err(SnapshotFileError::MoteVersion { found: mote });
    }
    let memory_size = input.u64()?;
    if !memory_size.is_multiple_of(PAGE_SIZE) || !(min_memory..=max_memory).contains(&memory_size) {
        return Err(corrupt(format!("memory size {memory_size}")));
    }
    let tsc_khz = input.u32()?;
    let flags = input.u32()?;
    if flags & !(FLAG_USER_MODE | FLAG_PLAIN | FLAG_FRAMEBUFFER | FLAG_INPUT_WINDOW) != 0 {
        return Err(corrupt(format!("unknown flags {flags:#x}")));
    }
    // A range of guest memory, page-aligned at its start, inside the memory.
    let in_memory = |start: u64, len: u64| {
        start.is_multiple_of(PAGE_SIZE)
            && start.checked_add(len).is_some_and(|end| end <= memory_size)
    };
    let (window_physical, window_len) = (input.u64()?, input.u64()?);
    let input_window = if flags & FLAG_INPUT_WINDOW != 0 {
        if !in_memory(window_physical, window_len) || !window_len.is_multiple_of(PAGE_SIZE) {
            return Err(corrupt("the input window lies outside guest memory"));
        }
        Some(RamdiskFrames {
            physical: window_physical,
            len: window_len,
        })
    } else {
        None
    };
    let (fb_physical, fb_width, fb_height) = (input.u64()?, input.u32()?, input.u32()?);
    let framebuffer = if flags & FLAG_FRAMEBUFFER != 0 {
        let framebuffer = Framebuffer {
            physical: fb_physical,
            width: fb_width,
            height: fb_height,
            stride: fb_width,
            bytes_per_pixel: 4,
        };
        let sides = (1..=8192).contains(&fb_width) && (1..=8192).contains(&fb_height);
        if !sides || !in_memory(fb_physical, framebuffer.len()) {
            return Err(corrupt("the framebuffer does not fit guest memory"));
        }
        Some(framebuffer)
    } else {
        None
    };
    let guards = input.u32()?;
    if guards > MAX_GUARD_PAGES {
        return Err(corrupt(format!("{guards} guard pages")));
    }
    let mut guard_pages = Vec::with_capacity(guards as usize);
    for _ in 0..guards {
        let address = input.u64()?;
        let stack = *STACKS
            .get(usize::from(input.u8()?))
            .ok_or_else(|| corrupt("a guard page of an unknown stack"))?;
        guard_pages.push(GuardPage { address, stack });
    }
    let entries = input.u32()?;
    if entries == 0 || entries as usize > KVM_MAX_CPUID_ENTRIES {
        return Err(corrupt(format!("{entries} CPUID entries")));
    }
    let cpuid = (0..entries)
        .map(|_| input.state::<kvm_cpuid_entry2>())
        .collect::<Result<Vec<_>, _>>()?;
    let regs: kvm_regs = input.state()?;
    let sregs: kvm_sregs = input.state()?;
    let xcrs: kvm_xcrs = input.state()?;
    let xsave: kvm_xsave = input.state()?;
    let events: kvm_vcpu_events = input.state()?;
    let debugregs: kvm_debugregs = input.state()?;
    let mp_state = kvm_mp_state {
        mp_state: input.u32()?,
    };
    let count = input.u32()?;
    if count > MAX_MSRS {
        return Err(corrupt(format!("{count} MSRs")));
    }
    let entries = (0..count)
        .map(|_| input.state::<kvm_msr_entry>())
        .collect::<Result<Vec<_>, _>>()?;
    let msrs = Msrs::from_entries(&entries).map_err(|_| corrupt(format!("{count} MSRs")))?;
    let serial_len = usize::from(input.u8()?);
    if serial_len > SERIAL_STATE_MAX {
        return Err(corrupt("the COM1 record"));
    }
    let mut serial = vec![0u8; serial_len];
    input.take(&mut serial)?;
    let serial = Serial::from_bytes(&serial).ok_or_else(|| corrupt("the COM1 record"))?;

    // The pages, in runs; a chunk at a time, so a file claiming huge runs costs no memory.
    let mut next_free = 0u64;
    let mut chunk = vec![0u8; 64 * PAGE_SIZE as usize];
    loop {
        let (first, count) = (input.u64()?, input.u64()?);
        if count == 0 {
            break;
        }
        let start = first
            .checked_mul(PAGE_SIZE)
            .filter(|&start| start >= next_free)
            .ok_or_else(|| corrupt("page runs out of order"))?;
        let len = count
            .checked_mul(PAGE_SIZE)
            .filter(|&len| in_memory(start, len))
            .ok_or_else(|| corrupt("a page run outside guest memory"))?;
        let mut done = 0;
        while done < len {
            let take = (len - done).min(chunk.len() as u64) as usize;
            input.take(&mut chunk[..take])?;
            pages(memory_size, start + done, &chunk[..take]).map_err(SnapshotFileError::Io)?;
            done += take as u64;
        }
        next_free = start + len;
    }
    let expected = input.crc.clone().finalize();
    let mut stored = [0u8; 4];
    input.inner.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != expected {
        return Err(SnapshotFileError::Checksum);
    }
    if input.inner.read(&mut [0u8; 1])? != 0 {
        return Err(corrupt("bytes after the checksum"));
    }
    Ok(Parts {
        memory_size,
        tsc_khz,
        guest: GuestFacts {
            user_mode: flags & FLAG_USER_MODE != 0,
            guard_pages,
            framebuffer,
            plain: flags & FLAG_PLAIN != 0,
            input_window,
            kernel_offset: 0,
            kernel_segments: Vec::new(),
            debug_gate: None,
        },
        cpuid,
        vcpu: SavedVcpu {
            regs,
            sregs,
            xcrs,
            xsave,
            msrs,
            events,
            mp_state,
            debugregs,
        },
        serial,
    })
}

/// Parses `bytes` as a snapshot file, pages discarded: what the fuzz target drives.
#[doc(hidden)]
pub fn parse_for_fuzzing(bytes: &[u8]) -> Result<(), SnapshotFileError> {
    read(
        bytes,
        mote_boot::MIN_MEMORY,
        crate::MAX_MEMORY_SIZE,
        |_, _, _| Ok(()),
    )
    .map(|_| ())
}
