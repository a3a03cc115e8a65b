//! What a run ended with, and what it cost.

use std::fmt;
use std::time::Duration;

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest called the `exit` hypercall.
    Guest {
        /// Its exit code.
        code: u32,
    },
    /// The guest wrote to the isa-debug-exit port.
    DebugExit {
        /// The value written; [`mote_abi::debug_exit_code`] gives the exit code.
        value: u32,
    },
    /// The guest triple-faulted (or otherwise shut the CPU down).
    Shutdown,
    /// The guest ran `hlt`. Nothing can wake it: mote has no interrupt sources by default.
    Halted {
        /// Address after the `hlt`.
        rip: u64,
        /// Whether interrupts were enabled.
        interrupts_enabled: bool,
    },
    /// KVM could not run or emulate a guest instruction.
    InternalError {
        /// KVM's sub-error (`KVM_INTERNAL_ERROR_*`).
        suberror: u32,
        /// The guest's instruction pointer.
        rip: u64,
    },
    /// The hardware refused to enter the guest.
    FailedEntry {
        /// The hardware's reason code.
        reason: u64,
    },
    /// The guest accessed an I/O port that nothing serves.
    UnservedPort {
        /// The port.
        port: u16,
        /// A write (`out`) rather than a read (`in`).
        write: bool,
        /// Access width in bytes.
        size: usize,
    },
    /// The guest accessed a physical address with no memory and no device behind it.
    UnservedMmio {
        /// The guest-physical address.
        address: u64,
        /// A write rather than a read.
        write: bool,
        /// Access width in bytes.
        size: usize,
    },
    /// The guest panicked and reported it through the `abort` hypercall.
    Aborted {
        /// The panic message.
        message: String,
        /// The source file.
        file: String,
        /// The source line.
        line: u32,
    },
    /// The guest took a CPU exception its runtime reported (it runs in user mode under mote's
    /// IDT).
    Exception {
        /// The exception vector (14 is a page fault).
        vector: u8,
        /// The error code the CPU pushed (0 if none).
        error_code: u64,
        /// The faulting instruction.
        rip: u64,
        /// CR2: the address a page fault tried to access.
        cr2: u64,
        /// Which stack overflowed, if the fault hit a stack's guard page.
        stack_overflow: Option<&'static str>,
    },
    /// The run reached its wall-clock deadline and was stopped.
    Timeout {
        /// The deadline, from the first guest instruction.
        limit: Duration,
    },
    /// The guest used up one of the run's limits and was stopped.
    LimitExceeded(Limit),
    /// The console's writer failed (its reader went away: a closed pipe), so the guest's
    /// console text had nowhere to go; the run ends there rather than run on unseen.
    ConsoleClosed {
        /// What the writer reported.
        error: String,
    },
    /// A host function the guest called panicked; the run ends there. (The panic is the
    /// embedder's bug, but a guest may trigger it on purpose: it ends only this run.)
    HostFunctionPanicked {
        /// The function's name.
        function: String,
    },
    /// KVM stopped the vCPU for a reason mote does not expect.
    Unexpected {
        /// KVM's name for it.
        reason: String,
    },
}

/// Text from a guest, as mote prints it on the guest's behalf: control characters (which could
/// move a terminal's cursor, clear a line or forge one of mote's own messages) and the
/// invisible characters that reorder text are shown escaped, as `\n`, `\u{1b}` and the like.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            let hidden = matches!(
                c,
                '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            );
            if c.is_control() || hidden {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A limit on what a guest can make the host spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Console bytes (hypercall console and COM1 together).
    ConsoleBytes(u64),
    /// Output bytes.
    OutputBytes(u64),
    /// Hypercalls.
    Hypercalls(u64),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::ConsoleBytes(n) => write!(f, "its limit of {n} console bytes"),
            Limit::OutputBytes(n) => write!(f, "its limit of {n} output bytes"),
            Limit::Hypercalls(n) => write!(f, "its limit of {n} hypercalls"),
        }
    }
}

/// The process exit codes of `mote run`. Codes 0 to [`GUEST_MAX`](exit_status::GUEST_MAX) are
/// the guest's own; mote's own outcomes use the reserved range above it.
pub mod exit_status {
    /// The highest guest exit code passed through unchanged; higher guest codes become this.
    pub const GUEST_MAX: u8 = 111;
    /// The command line was wrong.
    pub const USAGE: u8 = 112;
    /// The guest file could not be read.
    pub const CANNOT_READ_GUEST: u8 = 113;
    /// The guest file is not a kernel mote can boot.
    pub const BAD_GUEST_IMAGE: u8 = 114;
    /// KVM is missing or not accessible.
    pub const KVM_UNAVAILABLE: u8 = 115;
    /// A host-side failure (a KVM call, memory) stopped the run.
    pub const HOST_ERROR: u8 = 116;
    /// The guest triple-faulted.
    pub const GUEST_SHUTDOWN: u8 = 117;
    /// The guest halted for good.
    pub const GUEST_HALTED: u8 = 118;
    /// KVM could not emulate the guest.
    pub const KVM_INTERNAL_ERROR: u8 = 119;
    /// The guest touched a port or address that nothing serves.
    pub const UNSERVED_ACCESS: u8 = 120;
    /// The hardware refused to enter the guest.
    pub const FAILED_ENTRY: u8 = 121;
    /// KVM stopped the guest for an unexpected reason.
    pub const UNEXPECTED_EXIT: u8 = 122;
    /// The guest panicked (its runtime reported it through `abort`).
    pub const GUEST_PANICKED: u8 = 123;
    /// The guest took a CPU exception (a fault, a stack overflow).
    pub const GUEST_EXCEPTION: u8 = 124;
    /// The run reached its deadline (`--timeout`).
    pub const TIMEOUT: u8 = 125;
    /// The guest used up a limit (console, output, hypercalls).
    pub const LIMIT_EXCEEDED: u8 = 126;
}

impl Exit {
    /// The guest's own exit code, if the guest chose to end the run.
    pub fn guest_code(&self) -> Option<u32> {
        match *self {
            Exit::Guest { code } => Some(code),
            Exit::DebugExit { value } => Some(mote_abi::debug_exit_code(value)),
            _ => None,
        }
    }

    /// The exit code `mote run` ends with for this outcome (see [`exit_status`]).
    pub fn process_exit_code(&self) -> u8 {
        use exit_status::*;
        if let Some(code) = self.guest_code() {
            return u8::try_from(code).map_or(GUEST_MAX, |c| c.min(GUEST_MAX));
        }
        match self {
            Exit::Shutdown => GUEST_SHUTDOWN,
            Exit::Halted { .. } => GUEST_HALTED,
            Exit::InternalError { .. } => KVM_INTERNAL_ERROR,
            Exit::FailedEntry { .. } => FAILED_ENTRY,
            Exit::UnservedPort { .. } | Exit::UnservedMmio { .. } => UNSERVED_ACCESS,
            Exit::Aborted { .. } => GUEST_PANICKED,
            Exit::Exception { .. } => GUEST_EXCEPTION,
            Exit::Timeout { .. } => TIMEOUT,
            Exit::LimitExceeded(_) => LIMIT_EXCEEDED,
            Exit::HostFunctionPanicked { .. } | Exit::ConsoleClosed { .. } => HOST_ERROR,
            Exit::Unexpected { .. } | Exit::Guest { .. } | Exit::DebugExit { .. } => {
                UNEXPECTED_EXIT
            }
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Guest { code } => write!(f, "guest exited with code {code}"),
            Exit::DebugExit { value } => write!(
                f,
                "guest wrote {value:#x} to the debug-exit port (exit code {})",
                mote_abi::debug_exit_code(*value)
            ),
            Exit::Shutdown => write!(
                f,
                "guest shut down (triple fault: an exception it could not handle)"
            ),
            Exit::Halted {
                rip,
                interrupts_enabled,
            } => write!(
                f,
                "guest halted at {rip:#x} with interrupts {} and nothing to wake it",
                if *interrupts_enabled { "on" } else { "off" }
            ),
            Exit::InternalError { suberror, rip } => write!(
                f,
                "KVM internal error {suberror} at guest address {rip:#x}: \
                 KVM could not run or emulate the instruction there"
            ),
            Exit::FailedEntry { reason } => {
                write!(f, "the CPU refused to enter the guest (reason {reason:#x})")
            }
            Exit::UnservedPort { port, write, size } => write!(
                f,
                "guest {} {size}-byte I/O port {port:#x}, which nothing serves",
                if *write { "wrote" } else { "read" }
            ),
            Exit::UnservedMmio {
                address,
                write,
                size,
            } => write!(
                f,
                "guest {} {size} bytes at physical address {address:#x}, \
                 where there is no memory or device",
                if *write { "wrote" } else { "read" }
            ),
            Exit::Aborted {
                message,
                file,
                line,
            } => write!(
                f,
                "guest panicked at {}:{line}: {}",
                Escaped(file),
                Escaped(message)
            ),
            Exit::Exception {
                vector,
                error_code,
                rip,
                cr2,
                stack_overflow,
            } => {
                let name = mote_abi::note::exception_name(*vector);
                match stack_overflow {
                    Some(stack) => write!(
                        f,
                        "guest overflowed its {stack}: {name} at {rip:#x} touching the guard \
                         page at {cr2:#x}"
                    ),
                    None if *vector == 14 => write!(
                        f,
                        "guest {name} at {rip:#x} accessing {cr2:#x} (error code {error_code:#x})"
                    ),
                    None => write!(
                        f,
                        "guest {name} (vector {vector}) at {rip:#x} (error code {error_code:#x})"
                    ),
                }
            }
            Exit::Timeout { limit } => write!(
                f,
                "guest ran past its deadline of {limit:?} and was stopped (raise --timeout if \
                 it needs more time)"
            ),
            Exit::LimitExceeded(limit) => write!(f, "guest used up {limit} and was stopped"),
            Exit::ConsoleClosed { error } => write!(
                f,
                "the console's reader went away ({error}); the guest was stopped"
            ),
            Exit::HostFunctionPanicked { function } => write!(
                f,
                "host function `{}` panicked (a bug in the embedder's function, which the \
                 guest called)",
                Escaped(function)
            ),
            Exit::Unexpected { reason } => write!(f, "unexpected vCPU exit: {reason}"),
        }
    }
}

/// Time spent in each phase of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Reserving guest memory, laying the image into it and registering it with the VM.
    pub memory: Duration,
    /// Creating the VM and its vCPU.
    pub vm: Duration,
    /// Setting up the vCPU: CPUID, registers, MSRs.
    pub vcpu: Duration,
    /// From the first guest instruction to the end of the run.
    pub run: Duration,
    /// From the first guest instruction to its `ready` hypercall, if it made one.
    pub ready: Option<Duration>,
    /// Resetting a pooled VM after the run (zero for other runs): the outcome returns after it.
    pub reset: Duration,
}

/// vCPU exits, by what they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Hypercalls (answered or refused).
    pub hypercalls: u64,
    /// Accesses to COM1.
    pub serial: u64,
    /// Every exit, the final one included.
    pub total: u64,
}

/// What a run cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Time per phase.
    pub phases: Phases,
    /// Exits by kind.
    pub exits: ExitCounts,
    /// Pages of guest memory the run wrote (the guest, or mote on its behalf), which its pool
    /// reset afterwards; `None` for runs not in a pool.
    pub dirtied_pages: Option<u64>,
}

/// A framebuffer's pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Rows top to bottom, 3 bytes per pixel: red, green, blue.
    pub rgb: Vec<u8>,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Why it ended.
    pub exit: Exit,
    /// Console text (hypercall console and COM1, in order), unless it was streamed elsewhere.
    pub console: Vec<u8>,
    /// What the guest wrote with `output_write`: the function's result.
    pub output: Vec<u8>,
    /// The framebuffer's contents at the end of the run, if the run had one.
    pub framebuffer: Option<Screen>,
    /// What it cost.
    pub stats: Stats,
}

#[cfg(test)]
mod tests {
    use super::*;
    use exit_status::*;

    #[test]
    fn guest_text_is_printed_with_its_control_characters_escaped() {
        let forged = Exit::Aborted {
            message: "\r\x1b[2Kmote: guest exited with code 0\u{202E}".into(),
            file: "a\nb".into(),
            line: 3,
        };
        let shown = forged.to_string();
        assert_eq!(
            shown,
            "guest panicked at a\\nb:3: \\r\\u{1b}[2Kmote: guest exited with code 0\\u{202e}"
        );
        assert!(!shown.chars().any(char::is_control));
        let plain = Exit::Aborted {
            message: "ordinary text, ünïcode".into(),
            file: "src/main.rs".into(),
            line: 9,
        };
        assert_eq!(
            plain.to_string(),
            "guest panicked at src/main.rs:9: ordinary text, ünïcode"
        );
    }

    #[test]
    fn guest_codes_pass_through_and_mote_codes_are_reserved() {
        assert_eq!(Exit::Guest { code: 0 }.process_exit_code(), 0);
        assert_eq!(Exit::Guest { code: 42 }.process_exit_code(), 42);
        assert_eq!(Exit::Guest { code: 200 }.process_exit_code(), GUEST_MAX);
        assert_eq!(Exit::Guest { code: 1 << 20 }.process_exit_code(), GUEST_MAX);
        assert_eq!(Exit::DebugExit { value: 0x10 }.process_exit_code(), 0);
        assert_eq!(Exit::DebugExit { value: 0x11 }.process_exit_code(), 1);
        assert_eq!(Exit::Shutdown.process_exit_code(), GUEST_SHUTDOWN);
        let port = Exit::UnservedPort {
            port: 0x1234,
            write: true,
            size: 1,
        };
        assert_eq!(port.process_exit_code(), UNSERVED_ACCESS);
        assert!(port.to_string().contains("0x1234"));
        for code in [USAGE, GUEST_SHUTDOWN, UNEXPECTED_EXIT] {
            assert!(code > GUEST_MAX);
        }
    }
}
