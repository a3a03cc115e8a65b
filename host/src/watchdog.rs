//! Wall-clock deadlines: a guest spinning with interrupts off never exits by itself, so a thread
//! of mote's kicks its vCPU out of `KVM_RUN` when its time is up.
//!
//! The kick is a signal to the vCPU's thread. That thread keeps the signal blocked, except inside
//! `KVM_RUN`, where KVM applies the signal mask set with `KVM_SET_SIGNAL_MASK`: a kick that lands
//! during `KVM_RUN` ends it with `EINTR`, and one that lands between two `KVM_RUN`s stays pending
//! and makes the next one return `EINTR` at once (the role `kvm_run.immediate_exit` plays in
//! other VMMs, without another thread writing into the vCPU's `kvm_run` page). Outside `KVM_RUN`
//! the signal never interrupts anything (host functions, console writes). The thread sleeps on
//! a condition variable until the next deadline: there is no polling loop.
//!
//! A run in a VM with KVM's in-kernel irqchip is also nudged at a fixed interval
//! ([`Watchdog::tick`]): `hlt` then stays inside KVM, and a nudge is what brings the vCPU's
//! thread out to see whether its guest halted for good.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::{RunStop, StopReason};

/// The signal that kicks a vCPU thread out of `KVM_RUN`: the first real-time signal, whose
/// handler does nothing (it exists so that the signal interrupts the ioctl instead of killing
/// the process).
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs the do-nothing handler once per process; whether that worked.
pub(crate) fn install_kick_handler() -> std::io::Result<()> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is an async-signal-safe function
        // that does nothing, and without SA_RESTART the interrupted KVM_RUN returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) == 0
        }
    });
    if installed {
        Ok(())
    } else {
        // Without the handler the kick would kill the whole process: refuse deadlines instead.
        Err(std::io::Error::other("cannot install the SIGRTMIN handler"))
    }
}

/// `KVM_SET_SIGNAL_MASK`: `_IOW(KVMIO, 0x8b, struct kvm_signal_mask)`, a 4-byte struct (the
/// mask follows it). kvm-ioctls has no wrapper for it.
const KVM_SET_SIGNAL_MASK: libc::c_ulong = (1 << 30) | (4 << 16) | (0xAE << 8) | 0x8B;

/// `struct kvm_signal_mask` followed by the kernel's 64-bit signal set.
#[repr(C, align(8))]
struct KvmSignalMask {
    len: u32,
    sigset: [u8; 8],
}

/// The kick signal alone, as a `sigset_t`.
fn kick_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds a valid signal number.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        set
    }
}

/// While alive, the calling thread (a vCPU's) can be kicked: the kick signal is blocked except
/// inside `KVM_RUN`. Dropping it takes back a kick that came too late and restores the
/// thread's signal mask.
pub(crate) struct Kickable {
    old_mask: libc::sigset_t,
}

impl Kickable {
    /// Makes the calling thread kickable while it runs `vcpu`, whose signal mask for `KVM_RUN`
    /// is `vcpu_mask` (what an earlier run set, if any): set again only if it must change.
    pub(crate) fn enter(vcpu: RawFd, vcpu_mask: &mut Option<u64>) -> std::io::Result<Self> {
        install_kick_handler()?;
        let kick = kick_set();
        // SAFETY: a zeroed sigset_t is a valid out-parameter for pthread_sigmask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid; this changes only the calling thread's mask.
        let error = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &kick, &mut old_mask) };
        if error != 0 {
            return Err(std::io::Error::from_raw_os_error(error));
        }
        let entered = Self { old_mask };
        // Inside KVM_RUN: the thread's own mask, with the kick let through.
        let mut blocked: u64 = 0;
        for signal in 1..=64 {
            // SAFETY: `old_mask` was filled in by pthread_sigmask; sigismember only reads it.
            let member = unsafe { libc::sigismember(&entered.old_mask, signal) } == 1;
            if member && signal != kick_signal() {
                blocked |= 1 << (signal - 1);
            }
        }
        if *vcpu_mask == Some(blocked) {
            return Ok(entered);
        }
        let mask = KvmSignalMask {
            len: 8,
            sigset: blocked.to_le_bytes(),
        };
        // SAFETY: `vcpu` is a vCPU descriptor and `mask` a kvm_signal_mask with `len` bytes of
        // signal set after it, alive for the call; the ioctl only reads it.
        let result = unsafe { libc::ioctl(vcpu, KVM_SET_SIGNAL_MASK, &mask) };
        if result != 0 {
            // Dropping `entered` restores the mask.
            return Err(std::io::Error::last_os_error());
        }
        *vcpu_mask = Some(blocked);
        Ok(entered)
    }
}

/// Removes the signal mask a run with a deadline gave `vcpu` (see [`Kickable::enter`]), so that
/// a later run on another thread, without a deadline, keeps that thread's own mask inside
/// `KVM_RUN`.
pub(crate) fn clear_signal_mask(vcpu: &kvm_ioctls::VcpuFd) -> Result<(), crate::Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: KVM_SET_SIGNAL_MASK with a null argument clears the vCPU's mask; it reads nothing.
    let result = unsafe {
        libc::ioctl(
            vcpu.as_raw_fd(),
            KVM_SET_SIGNAL_MASK,
            std::ptr::null::<u8>(),
        )
    };
    if result != 0 {
        return Err(crate::Error::Internal(format!(
            "cannot clear a vCPU's signal mask: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Takes a pending kick off the calling thread, if there is one: a kick that ended a
/// `KVM_RUN` stays pending (the thread blocks it outside `KVM_RUN`), and would end the next one
/// at once.
pub(crate) fn take_pending_kick() {
    let kick = kick_set();
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; sigtimedwait only takes a pending kick off this thread.
    unsafe { while libc::sigtimedwait(&kick, std::ptr::null_mut(), &now) == kick_signal() {} }
}

impl Drop for Kickable {
    fn drop(&mut self) {
        // A kick that fired after the vCPU's last exit.
        take_pending_kick();
        // SAFETY: restores the mask this thread had before the run, a valid set.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}

/// What the thread does for a run when its time comes.
struct Timer {
    stop: Arc<RunStop>,
    /// `None`: stop the run (a deadline). `Some`: nudge it, and again after this long.
    every: Option<Duration>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    armed: BTreeMap<(Instant, u64), Timer>,
    /// When each armed timer is next due, by its id (a tick's time moves).
    due: HashMap<u64, Instant>,
    stopping: bool,
    /// When the watchdog thread will look again by itself (`None`: not until woken). A deadline
    /// at or after it needs no wake-up: runs with the default 30 s deadline, one after another,
    /// would otherwise wake the thread once each.
    looks_at: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The watchdog thread of one hypervisor.
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A deadline or a tick in force; dropping it disarms it.
pub(crate) struct Armed<'w> {
    watchdog: &'w Watchdog,
    id: u64,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut state = self
            .watchdog
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(due) = state.due.remove(&self.id) {
            state.armed.remove(&(due, self.id));
        }
    }
}

impl Watchdog {
    pub(crate) fn start() -> std::io::Result<Self> {
        install_kick_handler()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = crate::cpus::spawn_helper("mote-watchdog", move || {
            // This thread runs only mote's code: it can live with mote's allowlist. Where
            // seccomp is missing it goes on unfiltered.
            let watchdog = crate::seccomp::Thread::Watchdog;
            if let Err(error) = crate::seccomp::restrict_thread(watchdog) {
                tracing::warn!(%error, "the deadline thread runs without a seccomp filter");
            }
            watch(&thread_shared)
        })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Stops the run of `stop` at `deadline`, unless the returned guard is dropped first.
    pub(crate) fn arm(&self, deadline: Instant, stop: &Arc<RunStop>) -> Armed<'_> {
        self.insert(deadline, stop, None)
    }

    /// Nudges the run of `stop` ([`RunStop::kick`]) every `every`, until the returned guard
    /// is dropped.
    pub(crate) fn tick(&self, every: Duration, stop: &Arc<RunStop>) -> Armed<'_> {
        self.insert(Instant::now() + every, stop, Some(every))
    }

    fn insert(&self, deadline: Instant, stop: &Arc<RunStop>, every: Option<Duration>) -> Armed<'_> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = state.next_id;
        state.next_id += 1;
        let timer = Timer {
            stop: Arc::clone(stop),
            every,
        };
        state.armed.insert((deadline, id), timer);
        state.due.insert(id, deadline);
        let wake = state.looks_at.is_none_or(|looks_at| deadline < looks_at);
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        Armed { watchdog: self, id }
    }
}

fn watch(shared: &Shared) {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if state.stopping {
            return;
        }
        let now = Instant::now();
        let earliest = state.armed.first_key_value().map(|(key, _)| key.0);
        state.looks_at = earliest;
        state = match earliest {
            None => shared.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) if deadline <= now => {
                if let Some(((_, id), timer)) = state.armed.pop_first() {
                    match timer.every {
                        None => {
                            state.due.remove(&id);
                            timer.stop.stop(StopReason::Deadline);
                        }
                        Some(every) => {
                            timer.stop.kick();
                            // From now, not from when it was due: a late thread does not
                            // catch up with a burst of nudges.
                            let next = now + every;
                            state.due.insert(id, next);
                            state.armed.insert((next, id), timer);
                        }
                    }
                }
                state
            }
            Some(deadline) => {
                shared
                    .wake
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits (up to a generous bound, not a timing check) for `stop`'s deadline to fire.
    fn fires(stop: &RunStop) -> bool {
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            if stop.reason() == Some(StopReason::Deadline) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn ticks_come_again_without_stopping_the_run_until_disarmed() {
        let watchdog = Watchdog::start().unwrap();
        let stop = RunStop::new();
        let due = |id| {
            let state = watchdog.shared.state.lock().unwrap();
            state.due.get(&id).copied()
        };
        let ticks = watchdog.tick(Duration::from_millis(5), &stop);
        let id = ticks.id;
        let first = due(id).unwrap();
        let give_up = Instant::now() + Duration::from_secs(20);
        while due(id) == Some(first) && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        let later = due(id).unwrap();
        assert!(later > first, "the tick was not armed again");
        assert_eq!(stop.reason(), None, "a tick stopped the run");
        drop(ticks);
        let state = watchdog.shared.state.lock().unwrap();
        assert!(state.armed.is_empty() && state.due.is_empty());
    }

    #[test]
    fn deadlines_fire_whether_or_not_arming_them_woke_the_thread() {
        let watchdog = Watchdog::start().unwrap();
        let now = Instant::now();
        // The thread looks again at the first deadline; the later one is armed without waking
        // it, and must still fire once the first is gone.
        let (first, later) = (RunStop::new(), RunStop::new());
        let first_armed = watchdog.arm(now + Duration::from_millis(100), &first);
        let later_armed = watchdog.arm(now + Duration::from_millis(150), &later);
        drop(first_armed);
        assert!(fires(&later), "the later deadline never fired");
        assert_eq!(first.reason(), None, "a disarmed deadline fired");
        drop(later_armed);
        // An earlier deadline than the one the thread waits for wakes it.
        let (far, near) = (RunStop::new(), RunStop::new());
        let _far_armed = watchdog.arm(Instant::now() + Duration::from_secs(3600), &far);
        let _near_armed = watchdog.arm(Instant::now() + Duration::from_millis(10), &near);
        assert!(fires(&near), "the nearer deadline never fired");
        assert_eq!(far.reason(), None);
    }
}
