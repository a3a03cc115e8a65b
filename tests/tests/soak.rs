//! The soak: ten thousand runs in a row, then a thousand at once, mixing good guests with
//! hostile ones, cold and from pools. Every good run must give its exact output, every hostile
//! one its exact outcome, and neither descriptors nor resident memory may grow with the count.
//! (A test binary of its own: it counts the process's descriptors and memory.)

use std::time::Duration;

use mote_abi::{Hypercall, HypercallError};
use mote_host::{
    Exit, GuestImage, Hypervisor, Limit, Outcome, Pool, PoolConfig, RunConfig, Snapshot,
};
use mote_tests::script::{BUFFER, args, script};
use mote_tests::{guest_path, open_descriptors, resident_kib};

/// The guests and pools the soak runs on.
struct Rig {
    hypervisor: Hypervisor,
    echo: GuestImage,
    script: GuestImage,
    script_snapshot: Snapshot,
    echo_pool: Pool,
    script_pool: Pool,
}

impl Rig {
    fn new() -> Self {
        let hypervisor = Hypervisor::open().unwrap();
        let echo = GuestImage::from_file(guest_path("echo")).unwrap();
        let script = GuestImage::from_file(guest_path("script")).unwrap();
        let echo_snapshot = hypervisor.snapshot(&echo, RunConfig::default()).unwrap();
        let script_snapshot = hypervisor.snapshot(&script, RunConfig::default()).unwrap();
        let pool_config = || PoolConfig::default().min_idle(2).max_vms(8);
        let echo_pool = Pool::new(&hypervisor, &echo_snapshot, pool_config()).unwrap();
        let script_pool = Pool::new(&hypervisor, &script_snapshot, pool_config()).unwrap();
        Self {
            hypervisor,
            echo,
            script,
            script_snapshot,
            echo_pool,
            script_pool,
        }
    }

    /// Run `i` of the mix: which guest, how it starts and what it must end in depend on `i`.
    /// Returns a description of what went wrong, if anything did.
    fn run(&self, i: usize) -> Result<(), String> {
        let config = || {
            RunConfig::default()
                .timeout(Duration::from_secs(10))
                .unwrap()
        };
        let word = (i as u64).to_le_bytes().to_vec();
        let (outcome, expect): (Outcome, Expect) = match i % 10 {
            // Good runs: the input back, exactly.
            0 => (
                self.hypervisor
                    .run(&self.echo, config().input(word.clone()))
                    .unwrap(),
                Expect::Output(word),
            ),
            1 | 3 | 5 => (
                self.echo_pool.run(config().input(word.clone())).unwrap(),
                Expect::Output(word),
            ),
            // Hostile runs, cold, restored once, or on a pooled VM that the next run reuses.
            2 => (
                self.hypervisor
                    .run(
                        &self.script,
                        config().input(script().read(0x10).into_input()),
                    )
                    .unwrap(),
                Expect::Check(|exit| matches!(exit, Exit::Exception { vector: 14, .. })),
            ),
            4 => (
                self.script_pool
                    .run(config().input(script().out(0x1234, 2, 7).into_input()))
                    .unwrap(),
                Expect::Exit(Exit::UnservedPort {
                    port: 0x1234,
                    write: true,
                    size: 2,
                }),
            ),
            6 => {
                let calls = script()
                    .call(Hypercall::Nop, [0; 6])
                    .call(Hypercall::Nop, [0; 6]);
                let config = config().hypercall_limit(1).input(calls.into_input());
                (
                    self.hypervisor
                        .run_snapshot(&self.script_snapshot, config)
                        .unwrap(),
                    Expect::Exit(Exit::LimitExceeded(Limit::Hypercalls(1))),
                )
            }
            7 => {
                let writes = script().call(Hypercall::OutputWrite, args(BUFFER, 4096));
                let config = config().output_limit(4095).input(writes.into_input());
                (
                    self.script_pool.run(config).unwrap(),
                    Expect::Exit(Exit::LimitExceeded(Limit::OutputBytes(4095))),
                )
            }
            8 => {
                let bad = script()
                    .ask(Hypercall::ConsoleWrite, args(1 << 63, 8))
                    .ask(Hypercall::Random, args(0x10, 8));
                let error = HypercallError::BadAddress.to_result().to_le_bytes();
                (
                    self.script_pool
                        .run(config().input(bad.into_input()))
                        .unwrap(),
                    Expect::Output([error, error].concat()),
                )
            }
            // Every hundredth spins into a short deadline; the others wreck their own memory.
            _ if i % 100 == 9 => (
                self.script_pool
                    .run(
                        RunConfig::default()
                            .timeout(Duration::from_millis(5))
                            .unwrap()
                            .input(script().spin().into_input()),
                    )
                    .unwrap(),
                Expect::Exit(Exit::Timeout {
                    limit: Duration::from_millis(5),
                }),
            ),
            _ => {
                let wreck = (0..64).fold(script(), |s, page| s.write(BUFFER + page * 1024, 0xEE));
                (
                    self.script_pool
                        .run(config().input(wreck.instruction(5).into_input()))
                        .unwrap(),
                    Expect::Check(|exit| matches!(exit, Exit::Exception { vector: 6, .. })),
                )
            }
        };
        let ok = match &expect {
            Expect::Output(output) => {
                outcome.exit == Exit::Guest { code: 0 } && outcome.output == *output
            }
            Expect::Exit(exit) => outcome.exit == *exit,
            Expect::Check(check) => check(&outcome.exit),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "run {i}: {:?}, output {:02x?}",
                outcome.exit, outcome.output
            ))
        }
    }
}

enum Expect {
    /// Exit 0 with exactly this output.
    Output(Vec<u8>),
    Exit(Exit),
    Check(fn(&Exit) -> bool),
}

#[test]
fn ten_thousand_in_a_row_and_a_thousand_at_once_stay_correct_and_flat() {
    let descriptors_at_start = open_descriptors();
    let rig = Rig::new();

    // Ten thousand in a row, sampled at the end of each thousand.
    let mut samples = Vec::new();
    for thousand in 0..10 {
        for i in thousand * 1000..(thousand + 1) * 1000 {
            if let Err(wrong) = rig.run(i) {
                panic!("{wrong}");
            }
        }
        samples.push((open_descriptors(), resident_kib()));
    }
    let (first, last) = (samples[0], samples[9]);
    // A pool's size moves a little (its thread refills it in the background), and on a busy
    // machine the reaper may still hold VMs it has not torn down (up to its queue of 8, a few
    // descriptors each); a leak of one descriptor or one page per run would show as a thousand.
    assert!(
        last.0 <= first.0 + 48,
        "descriptors grew from {} to {}: {samples:?}",
        first.0,
        last.0
    );
    assert!(
        last.1 <= first.1 + 8 * 1024,
        "resident memory grew from {} KiB to {} KiB: {samples:?}",
        first.1,
        last.1
    );

    // A thousand at once: eight threads, the same mix.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let rig = &rig;
                scope.spawn(move || {
                    (0..125)
                        .filter_map(|n| rig.run(10_000 + thread * 125 + n).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The pools may have grown to their most VMs (two descriptors each) and the tear-down
    // thread may still be closing the last cold runs' VMs: tens of descriptors, not a thousand.
    let after = (open_descriptors(), resident_kib());
    assert!(
        after.0 <= first.0 + 64,
        "descriptors grew from {} to {} with eight threads",
        first.0,
        after.0
    );
    assert!(
        after.1 <= first.1 + 16 * 1024,
        "resident memory grew from {} KiB to {} KiB with eight threads",
        first.1,
        after.1
    );

    drop(rig);
    assert_eq!(
        open_descriptors(),
        descriptors_at_start,
        "a descriptor outlived its hypervisor"
    );
}
