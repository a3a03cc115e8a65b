//! Timing samples (the `samples` hypercall and `mote_guest::bench`): guests' samples arrive
//! with their names, counts and order; twice the work reads as more ticks; bad calls get their
//! errors, floods end at the limits; a run restored from a snapshot starts with none.

use std::sync::Arc;

use mote_abi::SAMPLE_NAMES_MAX;
use mote_host::{
    DEFAULT_SAMPLE_LIMIT, Exit, GuestImage, Hypervisor, Limit, Outcome, Pool, PoolConfig,
    RunConfig, Sample,
};
use mote_tests::{guest_path, hypervisor, run_guest, run_guest_with, text};

fn named<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| &*s.name == name).collect()
}

fn cycles(samples: &[&Sample]) -> Vec<u64> {
    samples.iter().map(|s| s.cycles).collect()
}

fn median(samples: &[&Sample]) -> u64 {
    let mut cycles = cycles(samples);
    cycles.sort_unstable();
    cycles[cycles.len() / 2]
}

fn hostile(mode: &str, config: RunConfig) -> Outcome {
    run_guest_with("samples-hostile", config.input(mode.as_bytes().to_vec()))
}

#[test]
fn hashbench_reports_a_thousand_samples_of_each_name() {
    let outcome = run_guest("hashbench");
    assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{outcome:?}");
    let console = text(&outcome.console);
    assert!(console.contains("over 4096 bytes"), "{console}");
    assert_eq!(outcome.samples.len(), 2000);
    let (hash, sort) = (
        named(&outcome.samples, "hash"),
        named(&outcome.samples, "sort"),
    );
    assert_eq!((hash.len(), sort.len()), (1000, 1000));
    // Hashing 4 KiB takes thousands of ticks, whatever the machine.
    assert!(median(&hash) > 1000, "{:?}", cycles(&hash));
    // One allocation per name, shared by its samples.
    assert!(hash.iter().all(|s| Arc::ptr_eq(&s.name, &hash[0].name)));
    assert!(sort.iter().all(|s| Arc::ptr_eq(&s.name, &sort[0].name)));
    // A full buffer goes over in one call: far fewer exits than samples.
    assert!(outcome.stats.exits.hypercalls < 20, "{:?}", outcome.stats);

    // It hashes its input when it has one.
    let outcome = run_guest_with("hashbench", RunConfig::default().input(b"abc".to_vec()));
    assert!(
        text(&outcome.console).contains("over 3 bytes"),
        "{outcome:?}"
    );
    assert_eq!(named(&outcome.samples, "hash").len(), 1000);
}

#[test]
fn twice_the_work_reads_as_clearly_more_ticks() {
    let run = |name: &str| {
        let outcome = run_guest(name);
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{name}: {outcome:?}");
        // A cold run's `init` reports its one sample first, then `main` its 200.
        assert_eq!(&*outcome.samples[0].name, "init", "{name}");
        let work = named(&outcome.samples, "work");
        assert_eq!(work.len(), 200, "{name}");
        assert_eq!(outcome.samples.len(), 201, "{name}");
        median(&work)
    };
    let (once, twice) = (run("samples-work-1x"), run("samples-work-2x"));
    // This checks that samples are collected right, not how fast anything is: the loop runs
    // for tens of thousands of ticks, so the 2x guest's median is close to twice the other's.
    assert!(
        twice as f64 > 1.5 * once as f64,
        "median ticks: 1x {once}, 2x {twice}"
    );
    assert!(
        (twice as f64) < 3.0 * once as f64,
        "median ticks: 1x {once}, 2x {twice}"
    );
}

#[test]
fn bad_sample_calls_get_their_errors_and_the_run_goes_on() {
    let outcome = hostile("bad-calls", RunConfig::default());
    assert_eq!(
        outcome.exit,
        Exit::Guest { code: 0 },
        "{}",
        text(&outcome.console)
    );
    let samples: Vec<(&str, u64)> = outcome
        .samples
        .iter()
        .map(|s| (&*s.name, s.cycles))
        .collect();
    assert_eq!(samples, [("good", 1), ("good", 2), ("good", 3)]);
}

#[test]
fn floods_of_samples_or_names_end_at_the_limits() {
    let outcome = hostile("name-flood", RunConfig::default());
    assert_eq!(
        outcome.exit,
        Exit::LimitExceeded(Limit::SampleNames(SAMPLE_NAMES_MAX)),
        "{}",
        text(&outcome.console)
    );
    // The names before the one too many are kept, each once.
    assert_eq!(outcome.samples.len() as u64, SAMPLE_NAMES_MAX);
    assert_eq!(&*outcome.samples[255].name, "flood-255");

    // Batches of 8192 under a limit of 100,000: twelve go in, the thirteenth ends the run.
    let outcome = hostile("sample-flood", RunConfig::default().sample_limit(100_000));
    assert_eq!(outcome.exit, Exit::LimitExceeded(Limit::Samples(100_000)));
    assert_eq!(outcome.samples.len(), 12 * 8192);
    assert!(outcome.samples.iter().all(|s| s.cycles == 7));

    // The default limit holds too.
    let outcome = hostile("sample-flood", RunConfig::default());
    assert_eq!(
        outcome.exit,
        Exit::LimitExceeded(Limit::Samples(DEFAULT_SAMPLE_LIMIT))
    );
    assert_eq!(outcome.samples.len() as u64, DEFAULT_SAMPLE_LIMIT);
}

#[test]
fn the_runtime_drops_bad_names_and_keeps_every_sample_past_its_buffers() {
    let outcome = hostile("runtime", RunConfig::default());
    assert_eq!(
        outcome.exit,
        Exit::Guest { code: 0 },
        "{}",
        text(&outcome.console)
    );
    assert_eq!(outcome.samples.len(), 20 * 650);
    let want: Vec<u64> = (0..600).chain(1000..1050).collect();
    for i in 0..20 {
        let name = format!("name-{i:02}");
        // Each name's samples arrive in the order they were taken, through every hand-over.
        assert_eq!(cycles(&named(&outcome.samples, &name)), want, "{name}");
    }
}

#[test]
fn a_guest_not_under_mote_drops_its_samples_quietly() {
    // A plain boot hides mote: the runtime takes the COM1 and debug-exit path, and its samples
    // go nowhere rather than to a call nobody answers.
    let outcome = hostile("runtime", RunConfig::default().plain_boot());
    assert_eq!(outcome.exit.guest_code(), Some(0), "{outcome:?}");
    assert!(
        text(&outcome.console).contains("measure gave 42"),
        "{outcome:?}"
    );
    assert!(outcome.samples.is_empty());
    assert_eq!(outcome.stats.exits.hypercalls, 0);
}

#[test]
fn runs_restored_from_a_snapshot_start_with_no_samples() {
    let image = GuestImage::from_file(guest_path("samples-work-1x")).unwrap();
    let snapshot = hypervisor().snapshot(&image, RunConfig::default()).unwrap();
    let check = |outcome: Outcome| {
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{outcome:?}");
        // Only this run's samples: none of the snapshot boot's `init`, none of the run
        // before on the same VM.
        assert_eq!(outcome.samples.len(), 200);
        assert!(outcome.samples.iter().all(|s| &*s.name == "work"));
    };
    check(
        hypervisor()
            .run_snapshot(&snapshot, RunConfig::default())
            .unwrap(),
    );
    let pool = Pool::new(
        hypervisor(),
        &snapshot,
        PoolConfig::default().min_idle(1).max_vms(1),
    )
    .unwrap();
    for _ in 0..3 {
        check(pool.run(RunConfig::default()).unwrap());
    }
}

#[test]
fn the_tsc_frequency_is_the_one_guests_are_told() {
    // A fresh hypervisor asks before any run has made a vCPU; the shared one has run guests.
    let fresh = Hypervisor::open().unwrap().tsc_khz();
    let _ = run_guest("hello");
    let used = hypervisor().tsc_khz();
    assert_eq!(fresh, used);
    let khz = used.expect("KVM reports the TSC frequency here");
    // Between 100 MHz and 10 GHz.
    assert!((100_000..10_000_000).contains(&khz), "{khz}");
}
