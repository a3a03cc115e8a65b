//! Pools: VMs restored from one snapshot ahead of time, each reset after a run and used again.
//!
//! A run takes an idle VM, starts it from the snapshot's state and runs it; afterwards the VM is
//! reset so that nothing of the run is left, and goes back to the pool. Resetting costs what the
//! run changed: the pages it wrote (see [`reset_vm`]) and the vCPU's state, which is put back
//! whole before the next run.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::budget::Charge;
use crate::ram::SnapshotMemory;
use crate::snapshot::{self, Snapshot};
use crate::vm::Vm;
use crate::{Error, Exit, Hypervisor, Outcome, RunConfig, Stats, ram, vcpu_state};
use mote_abi::RunStart;
use mote_boot::paging::PAGE_SIZE;

/// How a [`Pool`] sizes itself.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    min_idle: usize,
    max_vms: usize,
    idle_timeout: Duration,
    max_wait: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_idle: 1,
            max_vms: 64,
            idle_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(10),
        }
    }
}

impl PoolConfig {
    /// Keeps at least `count` VMs ready while the pool is idle, made ahead on a thread of the
    /// pool's. Default: 1.
    pub fn min_idle(mut self, count: usize) -> Self {
        self.min_idle = count;
        self
    }

    /// Holds at most `count` VMs, busy and idle together (at least 1). Under load the pool
    /// grows up to this; a run that finds every VM busy waits for one. Default: 64.
    pub fn max_vms(mut self, count: usize) -> Self {
        self.max_vms = count.max(1);
        self
    }

    /// Destroys VMs beyond [`min_idle`](Self::min_idle) that have been idle this long.
    /// Default: 30 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a run waits for a VM when all [`max_vms`](Self::max_vms) are busy before it
    /// fails with [`Error::PoolBusy`]; zero fails at once. Default: 10 s.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }
}

/// VMs restored ahead of time from one [`Snapshot`], for runs that cost little more than their
/// exits and the pages they write.
///
/// [`Pool::run`] takes an idle VM (or makes one, up to [`PoolConfig::max_vms`]), starts it from
/// the snapshot's state with the run's input, runs it to an outcome, then resets it (copies the
/// snapshot back into the pages the run wrote; every vCPU register is put back when the next
/// run starts) and returns it to the pool. After a run
/// that ended in a way that may leave the vCPU in a state KVM does not describe (a KVM internal
/// error, a failed entry, a triple fault, an unexpected exit, a host error) the VM is destroyed
/// instead, and the pool makes another in the background. A pool is `Send + Sync`; use it from
/// as many threads as it has VMs.
///
/// ```
/// use mote_host::{Exit, GuestImage, Hypervisor, Pool, PoolConfig, RunConfig};
///
/// let hypervisor = Hypervisor::open()?;
/// let echo = GuestImage::from_file("../guest/target/x86_64-unknown-none/release/echo")?;
/// let snapshot = hypervisor.snapshot(&echo, RunConfig::default())?;
/// let pool = Pool::new(&hypervisor, &snapshot, PoolConfig::default().max_vms(4))?;
/// let outcome = pool.run(RunConfig::default().input(b"ping".to_vec()))?;
/// assert_eq!(outcome.exit, Exit::Guest { code: 0 });
/// assert_eq!(outcome.output, b"ping");
/// # Ok::<(), mote_host::Error>(())
/// ```
pub struct Pool {
    shared: Arc<PoolShared>,
    maker: Option<JoinHandle<()>>,
}

struct PoolShared {
    hypervisor: Hypervisor,
    snapshot: Snapshot,
    config: PoolConfig,
    state: Mutex<PoolState>,
    /// A VM came back (or was made) for a run that waits.
    returned: Condvar,
    /// The pool's thread has work: fewer idle VMs than it keeps, or the pool stops.
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    /// Ready VMs, most recently used last (its pages are the likeliest to be cached).
    idle: Vec<IdleVm>,
    busy: usize,
    creating: usize,
    /// Runs waiting for a VM: only then does giving one back wake anyone (a wake-up is a
    /// system call, and this is every run's path).
    waiting: usize,
    /// The pool's thread sleeps until the oldest idle VM beyond `min_idle` expires: a VM given
    /// back need not wake it.
    trim_scheduled: bool,
    stopping: bool,
}

struct IdleVm {
    vm: Vm,
    since: Instant,
    /// Just created: its vCPU has never been given the snapshot's state.
    fresh: bool,
}

impl PoolState {
    fn total(&self) -> usize {
        self.idle.len() + self.busy + self.creating
    }

    /// Whether the pool's thread should make a VM: fewer are idle (or on their way) than it
    /// keeps, and the pool may grow.
    fn wants_more(&self, config: &PoolConfig) -> bool {
        self.idle.len() + self.creating < config.min_idle && self.total() < config.max_vms
    }
}

impl Pool {
    /// Makes a pool of VMs restored from `snapshot`. The first VM is made here, so that a
    /// snapshot this host cannot restore fails now; the rest are made in the background.
    pub fn new(
        hypervisor: &Hypervisor,
        snapshot: &Snapshot,
        config: PoolConfig,
    ) -> Result<Self, Error> {
        let shared = Arc::new(PoolShared {
            hypervisor: hypervisor.clone(),
            snapshot: snapshot.clone(),
            config,
            state: Mutex::new(PoolState::default()),
            returned: Condvar::new(),
            work: Condvar::new(),
        });
        if cfg!(debug_assertions) {
            // For the reset checks of debug builds, which may run on a filtered thread.
            ram::open_pagemap();
        }
        let mut first = shared.new_vm()?;
        // Restoring once checks what only a vCPU can tell (the TSC, the MSRs); the state is
        // put in again before the first run.
        let check = RunStart {
            generation: 0,
            seed: [0; mote_abi::SEED_BYTES],
            input_len: 0,
        };
        snapshot::restore(hypervisor.shared(), snapshot, &mut first, &check, true)?;
        shared.lock().idle.push(IdleVm {
            vm: first,
            since: Instant::now(),
            fresh: false,
        });
        let maker_shared = Arc::clone(&shared);
        let maker = crate::cpus::spawn_helper("mote-pool", move || {
            // The pool's thread runs only mote's code: it holds itself to a run's calls.
            if let Err(error) = crate::seccomp::restrict_thread(crate::seccomp::Thread::Pool) {
                tracing::warn!(%error, "the pool's thread runs without a seccomp filter");
            }
            maker_shared.make_and_trim()
        })
        .map_err(|e| Error::Internal(format!("cannot start the pool's thread: {e}")))?;
        Ok(Self {
            shared,
            maker: Some(maker),
        })
    }

    /// Runs the snapshot's guest once, with `config`'s input, host functions and limits, on a
    /// VM of the pool. `config` cannot change what the snapshot fixed (memory size, framebuffer,
    /// ACPI, plain boot, input capacity); input that does not fit is refused before a VM is
    /// taken.
    pub fn run(&self, config: RunConfig) -> Result<Outcome, Error> {
        self.shared
            .hypervisor
            .shared()
            .run_where_asked(crate::seccomp::Work::Run, || self.run_here(config))
    }

    fn run_here(&self, mut config: RunConfig) -> Result<Outcome, Error> {
        let shared = &*self.shared;
        config.check_restorable(&shared.snapshot)?;
        let hypervisor = shared.hypervisor.shared();
        let charge =
            hypervisor.charge(config.worst_case(shared.snapshot.memory_size()), &config)?;
        let mut stats = Stats::default();
        let taken = Instant::now();
        let (mut lease, fresh) = shared.take()?;
        lease.run_charge = Some(charge);
        stats.phases.vm = taken.elapsed();
        let screen = config.screenshot;
        let vm = lease.vm()?;
        let finished =
            snapshot::run_on(hypervisor, &shared.snapshot, vm, &mut config, fresh, stats)?;
        let mut outcome = crate::outcome(finished, vm, &shared.snapshot.inner.guest, screen)?;
        let reset = Instant::now();
        if reusable(&outcome.exit) {
            match reset_vm(vm, &shared.snapshot.inner.memory) {
                Ok(pages) => {
                    outcome.stats.dirtied_pages = Some(pages);
                    lease.give_back();
                }
                Err(error) => {
                    tracing::warn!(%error, "a pooled VM could not be reset; it is replaced");
                }
            }
        }
        outcome.stats.phases.reset = reset.elapsed();
        // A lease not given back destroys its VM: after a KVM-level failure, a failed reset,
        // an error, or a panic that unwinds through here.
        Ok(outcome)
    }

    /// VMs in the pool now: (idle, busy).
    pub fn size(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.idle.len(), state.busy)
    }
}

/// Whether a VM that ended this way can be reset and used again: every outcome the guest
/// brought about itself, and limits mote enforced. Not after KVM failed to run the guest, or
/// the guest shut the CPU down: KVM's API leaves the vCPU's state undefined there.
fn reusable(exit: &Exit) -> bool {
    !matches!(
        exit,
        Exit::InternalError { .. }
            | Exit::FailedEntry { .. }
            | Exit::Shutdown
            | Exit::Unexpected { .. }
    )
}

/// The most pages a pooled VM keeps copies of its own. Past that, its reset drops them all
/// (the VM maps the snapshot's pages again, on the next touch) rather than copying the
/// snapshot's contents back into them.
const PRIVATE_PAGES_MAX: u64 = 256;

/// Resets `vm` after a run, so that it holds nothing of it: completes the instruction KVM may
/// still be completing, then puts the snapshot's contents back into every page the run wrote:
/// those KVM's dirty log names (the guest's writes, and KVM's own on its behalf) and those
/// mote noted (its input, `random` results, host-call replies). The vCPU's state is put back
/// whole when the next run starts (`SavedVcpu::restore`), which also makes KVM forget the
/// translations it cached. Returns how many pages the run wrote.
///
/// The contents are copied back into the VM's own copies of those pages rather than dropped:
/// dropping (`madvise`), and the copy-on-write fault that follows on the next write, each call
/// every VM's MMU notifier in the process, so with many VMs in one process each run paid for
/// all of them (measured: a null call took 137 µs alone, 212 µs beside 64 idle VMs, 434 µs
/// beside 256), and each page dropped was faulted in again (about 4.5 µs a page here).
fn reset_vm(vm: &mut Vm, memory: &SnapshotMemory) -> Result<u64, Error> {
    if !vcpu_state::settle(&mut vm.vcpu)? {
        return Err(Error::Internal(
            "the vCPU did not settle after its run".into(),
        ));
    }
    let bitmap = vm
        .fd
        .get_dirty_log(0, memory.size() as usize)
        .map_err(|e| Error::kvm("KVM_GET_DIRTY_LOG", e))?;
    let written = ram::union(&ram::dirty_ranges(&bitmap), &vm.host_writes.take());
    let private = ram::union(&vm.private, &written);
    check_every_write_was_seen(vm, &private)?;
    if ram::page_count(&private) <= PRIVATE_PAGES_MAX {
        memory.copy_into(&vm.ram, &written)?;
        vm.private = private;
        check_the_copies_are_the_snapshot(vm, memory)?;
    } else {
        ram::discard(&vm.ram, &private)?;
        vm.private.clear();
    }
    Ok(ram::page_count(&written))
}

/// In debug builds (the tests), checks against the kernel's own list of the VM's private pages
/// that no write escaped the dirty log and mote's record of its own writes to a page the VM
/// shared with the snapshot until now: a write path that forgot to record would otherwise leave
/// one run's data for the next.
fn check_every_write_was_seen(vm: &Vm, private: &[std::ops::Range<u64>]) -> Result<(), Error> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    let copied = ram::written_ranges(&vm.ram)?;
    if ram::union(&copied, private) != private {
        return Err(Error::Internal(format!(
            "pages {copied:x?} were written, but only {private:x?} were seen written"
        )));
    }
    Ok(())
}

/// In debug builds, checks after the copy-back that every page the VM keeps of its own holds
/// the snapshot's bytes again: the check above cannot see a write it failed to note to a page
/// that was already the VM's own.
fn check_the_copies_are_the_snapshot(vm: &Vm, memory: &SnapshotMemory) -> Result<(), Error> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    for range in &vm.private {
        if !memory.holds(&vm.ram, range.clone())? {
            return Err(Error::Internal(format!(
                "pages {range:x?} differ from the snapshot after the reset: a write was not seen"
            )));
        }
    }
    Ok(())
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_vm(&self) -> Result<Vm, Error> {
        let mut phases = crate::Phases::default();
        let shared = self.hypervisor.shared();
        // An idle VM keeps at most this much of its own; a run on it is charged its worst case
        // besides, for as long as it runs (or, if the VM is then destroyed, until its memory
        // is gone).
        let charge = shared
            .budget
            .charge(PRIVATE_PAGES_MAX * PAGE_SIZE, Duration::ZERO)?;
        let mut vm = snapshot::new_vm(shared, &self.snapshot, true, &mut phases)?;
        vm.charge = Some(charge);
        Ok(vm)
    }

    /// Makes a VM with the lock released (making one takes a while), counted as on its way
    /// meanwhile; returns the lock again with the result.
    fn make_vm<'s>(
        &'s self,
        mut state: MutexGuard<'s, PoolState>,
    ) -> (MutexGuard<'s, PoolState>, Result<Vm, Error>) {
        state.creating += 1;
        drop(state);
        let made = self.new_vm();
        let mut state = self.lock();
        state.creating -= 1;
        (state, made)
    }

    /// An idle VM, made here if the pool may grow, else the next one given back; and whether it
    /// is fresh.
    fn take(&self) -> Result<(Lease<'_>, bool), Error> {
        let deadline = Instant::now().checked_add(self.config.max_wait);
        let mut state = self.lock();
        loop {
            if let Some(idle) = state.idle.pop() {
                state.busy += 1;
                if state.wants_more(&self.config) {
                    self.work.notify_one();
                }
                return Ok((self.lease(idle.vm), idle.fresh));
            }
            if state.total() < self.config.max_vms {
                let (mut state, made) = self.make_vm(state);
                return match made {
                    Ok(vm) => {
                        state.busy += 1;
                        Ok((self.lease(vm), true))
                    }
                    Err(error) => {
                        // The place it held is free again, for a run that waits.
                        if state.waiting > 0 {
                            self.returned.notify_one();
                        }
                        Err(error)
                    }
                };
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Err(Error::PoolBusy {
                    vms: self.config.max_vms,
                    waited: self.config.max_wait,
                });
            }
            state.waiting += 1;
            state = self
                .returned
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    fn lease(&self, vm: Vm) -> Lease<'_> {
        Lease {
            pool: self,
            vm: Some(vm),
            run_charge: None,
        }
    }

    /// Ends a run's hold on its VM: back to the idle ones, or gone.
    fn give_back(&self, vm: Option<Vm>) {
        let mut state = self.lock();
        state.busy -= 1;
        let replace = vm.is_none() && state.wants_more(&self.config);
        let trim =
            vm.is_some() && !state.trim_scheduled && state.idle.len() + 1 > self.config.min_idle;
        if let Some(vm) = vm {
            state.idle.push(IdleVm {
                vm,
                since: Instant::now(),
                fresh: false,
            });
        }
        let waiting = state.waiting > 0;
        drop(state);
        if waiting {
            self.returned.notify_one();
        }
        if replace || trim {
            self.work.notify_one();
        }
    }

    /// The pool's thread: keeps `min_idle` VMs ready and destroys those idle too long.
    fn make_and_trim(&self) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let wanted = self.config.min_idle.min(self.config.max_vms);
            if state.wants_more(&self.config) {
                let made;
                (state, made) = self.make_vm(state);
                match made {
                    Ok(vm) => {
                        // Idle VMs stay in the order they became idle: the oldest first.
                        state.idle.push(IdleVm {
                            vm,
                            since: Instant::now(),
                            fresh: true,
                        });
                        if state.waiting > 0 {
                            self.returned.notify_one();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the pool cannot make a VM; it tries again later");
                        state = self
                            .work
                            .wait_timeout(state, RETRY_AFTER)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
                continue;
            }
            // Idle VMs beyond the minimum that have waited too long go; the oldest are first.
            // They are torn down with the lock released: tearing down can take a while.
            let now = Instant::now();
            let expired = |idle: &IdleVm| {
                idle.since
                    .checked_add(self.config.idle_timeout)
                    .is_some_and(|expiry| expiry <= now)
            };
            let mut old = Vec::new();
            while state.idle.len() > wanted && expired(&state.idle[0]) {
                old.push(state.idle.remove(0));
            }
            if !old.is_empty() {
                drop(state);
                for idle in old {
                    self.hypervisor.shared().dispose(Box::new(idle.vm));
                }
                state = self.lock();
                continue;
            }
            let next_expiry = state
                .idle
                .first()
                .filter(|_| state.idle.len() > wanted)
                .and_then(|oldest| oldest.since.checked_add(self.config.idle_timeout))
                .map_or(Duration::MAX, |expiry| {
                    expiry.saturating_duration_since(now)
                });
            state.trim_scheduled = next_expiry != Duration::MAX;
            state = self
                .work
                .wait_timeout(state, next_expiry.min(MAX_SLEEP))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A run's hold on one VM of the pool. Dropped without [`Lease::give_back`] (after an error,
/// a KVM-level failure, a reset that failed, or a panic unwinding through the run), it
/// destroys the VM and frees its place: the pool never loses count of its VMs.
struct Lease<'p> {
    pool: &'p PoolShared,
    vm: Option<Vm>,
    /// The run's charge against the memory budget: given back with the lease if the VM goes
    /// back to the pool, else with the VM's memory.
    run_charge: Option<Charge>,
}

impl Lease<'_> {
    /// The VM, which a lease holds from `take` until `give_back` or its drop.
    fn vm(&mut self) -> Result<&mut Vm, Error> {
        self.vm
            .as_mut()
            .ok_or_else(|| Error::Internal("a pool lease without its VM".into()))
    }

    /// Gives the VM, reset, back to the idle ones.
    fn give_back(mut self) {
        let vm = self.vm.take();
        self.pool.give_back(vm);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            if let Some(run) = self.run_charge.take() {
                vm.charge = Some(match vm.charge.take() {
                    Some(kept) => kept.join(run),
                    None => run,
                });
            }
            self.pool.give_back(None);
            self.pool.hypervisor.shared().dispose(Box::new(vm));
        }
    }
}

/// How long the pool's thread waits before it tries again to make a VM that failed.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The longest the pool's thread sleeps without looking (a bound for condition-variable waits).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

impl Drop for Pool {
    /// Stops the pool's thread and destroys the idle VMs (off the caller's path).
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
        let idle = std::mem::take(&mut self.shared.lock().idle);
        for old in idle {
            self.shared.hypervisor.shared().dispose(Box::new(old.vm));
        }
    }
}
