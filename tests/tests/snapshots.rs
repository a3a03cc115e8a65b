//! Snapshots under real KVM: taken at `ready_for_input`, restored into fresh VMs and pools,
//! written to files and read back, refused when they cannot be used.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mote_host::{
    Error, Exit, GuestImage, Pool, PoolConfig, RunConfig, Snapshot, SnapshotFileError, exit_status,
};
use mote_tests::{guest_path, hypervisor, mote, text};

fn image(name: &str) -> GuestImage {
    GuestImage::from_file(guest_path(name)).expect("the guest image is valid")
}

fn snapshot(name: &str) -> Snapshot {
    hypervisor()
        .snapshot(&image(name), RunConfig::default())
        .expect("the guest reaches its snapshot point")
}

fn input(bytes: &[u8]) -> RunConfig {
    RunConfig::default().input(bytes.to_vec())
}

/// A path in the temporary directory, unique to this test process and `name`.
fn temporary(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mote-test-{}-{name}", std::process::id()))
}

#[test]
fn a_snapshot_serves_many_runs_each_with_its_own_input() {
    let snapshot = snapshot("echo");
    for bytes in [
        &b"first"[..],
        b"",
        b"a much longer input than the first one",
    ] {
        let outcome = hypervisor().run_snapshot(&snapshot, input(bytes)).unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{outcome:?}");
        assert_eq!(outcome.output, bytes);
    }
}

#[test]
fn each_run_has_a_new_generation_and_fresh_randomness() {
    let snapshot = snapshot("abi-calls");
    let report = |outcome: mote_host::Outcome| {
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{outcome:?}");
        text(&outcome.output)
    };
    let first = report(hypervisor().run_snapshot(&snapshot, input(b"x")).unwrap());
    let second = report(hypervisor().run_snapshot(&snapshot, input(b"yy")).unwrap());
    let field = |report: &str, key: &str| {
        report
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .to_owned()
    };
    assert_eq!(field(&first, "generation"), "1");
    assert_eq!(field(&second, "generation"), "2");
    assert_eq!(field(&first, "input_len"), "1");
    assert_eq!(field(&second, "input_len"), "2");
    assert_ne!(field(&first, "seed"), field(&second, "seed"));
    assert_eq!(field(&first, "seed").len(), 64);
    // A cold run is generation 0, with a seed of its own.
    let cold = hypervisor().run(&image("abi-calls"), input(b"z")).unwrap();
    let cold = report(cold);
    assert_eq!(field(&cold, "generation"), "0");
    assert_ne!(field(&cold, "seed"), field(&first, "seed"));
}

#[test]
fn a_guest_that_ends_before_it_is_ready_has_no_snapshot() {
    let error = hypervisor()
        .snapshot(&image("stock"), RunConfig::default())
        .unwrap_err();
    let Error::NotReady(outcome) = &error else {
        panic!("{error}");
    };
    assert_eq!(outcome.exit.guest_code(), Some(0), "{error}");
    assert!(error.to_string().contains("never became ready"), "{error}");
    assert_eq!(error.process_exit_code(), exit_status::BAD_IMAGE);

    let spin = RunConfig::default()
        .timeout(Duration::from_millis(50))
        .unwrap();
    let error = hypervisor()
        .snapshot(&image("never-ready"), spin)
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotReady(o) if matches!(o.exit, Exit::Timeout { .. })),
        "{error}"
    );
    assert_eq!(error.process_exit_code(), exit_status::TIMEOUT);

    let error = hypervisor()
        .snapshot(&image("triple-fault"), RunConfig::default())
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotReady(o) if o.exit == Exit::Shutdown),
        "{error}"
    );
}

#[test]
fn what_a_snapshot_fixes_a_run_cannot_change() {
    let refused = hypervisor()
        .snapshot(&image("echo"), input(b"no input at snapshot time"))
        .unwrap_err();
    assert!(matches!(refused, Error::SnapshotInput), "{refused}");
    // Snapshots do not carry the interrupt controllers' state: refused, as a usage mistake.
    let refused = hypervisor()
        .snapshot(&image("echo"), RunConfig::default().irqchip())
        .unwrap_err();
    assert!(matches!(refused, Error::IrqchipSnapshot), "{refused}");
    assert_eq!(refused.class(), mote_host::Class::Usage);
    assert_eq!(refused.kind(), "irqchip_snapshot");

    let snapshot = hypervisor()
        .snapshot(&image("echo"), RunConfig::default().input_capacity(4096))
        .unwrap();
    assert_eq!(snapshot.input_capacity(), 4096);
    let too_big = hypervisor()
        .run_snapshot(&snapshot, input(&[1; 4097]))
        .unwrap_err();
    assert!(
        matches!(
            too_big,
            Error::InputTooLarge {
                len: 4097,
                capacity: 4096
            }
        ),
        "{too_big}"
    );
    let just_fits = hypervisor()
        .run_snapshot(&snapshot, input(&[1; 4096]))
        .unwrap();
    assert_eq!(just_fits.output.len(), 4096);

    for config in [
        RunConfig::default().memory_size(16 << 20).unwrap(),
        RunConfig::default().acpi(),
        RunConfig::default().irqchip(),
        RunConfig::default().framebuffer(64, 64).unwrap(),
        RunConfig::default().plain_boot(),
        RunConfig::default().input_capacity(1 << 20),
    ] {
        let error = hypervisor().run_snapshot(&snapshot, config).unwrap_err();
        assert!(
            matches!(
                error,
                Error::FixedBySnapshot { .. } | Error::SnapshotMemorySize { .. }
            ),
            "{error}"
        );
        assert_eq!(error.class(), mote_host::Class::Usage);
    }
    // The snapshot's own memory size is fine to name.
    let same = RunConfig::default()
        .memory_size(snapshot.memory_size())
        .unwrap();
    assert!(hypervisor().run_snapshot(&snapshot, same).is_ok());
}

#[test]
fn snapshots_are_send_sync_and_serve_threads_at_once() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Snapshot>();
    fn pool_is_shareable<T: Send + Sync>() {}
    pool_is_shareable::<Pool>();
    let snapshot = snapshot("echo");
    std::thread::scope(|scope| {
        for thread in 0..8u8 {
            let snapshot = snapshot.clone();
            scope.spawn(move || {
                for run in 0..5u8 {
                    let bytes = [thread, run];
                    let outcome = hypervisor().run_snapshot(&snapshot, input(&bytes)).unwrap();
                    assert_eq!(outcome.output, bytes);
                }
            });
        }
    });
}

#[test]
fn a_pool_grows_to_its_limit_then_makes_runs_wait_or_fail() {
    let snapshot = snapshot("hostcall");
    let config = PoolConfig::default()
        .min_idle(0)
        .max_vms(2)
        .max_wait(Duration::from_millis(200));
    let pool = Pool::new(hypervisor(), &snapshot, config).unwrap();
    // Two runs hold both VMs inside a host function while a third finds none.
    let (entered, release) = (
        Arc::new(std::sync::Barrier::new(3)),
        Arc::new(std::sync::Barrier::new(3)),
    );
    let holding = |entered: Arc<std::sync::Barrier>, release: Arc<std::sync::Barrier>| {
        RunConfig::default().input(b"held".to_vec()).host_function(
            "upper",
            Arc::new(move |request: &[u8]| {
                entered.wait();
                release.wait();
                Ok(request.to_ascii_uppercase())
            }),
        )
    };
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let config = holding(Arc::clone(&entered), Arc::clone(&release));
                let pool = &pool;
                scope.spawn(move || pool.run(config).unwrap())
            })
            .collect();
        entered.wait();
        assert_eq!(pool.size(), (0, 2));
        let busy = pool.run(input(b"third")).unwrap_err();
        assert!(matches!(busy, Error::PoolBusy { vms: 2, .. }), "{busy}");
        release.wait();
        for run in runs {
            assert_eq!(run.join().unwrap().output, b"HELD");
        }
    });
    assert_eq!(pool.size(), (2, 0), "both VMs went back to the pool");
}

#[test]
fn a_pool_keeps_vms_ready_and_lets_idle_ones_go() {
    let snapshot = snapshot("echo");
    let config = PoolConfig::default()
        .min_idle(2)
        .max_vms(4)
        .idle_timeout(Duration::from_millis(100));
    let pool = Pool::new(hypervisor(), &snapshot, config).unwrap();
    let settled = |want: (usize, usize)| {
        for _ in 0..200 {
            if pool.size() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    assert!(settled((2, 0)), "two VMs made ahead: {:?}", pool.size());
    // Four runs at once grow the pool to four; once idle it shrinks back to two.
    std::thread::scope(|scope| {
        for i in 0..4u8 {
            let pool = &pool;
            scope.spawn(move || {
                let outcome = pool
                    .run(
                        RunConfig::default()
                            .input(vec![i; 3])
                            .hypercall_limit(1_000_000),
                    )
                    .unwrap();
                assert_eq!(outcome.output, [i; 3]);
            });
        }
    });
    assert!(settled((2, 0)), "idle VMs beyond two go: {:?}", pool.size());
}

#[test]
fn a_pool_resets_a_vm_after_a_fault_and_replaces_one_after_a_triple_fault() {
    let snapshot = snapshot("fault");
    let pool = Pool::new(hypervisor(), &snapshot, PoolConfig::default().max_vms(1)).unwrap();
    // The `fault` guest turns its input into a CPU exception: reported, so the VM is reset.
    let reported = pool.run(input(b"page-fault")).unwrap();
    assert!(
        matches!(reported.exit, Exit::Exception { vector: 14, .. }),
        "{reported:?}"
    );
    assert!(
        reported.stats.dirtied_pages.is_some(),
        "the VM was reset and kept"
    );
    let again = pool.run(input(b"divide-by-zero")).unwrap();
    assert!(
        matches!(again.exit, Exit::Exception { vector: 0, .. }),
        "{again:?}"
    );

    // After a triple fault KVM leaves the vCPU undefined: the VM goes and another comes.
    let kernel = self::snapshot("isolation-kernel");
    let pool = Pool::new(hypervisor(), &kernel, PoolConfig::default().max_vms(1)).unwrap();
    let shut_down = pool.run(input(b"triple-fault")).unwrap();
    assert_eq!(shut_down.exit, Exit::Shutdown, "{shut_down:?}");
    assert_eq!(shut_down.stats.dirtied_pages, None, "the VM was not kept");
    let next = pool.run(input(b"check")).unwrap();
    assert_eq!(next.exit, Exit::Guest { code: 0 }, "{next:?}");
    assert_eq!(text(&next.output), "ok\n");
}

/// Rewrites the checksum at the end of a snapshot file after the test changed its contents.
fn reseal(file: &mut [u8]) {
    let (body, crc) = file.split_at_mut(file.len() - 4);
    crc.copy_from_slice(&crc32fast::hash(body).to_le_bytes());
}

/// Where the CPUID table and the MSRs start in a snapshot file (see `snapshot_file` for the
/// layout): returns (first CPUID entry, first MSR entry, MSR count).
fn layout(file: &[u8]) -> (usize, usize, usize) {
    use std::mem::size_of;
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let guards_at = 8 + 4 + 16 + 8 + 4 + 4 + 16 + 16;
    let cpuid_count_at = guards_at + 4 + u32_at(guards_at) * 9;
    let cpuid_at = cpuid_count_at + 4;
    let msr_count_at = cpuid_at
        + u32_at(cpuid_count_at) * size_of::<kvm_bindings::kvm_cpuid_entry2>()
        + size_of::<kvm_bindings::kvm_regs>()
        + size_of::<kvm_bindings::kvm_sregs>()
        + size_of::<kvm_bindings::kvm_xcrs>()
        + size_of::<kvm_bindings::kvm_xsave>()
        + size_of::<kvm_bindings::kvm_vcpu_events>()
        + size_of::<kvm_bindings::kvm_debugregs>()
        + 4;
    (cpuid_at, msr_count_at + 4, u32_at(msr_count_at))
}

#[test]
fn a_snapshot_file_restores_in_another_process_and_refuses_what_it_cannot_be() {
    let path = temporary("echo.snap");
    snapshot("echo").save(&path).unwrap();
    let loaded = hypervisor().load_snapshot(&path).unwrap();
    let outcome = hypervisor()
        .run_snapshot(&loaded, input(b"from a file"))
        .unwrap();
    assert_eq!(outcome.output, b"from a file");
    let good = std::fs::read(&path).unwrap();

    // Every bad file is a one-line error, never a panic: truncated anywhere, bytes flipped.
    let refused = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        hypervisor().load_snapshot(&path).unwrap_err()
    };
    for cut in [0, 7, 8, 100, good.len() / 2, good.len() - 5, good.len() - 1] {
        let error = refused(&good[..cut]);
        assert!(
            matches!(
                error,
                Error::SnapshotFile {
                    source: SnapshotFileError::Truncated | SnapshotFileError::NotASnapshot,
                    ..
                }
            ),
            "cut at {cut}: {error}"
        );
    }
    for at in (0..good.len()).step_by(997) {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let error = refused(&bad);
        assert!(
            matches!(error, Error::SnapshotFile { .. }),
            "byte {at}: {error}"
        );
        assert_eq!(error.full_message().lines().count(), 1, "{error}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(refused(&longer), Error::SnapshotFile { .. }));
    let error = refused(b"#!/bin/sh\necho not a snapshot\n");
    assert!(
        error.full_message().contains("not a mote snapshot"),
        "{error}"
    );

    let mut other_version = good.clone();
    other_version[8] = 2;
    let error = refused(&other_version);
    assert!(error.full_message().contains("format version 2"), "{error}");
    let mut other_mote = good.clone();
    other_mote[12..28].copy_from_slice(b"0.0.1-elsewhere\0");
    let error = refused(&other_mote);
    assert!(
        error.full_message().contains("mote 0.0.1-elsewhere"),
        "{error}"
    );
    let mut other_size = good.clone();
    other_size[28..36].copy_from_slice(&(1u64 << 40).to_le_bytes());
    reseal(&mut other_size);
    assert!(refused(&other_size).full_message().contains("memory size"));

    // Another CPU: a feature bit the host does not have (CPUID leaf 1, ECX bit 31 means "a
    // hypervisor", so flip ECX bit 30, RDRAND, the other way round).
    let (cpuid_at, msrs_at, msr_count) = layout(&good);
    let mut other_cpu = good.clone();
    let entry = (cpuid_at..)
        .step_by(40)
        .find(|&at| u32::from_le_bytes(other_cpu[at..at + 4].try_into().unwrap()) == 1)
        .unwrap();
    other_cpu[entry + 20 + 3] ^= 0x40;
    reseal(&mut other_cpu);
    std::fs::write(&path, &other_cpu).unwrap();
    let loaded = hypervisor().load_snapshot(&path).unwrap();
    let error = hypervisor().run_snapshot(&loaded, input(b"x")).unwrap_err();
    assert!(
        matches!(&error, Error::Incompatible(why) if why.contains("CPUID")),
        "{error}"
    );

    let msr_at = |file: &[u8], index: u32| {
        (0..msr_count)
            .map(|i| msrs_at + i * 16)
            .find(|&at| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) == index)
    };
    // A TSC far ahead of this host's: as after the host restarted.
    let mut rebooted = good.clone();
    let tsc = msr_at(&rebooted, 0x10).expect("the snapshot holds IA32_TSC");
    rebooted[tsc + 8..tsc + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    reseal(&mut rebooted);
    std::fs::write(&path, &rebooted).unwrap();
    let loaded = hypervisor().load_snapshot(&path).unwrap();
    let error = hypervisor().run_snapshot(&loaded, input(b"x")).unwrap_err();
    assert!(
        matches!(&error, Error::Incompatible(why) if why.contains("backwards")),
        "{error}"
    );

    // MSRs are written as the host, past the CPUID table: a file may not turn on one of KVM's
    // paravirtual MSRs (here kvmclock's), nor bring one this host does not save.
    let mut kvmclock_on = good.clone();
    let kvmclock = msr_at(&kvmclock_on, 0x4B56_4D01).expect("the snapshot holds kvmclock's MSR");
    kvmclock_on[kvmclock + 8] = 1;
    let mut unknown_msr = good.clone();
    let tsc = msr_at(&unknown_msr, 0x10).unwrap();
    unknown_msr[tsc..tsc + 4].copy_from_slice(&0xDEAD_0000u32.to_le_bytes());
    for (mut bad, why) in [(kvmclock_on, "paravirtual"), (unknown_msr, "does not save")] {
        reseal(&mut bad);
        std::fs::write(&path, &bad).unwrap();
        let loaded = hypervisor().load_snapshot(&path).unwrap();
        let error = hypervisor().run_snapshot(&loaded, input(b"x")).unwrap_err();
        assert!(
            matches!(&error, Error::Incompatible(text) if text.contains(why)),
            "{error}"
        );
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn mote_snapshot_then_mote_run_of_the_file() {
    let path = temporary("cli-echo.snap");
    let echo = guest_path("echo");
    let out = mote(&[
        "snapshot".as_ref(),
        echo.as_os_str(),
        "-o".as_ref(),
        path.as_os_str(),
        "--input-capacity".as_ref(),
        "64K".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("written to"),
        "{}",
        text(&out.stderr)
    );

    let input_path = temporary("cli-echo-input");
    std::fs::write(&input_path, b"restored by another process").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run".as_ref(),
            path.as_os_str(),
            "--input".as_ref(),
            input_path.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        mote(&args)
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"restored by another process");
    let out = run(&["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["exit_code"], 0);

    let out = run(&["--mem", "64M"]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(
        text(&out.stderr).contains("memory"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--screenshot", "/tmp/never.png"]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));

    std::fs::write(&input_path, vec![b'x'; 65 * 1024]).unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(
        text(&out.stderr).contains("65536 bytes"),
        "{}",
        text(&out.stderr)
    );

    let mut corrupt = std::fs::read(&path).unwrap();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 1;
    std::fs::write(&path, corrupt).unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::BAD_IMAGE)));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("checksum"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A guest that never gets ready: no file, and an error that says why.
    let stock = guest_path("stock");
    let out = mote(&[
        "snapshot".as_ref(),
        "-q".as_ref(),
        stock.as_os_str(),
        "-o".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(exit_status::BAD_IMAGE)));
    assert!(text(&out.stderr).contains("never became ready"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&input_path);
}

#[test]
fn a_pool_keeps_its_vms_whatever_a_run_brings() {
    let snapshot = snapshot("hostcall");
    let pool = Pool::new(
        hypervisor(),
        &snapshot,
        PoolConfig::default().min_idle(1).max_vms(1),
    )
    .unwrap();
    // Input too large for the snapshot: refused before a VM is taken, none lost.
    let too_big = pool.run(input(&vec![0; 2 << 20])).unwrap_err();
    assert!(matches!(too_big, Error::InputTooLarge { .. }), "{too_big}");
    assert_eq!(pool.size(), (1, 0));
    // A host function that panics ends only its run; the VM is reset and kept.
    let panicking = RunConfig::default()
        .input(b"x".to_vec())
        .host_function("upper", Arc::new(|_: &[u8]| panic!("the embedder's bug")));
    let outcome = pool.run(panicking).unwrap();
    assert!(matches!(outcome.exit, Exit::HostFunctionPanicked { .. }));
    assert_eq!(pool.size(), (1, 0));
    let fine = RunConfig::default()
        .input(b"fine".to_vec())
        .host_function("upper", Arc::new(|r: &[u8]| Ok(r.to_ascii_uppercase())));
    assert_eq!(pool.run(fine).unwrap().output, b"FINE");
}

#[test]
fn a_pool_whose_vms_never_expire_still_replaces_the_ones_it_loses() {
    let kernel = snapshot("isolation-kernel");
    let config = PoolConfig::default()
        .min_idle(3)
        .max_vms(4)
        .idle_timeout(Duration::MAX);
    let pool = Pool::new(hypervisor(), &kernel, config).unwrap();
    // Four runs at once: four idle VMs afterwards, one beyond the three kept.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let pool = &pool;
            scope.spawn(move || pool.run(input(b"check")).unwrap());
        }
    });
    // Two triple faults cost two VMs; the pool makes one more to keep three.
    for _ in 0..2 {
        assert_eq!(
            pool.run(input(b"triple-fault")).unwrap().exit,
            Exit::Shutdown
        );
    }
    let kept_three = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        pool.size() == (3, 0)
    });
    assert!(kept_three, "{:?}", pool.size());
}

#[test]
fn a_restored_run_hands_back_its_screen_only_when_asked() {
    let framebuffer = RunConfig::default().framebuffer(64, 48).unwrap();
    let snapshot = hypervisor().snapshot(&image("echo"), framebuffer).unwrap();
    assert!(snapshot.has_framebuffer());
    let plain = hypervisor().run_snapshot(&snapshot, input(b"x")).unwrap();
    assert_eq!(plain.framebuffer, None);
    let asked = hypervisor()
        .run_snapshot(&snapshot, input(b"x").screenshot())
        .unwrap();
    let screen = asked.framebuffer.expect("asked for");
    assert_eq!((screen.width, screen.height), (64, 48));
    assert_eq!(screen.rgb.len(), 64 * 48 * 3);
}

#[test]
fn a_pools_first_run_is_generation_one() {
    let snapshot = snapshot("abi-calls");
    let pool = Pool::new(hypervisor(), &snapshot, PoolConfig::default()).unwrap();
    let report = text(&pool.run(input(b"x")).unwrap().output);
    assert!(report.contains("generation=1\n"), "{report}");
}

#[test]
fn saves_to_one_path_at_once_each_succeed_and_leave_one_whole_file() {
    let path = temporary("together.snap");
    let snapshot = snapshot("echo");
    std::thread::scope(|scope| {
        let saves: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| snapshot.save(&path)))
            .collect();
        for save in saves {
            save.join().unwrap().unwrap();
        }
    });
    let loaded = hypervisor().load_snapshot(&path).unwrap();
    let outcome = hypervisor().run_snapshot(&loaded, input(b"one")).unwrap();
    assert_eq!(outcome.output, b"one");
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.contains(&format!("mote-test-{}-together", std::process::id()))
                && name.ends_with(".partial")
        })
        .count();
    assert_eq!(leftovers, 0, "a partial file was left behind");
    let _ = std::fs::remove_file(&path);
}
