//! Tear-down off the caller's path.
//!
//! Destroying a VM costs more than creating one on some hosts (measured here: about 0.7 ms of a
//! 2 ms cold run went to closing the vCPU and VM and unmapping guest memory). A run hands what it
//! must destroy to this thread and returns its outcome at once.

use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

/// Something whose drop is the tear-down.
type Remains = Box<dyn Send>;

/// A thread that drops what it is given, in order.
pub(crate) struct Reaper {
    sender: Option<Sender<Remains>>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts the thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Remains>();
        let thread = std::thread::Builder::new()
            .name("mote-reaper".into())
            .spawn(move || receiver.into_iter().for_each(drop))?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Destroys `remains` on the reaper thread (or here, if that thread is gone).
    pub(crate) fn dispose(&self, remains: Remains) {
        if let Some(sender) = &self.sender
            && let Err(returned) = sender.send(remains)
        {
            drop(returned.0);
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
