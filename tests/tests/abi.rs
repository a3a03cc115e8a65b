//! Every hypercall and every fault, through real guests under real KVM.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mote_host::{Exit, RunConfig};
use mote_tests::{run_guest, run_guest_with, run_guest_with_input, text};

#[test]
fn echo_returns_its_input_as_output_byte_for_byte() {
    for input in [&b""[..], b"x", b"\x00\xffbinary\r\n"] {
        let outcome = run_guest_with_input("echo", input);
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
        assert_eq!(outcome.output, input);
    }
}

#[test]
fn large_inputs_and_outputs_cross_several_transfers() {
    // 2.5 MiB: more than one output_write (1 MiB each) and many pages of input.
    let input: Vec<u8> = (0..(5 << 19)).map(|i: u32| (i % 251) as u8).collect();
    let config = RunConfig::default()
        .memory_size(16 << 20)
        .unwrap()
        .input(input.clone());
    let outcome = run_guest_with("echo", config);
    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    assert!(outcome.output == input, "output differs from input");
    assert!(outcome.stats.exits.hypercalls >= 4, "{:?}", outcome.stats);
}

#[test]
fn wordcount_computes_over_its_input() {
    let input = b"the cat and the hat\nthe end\n";
    let outcome = run_guest_with_input("wordcount", input);
    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    assert_eq!(
        text(&outcome.output),
        "lines 2 words 7 bytes 28\n3 the\n1 and\n1 cat\n1 end\n1 hat\n"
    );
}

#[test]
fn a_guest_calls_a_host_function_with_its_request_and_gets_the_response() {
    let config = RunConfig::default()
        .input(b"shout this".to_vec())
        .host_function("upper", Arc::new(|r: &[u8]| Ok(r.to_ascii_uppercase())));
    let outcome = run_guest_with("hostcall", config);
    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    assert_eq!(outcome.output, b"SHOUT THIS");
}

#[test]
fn host_call_failures_reach_the_guest_as_errors() {
    // No function registered.
    let outcome = run_guest_with("hostcall", RunConfig::default());
    assert_eq!(outcome.exit, Exit::Guest { code: 2 });
    assert!(text(&outcome.console).contains("UnknownFunction"));
    // The function fails.
    let config = RunConfig::default().host_function("upper", Arc::new(|_| Err("no".into())));
    let outcome = run_guest_with("hostcall", config);
    assert_eq!(outcome.exit, Exit::Guest { code: 2 });
    assert!(text(&outcome.console).contains("HostFunctionFailed"));
    // The response is larger than the guest's buffer.
    let big = Arc::new(|_: &[u8]| Ok(vec![b'x'; 100_000]));
    let outcome = run_guest_with("hostcall", RunConfig::default().host_function("upper", big));
    assert_eq!(outcome.exit, Exit::Guest { code: 2 });
    assert!(text(&outcome.console).contains("ResponseTooLarge(100000)"));
}

/// The `key=value` lines of the abi-calls guest's report.
fn report(output: &[u8]) -> std::collections::HashMap<String, String> {
    text(output)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn time_random_ready_and_input_work_from_the_guest() {
    let outcome = run_guest_with_input("abi-calls", b"12345");
    assert_eq!(
        outcome.exit,
        Exit::Guest { code: 0 },
        "{}",
        text(&outcome.console)
    );
    let seen = report(&outcome.output);
    let wall: u128 = seen["wall_ns"].parse().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(
        now.abs_diff(wall) < Duration::from_secs(60).as_nanos(),
        "{wall} vs {now}"
    );
    assert_ne!(
        seen["tsc_khz"], "0",
        "mote tells the guest its TSC frequency"
    );
    assert_eq!(seen["monotonic_advanced"], "1");
    assert_eq!(seen["input_len"], "5");
    let random = &seen["random"];
    assert_eq!(random.len(), 64);
    assert_ne!(random, &"0".repeat(64));
    let again = report(&run_guest("abi-calls").output);
    assert_ne!(
        &again["random"], random,
        "two runs get different random bytes"
    );
    assert_eq!(again["input_len"], "0");
    assert!(outcome.stats.phases.ready.is_some(), "ready was recorded");
}

fn fault(which: &str) -> Exit {
    let outcome = run_guest_with_input("fault", which.as_bytes());
    assert!(text(&outcome.console).contains(&format!("raising: {which}")));
    outcome.exit
}

#[test]
fn every_fault_is_reported_with_vector_address_and_cause() {
    for (which, vector) in [
        ("divide-by-zero", 0),
        ("invalid-opcode", 6),
        ("general-protection", 13),
    ] {
        let Exit::Exception {
            vector: got,
            rip,
            stack_overflow,
            ..
        } = fault(which)
        else {
            panic!("{which} did not end in an exception");
        };
        assert_eq!(got, vector, "{which}");
        assert!(
            rip >= 0x80_0000_0000,
            "{which}: rip {rip:#x} is in the kernel image"
        );
        assert_eq!(stack_overflow, None);
    }
    let Exit::Exception {
        vector,
        cr2,
        error_code,
        stack_overflow,
        ..
    } = fault("page-fault")
    else {
        panic!("no page fault");
    };
    assert_eq!((vector, cr2, stack_overflow), (14, 0xdead_0000, None));
    assert_eq!(error_code & 4, 4, "the fault came from user mode");
}

#[test]
fn a_stack_overflow_is_reported_as_such_never_a_triple_fault() {
    let exit = fault("stack-overflow");
    let Exit::Exception {
        vector,
        stack_overflow,
        ..
    } = &exit
    else {
        panic!("not an exception: {exit:?}");
    };
    assert_eq!(*vector, 14);
    assert_eq!(*stack_overflow, Some("stack"));
    assert!(exit.to_string().contains("overflowed its stack"));
}

/// A `mote-guest` kernel booted as the plain `bootloader` would boot it takes the road it takes
/// outside mote: COM1 for its console, its own IDT, isa-debug-exit to end.
#[test]
fn outside_mote_the_runtime_falls_back_to_com1_debug_exit_and_its_own_idt() {
    let outcome = run_guest_with("hello", RunConfig::default().plain_boot());
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x10 });
    assert!(text(&outcome.console).contains("Hello from a mote guest!"));
    assert!(
        outcome.stats.exits.serial > 0,
        "the console went through COM1"
    );
    assert_eq!(outcome.stats.exits.hypercalls, 0);

    let outcome = run_guest_with("panic", RunConfig::default().plain_boot());
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x11 });
    assert!(text(&outcome.console).contains("deliberate panic, answer = 42"));

    let config = RunConfig::default()
        .plain_boot()
        .input(b"page-fault".to_vec());
    let outcome = run_guest_with("fault", config);
    let console = text(&outcome.console);
    assert_eq!(outcome.exit, Exit::DebugExit { value: 0x11 }, "{console}");
    assert!(console.contains("exception 14 (page fault)"), "{console}");
    assert!(console.contains("cr2 0xdead0000"), "{console}");
}

#[test]
fn a_host_call_request_over_the_transfer_limit_is_refused_not_cut() {
    let config = RunConfig::default()
        .memory_size(16 << 20)
        .unwrap()
        .input(vec![b'a'; (1 << 20) + 1])
        .host_function("upper", Arc::new(|r: &[u8]| Ok(r.to_ascii_uppercase())));
    let outcome = run_guest_with("hostcall", config);
    assert_eq!(outcome.exit, Exit::Guest { code: 2 });
    assert!(text(&outcome.console).contains("InvalidArgument"));
}

#[test]
fn refused_console_writes_do_not_count_against_the_console_limit() {
    // hypercall-errors makes console writes of up to 1 MiB that are refused; its real text is a
    // few hundred bytes.
    let outcome = run_guest_with("hypercall-errors", RunConfig::default().console_limit(4096));
    assert_eq!(
        outcome.exit,
        Exit::Guest { code: 0 },
        "{}",
        text(&outcome.console)
    );
}
