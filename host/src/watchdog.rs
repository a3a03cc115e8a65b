//! Wall-clock deadlines: a guest spinning with interrupts off never exits by itself, so a thread
//! of mote's kicks its vCPU out of `KVM_RUN` when its time is up.
//!
//! The kick is KVM's: set `immediate_exit` in the vCPU's shared `kvm_run` page (so a vCPU between
//! two `KVM_RUN`s does not re-enter the guest) and send its thread a signal (so a vCPU inside
//! `KVM_RUN` leaves it with `EINTR`). The thread sleeps on a condition variable until the next
//! deadline: there is no polling loop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// The signal that kicks a vCPU thread out of `KVM_RUN`: the first real-time signal, whose
/// handler does nothing (it exists so that the signal interrupts the ioctl instead of killing
/// the process).
pub(crate) fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs the do-nothing handler once per process; whether that worked.
fn install_kick_handler() -> std::io::Result<()> {
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

/// How to kick one vCPU.
pub(crate) struct Kick {
    /// `kvm_run.immediate_exit` of the vCPU.
    immediate_exit: *mut u8,
    /// The thread running the vCPU.
    thread: libc::pthread_t,
    fired: Arc<AtomicBool>,
}

// SAFETY: the pointer is only used by the watchdog thread while the entry is armed, and
// `Armed::drop` disarms it (under the lock the watchdog fires under) before the vCPU, and so its
// `kvm_run` page, can go away.
unsafe impl Send for Kick {}

impl Kick {
    /// A kick for a vCPU run on the calling thread, whose `kvm_run.immediate_exit` is at
    /// `immediate_exit`.
    pub(crate) fn for_this_thread(immediate_exit: *mut u8) -> Self {
        Self {
            immediate_exit,
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            fired: Arc::new(AtomicBool::new(false)),
        }
    }

    fn fire(&self) {
        // SAFETY: the entry is armed, so the vCPU and its kvm_run mapping are alive (see the
        // `Send` impl); the byte is written atomically, as KVM reads it from another context.
        unsafe { AtomicU8::from_ptr(self.immediate_exit).store(1, Ordering::SeqCst) };
        self.fired.store(true, Ordering::SeqCst);
        // SAFETY: the thread is alive: it is inside `run`, which disarms before returning.
        unsafe { libc::pthread_kill(self.thread, kick_signal()) };
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    armed: BTreeMap<(Instant, u64), Kick>,
    stopping: bool,
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

/// A deadline in force; dropping it disarms it.
pub(crate) struct Armed<'w> {
    watchdog: &'w Watchdog,
    key: (Instant, u64),
    fired: Arc<AtomicBool>,
}

impl Armed<'_> {
    /// The flag the watchdog sets when the deadline passes and it kicks the vCPU.
    pub(crate) fn fired_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fired)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut state = self
            .watchdog
            .shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        state.armed.remove(&self.key);
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
        let thread = std::thread::Builder::new()
            .name("mote-watchdog".into())
            .spawn(move || watch(&thread_shared))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Kicks the vCPU of `kick` at `deadline`, unless the returned guard is dropped first.
    pub(crate) fn arm(&self, deadline: Instant, kick: Kick) -> Armed<'_> {
        let fired = Arc::clone(&kick.fired);
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (deadline, state.next_id);
        state.next_id += 1;
        state.armed.insert(key, kick);
        drop(state);
        self.shared.wake.notify_one();
        Armed {
            watchdog: self,
            key,
            fired,
        }
    }
}

fn watch(shared: &Shared) {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if state.stopping {
            return;
        }
        let now = Instant::now();
        state = match state.armed.first_key_value().map(|(key, _)| key.0) {
            None => shared.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) if deadline <= now => {
                if let Some((_, kick)) = state.armed.pop_first() {
                    kick.fire();
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
