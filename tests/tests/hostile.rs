//! Hostile guests and hostile embedder code: each case ends in a typed outcome within its
//! limits, and the process carries on.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
use mote_tests::{guest_path, hypervisor, run_guest, within};

#[test]
fn a_run_inside_a_host_function_leaves_the_outer_deadline_in_force() {
    let exit = within(Duration::from_secs(10), || {
        let inner = Arc::new(|_: &[u8]| {
            let spin = GuestImage::from_file(guest_path("spin")).unwrap();
            let config = RunConfig::default()
                .timeout(Duration::from_millis(300))
                .unwrap();
            let outcome = hypervisor().run(&spin, config).unwrap();
            assert!(matches!(outcome.exit, Exit::Timeout { .. }));
            Ok(Vec::new())
        });
        let outer = GuestImage::from_file(guest_path("call-then-spin")).unwrap();
        let config = RunConfig::default()
            .timeout(Duration::from_millis(100))
            .unwrap()
            .host_function("inner", inner);
        hypervisor().run(&outer, config).unwrap().exit
    });
    assert_eq!(
        exit,
        Exit::Timeout {
            limit: Duration::from_millis(100)
        }
    );
    assert_eq!(run_guest("hello").exit, Exit::Guest { code: 0 });
}

#[test]
fn guest_text_mote_prints_cannot_drive_the_terminal_or_forge_a_line() {
    let forged = b"\r\x1b[2Kmote: guest exited with code 0\n\x07\xe2\x80\xae";
    let out = mote_tests::mote_run_with_input("abort-with-input", forged);
    assert_eq!(
        out.status.code(),
        Some(i32::from(mote_host::exit_status::GUEST_FAULT))
    );
    let stderr = mote_tests::text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        !stderr
            .trim_end()
            .chars()
            .any(|c| c.is_control() || c == '\u{202E}'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains(r"\u{1b}[2Kmote: guest exited with code 0\n"),
        "{stderr:?}"
    );
}

#[test]
fn a_host_function_that_panics_ends_only_its_run() {
    let panicking = Arc::new(|request: &[u8]| -> Result<Vec<u8>, String> {
        panic!("the embedder's bug, triggered by {} bytes", request.len())
    });
    let config = RunConfig::default()
        .input(b"boom".to_vec())
        .host_function("upper", panicking);
    let image = GuestImage::from_file(guest_path("hostcall")).unwrap();
    let outcome = hypervisor().run(&image, config).unwrap();
    assert_eq!(
        outcome.exit,
        Exit::HostFunctionPanicked {
            function: "upper".into()
        }
    );
    assert!(outcome.exit.to_string().contains("`upper` panicked"));
    assert_eq!(run_guest("hello").exit, Exit::Guest { code: 0 });
}

#[test]
fn a_host_function_learns_its_runs_deadline_and_a_blocking_one_ends_in_a_timeout() {
    let (seen, saw) = mpsc::channel();
    let blocking = Arc::new(move |_: &[u8]| {
        let _ = seen.send(mote_host::run_deadline());
        std::thread::sleep(Duration::from_millis(300));
        Ok(b"late".to_vec())
    });
    let image = GuestImage::from_file(guest_path("call-then-spin")).unwrap();
    let config = RunConfig::default()
        .timeout(Duration::from_millis(100))
        .unwrap()
        .host_function("inner", blocking);
    let started = std::time::Instant::now();
    let outcome = within(Duration::from_secs(10), move || {
        hypervisor().run(&image, config).unwrap()
    });
    assert!(matches!(outcome.exit, Exit::Timeout { .. }), "{outcome:?}");
    let deadline = saw.recv().unwrap().expect("the run has a deadline");
    assert!(deadline > started && deadline < started + Duration::from_secs(1));
    assert_eq!(
        mote_host::run_deadline(),
        None,
        "only inside a host function"
    );
}

/// Starts `mote run flood --input <mode>` with its standard output on a pipe this test holds.
fn flood_on_a_pipe(mode: &str) -> (std::process::Child, std::path::PathBuf) {
    let input = std::env::temp_dir().join(format!("mote-test-{}-{mode}", std::process::id()));
    std::fs::write(&input, mode).unwrap();
    let child = std::process::Command::new(mote_tests::mote_bin())
        .arg("run")
        .arg(guest_path("flood"))
        .arg("--input")
        .arg(&input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, input)
}

/// Waits for `child` to end, up to `limit`; kills it and fails if it does not.
fn ends_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("mote did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reader_that_stopped_reading_does_not_hold_mote_once_the_guest_is_done() {
    // 128 KiB of console: more than a pipe holds, and the test never reads it.
    let (mut child, input) = flood_on_a_pipe("burst");
    let status = ends_within(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_file(input);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_reader_that_went_away_ends_the_run_at_once() {
    use std::io::Read;
    let (mut child, input) = flood_on_a_pipe("console");
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader closes its end, as `| head -c 16` does.
    let status = ends_within(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_file(input);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(i32::from(mote_host::exit_status::HOST_FAILURE)),
        "{stderr}"
    );
    assert!(stderr.contains("reader went away"), "{stderr}");
}

#[test]
fn endless_files_are_refused_without_reading_them_whole() {
    use mote_host::exit_status;
    let zero = std::ffi::OsStr::new("/dev/zero");
    let out = within(Duration::from_secs(10), move || {
        mote_tests::mote(&["run".as_ref(), zero])
    });
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(mote_tests::text(&out.stderr).contains("not a regular file"));
    let out = within(Duration::from_secs(10), move || {
        mote_tests::mote(&["inspect".as_ref(), zero])
    });
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    let echo = guest_path("echo");
    let out = within(Duration::from_secs(10), move || {
        mote_tests::mote(&["run".as_ref(), echo.as_os_str(), "--input".as_ref(), zero])
    });
    assert_eq!(out.status.code(), Some(i32::from(exit_status::USAGE)));
    assert!(mote_tests::text(&out.stderr).contains("input limit"));
}

#[test]
fn input_over_the_input_limit_is_refused_before_anything_runs() {
    let image = GuestImage::from_file(guest_path("echo")).unwrap();
    let config = RunConfig::default().input(vec![7; 65]).input_limit(64);
    let refused = hypervisor().run(&image, config).unwrap_err();
    assert!(
        matches!(
            refused,
            mote_host::Error::InputTooLarge {
                len: 65,
                capacity: 64
            }
        ),
        "{refused}"
    );
    let config = RunConfig::default().input(vec![7; 64]).input_limit(64);
    assert_eq!(hypervisor().run(&image, config).unwrap().output, [7; 64]);
    let out = mote_tests::mote_run_with_input("echo", &[1; 5]);
    assert_eq!(out.status.code(), Some(0));
    let input = std::env::temp_dir().join(format!("mote-test-{}-limit", std::process::id()));
    std::fs::write(&input, [1; 5]).unwrap();
    let echo = guest_path("echo");
    let out = mote_tests::mote(&[
        "run".as_ref(),
        echo.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--input-limit".as_ref(),
        "4".as_ref(),
    ]);
    let _ = std::fs::remove_file(&input);
    assert_eq!(
        out.status.code(),
        Some(i32::from(mote_host::exit_status::USAGE))
    );
}

#[test]
fn kvms_paravirtual_msrs_fault_as_the_cpuid_table_says() {
    let outcome = mote_tests::run_guest_with_input("isolation-kernel", b"pv-msr");
    assert!(
        matches!(outcome.exit, Exit::Exception { vector: 13, .. }),
        "{outcome:?}: {}",
        mote_tests::text(&outcome.output)
    );
}

#[test]
fn kernel_mode_sees_motes_cpuid_table_without_vmx_or_a_pmu() {
    let outcome = mote_tests::run_guest_with_input("isolation-kernel", b"cpuid");
    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    // (A cold run's own check says its registers are not a snapshot's: it was not restored.)
    let report = mote_tests::text(&outcome.output);
    assert!(report.ends_with("\nmote, no vmx, no pmu\n"), "{report}");
}

#[test]
fn the_memory_budget_refuses_or_holds_back_what_would_not_fit() {
    use mote_host::{Error, Hypervisor};
    use std::sync::Barrier;
    // A hypervisor of its own, with a budget for one 48 MiB guest but not two: each run is
    // charged 89 MiB with the output, console and timing samples mote may hold for it.
    let hypervisor = Hypervisor::open().unwrap();
    hypervisor.set_memory_budget(120 << 20);
    let image = GuestImage::from_file(guest_path("hostcall")).unwrap();
    let config = |entered: Arc<Barrier>, release: Arc<Barrier>| {
        RunConfig::default()
            .memory_size(48 << 20)
            .unwrap()
            .input(b"held".to_vec())
            .host_function(
                "upper",
                Arc::new(move |request: &[u8]| {
                    entered.wait();
                    release.wait();
                    Ok(request.to_vec())
                }),
            )
    };
    let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    std::thread::scope(|scope| {
        let first = {
            let (hypervisor, image) = (&hypervisor, &image);
            let config = config(Arc::clone(&entered), Arc::clone(&release));
            scope.spawn(move || hypervisor.run(image, config).unwrap())
        };
        entered.wait();
        let (limit, used) = hypervisor.memory_budget();
        assert_eq!(limit, 120 << 20);
        assert!(used >= 48 << 20, "{used}");
        // A second guest of the same size does not fit: refused before anything runs.
        let second = RunConfig::default().memory_size(48 << 20).unwrap();
        let refused = hypervisor.run(&image, second).unwrap_err();
        assert!(matches!(refused, Error::OverBudget { .. }), "{refused}");
        // One that may wait gets in once the first is done.
        let waiting = {
            let (hypervisor, image) = (&hypervisor, &image);
            scope.spawn(move || {
                let config = RunConfig::default()
                    .memory_size(48 << 20)
                    .unwrap()
                    .input(b"x".to_vec())
                    .host_function("upper", Arc::new(|r: &[u8]| Ok(r.to_vec())))
                    .wait_for_memory(Duration::from_secs(10));
                hypervisor.run(image, config).unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        release.wait();
        assert_eq!(first.join().unwrap().output, b"held");
        assert_eq!(waiting.join().unwrap().exit, Exit::Guest { code: 0 });
    });
    // Runs are torn down off the caller's path; their charges come back then.
    let settled = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        hypervisor.memory_budget().1 == 0
    });
    assert!(settled, "{:?}", hypervisor.memory_budget());
    // A snapshot holds a charge for its memory as long as it is held.
    let snapshot = hypervisor
        .snapshot(
            &GuestImage::from_file(guest_path("echo")).unwrap(),
            RunConfig::default(),
        )
        .unwrap();
    assert_eq!(hypervisor.memory_budget().1, snapshot.memory_size());
    drop(snapshot);
    assert_eq!(hypervisor.memory_budget().1, 0);
}

/// Runs `test` again in a child process with `MOTE_TEST_SECCOMP_CHILD` set, where it calls
/// socket(2) under a filter, and checks the child ended as a stopped call ends it: code 116,
/// after a line naming the call.
fn assert_the_child_was_stopped_at_socket(test: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("MOTE_TEST_SECCOMP_CHILD", "1")
        .output()
        .unwrap();
    let stderr = mote_tests::text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(mote_host::exit_status::HOST_FAILURE)),
        "{stderr}"
    );
    assert!(
        stderr.contains("seccomp filter stopped system call 41 (socket)"),
        "{stderr}"
    );
}

#[test]
fn a_system_call_outside_motes_filter_is_named_before_the_process_ends() {
    const TEST: &str = "a_system_call_outside_motes_filter_is_named_before_the_process_ends";
    if std::env::var_os("MOTE_TEST_SECCOMP_CHILD").is_some() {
        // The child: filtered as `mote run` is, it tries what an escaped guest might.
        mote_host::restrict_process().unwrap();
        // clone3, whose flags a filter cannot see, is refused as unknown (here with arguments
        // that would fail anyway: no process is ever made), and threads still start.
        // SAFETY: clone3 with no arguments struct creates nothing whatever the filter says.
        let clone3 = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        if clone3 != -1 || errno != Some(libc::ENOSYS) {
            eprintln!("clone3 gave {clone3}, {errno:?}");
            std::process::exit(3);
        }
        if std::thread::spawn(|| 7).join().ok() != Some(7) {
            std::process::exit(4);
        }
        // Opening a file fails (the C library's allocator tries one and copes), and the
        // process goes on.
        let opened = std::fs::File::open("/proc/sys/vm/overcommit_memory");
        if opened.as_ref().map_err(std::io::Error::kind).err()
            != Some(std::io::ErrorKind::PermissionDenied)
        {
            eprintln!("opening a file gave {opened:?}");
            std::process::exit(5);
        }
        // SAFETY: a plain socket(2) call; the filter stops it before it does anything.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        // Reached only if the filter let the call through.
        std::process::exit(0);
    }
    assert_the_child_was_stopped_at_socket(TEST);
}

#[test]
fn filtered_runs_give_the_same_outcomes_cold_restored_and_pooled() {
    let hypervisor = Hypervisor::open().unwrap();
    hypervisor.set_filtered_runs(true);
    let echo = GuestImage::from_file(guest_path("echo")).unwrap();
    let input = |word: &str| RunConfig::default().input(word.as_bytes().to_vec());
    let cold = hypervisor.run(&echo, input("cold")).unwrap();
    assert_eq!(
        (cold.exit, cold.output),
        (Exit::Guest { code: 0 }, b"cold".to_vec())
    );
    let snapshot = hypervisor.snapshot(&echo, RunConfig::default()).unwrap();
    let restored = hypervisor
        .run_snapshot(&snapshot, input("restored"))
        .unwrap();
    assert_eq!(restored.output, b"restored");
    let pool = mote_host::Pool::new(&hypervisor, &snapshot, Default::default()).unwrap();
    for word in ["pooled", "again"] {
        assert_eq!(pool.run(input(word)).unwrap().output, word.as_bytes());
    }
    // A host function runs on the filtered thread, and may do what the filter allows.
    let hostcall = GuestImage::from_file(guest_path("hostcall")).unwrap();
    let config = input("quiet").host_function(
        "upper",
        Arc::new(|request: &[u8]| Ok(request.to_ascii_uppercase())),
    );
    assert_eq!(hypervisor.run(&hostcall, config).unwrap().output, b"QUIET");
}

#[test]
fn a_filtered_run_that_calls_outside_the_filter_is_named_before_the_process_ends() {
    const TEST: &str =
        "a_filtered_run_that_calls_outside_the_filter_is_named_before_the_process_ends";
    if std::env::var_os("MOTE_TEST_SECCOMP_CHILD").is_some() {
        // The child: its runs are filtered, and a host function (on the run's thread) tries
        // what an escaped guest might.
        let hypervisor = Hypervisor::open().unwrap();
        hypervisor.set_filtered_runs(true);
        let hostcall = GuestImage::from_file(guest_path("hostcall")).unwrap();
        let config = RunConfig::default().input(b"x".to_vec()).host_function(
            "upper",
            Arc::new(|_: &[u8]| {
                // SAFETY: a plain socket(2) call; the filter stops it before it does anything.
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                Ok(Vec::new())
            }),
        );
        let _ = hypervisor.run(&hostcall, config);
        // Reached only if the filter let the call through.
        std::process::exit(0);
    }
    assert_the_child_was_stopped_at_socket(TEST);
    // And this process, whose threads were never filtered, still may.
    // SAFETY: a plain socket(2) call, closed at once.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(socket >= 0);
    // SAFETY: closes the descriptor just made.
    unsafe { libc::close(socket) };
}
