//! What a run ended with, and what it cost.

use std::fmt;
use std::time::Duration;

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// With [`RunConfig::irqchip`](crate::RunConfig::irqchip), `hlt` waits for interrupts
    /// inside KVM, and only a halt with interrupts off and no NMI, SMI or INIT source ends the
    /// run (always with `interrupts_enabled: false`), found within about 50 ms.
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
    /// The run was cancelled through its [`CancelToken`](crate::CancelToken) and stopped.
    Cancelled,
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
#[non_exhaustive]
pub enum Limit {
    /// Console bytes (hypercall console and COM1 together).
    ConsoleBytes(u64),
    /// Output bytes.
    OutputBytes(u64),
    /// Hypercalls.
    Hypercalls(u64),
    /// Timing samples reported ([`RunConfig::sample_limit`](crate::RunConfig::sample_limit)).
    Samples(u64),
    /// Distinct names of timing samples ([`mote_abi::SAMPLE_NAMES_MAX`], the same for every
    /// run).
    SampleNames(u64),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::ConsoleBytes(n) => {
                write!(f, "its console limit of {}", crate::human_size(*n))
            }
            Limit::OutputBytes(n) => write!(f, "its output limit of {}", crate::human_size(*n)),
            Limit::Hypercalls(n) => write!(f, "its limit of {n} hypercalls"),
            Limit::Samples(n) => write!(f, "its limit of {n} timing samples"),
            Limit::SampleNames(n) => write!(f, "its limit of {n} timing-sample names"),
        }
    }
}

/// Who or what a run's ending is down to: a few stable classes, each with its own process exit
/// code ([`Class::exit_code`]) and, in a function host, its own answer. New kinds of outcome
/// ([`Exit::kind`], [`Error::kind`](crate::Error::kind)) join a class; the classes stay put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// The guest ended the run itself, with an exit code of its choosing.
    GuestExit,
    /// The caller asked for something wrong: an option value, a file that cannot be read or
    /// written, an input or guest too large for the limits or memory given.
    Usage,
    /// The guest or snapshot file is not one mote can boot here.
    BadImage,
    /// KVM is missing, not accessible, or lacks what mote needs.
    NoKvm,
    /// mote or the host failed (a KVM call, host memory, a host function's panic, a closed
    /// console): not the guest's doing, nor the caller's.
    HostFailure,
    /// No room now: the memory budget or the pool is full. Trying again later may work.
    Busy,
    /// The guest crashed: a panic, a CPU exception, a triple fault, an access to nothing, an
    /// instruction KVM cannot run, a halt nothing can wake.
    GuestFault,
    /// The guest used up one of the run's limits (console, output, hypercalls, timing
    /// samples).
    Limit,
    /// The run reached its deadline.
    Timeout,
    /// The run was cancelled.
    Cancelled,
}

impl Class {
    /// The classes mote itself ends a run or a command with: all but [`Class::GuestExit`].
    pub const MOTE: [Class; 9] = [
        Class::Usage,
        Class::BadImage,
        Class::NoKvm,
        Class::HostFailure,
        Class::Busy,
        Class::GuestFault,
        Class::Limit,
        Class::Timeout,
        Class::Cancelled,
    ];

    /// The class's process exit code, the one `mote` exits with (see [`exit_status`]); for
    /// [`Class::GuestExit`], [`exit_status::GUEST_MAX`] (use [`Exit::process_exit_code`] for
    /// the guest's own code).
    pub fn exit_code(self) -> u8 {
        use exit_status::*;
        match self {
            Class::GuestExit => GUEST_MAX,
            Class::Usage => USAGE,
            Class::BadImage => BAD_IMAGE,
            Class::NoKvm => NO_KVM,
            Class::HostFailure => HOST_FAILURE,
            Class::Busy => BUSY,
            Class::GuestFault => GUEST_FAULT,
            Class::Limit => LIMIT,
            Class::Timeout => TIMEOUT,
            Class::Cancelled => CANCELLED,
        }
    }

    /// The class's name in JSON and logs: `guest_exit`, `usage`, `bad_image`, `no_kvm`,
    /// `host_failure`, `busy`, `guest_fault`, `limit`, `timeout`, `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            Class::GuestExit => "guest_exit",
            Class::Usage => "usage",
            Class::BadImage => "bad_image",
            Class::NoKvm => "no_kvm",
            Class::HostFailure => "host_failure",
            Class::Busy => "busy",
            Class::GuestFault => "guest_fault",
            Class::Limit => "limit",
            Class::Timeout => "timeout",
            Class::Cancelled => "cancelled",
        }
    }
}

/// The process exit codes of `mote`. Codes 0 to [`GUEST_MAX`](exit_status::GUEST_MAX) are the
/// guest's own; mote's own outcomes use one code per [`Class`] above it. 121 to 125 are kept
/// for classes to come; 126 and above mean other things to shells (128 + N: killed by signal
/// N, which `mote run` also uses when SIGINT or SIGTERM stops it).
pub mod exit_status {
    /// The highest guest exit code passed through unchanged; higher guest codes become this.
    pub const GUEST_MAX: u8 = 111;
    /// [`Class::Usage`](super::Class::Usage): the command line, an option value or a file
    /// named on it was wrong.
    pub const USAGE: u8 = 112;
    /// [`Class::BadImage`](super::Class::BadImage): the guest or snapshot cannot be booted.
    pub const BAD_IMAGE: u8 = 113;
    /// [`Class::NoKvm`](super::Class::NoKvm): KVM is missing, not accessible or lacking.
    pub const NO_KVM: u8 = 114;
    /// [`Class::HostFailure`](super::Class::HostFailure): mote or the host failed.
    pub const HOST_FAILURE: u8 = 115;
    /// [`Class::Busy`](super::Class::Busy): no room now; try again later.
    pub const BUSY: u8 = 116;
    /// [`Class::GuestFault`](super::Class::GuestFault): the guest crashed.
    pub const GUEST_FAULT: u8 = 117;
    /// [`Class::Limit`](super::Class::Limit): the guest used up a limit.
    pub const LIMIT: u8 = 118;
    /// [`Class::Timeout`](super::Class::Timeout): the run reached its deadline.
    pub const TIMEOUT: u8 = 119;
    /// [`Class::Cancelled`](super::Class::Cancelled): the run was cancelled.
    pub const CANCELLED: u8 = 120;
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

    /// Who or what the ending is down to.
    pub fn class(&self) -> Class {
        match self {
            Exit::Guest { .. } | Exit::DebugExit { .. } => Class::GuestExit,
            Exit::Shutdown
            | Exit::Halted { .. }
            | Exit::InternalError { .. }
            | Exit::FailedEntry { .. }
            | Exit::UnservedPort { .. }
            | Exit::UnservedMmio { .. }
            | Exit::Aborted { .. }
            | Exit::Exception { .. }
            | Exit::Unexpected { .. } => Class::GuestFault,
            Exit::Timeout { .. } => Class::Timeout,
            Exit::LimitExceeded(_) => Class::Limit,
            Exit::Cancelled => Class::Cancelled,
            Exit::ConsoleClosed { .. } | Exit::HostFunctionPanicked { .. } => Class::HostFailure,
        }
    }

    /// The outcome's stable name, as JSON reports give it in `exit.kind`: `exit`,
    /// `debug_exit`, `triple_fault`, `halted`, `kvm_internal_error`, `failed_entry`,
    /// `unserved_port`, `unserved_mmio`, `panic`, `exception`, `timeout`, `limit`,
    /// `cancelled`, `console_closed`, `host_function_panicked`, `unexpected_exit`.
    pub fn kind(&self) -> &'static str {
        match self {
            Exit::Guest { .. } => "exit",
            Exit::DebugExit { .. } => "debug_exit",
            Exit::Shutdown => "triple_fault",
            Exit::Halted { .. } => "halted",
            Exit::InternalError { .. } => "kvm_internal_error",
            Exit::FailedEntry { .. } => "failed_entry",
            Exit::UnservedPort { .. } => "unserved_port",
            Exit::UnservedMmio { .. } => "unserved_mmio",
            Exit::Aborted { .. } => "panic",
            Exit::Exception { .. } => "exception",
            Exit::Timeout { .. } => "timeout",
            Exit::LimitExceeded(_) => "limit",
            Exit::Cancelled => "cancelled",
            Exit::ConsoleClosed { .. } => "console_closed",
            Exit::HostFunctionPanicked { .. } => "host_function_panicked",
            Exit::Unexpected { .. } => "unexpected_exit",
        }
    }

    /// The exit code `mote run` ends with for this outcome: the guest's own (up to
    /// [`exit_status::GUEST_MAX`]), or its class's.
    pub fn process_exit_code(&self) -> u8 {
        match self.guest_code() {
            Some(code) => {
                u8::try_from(code).map_or(exit_status::GUEST_MAX, |c| c.min(exit_status::GUEST_MAX))
            }
            None => self.class().exit_code(),
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
                    None if mote_abi::note::exception_has_error_code(*vector) => write!(
                        f,
                        "guest {name} (vector {vector}) at {rip:#x} (error code {error_code:#x})"
                    ),
                    None => write!(f, "guest {name} (vector {vector}) at {rip:#x}"),
                }
            }
            Exit::Timeout { limit } => write!(
                f,
                "guest ran past its deadline of {limit:?} and was stopped (raise --timeout if \
                 it needs more time)"
            ),
            Exit::LimitExceeded(limit) => write!(f, "guest used up {limit} and was stopped"),
            Exit::Cancelled => write!(f, "the run was cancelled and the guest stopped"),
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Stats {
    /// Time per phase.
    pub phases: Phases,
    /// Exits by kind.
    pub exits: ExitCounts,
    /// Pages of guest memory the run wrote (the guest, or mote on its behalf), which its pool
    /// reset afterwards; `None` for runs not in a pool.
    pub dirtied_pages: Option<u64>,
    /// Times the vCPU's thread was preempted while the guest ran; `None` unless asked for
    /// ([`RunConfig::count_preemptions`](crate::RunConfig::count_preemptions)).
    pub preemptions: Option<u64>,
}

/// A framebuffer's pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct Outcome {
    /// Why it ended.
    pub exit: Exit,
    /// Console text (hypercall console and COM1, in order), unless it was streamed elsewhere.
    pub console: Vec<u8>,
    /// What the guest wrote with `output_write`: the function's result.
    pub output: Vec<u8>,
    /// The framebuffer's contents at the end of the run, if the run had one.
    pub framebuffer: Option<Screen>,
    /// The timing samples the guest reported (the `samples` hypercall, `mote_guest::bench`),
    /// in the order it reported them: call by call, each call's samples in its order. Only
    /// this run's: a run restored from a snapshot or on a pool starts with none. A run that
    /// passed a sample limit keeps those it reported before the call that passed it.
    pub samples: Vec<crate::Sample>,
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
        assert_eq!(Exit::Shutdown.process_exit_code(), GUEST_FAULT);
        let port = Exit::UnservedPort {
            port: 0x1234,
            write: true,
            size: 1,
        };
        assert_eq!(port.process_exit_code(), GUEST_FAULT);
        assert_eq!(port.kind(), "unserved_port");
        assert_eq!(Exit::Cancelled.process_exit_code(), CANCELLED);
        assert_eq!(
            Exit::Timeout {
                limit: Duration::from_secs(1)
            }
            .process_exit_code(),
            TIMEOUT
        );
        assert!(port.to_string().contains("0x1234"));
        let mut codes: Vec<u8> = Class::MOTE.iter().map(|class| class.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Class::MOTE.len(), "two classes share a code");
        // Above the guest's codes, below what shells give their own meaning (126 and up).
        assert!(codes.iter().all(|&code| code > GUEST_MAX && code < 126));
    }
}
