//! Running the guests: each benchmarked guest once per run, on one thread (pinned if asked),
//! in an order shuffled round by round so that A and B see the same drift of the machine.

use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use mote_host::{Exit, GuestImage, Hypervisor, Pool, PoolConfig, RunConfig, Stats};

use crate::Failure;

/// A guest to benchmark, ready to run.
pub struct Subject {
    /// The name it is reported under (its file name, made unique).
    pub name: String,
    /// Its file.
    pub path: std::path::PathBuf,
    engine: Engine,
}

enum Engine {
    /// Booted afresh each run.
    Cold(Hypervisor, Box<GuestImage>),
    /// Restored from a snapshot each run, on a pool of one VM.
    Warm(Pool),
}

impl Subject {
    /// A guest booted afresh for each run.
    pub fn cold(
        name: String,
        path: std::path::PathBuf,
        hypervisor: &Hypervisor,
        image: GuestImage,
    ) -> Self {
        Self {
            name,
            path,
            engine: Engine::Cold(hypervisor.clone(), Box::new(image)),
        }
    }

    /// A guest snapshotted once (with `boot`'s layout and limits) and restored for each run.
    pub fn warm(
        name: String,
        path: std::path::PathBuf,
        hypervisor: &Hypervisor,
        image: &GuestImage,
        boot: RunConfig,
    ) -> Result<Self, mote_host::Error> {
        let snapshot = hypervisor.snapshot(image, boot)?;
        // One VM: runs are one at a time, and a second VM would only be made in the
        // background while a run is timed.
        let pool = Pool::new(
            hypervisor,
            &snapshot,
            PoolConfig::default().min_idle(1).max_vms(1),
        )?;
        Ok(Self {
            name,
            path,
            engine: Engine::Warm(pool),
        })
    }
}

/// One run as the benchmark keeps it.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// From asking mote to run the guest to its outcome, measured here.
    pub wall: Duration,
    /// mote's own figures for the run: its phases and exits.
    pub stats: Stats,
    /// How many times the vCPU's thread was preempted while the guest ran.
    pub preemptions: u64,
    /// The guest's samples by name, in the order the names first appeared; cycles.
    pub samples: Vec<(Arc<str>, Vec<u64>)>,
}

/// What the run thread tells the command as it goes.
pub enum Progress {
    /// A warm-up run of the subject ended.
    WarmedUp(usize),
    /// A counted run of the subject ended.
    Ran(usize, Box<RunRecord>),
}

/// How many rounds to run.
#[derive(Clone, Copy)]
pub enum Length {
    /// Exactly this many runs of each guest.
    Runs(usize),
    /// Rounds until this much time has passed, at least `min` of them.
    Time { budget: Duration, min: usize },
}

/// Runs the subjects: `warmup` uncounted runs of each, then rounds of one counted run of each
/// in a fresh random order, until `length` says stop. Every run gets a configuration from
/// `config`. The first run that does not end with exit code 0 ends the benchmark.
pub fn run_all(
    subjects: &[Subject],
    warmup: usize,
    length: Length,
    seed: u64,
    config: &(dyn Fn() -> Result<RunConfig, Failure> + Sync),
    progress: &Sender<Progress>,
) -> Result<(), Failure> {
    let mut order: Vec<usize> = (0..subjects.len()).collect();
    for _ in 0..warmup {
        for (index, subject) in subjects.iter().enumerate() {
            run_once(subject, config()?, "warm-up run")?;
            let _ = progress.send(Progress::WarmedUp(index));
        }
    }
    let mut random = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    let mut round = 0;
    loop {
        let done = match length {
            Length::Runs(runs) => round >= runs,
            Length::Time { budget, min } => round >= min && started.elapsed() >= budget,
        };
        if done {
            return Ok(());
        }
        random.shuffle(&mut order);
        for &index in &order {
            let record = run_once(&subjects[index], config()?, "run")?;
            let _ = progress.send(Progress::Ran(index, Box::new(record)));
        }
        round += 1;
    }
}

fn run_once(subject: &Subject, config: RunConfig, what: &str) -> Result<RunRecord, Failure> {
    let start = Instant::now();
    let result = match &subject.engine {
        Engine::Cold(hypervisor, image) => hypervisor.run(image, config),
        Engine::Warm(pool) => pool.run(config),
    };
    let wall = start.elapsed();
    let outcome = result.map_err(|error| Failure {
        message: format!(
            "a {what} of {} failed: {}",
            subject.name,
            error.full_message()
        ),
        ..Failure::from(error)
    })?;
    if outcome.exit != (Exit::Guest { code: 0 }) {
        let class = outcome.exit.class();
        return Err(Failure {
            kind: outcome.exit.kind(),
            class,
            code: outcome.exit.process_exit_code(),
            message: format!(
                "a {what} of {} ended without exit code 0: {}; a benchmark needs every run to \
                 succeed (`mote run` shows its console)",
                subject.name, outcome.exit
            ),
        });
    }
    // Counted while the guest ran: what making or tearing down the VM went through (mote's
    // and KVM's own threads wake then) says nothing of the timings.
    let preemptions = outcome.stats.preemptions.unwrap_or(0);
    let mut samples: Vec<(Arc<str>, Vec<u64>)> = Vec::new();
    for sample in outcome.samples {
        match samples.iter_mut().find(|(name, _)| *name == sample.name) {
            Some((_, cycles)) => cycles.push(sample.cycles),
            None => samples.push((sample.name, vec![sample.cycles])),
        }
    }
    Ok(RunRecord {
        wall,
        stats: outcome.stats,
        preemptions,
        samples,
    })
}
