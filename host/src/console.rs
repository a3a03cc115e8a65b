//! Where a run's console text goes: collected into the outcome, or streamed to the embedder's
//! writer by a thread of its own.
//!
//! Streaming on the vCPU thread would let a stalled reader (a paused pager on a pipe) stop the
//! guest's host, deadline or not: a write blocked in the kernel ignores the deadline's kick. So a
//! writer thread does the writing, behind a bounded queue, and the vCPU thread waits on a full
//! queue only until the run's deadline.

use std::io::Write;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

/// Console chunks that may wait for the writer.
const QUEUE: usize = 64;

/// How long the vCPU thread sleeps between looks at a full queue (and at its deadline).
const FULL_QUEUE_WAIT: Duration = Duration::from_micros(200);

/// The guest ran into its deadline while waiting for the console's reader.
pub(crate) struct DeadlinePassed;

pub(crate) enum Console {
    Capture(Vec<u8>),
    Stream(Stream),
}

/// A writer thread (started with the first byte) and the queue to it.
pub(crate) struct Stream {
    out: Option<Box<dyn Write + Send>>,
    sender: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
}

impl Console {
    pub(crate) fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        match out {
            Some(out) => Console::Stream(Stream {
                out: Some(out),
                sender: None,
                writer: None,
            }),
            None => Console::Capture(Vec::new()),
        }
    }

    /// Queues `bytes`; waits while the queue is full, but not once `deadline_passed` says so.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        deadline_passed: &dyn Fn() -> bool,
    ) -> Result<(), DeadlinePassed> {
        let stream = match self {
            Console::Capture(buffer) => {
                buffer.extend_from_slice(bytes);
                return Ok(());
            }
            Console::Stream(stream) => stream,
        };
        let Some(sender) = stream.sender() else {
            return Ok(());
        };
        let mut chunk = bytes.to_vec();
        loop {
            match sender.try_send(chunk) {
                Ok(()) => return Ok(()),
                // The writer is gone (its output failed): a console nobody reads must not stop
                // the guest.
                Err(TrySendError::Disconnected(_)) => return Ok(()),
                Err(TrySendError::Full(returned)) => {
                    if deadline_passed() {
                        return Err(DeadlinePassed);
                    }
                    chunk = returned;
                    std::thread::sleep(FULL_QUEUE_WAIT);
                }
            }
        }
    }

    /// What was collected; waits for a stream's writer to finish unless the run timed out (a
    /// stalled reader must not hold the caller past the deadline; the writer then ends when its
    /// write does).
    pub(crate) fn finish(self, timed_out: bool) -> Vec<u8> {
        match self {
            Console::Capture(buffer) => buffer,
            Console::Stream(mut stream) => {
                drop(stream.sender.take());
                if let Some(writer) = stream.writer.take()
                    && !timed_out
                {
                    let _ = writer.join();
                }
                Vec::new()
            }
        }
    }
}

impl Stream {
    /// The queue to the writer thread, started on first use; `None` if it cannot be started.
    fn sender(&mut self) -> Option<&SyncSender<Vec<u8>>> {
        if self.sender.is_none() {
            let mut out = self.out.take()?;
            let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
            let writer = std::thread::Builder::new()
                .name("mote-console".into())
                .spawn(move || {
                    for chunk in receiver {
                        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            self.sender = Some(sender);
            self.writer = Some(writer);
        }
        self.sender.as_ref()
    }
}
