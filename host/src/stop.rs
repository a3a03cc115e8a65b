//! Stopping a run early, from any thread: the one mechanism behind deadlines and cancellation.
//!
//! Each run has a [`RunStop`]. Whoever wants the run to end (the watchdog at its deadline, an
//! embedder through a [`CancelToken`]) records a reason there, then kicks the vCPU's thread out
//! of `KVM_RUN` (see [`crate::watchdog`] for the signal). The first reason recorded is the one
//! the run ends with. The run looks at the reason before every entry into the guest, so a kick
//! that is lost (taken by a nested run on the same thread) or that lands before the guest
//! starts cannot let the guest run on.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::watchdog::kick_signal;

/// Why a run was stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Its deadline passed.
    Deadline = 1,
    /// Its [`CancelToken`] was cancelled.
    Cancelled = 2,
}

/// What stops one run: the first reason to arrive, and the thread to kick while the guest runs.
pub(crate) struct RunStop {
    reason: AtomicU8,
    /// The vCPU's thread while it can be kicked (see [`RunStop::attach`]).
    thread: Mutex<Option<libc::pthread_t>>,
    /// Wakes a vCPU thread that waits for something other than the guest (a debugger's
    /// packets), once a reason is recorded.
    waker: Mutex<Option<Waker>>,
}

/// What [`RunStop::stop`] calls besides kicking the thread.
pub(crate) type Waker = Box<dyn Fn() + Send>;

impl RunStop {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            reason: AtomicU8::new(0),
            thread: Mutex::new(None),
            waker: Mutex::new(None),
        })
    }

    /// Ends the run for `reason`, unless it is already ending for another.
    pub(crate) fn stop(&self, reason: StopReason) {
        let first = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if !first {
            return;
        }
        self.kick();
        if let Some(wake) = &*self.waker.lock().unwrap_or_else(|e| e.into_inner()) {
            wake();
        }
    }

    /// Kicks the vCPU's thread out of `KVM_RUN` (or makes its next `KVM_RUN` return at once)
    /// without stopping the run: for a debugger's packets, which the run loop then reads, and
    /// for a look at a vCPU that may be halted for good (in a VM with an in-kernel irqchip). A
    /// kick that finds no thread attached is dropped.
    pub(crate) fn kick(&self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(thread) = *thread {
            // SAFETY: the thread is alive: it is attached, and detaches (under this lock)
            // before its run returns. The kick signal has a do-nothing handler, installed
            // before any thread is attached.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    /// Calls `wake` whenever the run is stopped from now on (until replaced with `None`).
    pub(crate) fn set_waker(&self, wake: Option<Waker>) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = wake;
    }

    /// Why the run is being stopped, if it is.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(StopReason::Deadline),
            2 => Some(StopReason::Cancelled),
            _ => None,
        }
    }

    /// Lets [`stop`](Self::stop) kick the calling thread until the guard is dropped. The
    /// thread must be kickable ([`crate::watchdog::Kickable`]) for longer than the guard lives.
    pub(crate) fn attach(self: &Arc<Self>) -> Attached {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(me);
        Attached {
            stop: Arc::clone(self),
        }
    }
}

/// The vCPU's thread, attached to its run's [`RunStop`]; dropping it detaches the thread.
pub(crate) struct Attached {
    stop: Arc<RunStop>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        *self.stop.thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Cancels runs from any thread: give a clone to [`RunConfig::cancel_token`], keep one, and
/// call [`cancel`](Self::cancel) to end the runs it was given to with [`Exit::Cancelled`] at
/// once, from the moment their guest is about to run: in the guest, in a host function's
/// return, waiting for a slow console reader. A run cancelled while it is still being set up
/// (waiting for memory budget or a pool's VM, booting) ends as cancelled before its guest's
/// first instruction.
///
/// A token is cancelled for good; one token may serve many runs, on many threads (all the runs
/// of one request, say).
///
/// ```no_run
/// use mote_host::{CancelToken, Exit, GuestImage, Hypervisor, RunConfig};
/// # fn main() -> Result<(), mote_host::Error> {
/// let hypervisor = Hypervisor::open()?;
/// let image = GuestImage::from_file("spin.elf")?;
/// let token = CancelToken::new();
/// let canceller = token.clone();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_millis(50));
///     canceller.cancel();
/// });
/// let outcome = hypervisor.run(&image, RunConfig::default().cancel_token(token))?;
/// assert_eq!(outcome.exit, Exit::Cancelled);
/// # Ok(())
/// # }
/// ```
///
/// [`RunConfig::cancel_token`]: crate::RunConfig::cancel_token
/// [`Exit::Cancelled`]: crate::Exit::Cancelled
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<TokenState>,
}

#[derive(Default)]
struct TokenState {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    runs: Mutex<HashMap<u64, Arc<RunStop>>>,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends every run given this token with [`Exit::Cancelled`](crate::Exit::Cancelled), now
    /// and from now on. Returns at once; each run returns its outcome on its own thread.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let runs = self.inner.runs.lock().unwrap_or_else(|e| e.into_inner());
        for stop in runs.values() {
            stop.stop(StopReason::Cancelled);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Makes `stop` end when this token is cancelled, until the guard is dropped.
    pub(crate) fn watch(&self, stop: &Arc<RunStop>) -> Watched {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(stop));
        // Checked after registering: a cancel between the two still reaches this run.
        if self.is_cancelled() {
            stop.stop(StopReason::Cancelled);
        }
        Watched {
            token: self.clone(),
            id,
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A run watched by a token; dropping it forgets the run.
pub(crate) struct Watched {
    token: CancelToken,
    id: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.token
            .inner
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_a_token_reaches_runs_watched_before_and_after_it_fires() {
        let stop = RunStop::new();
        assert_eq!(stop.reason(), None);
        stop.stop(StopReason::Deadline);
        stop.stop(StopReason::Cancelled);
        assert_eq!(stop.reason(), Some(StopReason::Deadline));

        let token = CancelToken::new();
        let before = RunStop::new();
        let watched = token.watch(&before);
        assert_eq!(before.reason(), None);
        token.clone().cancel();
        assert!(token.is_cancelled());
        assert_eq!(before.reason(), Some(StopReason::Cancelled));
        drop(watched);
        assert!(token.inner.runs.lock().unwrap().is_empty());

        let after = RunStop::new();
        let _watched = token.watch(&after);
        assert_eq!(after.reason(), Some(StopReason::Cancelled));
    }
}
