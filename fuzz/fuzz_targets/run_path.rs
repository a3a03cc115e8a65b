//! Fuzzes the run path under real KVM: each input is a script for the `script` test guest
//! (`guest/test-guests/src/bin/script.rs`), which replays it as hypercalls with any arguments,
//! port accesses of any width, memory reads and writes anywhere and privileged instructions.
//! Whatever the script does, mote must end the run in an outcome (never an error of its own,
//! never a panic), within the limits it set, and the next run on the same pooled VM must find
//! the guest's buffer as the snapshot had it (the isolation tests check the rest of the state). Raw kernel images would mostly re-fuzz the ELF loader, which has its own
//! target.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mote_abi::Hypercall;
use mote_host::{Exit, GuestImage, Hypervisor, Pool, PoolConfig, RunConfig};
use mote_tests::script::{BUFFER, args, script};

/// Per input: a short deadline, so a script that spins costs little.
const DEADLINE: Duration = Duration::from_millis(20);
const HYPERCALL_LIMIT: u64 = 10_000;
const OUTPUT_LIMIT: u64 = 64 * 1024;
const CONSOLE_LIMIT: u64 = 64 * 1024;
const SAMPLE_LIMIT: u64 = 10_000;

/// The script guest's writable buffer, in bytes.
const BUFFER_LEN: u64 = 64 * 1024;

struct Rig {
    /// One VM, so every input runs on the VM the one before it used.
    pool: Pool,
    /// A script that writes the guest's whole buffer to the output: all zeros, as at the
    /// snapshot, unless a run's writes survived the reset.
    show_buffer: Vec<u8>,
}

static RIG: LazyLock<Rig> = LazyLock::new(|| {
    let hypervisor = Hypervisor::open().expect("/dev/kvm");
    let image = GuestImage::from_file(mote_tests::guest_path("script"))
        .expect("the script guest: build the guests first (cargo xtask fuzz run_path does)");
    let snapshot = hypervisor
        .snapshot(&image, RunConfig::default())
        .expect("a snapshot of the script guest");
    let pool = Pool::new(
        &hypervisor,
        &snapshot,
        PoolConfig::default().min_idle(1).max_vms(1),
    )
    .expect("a pool");
    let show_buffer = script()
        .call(Hypercall::OutputWrite, args(BUFFER, BUFFER_LEN))
        .into_input();
    Rig { pool, show_buffer }
});

fn config() -> RunConfig {
    RunConfig::default()
        .timeout(DEADLINE)
        .expect("a deadline in range")
        .hypercall_limit(HYPERCALL_LIMIT)
        .output_limit(OUTPUT_LIMIT)
        .console_limit(CONSOLE_LIMIT)
        .sample_limit(SAMPLE_LIMIT)
        .host_function("echo", Arc::new(|request: &[u8]| Ok(request.to_vec())))
        .host_function("fails", Arc::new(|_: &[u8]| Err("refused".into())))
}

fuzz_target!(|script: &[u8]| {
    let rig = &*RIG;
    let outcome = rig
        .pool
        .run(config().input(script.to_vec()))
        .unwrap_or_else(|e| panic!("the run ended in an error of mote's: {e}"));
    assert!(outcome.output.len() as u64 <= OUTPUT_LIMIT);
    assert!(outcome.console.len() as u64 <= CONSOLE_LIMIT);
    assert!(outcome.samples.len() as u64 <= SAMPLE_LIMIT);
    if let Exit::Timeout { limit } = outcome.exit {
        assert_eq!(limit, DEADLINE);
    }

    // The next run on the same VM sees the snapshot's memory, not this run's.
    let next = rig
        .pool
        .run(config().input(rig.show_buffer.clone()))
        .unwrap_or_else(|e| panic!("the run after ended in an error of mote's: {e}"));
    assert_eq!(next.exit, Exit::Guest { code: 0 }, "the run after");
    assert!(
        next.samples.is_empty(),
        "the run after saw this run's samples"
    );
    assert!(
        next.output.len() as u64 == BUFFER_LEN && next.output.iter().all(|&b| b == 0),
        "the run after saw this run's writes"
    );
});
