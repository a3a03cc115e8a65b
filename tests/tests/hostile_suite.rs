//! The hostile-guest suite: what an attacker tries first, each case with the exact outcome it
//! must end in. Most cases script the `script` guest (see `guest/test-guests/src/bin/script.rs`):
//! hypercalls with bad arguments, ports of every width, memory it may not touch, privileged
//! instructions, limits at N - 1, N and N + 1. Kernel-mode cases use `isolation-kernel`, and bad
//! kernel files go through `mote`.
//!
//! Each hole a security review found has its own regression test beside these: `hostile.rs`
//! (nested deadlines, console readers, host functions, escaped guest text, oversized files and
//! input, KVM's paravirtual MSRs, the CPUID table, the memory budget, seccomp), `limits.rs`
//! (default limits), `soak.rs`, and the `boot` crate's unit tests (segments sharing file bytes,
//! fixed addresses, reserved bits in large pages, tiny kernel stacks).

use std::sync::Arc;
use std::time::Duration;

use mote_abi::{Hypercall, HypercallError};
use mote_host::{Exit, GuestImage, Limit, Outcome, RunConfig, exit_status};
use mote_tests::script::{BUFFER, INPUT, KERNEL_PAGE, READ_ONLY, Script, args, script};
use mote_tests::{guest_path, hypervisor, text};

const PORT: u16 = mote_abi::HYPERCALL_PORT;

/// What a case must end in.
enum Expect {
    /// Exit 0, with these hypercall results in its output.
    Results(Vec<Result<u64, HypercallError>>),
    /// Exactly this outcome.
    Exit(Exit),
    /// An outcome that passes this check.
    Matches(fn(&Outcome) -> bool),
}

struct Case {
    name: &'static str,
    script: Script,
    config: fn() -> RunConfig,
    expect: Expect,
}

fn default() -> RunConfig {
    RunConfig::default()
        .timeout(Duration::from_secs(10))
        .unwrap()
}

fn with_host_function() -> RunConfig {
    default()
        .host_function("echo", Arc::new(|r: &[u8]| Ok(r.to_vec())))
        .host_function("fails", Arc::new(|_: &[u8]| Err("no".into())))
}

fn bad(error: HypercallError) -> Result<u64, HypercallError> {
    Err(error)
}

fn exception(vector: u8) -> Expect {
    Expect::Matches(match vector {
        0 => |o| matches!(o.exit, Exit::Exception { vector: 0, .. }),
        6 => |o| matches!(o.exit, Exit::Exception { vector: 6, .. }),
        13 => |o| matches!(o.exit, Exit::Exception { vector: 13, .. }),
        14 => |o| matches!(o.exit, Exit::Exception { vector: 14, .. }),
        _ => unreachable!("no case expects vector {vector}"),
    })
}

/// `int n` past the IDT's 32 gates: #GP on hardware; kvm_pvm, which runs user mode natively and
/// handles `int n` itself, reports #UD. Either way the run ends in a CPU exception.
fn no_gate() -> Expect {
    Expect::Matches(|o| matches!(o.exit, Exit::Exception { vector: 13 | 6, .. }))
}

fn port(port: u16, write: bool, size: usize) -> Expect {
    Expect::Exit(Exit::UnservedPort { port, write, size })
}

fn cases() -> Vec<Case> {
    use Hypercall as H;
    use HypercallError::*;
    vec![
        // Bad hypercall arguments: each answered with its error, the run goes on.
        Case {
            name: "unknown call, the first number past the calls",
            script: script()
                .call_width(Hypercall::ALL.len() as u32, 4, [0; 6])
                .result(),
            config: default,
            expect: Expect::Results(vec![bad(UnknownCall)]),
        },
        Case {
            name: "unknown call u32::MAX",
            script: script().call_width(u32::MAX, 4, [0; 6]).result(),
            config: default,
            expect: Expect::Results(vec![bad(UnknownCall)]),
        },
        Case {
            name: "one-byte out",
            script: script().call_width(H::Nop as u32, 1, [0; 6]).result(),
            config: default,
            expect: Expect::Results(vec![bad(BadAccessWidth)]),
        },
        Case {
            name: "two-byte out",
            script: script().call_width(H::Nop as u32, 2, [0; 6]).result(),
            config: default,
            expect: Expect::Results(vec![bad(BadAccessWidth)]),
        },
        Case {
            name: "console from an unmapped page",
            script: script().ask(H::ConsoleWrite, args(0x10, 4)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "console from a non-canonical address",
            script: script().ask(H::ConsoleWrite, args(1 << 63, 4)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "console length wrapping the address space",
            script: script().ask(H::ConsoleWrite, args(BUFFER, u64::MAX)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "console from mote's own page",
            script: script().ask(H::ConsoleWrite, args(KERNEL_PAGE, 8)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "console length past the mapping",
            script: script().ask(H::ConsoleWrite, args(BUFFER, 1 << 40)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "output from an unmapped page",
            script: script().ask(H::OutputWrite, args(0x10, 4)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "random into read-only memory",
            script: script().ask(H::Random, args(READ_ONLY, 8)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "random into the input",
            script: script().ask(H::Random, args(INPUT, 8)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "random into mote's own page",
            script: script().ask(H::Random, args(KERNEL_PAGE, 8)),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "random into its own buffer",
            script: script().ask(H::Random, args(BUFFER, 8)),
            config: default,
            expect: Expect::Results(vec![Ok(8)]),
        },
        Case {
            name: "host-call name over 256 bytes",
            script: script().ask(H::HostCall, [BUFFER, 257, BUFFER, 1, BUFFER, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(InvalidArgument)]),
        },
        Case {
            name: "host-call name from an unmapped page",
            script: script().ask(H::HostCall, [0x10, 4, BUFFER, 1, BUFFER, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "host call to no function",
            script: script().ask(H::HostCall, [BUFFER, 4, BUFFER, 1, BUFFER, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(UnknownFunction)]),
        },
        Case {
            name: "host-call request over 1 MiB",
            script: script()
                .write_bytes(BUFFER, b"echo")
                .ask(H::HostCall, [BUFFER, 4, BUFFER, (1 << 20) + 1, BUFFER, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(InvalidArgument)]),
        },
        // Timing samples: the buffer's zeros make a name (NUL is UTF-8) and 8192 samples.
        Case {
            name: "samples named by an unmapped page",
            script: script().ask(H::Samples, [0x10, 4, BUFFER, 1, 0, 0]),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "samples from mote's own page",
            script: script().ask(H::Samples, [BUFFER, 4, KERNEL_PAGE, 1, 0, 0]),
            config: default,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "sample name of 64 bytes, then 65",
            script: script()
                .ask(H::Samples, [BUFFER, 64, BUFFER, 1, 0, 0])
                .ask(H::Samples, [BUFFER, 65, BUFFER, 1, 0, 0]),
            config: default,
            expect: Expect::Results(vec![Ok(1), bad(InvalidArgument)]),
        },
        Case {
            name: "sample name that is not UTF-8",
            script: script()
                .write(BUFFER, 0xFF)
                .ask(H::Samples, [BUFFER, 4, BUFFER, 1, 0, 0]),
            config: default,
            expect: Expect::Results(vec![bad(InvalidArgument)]),
        },
        Case {
            name: "8192 samples in one call, then 8193",
            script: script()
                .ask(H::Samples, [BUFFER, 4, BUFFER, 8192, 0, 0])
                .ask(H::Samples, [BUFFER, 4, BUFFER, 8193, 0, 0]),
            config: default,
            expect: Expect::Results(vec![Ok(8192), bad(InvalidArgument)]),
        },
        Case {
            name: "host-call reply into read-only memory",
            script: script()
                .write_bytes(BUFFER, b"echo")
                .ask(H::HostCall, [BUFFER, 4, BUFFER, 4, READ_ONLY, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(BadAddress)]),
        },
        Case {
            name: "host function that fails",
            script: script()
                .write_bytes(BUFFER, b"fails")
                .ask(H::HostCall, [BUFFER, 5, BUFFER, 1, BUFFER, 8]),
            config: with_host_function,
            expect: Expect::Results(vec![bad(HostFunctionFailed)]),
        },
        Case {
            name: "exit code above u32",
            script: script().ask(H::Exit, args(1 << 32, 0)),
            config: default,
            expect: Expect::Results(vec![bad(InvalidArgument)]),
        },
        Case {
            name: "exception vector above 31",
            script: script().ask(H::Exception, args(32, 0)),
            config: default,
            expect: Expect::Results(vec![bad(InvalidArgument)]),
        },
        Case {
            name: "no-op, ready and the wall clock answer",
            script: script().ask(H::Nop, [0; 6]).ask(H::Ready, [0; 6]),
            config: default,
            expect: Expect::Results(vec![Ok(0), Ok(0)]),
        },
        Case {
            name: "abort with unreadable texts",
            script: script().call(H::Abort, [0x10, 8, 0x20, 8, 9, 0]),
            config: default,
            expect: Expect::Matches(
                |o| matches!(&o.exit, Exit::Aborted { message, line: 9, .. } if message.contains("unreadable")),
            ),
        },
        Case {
            name: "abort with a line above u32",
            script: script().call(H::Abort, [BUFFER, 0, BUFFER, 0, 1 << 40, 0]),
            config: default,
            expect: Expect::Matches(|o| matches!(&o.exit, Exit::Aborted { line: u32::MAX, .. })),
        },
        Case {
            name: "an exception reported by hand",
            script: script().call(H::Exception, [14, 2, 0x1234, 0xdead, 0, 0]),
            config: default,
            expect: Expect::Exit(Exit::Exception {
                vector: 14,
                error_code: 2,
                rip: 0x1234,
                cr2: 0xdead,
                stack_overflow: None,
            }),
        },
        // Ports of every width.
        Case {
            name: "out to a port nobody serves, 1 byte",
            script: script().out(0x1234, 1, 0),
            config: default,
            expect: port(0x1234, true, 1),
        },
        Case {
            name: "out to a port nobody serves, 2 bytes",
            script: script().out(0x1234, 2, 0),
            config: default,
            expect: port(0x1234, true, 2),
        },
        Case {
            name: "out to a port nobody serves, 4 bytes",
            script: script().out(0x1234, 4, 0),
            config: default,
            expect: port(0x1234, true, 4),
        },
        Case {
            name: "in from a port nobody serves",
            script: script().inp(0x60, 1),
            config: default,
            expect: port(0x60, false, 1),
        },
        Case {
            name: "in from the hypercall port",
            script: script().inp(PORT, 4),
            config: default,
            expect: port(PORT, false, 4),
        },
        Case {
            name: "COM1 bytes join the console",
            script: script().out(0x3F8, 1, u32::from(b'A')).inp(0x3FD, 1),
            config: default,
            expect: Expect::Matches(|o| {
                o.exit == Exit::Guest { code: 0 } && o.console.ends_with(b"A")
            }),
        },
        Case {
            name: "debug exit",
            script: script().out(0xF4, 4, 0x10),
            config: default,
            expect: Expect::Exit(Exit::DebugExit { value: 0x10 }),
        },
        Case {
            name: "debug exit, one byte",
            script: script().out(0xF4, 1, 0x21),
            config: default,
            expect: Expect::Matches(|o| {
                o.exit == Exit::DebugExit { value: 0x21 } && o.exit.guest_code() == Some(0x43)
            }),
        },
        // Memory it may not touch.
        Case {
            name: "read an unmapped page",
            script: script().read(0x10),
            config: default,
            expect: exception(14),
        },
        Case {
            name: "write read-only memory",
            script: script().write(READ_ONLY, 1),
            config: default,
            expect: exception(14),
        },
        Case {
            name: "write its own input",
            script: script().write(INPUT, 1),
            config: default,
            expect: exception(14),
        },
        // Error code 5: the page is present, the access from user mode; so it is mote's page.
        Case {
            name: "read mote's own page",
            script: script().read(KERNEL_PAGE),
            config: default,
            expect: Expect::Matches(|o| {
                matches!(
                    o.exit,
                    Exit::Exception {
                        vector: 14,
                        error_code: 5,
                        ..
                    }
                )
            }),
        },
        Case {
            name: "read a non-canonical address",
            script: script().read(1 << 63),
            config: default,
            expect: exception(13),
        },
        // Instructions user mode may not run.
        Case {
            name: "hlt",
            script: script().instruction(0),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "wrmsr",
            script: script().instruction(2),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "mov cr3",
            script: script().instruction(3),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "ud2",
            script: script().instruction(5),
            config: default,
            expect: exception(6),
        },
        Case {
            name: "rdmsr",
            script: script().instruction(6),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "mov from cr0",
            script: script().instruction(7),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "lidt",
            script: script().instruction(8),
            config: default,
            expect: exception(13),
        },
        Case {
            name: "int 0x80, no gate",
            script: script().instruction(9),
            config: default,
            expect: no_gate(),
        },
        Case {
            name: "int 0x21, no gate",
            script: script().instruction(10),
            config: default,
            expect: no_gate(),
        },
        Case {
            name: "divide by zero",
            script: script().instruction(11),
            config: default,
            expect: exception(0),
        },
        // Limits at N - 1, N and N + 1.
        Case {
            name: "4 hypercalls under a limit of 4",
            script: script()
                .call(H::Nop, [0; 6])
                .call(H::Nop, [0; 6])
                .call(H::Nop, [0; 6])
                .call(H::Exit, [0; 6]),
            config: || default().hypercall_limit(4),
            expect: Expect::Exit(Exit::Guest { code: 0 }),
        },
        Case {
            name: "4 hypercalls under a limit of 3",
            script: script()
                .call(H::Nop, [0; 6])
                .call(H::Nop, [0; 6])
                .call(H::Nop, [0; 6])
                .call(H::Exit, [0; 6]),
            config: || default().hypercall_limit(3),
            expect: Expect::Exit(Exit::LimitExceeded(Limit::Hypercalls(3))),
        },
        Case {
            name: "100 output bytes under a limit of 100",
            script: script().call(H::OutputWrite, args(BUFFER, 100)),
            config: || default().output_limit(100),
            expect: Expect::Exit(Exit::Guest { code: 0 }),
        },
        Case {
            name: "100 output bytes under a limit of 99",
            script: script().call(H::OutputWrite, args(BUFFER, 100)),
            config: || default().output_limit(99),
            expect: Expect::Exit(Exit::LimitExceeded(Limit::OutputBytes(99))),
        },
        Case {
            name: "100 console bytes under a limit of 101",
            script: script().call(H::ConsoleWrite, args(BUFFER, 100)),
            config: || default().console_limit(101),
            expect: Expect::Exit(Exit::Guest { code: 0 }),
        },
        Case {
            name: "100 console bytes under a limit of 99",
            script: script().call(H::ConsoleWrite, args(BUFFER, 100)),
            config: || default().console_limit(99),
            expect: Expect::Exit(Exit::LimitExceeded(Limit::ConsoleBytes(99))),
        },
        Case {
            name: "100 samples under a limit of 100",
            script: script().call(H::Samples, [BUFFER, 4, BUFFER, 100, 0, 0]),
            config: || default().sample_limit(100),
            expect: Expect::Matches(|o| {
                o.exit == Exit::Guest { code: 0 } && o.samples.len() == 100
            }),
        },
        Case {
            name: "100 samples under a limit of 99",
            script: script().call(H::Samples, [BUFFER, 4, BUFFER, 100, 0, 0]),
            config: || default().sample_limit(99),
            expect: Expect::Exit(Exit::LimitExceeded(Limit::Samples(99))),
        },
        Case {
            name: "a spin past its deadline",
            script: script().spin(),
            config: || {
                RunConfig::default()
                    .timeout(Duration::from_millis(50))
                    .unwrap()
            },
            expect: Expect::Exit(Exit::Timeout {
                limit: Duration::from_millis(50),
            }),
        },
    ]
}

fn check(case: &Case, outcome: &Outcome) -> Result<(), String> {
    let ok = match &case.expect {
        Expect::Exit(exit) => outcome.exit == *exit,
        Expect::Matches(check) => check(outcome),
        Expect::Results(results) => {
            let want: Vec<u8> = results
                .iter()
                .flat_map(|r| r.unwrap_or_else(HypercallError::to_result).to_le_bytes())
                .collect();
            outcome.exit == Exit::Guest { code: 0 } && outcome.output == want
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: {:?}, output {:02x?}, console {:?}",
            case.name,
            outcome.exit,
            outcome.output,
            text(&outcome.console)
        ))
    }
}

#[test]
fn every_hostile_case_ends_in_its_exact_outcome() {
    let image = GuestImage::from_file(guest_path("script")).unwrap();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let config = (case.config)().input(case.script.clone().into_input());
            let outcome = hypervisor().run(&image, config).expect("an outcome");
            check(case, &outcome).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And the process carries on.
    assert_eq!(mote_tests::run_guest("hello").exit, Exit::Guest { code: 0 });
}

#[test]
fn kernel_mode_hostility_ends_in_its_exact_outcome() {
    let run = |input: &[u8]| mote_tests::run_guest_with_input("isolation-kernel", input);
    assert_eq!(run(b"triple-fault").exit, Exit::Shutdown);
    assert!(matches!(
        run(b"pv-msr").exit,
        Exit::Exception { vector: 13, .. }
    ));
    let pte = run(b"pte");
    assert_eq!(
        pte.exit,
        Exit::UnservedMmio {
            address: 0x10_0000_0000,
            write: false,
            size: 4
        },
        "{pte:?}"
    );
    let mmio = run(b"mmio");
    assert_eq!(
        mmio.exit,
        Exit::UnservedMmio {
            address: 0xFEE0_0030,
            write: false,
            size: 4
        },
        "{mmio:?}"
    );
}

#[test]
fn malformed_kernel_files_are_one_line_errors() {
    let echo = std::fs::read(guest_path("echo")).unwrap();
    let dir = std::env::temp_dir();
    let files: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("truncated", echo[..100].to_vec()),
        ("text", b"#!/bin/sh\necho hi\n".to_vec()),
        ("headers only", echo[..echo.len().min(4096)].to_vec()),
    ];
    for (name, bytes) in files {
        let path = dir.join(format!(
            "mote-test-{}-{}",
            std::process::id(),
            name.replace(' ', "-")
        ));
        std::fs::write(&path, bytes).unwrap();
        let out = mote_tests::mote(&["run".as_ref(), path.as_os_str()]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            out.status.code(),
            Some(i32::from(exit_status::BAD_IMAGE)),
            "{name}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr).lines().count(), 1, "{name}");
    }
}
