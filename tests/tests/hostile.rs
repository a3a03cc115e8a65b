//! Hostile guests and hostile embedder code: each case ends in a typed outcome within its
//! limits, and the process carries on.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mote_host::{Exit, GuestImage, RunConfig};
use mote_tests::{guest_path, hypervisor, run_guest};

/// Runs `f` on a thread of its own and fails the test if it takes longer than `limit`: a hang is
/// a failure, not a test that never ends.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not end within {limit:?}"))
}

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
        Some(i32::from(mote_host::exit_status::GUEST_PANICKED))
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
