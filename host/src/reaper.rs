//! Tear-down off the caller's path.
//!
//! Destroying a VM costs more than creating one on some hosts (measured here: about 0.7 ms of a
//! 2 ms cold run went to closing the vCPU and VM and unmapping guest memory). A run hands what it
//! must destroy to this thread and returns its outcome at once.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Something whose drop is the tear-down.
type Remains = Box<dyn Send>;

/// How many VMs may wait for the reaper. Past that, the caller tears its VM down itself: one
/// reaper thread must not become the bottleneck of many running threads, and VMs waiting in a
/// queue still hold their memory.
const QUEUE: usize = 8;

/// A thread that drops what it is given, in order.
pub(crate) struct Reaper {
    sender: Option<SyncSender<Remains>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts the thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<Remains>(QUEUE);
        let thread = crate::cpus::spawn_helper("mote-reaper", move || {
            // This thread runs only mote's code: it can live with mote's allowlist. Where
            // seccomp is missing it goes on unfiltered.
            if let Err(error) = crate::seccomp::restrict_thread(crate::seccomp::Thread::Reaper) {
                tracing::warn!(%error, "the tear-down thread runs without a seccomp filter");
            }
            receiver.into_iter().for_each(drop)
        })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Destroys `remains` on the reaper thread, or here if that thread is busy (or gone).
    pub(crate) fn dispose(&self, remains: Remains) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(remains) {
            Ok(()) => {}
            Err(TrySendError::Full(remains) | TrySendError::Disconnected(remains)) => drop(remains),
        }
    }
}

impl Drop for Reaper {
    /// Waits until everything handed over is destroyed: nothing outlives the hypervisor.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
