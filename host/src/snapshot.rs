//! Snapshots: a guest booted once, up to the point where it is ready for input, then restored
//! into any number of VMs that share its memory copy-on-write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use mote_abi::{RunStart, SEED_BYTES};

use crate::machine::{self, End, Purpose, with_start_registers};
use crate::ram::SnapshotMemory;
use crate::serial::Serial;
use crate::vcpu_state::{self, MSR_IA32_TSC, SavedVcpu};
use crate::vm::{self, Booted, GuestFacts, Vm};
use crate::{Error, GuestImage, Outcome, Phases, RunConfig, Shared};

/// How long a guest may take to reach its snapshot point when the configuration sets no
/// timeout: a guest that never gets there must not hold the caller forever.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

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
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) memory: SnapshotMemory,
    pub(crate) vcpu: SavedVcpu,
    pub(crate) serial: Serial,
    pub(crate) guest: GuestFacts,
    /// The CPUID table the guest saw when it booted.
    pub(crate) cpuid: CpuId,
    /// Restores so far.
    generations: AtomicU64,
    /// Whether a restored vCPU was seen not to run its TSC backwards.
    tsc_checked: AtomicBool,
}

impl Snapshot {
    pub(crate) fn new(
        memory: SnapshotMemory,
        vcpu: SavedVcpu,
        serial: Serial,
        guest: GuestFacts,
        cpuid: CpuId,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                memory,
                vcpu,
                serial,
                guest,
                cpuid,
                generations: AtomicU64::new(0),
                tsc_checked: AtomicBool::new(false),
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
}

/// Boots `image` until it is ready for input and captures it.
pub(crate) fn capture(
    shared: &Shared,
    image: &GuestImage,
    mut config: RunConfig,
) -> Result<Snapshot, Error> {
    if config.input.is_some() {
        return Err(Error::Config(
            "a snapshot takes no input: input belongs to each run restored from it".into(),
        ));
    }
    config
        .limits
        .timeout
        .get_or_insert(DEFAULT_SNAPSHOT_TIMEOUT);
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
        Some(config.input_capacity),
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
    let cpuid = machine.cpuid(guest.plain).clone();
    // The shared mapping must be gone before the memory can be sealed.
    drop(vm);
    memory.seal()?;
    tracing::debug!(vcpu = ?saved, "snapshot taken");
    Ok(Snapshot::new(memory, saved, finished.serial, guest, cpuid))
}

/// A new VM mapping `snapshot`'s memory, with the CPUID its guest saw; its vCPU state is set by
/// [`start_run`]. `phases` gets the time spent.
pub(crate) fn new_vm(
    shared: &Shared,
    snapshot: &Snapshot,
    phases: &mut Phases,
) -> Result<Vm, Error> {
    let start = Instant::now();
    let ram = snapshot.inner.memory.map_private()?;
    phases.memory = start.elapsed();
    let start = Instant::now();
    let vm = Vm::new(shared, ram)?;
    vm.set_cpuid(&snapshot.inner.cpuid)?;
    phases.vm = start.elapsed();
    Ok(vm)
}

/// Starts a new run on `vm`: writes `input` into the guest's input window and puts the
/// snapshot's vCPU state into the vCPU (just created if `fresh`), with `ready_for_input`'s
/// results for this run.
pub(crate) fn start_run(
    snapshot: &Snapshot,
    vm: &mut Vm,
    input: &[u8],
    fresh: bool,
) -> Result<RunStart, Error> {
    let inner = &snapshot.inner;
    let window = inner.guest.input_window;
    let capacity = window.map_or(0, |w| w.len);
    let input_len = input.len() as u64;
    if input_len > capacity {
        return Err(Error::InputTooLarge {
            len: input_len,
            capacity,
        });
    }
    if let Some(window) = window
        && !input.is_empty()
    {
        vm_memory::Bytes::write_slice(&vm.ram, input, vm_memory::GuestAddress(window.physical))
            .map_err(|e| Error::Internal(format!("cannot write the input: {e}")))?;
    }
    let start = RunStart {
        generation: inner.generations.fetch_add(1, Ordering::Relaxed) + 1,
        seed: fresh_seed()?,
        input_len,
    };
    inner.vcpu.restore(
        &mut vm.vcpu,
        &with_start_registers(inner.vcpu.regs, &start),
        fresh,
    )?;
    if !inner.tsc_checked.load(Ordering::Relaxed) {
        check_tsc(inner, vm)?;
        inner.tsc_checked.store(true, Ordering::Relaxed);
    }
    Ok(start)
}

/// Refuses to go on if the restored vCPU's TSC is behind the snapshot's: some hosts ignore
/// writes to `IA32_TSC` and offer no TSC offset, so after the host restarted a guest would see
/// time run backwards.
fn check_tsc(inner: &Inner, vm: &Vm) -> Result<(), Error> {
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

/// Fresh random bytes for one run.
pub(crate) fn fresh_seed() -> Result<[u8; SEED_BYTES], Error> {
    let mut seed = [0u8; SEED_BYTES];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::Internal(format!("the host's random source failed: {e}")))?;
    Ok(seed)
}
