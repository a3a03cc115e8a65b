//! Where a run's console text goes: collected into the outcome, or streamed to the embedder's
//! writer by a thread of its own.
//!
//! Streaming on the vCPU thread would let a stalled reader (a paused pager on a pipe) stop the
//! guest's host, deadline or not: a write blocked in the kernel ignores the deadline's kick. So a
//! writer thread does the writing, behind a bounded queue; the vCPU thread waits on a full queue
//! only until the run is stopped (its deadline, a cancel), and once the run is over it waits for the writer only
//! [`DRAIN_GRACE`]. A writer that fails (a pipe whose reader has gone) ends the run.

use std::io::{ErrorKind, Write};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Console chunks that may wait for the writer.
const QUEUE: usize = 64;

/// How long the vCPU thread sleeps between looks at a full queue (and at its deadline).
const FULL_QUEUE_WAIT: Duration = Duration::from_micros(200);

/// How long a finished run waits for its writer to hand the last text on. A reader that takes
/// longer (one that stopped reading) does not hold the caller: the writer goes on in the
/// background and ends when its write does.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Why console text could not be handed on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The run was stopped (its deadline passed, or it was cancelled) while the queue was full.
    RunStopped,
    /// The writer failed: its reader has gone, or its output is broken.
    Closed(ErrorKind),
}

pub(crate) enum Console {
    Capture(Vec<u8>),
    Stream(Stream),
}

/// A writer thread (started with the first byte) and the queue to it.
pub(crate) struct Stream {
    out: Option<Box<dyn Write + Send>>,
    sender: Option<SyncSender<Vec<u8>>>,
    /// Receives once the writer has written everything (or failed).
    done: Option<Receiver<()>>,
    /// Why the writer failed, once it has.
    failure: Arc<Mutex<Option<ErrorKind>>>,
}

impl Console {
    pub(crate) fn new(out: Option<Box<dyn Write + Send>>) -> Self {
        match out {
            Some(out) => Console::Stream(Stream {
                out: Some(out),
                sender: None,
                done: None,
                failure: Arc::new(Mutex::new(None)),
            }),
            None => Console::Capture(Vec::new()),
        }
    }

    /// Queues `bytes`; waits while the queue is full, but not once `run_stopped` says so.
    pub(crate) fn write(
        &mut self,
        bytes: &[u8],
        run_stopped: &dyn Fn() -> bool,
    ) -> Result<(), Stopped> {
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
                Err(TrySendError::Disconnected(_)) => {
                    let kind = stream
                        .failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unwrap_or(ErrorKind::BrokenPipe);
                    return Err(Stopped::Closed(kind));
                }
                Err(TrySendError::Full(returned)) => {
                    if run_stopped() {
                        return Err(Stopped::RunStopped);
                    }
                    chunk = returned;
                    std::thread::sleep(FULL_QUEUE_WAIT);
                }
            }
        }
    }

    /// What was collected; for a stream, waits up to [`DRAIN_GRACE`] for the writer to hand
    /// everything on.
    pub(crate) fn finish(self) -> Vec<u8> {
        match self {
            Console::Capture(buffer) => buffer,
            Console::Stream(mut stream) => {
                drop(stream.sender.take());
                if let Some(done) = stream.done.take() {
                    let _ = done.recv_timeout(DRAIN_GRACE);
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
            let (finished, done) = sync_channel::<()>(1);
            let failure = Arc::clone(&self.failure);
            crate::cpus::spawn_helper("mote-console", move || {
                for chunk in receiver {
                    if let Err(error) = out.write_all(&chunk).and_then(|()| out.flush()) {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.kind());
                        break;
                    }
                }
                let _ = finished.send(());
            })
            .ok()?;
            self.sender = Some(sender);
            self.done = Some(done);
        }
        self.sender.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer whose reader stopped reading: every write blocks until `release`.
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (lock, wake) = &*self.0;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_reader_holds_a_finished_run_only_for_the_grace() {
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut console = Console::new(Some(Box::new(Stalled(Arc::clone(&release)))));
        console.write(b"text nobody reads", &|| false).unwrap();
        let start = Instant::now();
        assert!(console.finish().is_empty());
        let waited = start.elapsed();
        assert!(
            waited >= DRAIN_GRACE && waited < DRAIN_GRACE * 3,
            "{waited:?}"
        );
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
    }

    #[test]
    fn a_reader_that_went_away_stops_the_console() {
        let mut console = Console::new(Some(Box::new(Broken)));
        console.write(b"first", &|| false).unwrap();
        let start = Instant::now();
        let stopped = loop {
            match console.write(b"more", &|| false) {
                Ok(()) if start.elapsed() < Duration::from_secs(5) => std::thread::yield_now(),
                result => break result,
            }
        };
        assert_eq!(stopped, Err(Stopped::Closed(ErrorKind::BrokenPipe)));
    }

    #[test]
    fn a_full_queue_gives_up_once_the_run_is_stopped() {
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let mut console = Console::new(Some(Box::new(Stalled(Arc::clone(&release)))));
        let mut result = Ok(());
        for _ in 0..QUEUE + 2 {
            result = console.write(b"x", &|| true);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Stopped::RunStopped));
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
    }

    #[test]
    fn captured_text_is_all_returned() {
        let mut console = Console::new(None);
        console.write(b"one ", &|| true).unwrap();
        console.write(b"two", &|| true).unwrap();
        assert_eq!(console.finish(), b"one two");
    }
}
