//! Snapshots: a guest booted once, up to the point where it is ready for input, then restored
//! into any number of VMs that share its memory copy-on-write.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use kvm_bindings::CpuId;
use mote_abi::{RunStart, SEED_BYTES};
use mote_boot::paging::PAGE_SIZE;

use crate::budget::Charge;
use crate::machine::{self, End, Finished, Purpose, with_start_registers};
use crate::ram::SnapshotMemory;
use crate::serial::Serial;
use crate::snapshot_file::{self, SnapshotFileError};
use crate::vcpu_state::{self, MSR_IA32_TSC, SavedVcpu};
use crate::vm::{self, Booted, GuestFacts, Vm};
use crate::{Error, GuestImage, Outcome, Phases, RunConfig, Shared, Stats};

/// A guest's whole state at the moment it said it was ready for input: its memory, its vCPU and
/// its devices. Restoring it ([`Hypervisor::run_snapshot`](crate::Hypervisor::run_snapshot), or a
/// [`Pool`](crate::Pool)) gives a VM that continues from there, instead of booting.
///
/// A snapshot's memory is held once, in a sealed memfd, and every VM restored from it maps it
/// copy-on-write. `Snapshot` is cheap to clone (clones share everything) and can be used from
/// any thread. What every run restored from it shares, and what it does not, is in
/// `docs/snapshots.md`: in short, input, host functions and limits belong to each run; memory
/// contents (an RNG's state, the address layout) are the snapshot's, and a guest reseeds from the
/// fresh bytes `ready_for_input` returns.
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("memory_size", &self.memory_size())
            .field("user_mode", &self.user_mode())
            .field("input_capacity", &self.input_capacity())
            .field("vcpu", &self.inner.vcpu)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) memory: SnapshotMemory,
    pub(crate) vcpu: SavedVcpu,
    pub(crate) serial: Serial,
    pub(crate) guest: GuestFacts,
    /// The CPUID table the guest saw when it booted.
    pub(crate) cpuid: CpuId,
    /// The TSC frequency it was told.
    pub(crate) tsc_khz: u32,
    /// Restores so far.
    generations: AtomicU64,
    /// Whether this host was seen able to restore the snapshot (same CPU, TSC not behind).
    host_checked: AtomicBool,
    /// The memory budget's charge for the memory, held as long as the snapshot.
    _charge: Charge,
}

impl Snapshot {
    pub(crate) fn new(
        memory: SnapshotMemory,
        vcpu: SavedVcpu,
        serial: Serial,
        guest: GuestFacts,
        cpuid: CpuId,
        tsc_khz: u32,
        charge: Charge,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                memory,
                vcpu,
                serial,
                guest,
                cpuid,
                tsc_khz,
                generations: AtomicU64::new(0),
                host_checked: AtomicBool::new(false),
                _charge: charge,
            }),
        }
    }

    /// The guest's memory size in bytes: every run restored from the snapshot has this much.
    pub fn memory_size(&self) -> u64 {
        self.inner.memory.size()
    }

    /// Whether the guest runs in user mode (it carries mote's runtime note).
    pub fn user_mode(&self) -> bool {
        self.inner.guest.user_mode
    }

    /// Whether the guest has a framebuffer (its contents come back in an outcome when the run
    /// asks, with [`RunConfig::screenshot`](crate::RunConfig::screenshot)).
    pub fn has_framebuffer(&self) -> bool {
        self.inner.guest.framebuffer.is_some()
    }

    /// How much input a run may hand the guest, in bytes.
    pub fn input_capacity(&self) -> u64 {
        self.inner.guest.input_window.map_or(0, |window| window.len)
    }

    /// Writes the snapshot to `path` (see `docs/snapshots.md` for the format), replacing it
    /// whole: the file appears only once it is complete. Only pages that hold something are
    /// stored.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let fail = |source: std::io::Error| Error::SnapshotFile {
            path: path.display().to_string(),
            source: SnapshotFileError::Io(source),
        };
        let name = path
            .file_name()
            .ok_or_else(|| fail(std::io::Error::other("the path names no file")))?;
        // Unique to this call: two saves to one path, in one process or two, each write their
        // own file, and the last rename wins.
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let temporary = path.with_file_name(format!(
            ".{}.{}.{}.partial",
            name.to_string_lossy(),
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        ));
        // A fresh file, never one that is there already (a planted link): only a file this
        // call made is removed on failure.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(fail)?;
        let written = (|| {
            let inner = &self.inner;
            let parts = snapshot_file::Described {
                memory_size: inner.memory.size(),
                tsc_khz: inner.tsc_khz,
                guest: &inner.guest,
                cpuid: inner.cpuid.as_slice(),
                vcpu: &inner.vcpu,
                serial: &inner.serial,
            };
            let mut out = std::io::BufWriter::new(&file);
            snapshot_file::write(&mut out, &parts, stored_pages(&inner.memory)?)?;
            drop(out);
            file.sync_all()
        })();
        match written.and_then(|()| std::fs::rename(&temporary, path)) {
            Ok(()) => Ok(()),
            Err(error) => {
                let _ = std::fs::remove_file(&temporary);
                Err(fail(error))
            }
        }
    }

    /// Reads a snapshot file written by [`Snapshot::save`]. The pages are copied into memory
    /// of mote's own, checked against the file's checksum as they are; the file is not used
    /// again. A file another mote version wrote, or that is truncated, corrupt or not a
    /// snapshot at all, is refused with [`Error::SnapshotFile`]. Whether this host can restore
    /// it (the same CPU, a TSC not behind the snapshot's) is checked when it is first restored.
    pub(crate) fn load(shared: &Shared, path: &Path) -> Result<Self, Error> {
        let fail = |source: SnapshotFileError| Error::SnapshotFile {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(SnapshotFileError::Io(e)))?;
        if !file
            .metadata()
            .map_err(|e| fail(SnapshotFileError::Io(e)))?
            .is_file()
        {
            return Err(fail(SnapshotFileError::Io(std::io::Error::other(
                "not a regular file",
            ))));
        }
        // The memory is charged against the budget before the first page is copied.
        let mut held: Option<(SnapshotMemory, Charge)> = None;
        let mut refused = None;
        let read = snapshot_file::read(
            std::io::BufReader::new(file),
            mote_boot::MIN_MEMORY,
            crate::MAX_MEMORY_SIZE,
            |size, address, bytes| {
                let (memory, _) = match &mut held {
                    Some(held) => held,
                    None => {
                        let made = shared
                            .budget
                            .charge(size, std::time::Duration::ZERO)
                            .and_then(|charge| Ok((SnapshotMemory::empty(size)?, charge)));
                        match made {
                            Ok(made) => held.insert(made),
                            Err(error) => {
                                let message = error.to_string();
                                refused = Some(error);
                                return Err(std::io::Error::other(message));
                            }
                        }
                    }
                };
                memory.write_at(bytes, address)
            },
        );
        if let Some(error) = refused {
            return Err(error);
        }
        let parts = read.map_err(fail)?;
        let (memory, charge) = match held {
            Some(held) => held,
            None => (
                SnapshotMemory::empty(parts.memory_size)?,
                shared
                    .budget
                    .charge(parts.memory_size, std::time::Duration::ZERO)?,
            ),
        };
        memory.seal()?;
        let cpuid = CpuId::from_entries(&parts.cpuid)
            .map_err(|_| fail(SnapshotFileError::Corrupt("the CPUID table".into())))?;
        Ok(Snapshot::new(
            memory,
            parts.vcpu,
            parts.serial,
            parts.guest,
            cpuid,
            parts.tsc_khz,
            charge,
        ))
    }
}

/// The snapshot's pages that hold something, in ascending runs of at most 256 pages.
fn stored_pages(
    memory: &SnapshotMemory,
) -> std::io::Result<impl Iterator<Item = std::io::Result<(u64, Vec<u8>)>> + '_> {
    const RUN_PAGES: usize = 256;
    let ranges = memory.data_ranges()?;
    let pages = ranges.into_iter().flat_map(|range| {
        (range.start / PAGE_SIZE..range.end.div_ceil(PAGE_SIZE)).map(|p| p * PAGE_SIZE)
    });
    let mut pages = pages.peekable();
    Ok(std::iter::from_fn(move || {
        let mut run: Option<(u64, Vec<u8>)> = None;
        let mut page = vec![0u8; PAGE_SIZE as usize];
        while let Some(&address) = pages.peek() {
            if let Some((first, bytes)) = &run
                && (first * PAGE_SIZE + bytes.len() as u64 != address
                    || bytes.len() >= RUN_PAGES * PAGE_SIZE as usize)
            {
                break;
            }
            pages.next();
            if let Err(error) = memory.read_at(&mut page, address) {
                return Some(Err(error));
            }
            if page.iter().all(|&b| b == 0) {
                if run.is_some() {
                    break;
                }
                continue;
            }
            run.get_or_insert_with(|| (address / PAGE_SIZE, Vec::new()))
                .1
                .extend_from_slice(&page);
        }
        run.map(Ok)
    }))
}

/// Boots `image` until it is ready for input and captures it.
pub(crate) fn capture(
    shared: &Shared,
    image: &GuestImage,
    mut config: RunConfig,
) -> Result<Snapshot, Error> {
    if config.input.is_some() {
        return Err(Error::SnapshotInput);
    }
    if config.irqchip {
        return Err(Error::IrqchipSnapshot);
    }
    config.check_fits(
        image,
        config
            .input_capacity
            .unwrap_or(crate::DEFAULT_INPUT_CAPACITY),
    )?;
    if config.debugger.is_some() {
        return Err(crate::DebugError::Unsupported("a snapshot's boot").into());
    }
    // The boot is charged as a run is; the snapshot then holds a charge for its memory.
    let boot_charge = shared.charge(config.worst_case(config.boot_memory_size()), &config)?;
    let reserved = Instant::now();
    let (memory, ram) = SnapshotMemory::create(config.boot_memory_size())?;
    let Booted {
        mut vm,
        guest,
        stats,
    } = vm::boot(
        shared,
        image,
        &config,
        ram,
        reserved.elapsed(),
        Some(
            config
                .input_capacity
                .unwrap_or(crate::DEFAULT_INPUT_CAPACITY),
        ),
    )?;
    vcpu_state::check_xsave_size(&vm.fd)?;
    let finished = machine::run(
        shared,
        &mut vm,
        &guest,
        Serial::default(),
        &mut config,
        Purpose::Capture,
        stats,
    )?;
    if let End::Exit(exit) = finished.end {
        let outcome = Outcome {
            exit,
            console: finished.console,
            output: finished.output,
            framebuffer: None,
            samples: finished.samples,
            stats: finished.stats,
        };
        shared.dispose(Box::new(vm));
        return Err(Error::NotReady(Box::new(outcome)));
    }
    if !vcpu_state::settle(&mut vm.vcpu)? {
        return Err(Error::Internal(
            "the vCPU did not settle at its snapshot point".into(),
        ));
    }
    let saved = SavedVcpu::capture(&vm.vcpu, shared.saveable_msrs(&vm.vcpu)?)?;
    let machine = shared.machine_info(&vm.vcpu)?;
    let (cpuid, tsc_khz) = (machine.cpuid(guest.plain).clone(), machine.tsc_khz);
    // The shared mapping must be gone before the memory can be sealed.
    drop(vm);
    memory.seal()?;
    drop(boot_charge);
    let charge = shared
        .budget
        .charge(memory.size(), std::time::Duration::ZERO)?;
    tracing::debug!(vcpu = ?saved, "snapshot taken");
    Ok(Snapshot::new(
        memory,
        saved,
        finished.serial,
        guest,
        cpuid,
        tsc_khz,
        charge,
    ))
}

/// A new VM mapping `snapshot`'s memory, with the CPUID its guest saw (and KVM's dirty log, for
/// a pool); its vCPU state is set by [`run_on`]. `phases` gets the time spent.
pub(crate) fn new_vm(
    shared: &Shared,
    snapshot: &Snapshot,
    dirty_log: bool,
    phases: &mut Phases,
) -> Result<Vm, Error> {
    let start = Instant::now();
    let ram = snapshot.inner.memory.map_private()?;
    phases.memory = start.elapsed();
    let start = Instant::now();
    let vm = Vm::new(shared, ram, dirty_log, false)?;
    vm.set_cpuid(&snapshot.inner.cpuid)?;
    phases.vm = start.elapsed();
    Ok(vm)
}

/// Runs `snapshot` on `vm` with `config` (its input checked to fit): writes the input into the
/// guest's input window, puts the snapshot's vCPU state into the vCPU (just created if
/// `fresh`) with `ready_for_input`'s results for this run, and runs it. `stats` holds what
/// getting `vm` cost.
pub(crate) fn run_on(
    shared: &Shared,
    snapshot: &Snapshot,
    vm: &mut Vm,
    config: &mut RunConfig,
    fresh: bool,
    mut stats: Stats,
) -> Result<Finished, Error> {
    let started = Instant::now();
    let inner = &snapshot.inner;
    let input = config.input.take().unwrap_or_default();
    if let Some(window) = inner.guest.input_window
        && !input.is_empty()
    {
        vm.host_writes.record(window.physical, input.len() as u64);
        vm_memory::Bytes::write_slice(&vm.ram, &input, vm_memory::GuestAddress(window.physical))
            .map_err(|e| Error::Internal(format!("cannot write the input: {e}")))?;
    }
    let start = RunStart {
        generation: inner.generations.fetch_add(1, Ordering::Relaxed) + 1,
        seed: fresh_seed()?,
        input_len: input.len() as u64,
    };
    restore(shared, snapshot, vm, &start, fresh)?;
    stats.phases.vcpu = started.elapsed();
    machine::run(
        shared,
        vm,
        &inner.guest,
        inner.serial.clone(),
        config,
        Purpose::Run(start),
        stats,
    )
}

/// Puts the snapshot's vCPU state into `vm`'s vCPU (just created if `fresh`), with `start` as
/// `ready_for_input`'s results; the first time, checks that this host can restore the
/// snapshot at all.
pub(crate) fn restore(
    shared: &Shared,
    snapshot: &Snapshot,
    vm: &mut Vm,
    start: &RunStart,
    fresh: bool,
) -> Result<(), Error> {
    let inner = &snapshot.inner;
    let checked = inner.host_checked.load(Ordering::Relaxed);
    if !checked {
        // The XSAVE area about to be restored may come from a file: this host's must fit the
        // same 4 KiB.
        vcpu_state::check_xsave_size(&vm.fd)?;
        check_msrs(shared, inner, vm)?;
    }
    inner.vcpu.restore(
        &mut vm.vcpu,
        &with_start_registers(inner.vcpu.regs, start),
        fresh,
    )?;
    if !checked {
        check_host(shared, inner, vm)?;
        inner.host_checked.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Refuses to restore a snapshot (one read from a file: one taken here passes) on a host that
/// would show its guest another machine: another CPU (the CPUID table differs), another TSC
/// frequency, or a TSC behind the snapshot's. Some hosts ignore writes to `IA32_TSC` and offer
/// no TSC offset, so after the host restarted a guest would see time run backwards.
fn check_host(shared: &Shared, inner: &Inner, vm: &Vm) -> Result<(), Error> {
    let machine = shared.machine_info(&vm.vcpu)?;
    if machine.tsc_khz != inner.tsc_khz {
        return Err(Error::Incompatible(format!(
            "the snapshot's guest was told its TSC runs at {} kHz, and this host's runs at {} \
             kHz; take the snapshot again on this host",
            inner.tsc_khz, machine.tsc_khz
        )));
    }
    if machine.cpuid(inner.guest.plain).as_slice() != inner.cpuid.as_slice() {
        return Err(Error::Incompatible(
            "the snapshot was taken on a CPU with other features (its CPUID differs from what \
             this host offers); take the snapshot again on this host"
                .into(),
        ));
    }
    let Some(saved) = inner.vcpu.msr(MSR_IA32_TSC) else {
        return Ok(());
    };
    let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .map_err(|_| Error::Internal("too many MSRs".into()))?;
    vm.vcpu
        .get_msrs(&mut msrs)
        .map_err(|e| Error::kvm("KVM_GET_MSRS", e))?;
    let now = msrs.as_slice()[0].data;
    if now < saved {
        return Err(Error::Incompatible(format!(
            "the guest's time-stamp counter would run backwards (it was {saved} when the \
             snapshot was taken and is {now} now: the host restarted since, and this host cannot \
             set a guest's TSC); take the snapshot again"
        )));
    }
    Ok(())
}

/// Refuses a snapshot (one from a file) whose MSRs this host would not have saved. They are
/// written as the host, which no CPUID table holds back: each must be one this host saves, and
/// KVM's paravirtual ones (which mote never offers) must be off.
fn check_msrs(shared: &Shared, inner: &Inner, vm: &Vm) -> Result<(), Error> {
    let saveable = shared.saveable_msrs(&vm.vcpu)?;
    for entry in inner.vcpu.msrs.as_slice() {
        if !saveable.contains(&entry.index) {
            return Err(Error::Incompatible(format!(
                "the snapshot sets MSR {:#x}, which this host does not save; take the snapshot \
                 again on this host",
                entry.index
            )));
        }
        if is_kvm_paravirtual_msr(entry.index) && entry.data != 0 {
            return Err(Error::Incompatible(format!(
                "the snapshot turns on KVM's paravirtual MSR {:#x}, which mote never offers a \
                 guest: mote did not write this file; take the snapshot again",
                entry.index
            )));
        }
    }
    Ok(())
}

/// KVM's paravirtual MSRs: the old kvmclock pair, and the range KVM's own features use.
fn is_kvm_paravirtual_msr(index: u32) -> bool {
    matches!(index, 0x11 | 0x12 | 0x4B56_4D00..=0x4B56_4DFF)
}

/// Fresh random bytes for one run.
pub(crate) fn fresh_seed() -> Result<[u8; SEED_BYTES], Error> {
    let mut seed = [0u8; SEED_BYTES];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::Internal(format!("the host's random source failed: {e}")))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_pages_come_in_runs_of_adjacent_pages_and_leave_zero_pages_out() {
        let (memory, ram) = SnapshotMemory::create(64 * PAGE_SIZE).unwrap();
        for page in [0, 1, 2, 5, 6] {
            vm_memory::Bytes::write_obj(&ram, 1u8, vm_memory::GuestAddress(page * PAGE_SIZE))
                .unwrap();
        }
        // Written, so stored as data, but all zeros: left out.
        vm_memory::Bytes::write_obj(&ram, 0u8, vm_memory::GuestAddress(3 * PAGE_SIZE)).unwrap();
        drop(ram);
        let runs: Vec<(u64, u64)> = stored_pages(&memory)
            .unwrap()
            .map(|run| {
                let (first, bytes) = run.unwrap();
                (first, bytes.len() as u64 / PAGE_SIZE)
            })
            .collect();
        assert_eq!(runs, [(0, 3), (5, 2)]);
    }
}
