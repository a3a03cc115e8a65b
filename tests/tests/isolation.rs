//! Isolation is the acceptance gate of snapshots and pools: a run restored from a snapshot,
//! whatever the run before it on the same VM did and however it ended, finds everything the
//! snapshot's value. Two guests check it from inside (`test-guests/src/isolation.rs`): one in
//! user mode (heap, stack, statics, general, flag and SSE registers, the host's writes, the input
//! window) and one in kernel mode (page table entries, MSRs, debug registers, CR4, general
//! registers and flags).

use std::sync::Arc;
use std::time::Duration;

use mote_host::{Exit, GuestImage, Limit, Outcome, Pool, PoolConfig, RunConfig};
use mote_tests::{guest_path, hypervisor, text};

/// Whether an outcome is the one expected.
type Expected = fn(&Exit) -> bool;

/// How a polluting run ends, and how that shows in its outcome.
const ENDS: [(&str, Expected); 4] = [
    ("exit", |exit| *exit == Exit::Guest { code: 0 }),
    ("fault", |exit| {
        matches!(exit, Exit::Exception { vector: 6, .. })
    }),
    ("spin", |exit| matches!(exit, Exit::Timeout { .. })),
    ("flood", |exit| {
        matches!(exit, Exit::LimitExceeded(Limit::Hypercalls(_)))
    }),
];

/// Long enough for any run of these guests; a restore gone wrong must fail, not hang.
const TIMEOUT: Duration = Duration::from_secs(10);

fn config(input: Vec<u8>) -> RunConfig {
    RunConfig::default()
        .timeout(TIMEOUT)
        .unwrap()
        .input(input)
        .host_function(
            "secret",
            Arc::new(|request: &[u8]| Ok(vec![request[0]; 256])),
        )
}

fn assert_clean(outcome: &Outcome, what: &str) {
    assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{what}: {outcome:?}");
    assert_eq!(text(&outcome.output), "ok\n", "{what}");
}

fn runs_restored_from_one_snapshot_share_nothing(guest: &str) {
    let image = GuestImage::from_file(guest_path(guest)).unwrap();
    let snapshot = hypervisor().snapshot(&image, RunConfig::default()).unwrap();
    // One VM: every run of the pool runs on it, one after another.
    let pool = Pool::new(hypervisor(), &snapshot, PoolConfig::default().max_vms(1)).unwrap();
    assert_clean(
        &pool.run(config(b"check".to_vec())).unwrap(),
        "the first run",
    );
    for (i, (end, ended_so)) in ENDS.iter().enumerate() {
        let secret = b'1' + i as u8;
        let mut input = format!("pollute {} {end} ", secret as char).into_bytes();
        input.resize(16 * 1024, secret);
        let limited = match *end {
            "spin" => config(input).timeout(Duration::from_millis(100)).unwrap(),
            "flood" => config(input).hypercall_limit(64),
            _ => config(input),
        };
        let polluted = pool.run(limited).unwrap();
        assert!(ended_so(&polluted.exit), "{guest} {end}: {polluted:?}");
        // Its own check passed, and every write of its pollution took (a page table entry that
        // did not, a heap block that moved, would say so here).
        assert_eq!(text(&polluted.output), "ok\n", "{guest} {end}");
        let dirtied = polluted
            .stats
            .dirtied_pages
            .expect("the VM was reset and kept");
        assert!(dirtied > 4, "{guest} {end}: only {dirtied} pages written");
        let after =
            format!("{guest}: the next run on the same VM, after a run that ended by {end}");
        assert_clean(&pool.run(config(b"check".to_vec())).unwrap(), &after);
        let other = hypervisor()
            .run_snapshot(&snapshot, config(b"check".to_vec()))
            .unwrap();
        assert_clean(&other, &format!("{guest}: another VM, after {end}"));
    }
}

#[test]
fn user_mode_runs_restored_from_one_snapshot_share_nothing() {
    runs_restored_from_one_snapshot_share_nothing("isolation");
}

#[test]
fn kernel_mode_runs_restored_from_one_snapshot_share_nothing() {
    runs_restored_from_one_snapshot_share_nothing("isolation-kernel");
}
