//! The threads that run guests, and the bounded queue of calls waiting for one.
//!
//! A call is handed from the async server to a worker thread: vCPUs never run on the async
//! executor. Each worker filters itself with mote's seccomp allowlist for runs as it starts,
//! so a guest that broke out of KVM would find a thread that can do little but run guests.
//! The queue is bounded in length; a call that waited longer than the queue's deadline, or
//! whose client went away, is answered without running.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use mote_host::{CancelToken, Error, Outcome};
use tokio::sync::oneshot;

use super::functions::Function;
use super::metrics::Metrics;

/// How a queued call ended.
pub enum Done {
    /// It ran.
    Ran(Box<Result<Outcome, Error>>),
    /// It waited longer than the queue's deadline.
    WaitedTooLong(Duration),
    /// Its client went away before a worker took it.
    Abandoned,
}

/// A call waiting for a worker.
pub struct Job {
    pub function: Arc<Function>,
    pub input: Vec<u8>,
    pub cancel: CancelToken,
    pub queued: Instant,
    pub reply: oneshot::Sender<Done>,
    pub metrics: Arc<Metrics>,
    /// The request's place among `max_requests`, released when the call is done with.
    pub _slot: tokio::sync::OwnedSemaphorePermit,
}

struct State {
    jobs: VecDeque<Job>,
    stopping: bool,
}

/// The queue and its workers.
pub struct Workers {
    shared: Arc<(Mutex<State>, Condvar)>,
    capacity: usize,
    queue_timeout: Duration,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The queue is full: the call is refused at once.
pub struct Full;

impl Workers {
    /// Starts `count` workers behind a queue of `capacity` calls.
    pub fn start(count: usize, capacity: usize, queue_timeout: Duration) -> std::io::Result<Self> {
        let shared = Arc::new((
            Mutex::new(State {
                jobs: VecDeque::with_capacity(capacity),
                stopping: false,
            }),
            Condvar::new(),
        ));
        let threads = (0..count)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("mote-worker-{index}"))
                    .spawn(move || work(&shared, queue_timeout))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            shared,
            capacity,
            queue_timeout,
            threads,
        })
    }

    /// Queues `job`, unless the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Full> {
        let (state, ready) = &*self.shared;
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        if state.jobs.len() >= self.capacity || state.stopping {
            return Err(Full);
        }
        state.jobs.push_back(job);
        drop(state);
        ready.notify_one();
        Ok(())
    }

    /// Calls waiting for a worker now.
    pub fn queued(&self) -> usize {
        let (state, _) = &*self.shared;
        state.lock().unwrap_or_else(|e| e.into_inner()).jobs.len()
    }

    /// How long a call may wait for a worker.
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }

    /// Lets the workers finish the queue and their runs, then stop.
    pub fn stop(mut self) {
        {
            let (state, ready) = &*self.shared;
            state.lock().unwrap_or_else(|e| e.into_inner()).stopping = true;
            ready.notify_all();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn work(shared: &(Mutex<State>, Condvar), queue_timeout: Duration) {
    if let Err(error) = mote_host::restrict_run_thread() {
        tracing::warn!(
            error = %error.full_message(),
            "a worker runs guests without a seccomp filter"
        );
    }
    let (state, ready) = shared;
    loop {
        let job = {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                if state.stopping {
                    return;
                }
                state = ready.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        let waited = job.queued.elapsed();
        let done = if job.cancel.is_cancelled() {
            Done::Abandoned
        } else if waited > queue_timeout {
            Done::WaitedTooLong(waited)
        } else {
            let result = job.function.call(job.input, job.cancel);
            // Counted here, not where the answer is sent: a client that went away gets no
            // answer, and its cancelled run still counts.
            let (class, kind) = match &result {
                Ok(outcome) => (outcome.exit.class(), outcome.exit.kind()),
                Err(error) => (error.class(), error.kind()),
            };
            job.metrics.ended(&job.function.name, class.name(), kind);
            Done::Ran(Box::new(result))
        };
        // The client may be gone; then nobody needs the answer.
        let _ = job.reply.send(done);
    }
}
