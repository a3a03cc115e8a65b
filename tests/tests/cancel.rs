//! Cancelling runs from other threads: through the library's `CancelToken`, and `mote run`
//! stopped by SIGINT or SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use mote_host::{CancelToken, Exit, GuestImage, Outcome, Pool, PoolConfig, RunConfig};
use mote_tests::{guest_path, hypervisor, mote_bin, text, within};

fn spin() -> GuestImage {
    GuestImage::from_file(guest_path("spin")).unwrap()
}

/// Runs `spin` with no deadline, its console to `console` (collected if `None`), and cancels
/// it from another thread `after` it starts.
fn spin_until_cancelled(
    console: Option<Box<dyn std::io::Write + Send>>,
    after: Duration,
) -> Outcome {
    let image = spin();
    let token = CancelToken::new();
    let canceller = token.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(after);
        canceller.cancel();
    });
    let mut config = RunConfig::default().no_timeout().cancel_token(token);
    if let Some(console) = console {
        config = config.console_to(console);
    }
    let outcome = within(Duration::from_secs(20), move || {
        hypervisor().run(&image, config).unwrap()
    });
    stopper.join().unwrap();
    outcome
}

#[test]
fn a_token_stops_a_spinning_guest_from_another_thread() {
    let outcome = spin_until_cancelled(None, Duration::from_millis(100));
    assert_eq!(outcome.exit, Exit::Cancelled);
    assert_eq!(outcome.exit.class(), mote_host::Class::Cancelled);
    // It did run before the cancel.
    assert!(text(&outcome.console).contains("spinning forever"));
}

#[test]
fn a_run_given_a_cancelled_token_never_enters_its_guest() {
    let token = CancelToken::new();
    token.cancel();
    let outcome = hypervisor()
        .run(&spin(), RunConfig::default().cancel_token(token))
        .unwrap();
    assert_eq!(outcome.exit, Exit::Cancelled);
    assert!(outcome.console.is_empty(), "{}", text(&outcome.console));
}

#[test]
fn one_token_cancels_many_runs_at_once_under_load_and_the_others_carry_on() {
    const RUNS: usize = 16;
    let image = Arc::new(spin());
    let snapshot = hypervisor()
        .snapshot(
            &GuestImage::from_file(guest_path("echo")).unwrap(),
            RunConfig::default(),
        )
        .unwrap();
    let pool =
        Arc::new(Pool::new(hypervisor(), &snapshot, PoolConfig::default().max_vms(4)).unwrap());
    let token = CancelToken::new();
    // Every spinning run is in its guest before the cancel.
    let started = Arc::new(Barrier::new(RUNS + 1));
    let spinners: Vec<_> = (0..RUNS)
        .map(|_| {
            let (image, token, started) = (Arc::clone(&image), token.clone(), Arc::clone(&started));
            std::thread::spawn(move || {
                let console = StartSignal::new(started);
                hypervisor()
                    .run(
                        &image,
                        RunConfig::default()
                            .no_timeout()
                            .cancel_token(token)
                            .console_to(Box::new(console)),
                    )
                    .unwrap()
                    .exit
            })
        })
        .collect();
    // Runs without the token, beside them, are untouched by it.
    let bystanders: Vec<_> = (0..4)
        .map(|i| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                (0..25)
                    .map(|j| {
                        let input = format!("bystander {i} {j}").into_bytes();
                        let outcome = pool.run(RunConfig::default().input(input.clone())).unwrap();
                        (outcome.exit, outcome.output == input)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    within(Duration::from_secs(60), {
        let started = Arc::clone(&started);
        move || started.wait()
    });
    token.cancel();
    for spinner in spinners {
        let exit = within(Duration::from_secs(20), move || spinner.join().unwrap());
        assert_eq!(exit, Exit::Cancelled);
    }
    for bystander in bystanders {
        for (exit, echoed) in bystander.join().unwrap() {
            assert_eq!(exit, Exit::Guest { code: 0 });
            assert!(echoed);
        }
    }
}

/// A console that meets the barrier at the guest's first line: the guest is running.
struct StartSignal {
    started: Option<Arc<Barrier>>,
}

impl StartSignal {
    fn new(started: Arc<Barrier>) -> Self {
        Self {
            started: Some(started),
        }
    }
}

impl std::io::Write for StartSignal {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(started) = self.started.take() {
            started.wait();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cancel_reaches_a_run_held_up_by_a_console_reader_that_stopped_reading() {
    let (release, stalled) = std::sync::mpsc::channel::<()>();
    struct Stalled(std::sync::mpsc::Receiver<()>);
    impl std::io::Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // `spin` prints one line, which the stalled reader never takes; the guest spins on, and
    // the run ends only when the cancel arrives (it has no deadline).
    let outcome =
        spin_until_cancelled(Some(Box::new(Stalled(stalled))), Duration::from_millis(200));
    drop(release);
    assert_eq!(outcome.exit, Exit::Cancelled);
}

/// Starts `mote run spin` with `extra` arguments and waits until the guest has printed its line.
fn spinning_mote(extra: &[&str]) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child = Command::new(mote_bin())
        .arg("run")
        .arg(guest_path("spin"))
        // Far past any signal this test sends, yet finite: a child a failed assertion leaves
        // behind still ends.
        .args(["--timeout", "120s"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mote starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let json = extra.contains(&"--json");
    let mut console = BufReader::new(if json {
        // With --json the console goes to standard error; the JSON object to standard output.
        child.stdout = Some(stdout);
        Box::new(child.stderr.take().expect("stderr is piped")) as Box<dyn std::io::Read + Send>
    } else {
        Box::new(stdout)
    });
    let (line, console) = within(Duration::from_secs(20), move || {
        let mut line = String::new();
        console.read_line(&mut line).unwrap();
        (line, console)
    });
    assert!(line.contains("spinning forever"), "{line}");
    // The rest of what it prints there is read on, as a terminal would.
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let mut console = console;
        let _ = std::io::Read::read_to_string(&mut console, &mut rest);
        rest
    });
    (child, rest)
}

fn signal(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill sends a signal to a process id; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn ctrl_c_stops_the_guest_says_so_and_exits_130() {
    let (child, _) = spinning_mote(&[]);
    signal(&child, libc::SIGINT);
    let out = within(Duration::from_secs(20), move || {
        child.wait_with_output().unwrap()
    });
    assert_eq!(out.status.code(), Some(130));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("SIGINT received: the guest was stopped"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_guest_and_exits_143_with_json_saying_why() {
    let (child, stderr) = spinning_mote(&["--json"]);
    signal(&child, libc::SIGTERM);
    let out = within(Duration::from_secs(20), move || {
        child.wait_with_output().unwrap()
    });
    let stderr = stderr.join().unwrap();
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(report["exit"]["kind"], "cancelled");
    assert_eq!(report["exit"]["signal"], "SIGTERM");
    assert_eq!(report["exit_code"], 143);
}
