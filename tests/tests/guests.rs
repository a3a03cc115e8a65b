//! Every example and test guest, booted under real KVM through the library.

use mote_host::Exit;
use mote_tests::{run_guest, text};

#[test]
fn hello_greets_and_exits_zero() {
    let outcome = run_guest("hello");
    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    let console = text(&outcome.console);
    assert!(console.contains("Hello from a mote guest!"), "{console}");
    // The heap works: the guest collected into a Vec and summed it.
    assert!(
        console.contains("sum of the first ten squares: 385"),
        "{console}"
    );
    assert!(outcome.stats.exits.hypercalls >= 3, "{:?}", outcome.stats);
}

#[test]
fn a_panic_reports_message_and_location_and_exits_non_zero() {
    let outcome = run_guest("panic");
    assert_eq!(
        outcome.exit,
        Exit::Aborted {
            message: "deliberate panic, answer = 42".into(),
            file: "examples/src/bin/panic.rs".into(),
            line: 9
        }
    );
    assert_ne!(outcome.exit.process_exit_code(), 0);
}

#[test]
fn a_stock_bootloader_api_kernel_boots_over_com1_and_debug_exit() {
    let outcome = run_guest("stock");
    let console = text(&outcome.console);
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x10 }, "{console}");
    assert_eq!(outcome.exit.guest_code(), Some(0));
    assert!(
        console.contains("Hello from a stock bootloader_api kernel"),
        "{console}"
    );
    assert!(console.contains("3 memory regions"), "{console}");
    assert!(outcome.stats.exits.serial > 0);
}

#[test]
fn a_triple_fault_is_a_shutdown_never_exit_zero() {
    // A plain bootloader_api kernel at CPL0 with no IDT: its exception triple-faults.
    let outcome = run_guest("triple-fault");
    assert_eq!(outcome.exit, Exit::Shutdown);
    assert_eq!(outcome.exit.guest_code(), None);
    assert_ne!(outcome.exit.process_exit_code(), 0);
}

#[test]
fn an_unserved_port_ends_the_run_and_is_named() {
    let outcome = run_guest("bad-port");
    assert_eq!(
        outcome.exit,
        Exit::UnservedPort {
            port: 0x1234,
            write: true,
            size: 1
        }
    );
    assert!(outcome.exit.to_string().contains("0x1234"));
}

#[test]
fn hostile_hypercalls_get_error_codes_and_the_host_keeps_serving() {
    let outcome = run_guest("hypercall-errors");
    let console = text(&outcome.console);
    assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{console}");
    assert!(!console.contains("WRONG"), "{console}");
    assert!(console.contains("still served"), "{console}");
}

#[test]
fn guests_run_side_by_side_with_their_own_outcomes() {
    let names = [
        "hello",
        "panic",
        "triple-fault",
        "bad-port",
        "stock",
        "hello",
    ];
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| scope.spawn(move || run_guest(name)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let endings: Vec<_> = outcomes
        .iter()
        .map(|o| (o.exit.kind(), o.exit.process_exit_code()))
        .collect();
    assert_eq!(
        endings,
        [
            ("exit", 0),
            ("panic", 117),
            ("triple_fault", 117),
            ("unserved_port", 117),
            ("debug_exit", 0),
            ("exit", 0)
        ]
    );
}
