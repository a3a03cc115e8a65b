//! Limits on everything a hostile guest can make the host spend, each tested with a guest that
//! tries to spend without bound.

use std::time::Duration;

use mote_host::{Exit, Limit, RunConfig};
use mote_tests::{run_guest, run_guest_with, text};

fn flood(what: &str, config: RunConfig) -> Exit {
    run_guest_with("flood", config.input(what.as_bytes().to_vec())).exit
}

#[test]
fn a_deadline_stops_a_guest_spinning_with_interrupts_off() {
    let config = RunConfig::default()
        .timeout(Duration::from_millis(100))
        .unwrap();
    let outcome = run_guest_with("spin", config);
    assert_eq!(
        outcome.exit,
        Exit::Timeout {
            limit: Duration::from_millis(100)
        }
    );
    assert!(text(&outcome.console).contains("spinning forever"));
    assert!(outcome.stats.phases.run >= Duration::from_millis(100));
    // The process carries on: the next guest runs normally.
    assert_eq!(run_guest("hello").exit, Exit::Guest { code: 0 });
}

#[test]
fn a_deadline_that_is_not_reached_changes_nothing() {
    let config = RunConfig::default()
        .timeout(Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        run_guest_with("hello", config).exit,
        Exit::Guest { code: 0 }
    );
}

#[test]
fn a_zero_timeout_is_refused() {
    assert!(RunConfig::default().timeout(Duration::ZERO).is_err());
}

#[test]
fn console_floods_stop_at_the_console_limit() {
    let exit = flood("console", RunConfig::default().console_limit(1 << 20));
    assert_eq!(exit, Exit::LimitExceeded(Limit::ConsoleBytes(1 << 20)));
    // COM1 bytes count too.
    let exit = flood("serial", RunConfig::default().console_limit(500));
    assert_eq!(exit, Exit::LimitExceeded(Limit::ConsoleBytes(500)));
}

#[test]
fn output_floods_stop_at_the_output_limit() {
    let exit = flood("output", RunConfig::default().output_limit(1 << 20));
    assert_eq!(exit, Exit::LimitExceeded(Limit::OutputBytes(1 << 20)));
}

#[test]
fn hypercall_floods_stop_at_the_hypercall_limit() {
    let exit = flood("hypercalls", RunConfig::default().hypercall_limit(500));
    assert_eq!(exit, Exit::LimitExceeded(Limit::Hypercalls(500)));
}

#[test]
fn the_default_limits_stop_a_flood_too() {
    // The defaults keep a guest from making the host hold unbounded memory.
    let exit = flood("console", RunConfig::default());
    assert_eq!(
        exit,
        Exit::LimitExceeded(Limit::ConsoleBytes(mote_host::DEFAULT_CONSOLE_LIMIT))
    );
    let exit = flood("output", RunConfig::default());
    assert_eq!(
        exit,
        Exit::LimitExceeded(Limit::OutputBytes(mote_host::DEFAULT_OUTPUT_LIMIT))
    );
}

#[test]
fn memory_is_a_limit_too() {
    let config = RunConfig::default()
        .memory_size(2 << 20)
        .unwrap()
        .input(vec![0; 3 << 20]);
    let image = mote_host::GuestImage::from_file(mote_tests::guest_path("echo")).unwrap();
    // A 3 MiB input does not fit in 2 MiB of guest memory: a clear error, not a crash.
    let error = mote_tests::hypervisor().run(&image, config).unwrap_err();
    assert!(
        matches!(
            error,
            mote_host::Error::MemoryTooSmall {
                size: 0x20_0000,
                needed,
                input: 0x30_0000,
            } if needed > 3 << 20
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), mote_host::Class::Usage);
    assert!(error.to_string().contains("--mem"), "{error}");
    assert!(RunConfig::default().memory_size(0).is_err());
    assert!(RunConfig::default().memory_size((8 << 20) + 1).is_err());
}

#[test]
fn a_deadline_beyond_any_clock_is_no_deadline() {
    let config = RunConfig::default().timeout(Duration::MAX).unwrap();
    assert_eq!(
        run_guest_with("hello", config).exit,
        Exit::Guest { code: 0 }
    );
}

/// A console writer that never returns, like a reader that stopped reading a pipe.
struct StalledReader;

impl std::io::Write for StalledReader {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        loop {
            std::thread::park();
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stalled_console_reader_cannot_hold_a_guest_past_its_deadline() {
    let config = RunConfig::default()
        .console_to(Box::new(StalledReader))
        .timeout(Duration::from_millis(200))
        .unwrap();
    let outcome = run_guest_with("flood", config.input(b"console".to_vec()));
    assert_eq!(
        outcome.exit,
        Exit::Timeout {
            limit: Duration::from_millis(200)
        }
    );
}

/// Whether the calling thread has the kick signal (SIGRTMIN) blocked or pending.
fn kick_blocked_or_pending() -> (bool, bool) {
    // SAFETY: plain queries of this thread's signal state into zeroed sets.
    unsafe {
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut blocked);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        (
            libc::sigismember(&blocked, libc::SIGRTMIN()) == 1,
            libc::sigismember(&pending, libc::SIGRTMIN()) == 1,
        )
    }
}

#[test]
fn a_deadline_leaves_the_callers_thread_as_it_found_it() {
    assert_eq!(kick_blocked_or_pending(), (false, false));
    let config = RunConfig::default()
        .timeout(Duration::from_millis(50))
        .unwrap();
    assert!(matches!(
        run_guest_with("spin", config).exit,
        Exit::Timeout { .. }
    ));
    assert_eq!(kick_blocked_or_pending(), (false, false));
}

#[test]
fn an_input_too_big_for_the_memory_is_refused_before_the_budget_is_asked() {
    // A budget too small for the run: the input's size is still the caller's to fix, so the
    // answer is MemoryTooSmall (usage), not OverBudget (busy).
    let hypervisor = mote_host::Hypervisor::open().unwrap();
    hypervisor.set_memory_budget(4 << 20);
    let image = mote_host::GuestImage::from_file(mote_tests::guest_path("echo")).unwrap();
    let config = RunConfig::default().input(vec![0; 16 << 20]);
    let error = hypervisor.run(&image, config).unwrap_err();
    assert!(
        matches!(error, mote_host::Error::MemoryTooSmall { input, .. } if input == 16 << 20),
        "{error:?}"
    );
    assert_eq!(error.class(), mote_host::Class::Usage);
    // One that fits meets the budget as before.
    let error = hypervisor
        .run(&image, RunConfig::default().input(vec![0; 1 << 20]))
        .unwrap_err();
    assert!(
        matches!(error, mote_host::Error::OverBudget { .. }),
        "{error:?}"
    );
}
