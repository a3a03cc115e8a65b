//! mote-host: the mote VMM as a library.
//!
//! Open KVM once per process ([`Hypervisor::open`]), prepare a guest once
//! ([`GuestImage::from_file`]), then run it as often as needed, from as many threads as needed
//! ([`Hypervisor::run`]); each run is a fresh VM that ends in a typed [`Outcome`]. A guest is
//! hostile: every run has limits ([`RunConfig`]) and ends in an outcome, never in a host panic.
//!
//! (The examples run the repository's example guests; `cargo xtask build` builds them.)
//!
//! ```
//! use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
//!
//! let hypervisor = Hypervisor::open()?;
//! let guests = "../guest/target/x86_64-unknown-none/release";
//!
//! // A function: input in, output out.
//! let echo = GuestImage::from_file(format!("{guests}/echo"))?;
//! let outcome = hypervisor.run(&echo, RunConfig::default().input(b"ping".to_vec()))?;
//! assert_eq!(outcome.exit, Exit::Guest { code: 0 });
//! assert_eq!(outcome.output, b"ping");
//!
//! // A guest that never ends is stopped at its deadline.
//! let spin = GuestImage::from_file(format!("{guests}/spin"))?;
//! let config = RunConfig::default().timeout(std::time::Duration::from_millis(50))?;
//! let outcome = hypervisor.run(&spin, config)?;
//! assert!(matches!(outcome.exit, Exit::Timeout { .. }));
//! # Ok::<(), mote_host::Error>(())
//! ```
//!
//! A guest can call functions of its host:
//!
//! ```
//! use std::sync::{Arc, OnceLock};
//! use mote_host::{GuestImage, Hypervisor, RunConfig};
//!
//! let hypervisor = Hypervisor::open()?;
//! let guest = GuestImage::from_file("../guest/target/x86_64-unknown-none/release/hostcall")?;
//! let config = RunConfig::default()
//!     .input(b"quiet please".to_vec())
//!     .host_function("upper", Arc::new(|request: &[u8]| Ok(request.to_ascii_uppercase())));
//! let outcome = hypervisor.run(&guest, config)?;
//! assert_eq!(outcome.output, b"QUIET PLEASE");
//! # Ok::<(), mote_host::Error>(())
//! ```
#![warn(missing_docs)]

mod budget;
mod console;
mod cpus;
mod debug;
#[doc(hidden)]
pub mod decode;
mod guest_memory;
mod host_function;
mod machine;
mod outcome;
mod pool;
mod ram;
mod reaper;
mod runtime_boot_config;
mod samples;
mod seccomp;
mod serial;
mod snapshot;
#[doc(hidden)]
pub mod snapshot_file;
mod stop;
mod vcpu_state;
mod vm;
mod watchdog;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kvm_ioctls::Kvm;

pub use debug::{DebugError, Debugger};
pub use host_function::run_deadline;
pub use mote_abi::RunStart;
pub use mote_boot::{ApiVersion, BootConfig, BootError, Description, Mapping};
pub use outcome::{Class, Exit, ExitCounts, Limit, Outcome, Phases, Screen, Stats, exit_status};
pub use pool::{Pool, PoolConfig};
pub use runtime_boot_config::RuntimeBootConfig;
pub use samples::Sample;
pub use seccomp::{restrict_process, restrict_process_debugged, restrict_run_thread};
pub use snapshot::Snapshot;
pub use snapshot_file::SnapshotFileError;
pub use stop::CancelToken;

use machine::{End, Finished, Purpose};
use serial::Serial;
use vm::{Booted, GuestFacts, Vm};

/// The guest memory size used when none is given: 8 MiB.
pub const DEFAULT_MEMORY_SIZE: u64 = 8 << 20;

/// How much input a snapshot accepts per run unless told otherwise
/// ([`RunConfig::input_capacity`]): 1 MiB.
pub const DEFAULT_INPUT_CAPACITY: u64 = 1 << 20;

/// The largest guest kernel file mote reads: 256 MiB.
pub const MAX_GUEST_FILE: u64 = 256 << 20;

/// The largest guest memory mote accepts: 3 GiB, below the range KVM reserves near 4 GiB.
pub const MAX_MEMORY_SIZE: u64 = 3 << 30;

/// Everything that can stop mote from running a guest to an outcome.
///
/// An error's own message says what went wrong and what to do; the cause beneath it (an I/O
/// error, a loader error) is its [`source`](std::error::Error::source), not repeated in the
/// message: print the chain (as `anyhow` does with `{:#}`) to show both.
/// [`Error::class`] says who the failure is down to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/kvm` is missing or not accessible.
    #[error("{0}")]
    KvmUnavailable(String),
    /// A KVM call failed.
    #[error("KVM call {call} failed")]
    Kvm {
        /// The ioctl that failed.
        call: &'static str,
        /// The error it returned.
        source: std::io::Error,
    },
    /// The guest file could not be read.
    #[error("cannot read guest {path}")]
    ReadGuest {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The guest file is not a kernel mote can boot.
    #[error("{path} is not a kernel mote can boot")]
    BadImage {
        /// The file (or name) of the image.
        path: String,
        /// What is wrong with it.
        source: BootError,
    },
    /// The guest, with its input and what mote adds, does not fit the run's guest memory: the
    /// caller's choice of memory size (a usage error), refused before any memory is reserved
    /// when the input alone makes it clear.
    #[error("{}", memory_too_small(*needed, *size, *input))]
    MemoryTooSmall {
        /// The least guest memory the layout needs, in bytes.
        needed: u64,
        /// The guest memory the run has, in bytes.
        size: u64,
        /// The bytes of input (the ramdisk, or a snapshot's input window) the guest was given
        /// room for; 0 without input.
        input: u64,
    },
    /// The image cannot be laid out in guest memory for a reason other than its size.
    #[error("cannot lay the guest out in its memory")]
    Load(#[source] BootError),
    /// Guest memory could not be reserved or handled on the host.
    #[error("cannot reserve guest memory: {0}")]
    Memory(String),
    /// A guest memory size out of range.
    #[error("{}", memory_size_problem(*bytes))]
    InvalidMemorySize {
        /// The size asked for.
        bytes: u64,
    },
    /// A framebuffer side out of range.
    #[error("framebuffer {width}x{height}: each side must be between 1 and 8192 pixels")]
    InvalidFramebuffer {
        /// The width asked for.
        width: u32,
        /// The height asked for.
        height: u32,
    },
    /// A timeout of zero.
    #[error("a timeout of zero would stop every guest at once")]
    ZeroTimeout,
    /// A run restored from a snapshot asked to change what the snapshot fixed.
    #[error("{what} is set when a snapshot is taken, not when it is restored")]
    FixedBySnapshot {
        /// What: `a plain boot`, `a framebuffer`, `ACPI tables`, `the input capacity`.
        what: &'static str,
    },
    /// A run restored from a snapshot asked for another guest memory size.
    #[error(
        "the snapshot's guest has {} of memory; a run restored from it cannot have {}",
        human_size(*snapshot),
        human_size(*asked)
    )]
    SnapshotMemorySize {
        /// The snapshot's guest memory size.
        snapshot: u64,
        /// The size asked for.
        asked: u64,
    },
    /// A snapshot was asked to boot with input.
    #[error("a snapshot takes no input: input belongs to each run restored from it")]
    SnapshotInput,
    /// A snapshot was asked of a guest with an interrupt controller ([`RunConfig::irqchip`]):
    /// snapshots do not carry the state of KVM's interrupt controllers and timer.
    #[error(
        "a guest with an interrupt controller (--irqchip, RunConfig::irqchip) cannot be \
         snapshotted: snapshots do not carry the interrupt controllers' and the timer's state"
    )]
    IrqchipSnapshot,
    /// The guest ended (or was stopped) before it called `ready_for_input`, so there is no
    /// state to snapshot. The outcome says how it ended.
    #[error(
        "the guest never became ready for input, so there is nothing to snapshot: {}",
        .0.exit
    )]
    NotReady(Box<Outcome>),
    /// The run's input is over its input limit, or does not fit the snapshot's input window.
    #[error(
        "the input is {} ({len} bytes), more than the {} ({capacity} bytes) this run takes (its \
         input limit, or the input capacity of its snapshot)",
        human_size(*len),
        human_size(*capacity)
    )]
    InputTooLarge {
        /// The input's length.
        len: u64,
        /// The most the run takes.
        capacity: u64,
    },
    /// The run would take the hypervisor's memory budget past its limit
    /// ([`Hypervisor::set_memory_budget`]).
    #[error(
        "the run may take {} of host memory, and only {} of the {} budget are free; wait for \
         other runs, give this one less memory or smaller limits, or raise the budget",
        human_size(*needed),
        human_size(*free),
        human_size(*limit)
    )]
    OverBudget {
        /// What the run may take: its memory size and the output, console, timing samples and
        /// input mote holds for it.
        needed: u64,
        /// What is free now.
        free: u64,
        /// The budget.
        limit: u64,
    },
    /// Every VM of a pool stayed busy for as long as the pool lets a run wait.
    #[error(
        "all {vms} VMs of the pool stayed busy for {waited:?}; give the pool more VMs or a longer \
         wait"
    )]
    PoolBusy {
        /// The pool's size.
        vms: usize,
        /// How long the run waited.
        waited: std::time::Duration,
    },
    /// A snapshot file cannot be read or written.
    #[error("snapshot file {path}")]
    SnapshotFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: SnapshotFileError,
    },
    /// The snapshot cannot be restored here.
    #[error("cannot restore the snapshot: {0}")]
    Incompatible(String),
    /// The host lacks something mote needs for this.
    #[error("not supported on this host: {0}")]
    Unsupported(String),
    /// The debugger could not be set up or served (see [`Debugger`]).
    #[error(transparent)]
    Debugger(#[from] DebugError),
    /// A bug in mote.
    #[error("internal error in mote: {0}")]
    Internal(String),
}

/// What is wrong with a guest memory size of `bytes`.
/// The memory size to suggest to a run that needs `needed` bytes: at least 1 MiB more (page
/// tables and `BootInfo` come on top of what is known to be needed), in whole 8 MiB.
pub(crate) fn suggested_memory(needed: u64) -> u64 {
    const STEP: u64 = 8 << 20;
    needed
        .saturating_add(1 << 20)
        .div_ceil(STEP)
        .saturating_mul(STEP)
}

fn memory_too_small(needed: u64, size: u64, input: u64) -> String {
    let suggested = suggested_memory(needed);
    let what = if input > 0 {
        format!(
            "the input ({}) does not fit in {} of guest memory beside the guest (they need at \
             least {})",
            human_size(input),
            human_size(size),
            human_size(needed)
        )
    } else {
        format!(
            "the guest needs at least {} of memory, more than the {} it is given",
            human_size(needed),
            human_size(size)
        )
    };
    if suggested > MAX_MEMORY_SIZE {
        return format!(
            "{what}; mote gives a guest at most {}: give it less input",
            human_size(MAX_MEMORY_SIZE)
        );
    }
    format!(
        "{what}; use --mem {}M or more (RunConfig::memory_size)",
        suggested >> 20
    )
}

fn memory_size_problem(bytes: u64) -> String {
    if bytes > MAX_MEMORY_SIZE {
        format!(
            "a guest memory of {} is too big: mote gives a guest at most {}",
            human_size(bytes),
            human_size(MAX_MEMORY_SIZE)
        )
    } else if bytes < mote_boot::MIN_MEMORY {
        format!(
            "a guest memory of {} is too small: a guest needs at least {}",
            human_size(bytes),
            human_size(mote_boot::MIN_MEMORY)
        )
    } else {
        format!("a guest memory size must be a multiple of 4 KiB, and {bytes} bytes is not")
    }
}

/// `bytes` as mote writes sizes for people: `512 bytes`, `64 KiB`, `3 GiB`, `3073 MiB`,
/// `21.4 MiB`. The largest unit that fits, whole; or the next smaller unit if that is whole
/// and short; or tenths.
///
/// ```
/// assert_eq!(mote_host::human_size(16 << 20), "16 MiB");
/// assert_eq!(mote_host::human_size(1536), "1536 bytes");
/// ```
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
        (1, "bytes"),
    ];
    let Some(index) = UNITS.iter().position(|(unit, _)| bytes >= *unit) else {
        return "0 bytes".into();
    };
    let (unit, name) = UNITS[index];
    if bytes.is_multiple_of(unit) {
        return format!("{} {name}", bytes / unit);
    }
    if let Some(&(smaller, smaller_name)) = UNITS.get(index + 1)
        && bytes.is_multiple_of(smaller)
        && bytes / smaller < 10_000
    {
        return format!("{} {smaller_name}", bytes / smaller);
    }
    format!("{:.1} {name}", bytes as f64 / unit as f64)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        use super::human_size;
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(64 << 10), "64 KiB");
        assert_eq!(human_size(3073 << 20), "3073 MiB");
        assert_eq!(human_size(3 << 30), "3 GiB");
        assert_eq!(human_size(0x1568000), "21.4 MiB");
        let error = super::Error::InvalidMemorySize { bytes: 3073 << 20 };
        assert_eq!(
            error.to_string(),
            "a guest memory of 3073 MiB is too big: mote gives a guest at most 3 GiB"
        );
    }
}

impl Error {
    fn kvm(call: &'static str, source: kvm_ioctls::Error) -> Self {
        Error::Kvm {
            call,
            source: std::io::Error::from_raw_os_error(source.errno()),
        }
    }

    /// Who or what the failure is down to.
    pub fn class(&self) -> Class {
        match self {
            Error::KvmUnavailable(_) | Error::Unsupported(_) => Class::NoKvm,
            Error::ReadGuest { .. }
            | Error::MemoryTooSmall { .. }
            | Error::InvalidMemorySize { .. }
            | Error::InvalidFramebuffer { .. }
            | Error::ZeroTimeout
            | Error::FixedBySnapshot { .. }
            | Error::SnapshotMemorySize { .. }
            | Error::SnapshotInput
            | Error::IrqchipSnapshot
            | Error::InputTooLarge { .. }
            | Error::SnapshotFile {
                source: SnapshotFileError::Io(_),
                ..
            } => Class::Usage,
            Error::BadImage { .. }
            | Error::Load(_)
            | Error::SnapshotFile { .. }
            | Error::Incompatible(_) => Class::BadImage,
            // The guest's own exit would read as success, or as its verdict; the snapshot
            // failed either way, for want of a guest that gets ready.
            Error::NotReady(outcome) if outcome.exit.guest_code().is_some() => Class::BadImage,
            Error::NotReady(outcome) => outcome.exit.class(),
            Error::OverBudget { .. } | Error::PoolBusy { .. } => Class::Busy,
            Error::Debugger(DebugError::Unsupported(_)) => Class::Usage,
            Error::Kvm { .. } | Error::Memory(_) | Error::Debugger(_) | Error::Internal(_) => {
                Class::HostFailure
            }
        }
    }

    /// The error's stable name, as JSON reports give it in `error.kind`: `kvm_unavailable`,
    /// `kvm_call`, `read_guest`, `bad_image`, `memory_too_small`, `load`, `memory`,
    /// `invalid_memory_size`, `invalid_framebuffer`, `zero_timeout`, `fixed_by_snapshot`,
    /// `snapshot_memory_size`, `snapshot_input`, `irqchip_snapshot`, `not_ready`,
    /// `input_too_large`, `over_budget`, `pool_busy`, `snapshot_file`, `incompatible_snapshot`,
    /// `unsupported`, `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::KvmUnavailable(_) => "kvm_unavailable",
            Error::Kvm { .. } => "kvm_call",
            Error::ReadGuest { .. } => "read_guest",
            Error::BadImage { .. } => "bad_image",
            Error::MemoryTooSmall { .. } => "memory_too_small",
            Error::Load(_) => "load",
            Error::Memory(_) => "memory",
            Error::InvalidMemorySize { .. } => "invalid_memory_size",
            Error::InvalidFramebuffer { .. } => "invalid_framebuffer",
            Error::ZeroTimeout => "zero_timeout",
            Error::FixedBySnapshot { .. } => "fixed_by_snapshot",
            Error::SnapshotMemorySize { .. } => "snapshot_memory_size",
            Error::SnapshotInput => "snapshot_input",
            Error::IrqchipSnapshot => "irqchip_snapshot",
            Error::NotReady(_) => "not_ready",
            Error::InputTooLarge { .. } => "input_too_large",
            Error::OverBudget { .. } => "over_budget",
            Error::PoolBusy { .. } => "pool_busy",
            Error::SnapshotFile { .. } => "snapshot_file",
            Error::Incompatible(_) => "incompatible_snapshot",
            Error::Unsupported(_) => "unsupported",
            Error::Debugger(_) => "debugger",
            Error::Internal(_) => "internal",
        }
    }

    /// The message with its causes, as one line: `cannot read guest x: No such file or
    /// directory (os error 2)`. Each part is said once.
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(inner) = cause {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            cause = inner.source();
        }
        text
    }

    /// The exit code `mote` ends with for this error: its class's (see [`exit_status`]).
    pub fn process_exit_code(&self) -> u8 {
        self.class().exit_code()
    }
}

/// A guest kernel, parsed, checked and relocated once; shareable across threads and runs.
#[derive(Clone, Debug)]
pub struct GuestImage {
    prepared: mote_boot::PreparedImage,
}

impl GuestImage {
    /// Reads and prepares a guest kernel ELF file: a regular file of at most
    /// [`MAX_GUEST_FILE`] bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let fail = |source| Error::ReadGuest {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(fail)?;
        let metadata = file.metadata().map_err(fail)?;
        if !metadata.is_file() {
            return Err(fail(std::io::Error::other(
                "not a regular file: a guest kernel is an ELF file",
            )));
        }
        if metadata.len() > MAX_GUEST_FILE {
            return Err(fail(std::io::Error::other(format!(
                "{}, more than the {} a guest kernel may be",
                human_size(metadata.len()),
                human_size(MAX_GUEST_FILE)
            ))));
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        // The file may grow after the check: read no more than the limit either way.
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_GUEST_FILE + 1),
            &mut bytes,
        )
        .map_err(fail)?;
        if bytes.len() as u64 > MAX_GUEST_FILE {
            return Err(fail(std::io::Error::other(
                "the file grew while it was read",
            )));
        }
        Self::from_bytes(&path.display().to_string(), bytes)
    }

    /// Prepares a guest kernel from its ELF bytes; `name` appears in errors.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, Error> {
        let prepared = mote_boot::PreparedImage::new(bytes).map_err(|source| Error::BadImage {
            path: name.to_owned(),
            source,
        })?;
        Ok(Self { prepared })
    }

    /// The kernel's relocated entry point (for a kernel with ASLR, where it would be without).
    pub fn entry(&self) -> u64 {
        self.prepared.entry()
    }

    /// The kernel's `bootloader_api` boot configuration.
    pub fn boot_config(&self) -> &BootConfig {
        self.prepared.config()
    }

    /// What the image is and where a run puts things (`mote inspect`); for a kernel with ASLR,
    /// where a run would put them without it.
    pub fn describe(&self) -> Description {
        self.prepared.describe()
    }
}

/// A function the embedder lets a guest call by name: request bytes in, response bytes out.
/// An `Err` reaches the guest as `HostFunctionFailed`; its text is not passed on. It runs on the
/// thread of the run that calls it, and mote cannot preempt it: one that may block should give
/// up by [`run_deadline`]. One that panics ends the run with [`Exit::HostFunctionPanicked`].
pub type HostFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// Host functions by name.
pub(crate) type HostFunctions = HashMap<String, HostFunction>;

/// What one run may make the host spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) console_bytes: u64,
    pub(crate) output_bytes: u64,
    pub(crate) input_bytes: u64,
    pub(crate) hypercalls: u64,
    pub(crate) samples: u64,
}

/// How long a run may take unless told otherwise ([`RunConfig::timeout`],
/// [`RunConfig::no_timeout`]): 30 s.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The default console limit: 1 MiB. Console text is for people; a run collects it in host
/// memory unless it is streamed ([`RunConfig::console_to`]).
pub const DEFAULT_CONSOLE_LIMIT: u64 = 1 << 20;

/// The default output limit: 16 MiB, held in host memory until the run ends.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 16 << 20;

/// The default input limit: 16 MiB.
pub const DEFAULT_INPUT_LIMIT: u64 = 16 << 20;

/// The default limit on timing samples per run ([`RunConfig::sample_limit`]): 64 Ki samples,
/// 1.5 MiB of [`Sample`]s at most. A run is charged that against the memory budget whether or
/// not its guest reports any, so the default stays small; a benchmark rig raises it.
pub const DEFAULT_SAMPLE_LIMIT: u64 = 1 << 16;

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Some(DEFAULT_TIMEOUT),
            console_bytes: DEFAULT_CONSOLE_LIMIT,
            output_bytes: DEFAULT_OUTPUT_LIMIT,
            input_bytes: DEFAULT_INPUT_LIMIT,
            hypercalls: u64::MAX,
            samples: DEFAULT_SAMPLE_LIMIT,
        }
    }
}

/// How to run one guest.
#[derive(Default)]
pub struct RunConfig {
    /// `None`: the default for a boot, the snapshot's for a restore.
    memory_size: Option<u64>,
    console: Option<Box<dyn Write + Send>>,
    input: Option<Vec<u8>>,
    host_functions: HostFunctions,
    plain: bool,
    framebuffer: Option<(u32, u32)>,
    acpi: bool,
    irqchip: bool,
    boot_config: Option<RuntimeBootConfig>,
    /// `None`: [`DEFAULT_INPUT_CAPACITY`] for a snapshot.
    input_capacity: Option<u64>,
    screenshot: bool,
    limits: Limits,
    memory_wait: std::time::Duration,
    cancel: Option<CancelToken>,
    debugger: Option<Debugger>,
    count_preemptions: bool,
}

impl RunConfig {
    /// Sets the guest memory size in bytes: a multiple of 4 KiB, from 2 MiB to
    /// [`MAX_MEMORY_SIZE`].
    pub fn memory_size(mut self, bytes: u64) -> Result<Self, Error> {
        if !bytes.is_multiple_of(4096)
            || !(mote_boot::MIN_MEMORY..=MAX_MEMORY_SIZE).contains(&bytes)
        {
            return Err(Error::InvalidMemorySize { bytes });
        }
        self.memory_size = Some(bytes);
        Ok(self)
    }

    /// Sets how much input a snapshot taken with this configuration accepts per run: the size
    /// of the window its guest finds each run's input in (its `bootloader_api` ramdisk, taken
    /// from guest memory). Default: [`DEFAULT_INPUT_CAPACITY`]. Only
    /// [`Hypervisor::snapshot`] uses it; a cold run's ramdisk is as large as its input.
    pub fn input_capacity(mut self, bytes: u64) -> Self {
        self.input_capacity = Some(bytes);
        self
    }

    /// Hands back the framebuffer's contents in [`Outcome::framebuffer`] when a run restored
    /// from a snapshot with a framebuffer ends. (A cold run with a [`framebuffer`](Self::framebuffer)
    /// (`RunConfig::framebuffer`) always does.) Converting the pixels costs host memory of
    /// about the framebuffer's size, so it is asked for, not done for every run.
    pub fn screenshot(mut self) -> Self {
        self.screenshot = true;
        self
    }

    /// The guest memory size a boot gets.
    fn boot_memory_size(&self) -> u64 {
        self.memory_size.unwrap_or(DEFAULT_MEMORY_SIZE)
    }

    /// Waits up to `wait` for room in the hypervisor's memory budget when the run would go
    /// past it, rather than fail at once with [`Error::OverBudget`]. Default: no wait.
    pub fn wait_for_memory(mut self, wait: std::time::Duration) -> Self {
        self.memory_wait = wait;
        self
    }

    /// The most host memory a run of this configuration may take, with `memory_size` bytes of
    /// guest memory: all of it written, and the output, console, timing samples and input mote
    /// holds for it.
    pub(crate) fn worst_case(&self, memory_size: u64) -> u64 {
        let input = self.input.as_ref().map_or(0, |input| input.len() as u64);
        let samples = self
            .limits
            .samples
            .saturating_mul(std::mem::size_of::<Sample>() as u64);
        memory_size
            .saturating_add(self.limits.output_bytes)
            .saturating_add(self.limits.console_bytes)
            .saturating_add(samples)
            .saturating_add(input)
    }

    /// Refuses input over the input limit.
    fn check_input(&self) -> Result<(), Error> {
        let len = self.input.as_ref().map_or(0, |input| input.len() as u64);
        if len > self.limits.input_bytes {
            return Err(Error::InputTooLarge {
                len,
                capacity: self.limits.input_bytes,
            });
        }
        Ok(())
    }

    /// Refuses, before any memory is reserved or charged, a boot whose guest and `input_len`
    /// bytes of input cannot fit in its memory: that is the caller's choice of memory size
    /// ([`Error::MemoryTooSmall`]), whatever room the memory budget has.
    pub(crate) fn check_fits(&self, image: &GuestImage, input_len: u64) -> Result<(), Error> {
        let size = self.boot_memory_size();
        let needed = image.prepared.min_memory(input_len);
        if needed > size {
            return Err(Error::MemoryTooSmall {
                needed,
                size,
                input: input_len,
            });
        }
        Ok(())
    }

    /// Refuses what a run restored from `snapshot` cannot change (how the guest was laid out),
    /// and input larger than its input limit or the snapshot's input window.
    fn check_restorable(&self, snapshot: &Snapshot) -> Result<(), Error> {
        self.check_input()?;
        if self.debugger.is_some() {
            return Err(DebugError::Unsupported("a run restored from a snapshot").into());
        }
        let len = self.input.as_ref().map_or(0, |input| input.len() as u64);
        let capacity = snapshot.input_capacity();
        if len > capacity {
            return Err(Error::InputTooLarge { len, capacity });
        }
        if let Some(size) = self.memory_size
            && size != snapshot.memory_size()
        {
            return Err(Error::SnapshotMemorySize {
                snapshot: snapshot.memory_size(),
                asked: size,
            });
        }
        let fixed = [
            (self.plain, "a plain boot"),
            (self.framebuffer.is_some(), "a framebuffer"),
            (self.acpi, "ACPI tables"),
            (self.irqchip, "an interrupt controller"),
            (self.boot_config.is_some(), "the boot config"),
            (self.input_capacity.is_some(), "the input capacity"),
        ];
        if let Some(&(_, what)) = fixed.iter().find(|(set, _)| *set) {
            return Err(Error::FixedBySnapshot { what });
        }
        Ok(())
    }

    /// Streams console text to `out` as the guest writes it, instead of collecting it in
    /// [`Outcome::console`]. A thread of the run does the writing, so a reader that stops
    /// reading cannot hold the guest past its deadline.
    pub fn console_to(mut self, out: Box<dyn Write + Send>) -> Self {
        self.console = Some(out);
        self
    }

    /// Hands `bytes` to the guest as its input: the `bootloader_api` ramdisk, mapped read-only
    /// into a user-mode guest, so reading it costs no exit.
    pub fn input(mut self, bytes: Vec<u8>) -> Self {
        self.input = Some(bytes);
        self
    }

    /// Boots the guest as the real `bootloader` would, as if mote were not there: at CPL0, its
    /// runtime note ignored, without mote's CPUID leaves. A `mote-guest` kernel then takes the
    /// path it takes elsewhere (COM1, isa-debug-exit, its own IDT); guest code at CPL0 may run
    /// far slower (it is emulated on some hosts).
    pub fn plain_boot(mut self) -> Self {
        self.plain = true;
        self
    }

    /// Gives the guest a linear framebuffer of `width` × `height` pixels (4 bytes each, BGR),
    /// as UEFI firmware would; its contents come back in [`Outcome::framebuffer`]. Each side
    /// must be between 1 and 8192.
    pub fn framebuffer(mut self, width: u32, height: u32) -> Result<Self, Error> {
        if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) {
            return Err(Error::InvalidFramebuffer { width, height });
        }
        self.framebuffer = Some((width, height));
        self.boot_framebuffer()?;
        Ok(self)
    }

    /// Boots the guest with the `bootloader` crate's run-time `BootConfig` (its `boot.json`),
    /// as the real bootloader reads it from its disk image: `BootInfo._test_sentinel` gets the
    /// config's sentinel, and the framebuffer is at least the config's minimum size (a
    /// config with a minimum gives the guest a framebuffer, 640x480 or the
    /// [`framebuffer`](Self::framebuffer) asked for, each side raised to its minimum; each
    /// side must stay within 8192). Its log settings are accepted and have no effect (see
    /// [`RuntimeBootConfig`]). `mote run --boot-config FILE.json` reads one from the JSON the
    /// bootloader crate's `BootConfig` serialises to.
    pub fn boot_config(mut self, config: RuntimeBootConfig) -> Result<Self, Error> {
        self.boot_config = Some(config);
        self.boot_framebuffer()?;
        Ok(self)
    }

    /// The framebuffer (width, height) a boot of this configuration gives the guest, if any:
    /// the one [`framebuffer`](Self::framebuffer) asked for, raised to the
    /// [`boot_config`](Self::boot_config)'s minimum (which gives one on its own).
    pub fn boot_framebuffer(&self) -> Result<Option<(u32, u32)>, Error> {
        let Some(boot_config) = &self.boot_config else {
            return Ok(self.framebuffer);
        };
        let Some((width, height)) = boot_config.framebuffer(self.framebuffer) else {
            return Ok(None);
        };
        let side = |pixels: u64| u32::try_from(pixels).unwrap_or(u32::MAX);
        let (width, height) = (side(width), side(height));
        if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) {
            return Err(Error::InvalidFramebuffer { width, height });
        }
        Ok(Some((width, height)))
    }

    /// Stops the guest `timeout` after its first instruction (outcome [`Exit::Timeout`]), even
    /// if it spins with interrupts off. Must not be zero. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: std::time::Duration) -> Result<Self, Error> {
        if timeout.is_zero() {
            return Err(Error::ZeroTimeout);
        }
        self.limits.timeout = Some(timeout);
        Ok(self)
    }

    /// Lets the guest run as long as it likes: no deadline at all. Only for guests the embedder
    /// trusts to end (a kernel under development, watched by a person).
    pub fn no_timeout(mut self) -> Self {
        self.limits.timeout = None;
        self
    }

    /// Refuses input longer than `bytes` before anything runs ([`Error::InputTooLarge`]).
    /// Default: [`DEFAULT_INPUT_LIMIT`].
    pub fn input_limit(mut self, bytes: u64) -> Self {
        self.limits.input_bytes = bytes;
        self
    }

    /// The most input this configuration accepts, in bytes: what a reader of input (`mote
    /// run --input`) may stop at.
    pub fn max_input(&self) -> u64 {
        self.limits.input_bytes
    }

    /// Stops the guest when its console text (hypercall console and COM1) passes `bytes`
    /// (outcome [`Exit::LimitExceeded`]). Default: [`DEFAULT_CONSOLE_LIMIT`].
    pub fn console_limit(mut self, bytes: u64) -> Self {
        self.limits.console_bytes = bytes;
        self
    }

    /// Stops the guest when its output passes `bytes`. Default: [`DEFAULT_OUTPUT_LIMIT`].
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.limits.output_bytes = bytes;
        self
    }

    /// Stops the guest at its hypercall number `count + 1`. Default: no limit.
    pub fn hypercall_limit(mut self, count: u64) -> Self {
        self.limits.hypercalls = count;
        self
    }

    /// Stops the guest when it reports more than `count` timing samples in all (the `samples`
    /// hypercall; outcome [`Exit::LimitExceeded`] with [`Limit::Samples`]); the samples it
    /// reported before the call that passed the limit are kept. Every run may also report at
    /// most 256 distinct names ([`Limit::SampleNames`]). Samples are held in host memory,
    /// 24 bytes each, so the run is charged `count` × 24 bytes against the memory budget.
    /// Default: [`DEFAULT_SAMPLE_LIMIT`].
    pub fn sample_limit(mut self, count: u64) -> Self {
        self.limits.samples = count;
        self
    }

    /// Counts how many times the thread that runs the vCPU is preempted (its involuntary
    /// context switches) from the guest's first entry to its last exit, into
    /// [`Stats::preemptions`]: a benchmark flags the timings another thread may have cut into,
    /// without counting what making or tearing down the VM went through. Two `getrusage` calls
    /// a run. Default: off.
    pub fn count_preemptions(mut self) -> Self {
        self.count_preemptions = true;
        self
    }

    /// Gives the guest what PC firmware leaves: ACPI tables (RSDP, XSDT, MADT, FADT) and a
    /// PC's memory map, with the EBDA, the VGA window, the BIOS area and the APIC pages the MADT
    /// names reserved (see docs/boot-protocol.md).
    pub fn acpi(mut self) -> Self {
        self.acpi = true;
        self
    }

    /// Gives the guest KVM's in-kernel interrupt controllers and timer, as a PC has them: a
    /// local APIC (xAPIC at `0xFEE0_0000`, with its timer), an I/O APIC at `0xFEC0_0000`, the
    /// 8259 pair and the 8254 PIT (ports `0x40`-`0x43`), for kernels that enable interrupts and
    /// wait for timer ticks. With [`acpi`](Self::acpi), the MADT lists them.
    ///
    /// `hlt` no longer reaches mote then: KVM waits for the next interrupt itself. A vCPU that
    /// halts with interrupts off and nothing that could wake it (no NMI source) still ends the
    /// run as [`Exit::Halted`] with `interrupts_enabled: false`: mote looks at it at least
    /// every 50 ms while it runs. One that halts with interrupts on waits for them, up to its
    /// deadline.
    ///
    /// Off by default: mote's own guests need no interrupts, and creating and tearing down the
    /// controllers costs every run that has them (see docs/decisions.md). Such a guest cannot
    /// be snapshotted ([`Error::IrqchipSnapshot`]).
    pub fn irqchip(mut self) -> Self {
        self.irqchip = true;
        self
    }

    /// Debugs the run with GDB through `debugger`: the guest starts stopped at its first
    /// instruction and runs as GDB says (see [`Debugger`]). The run's deadline counts only
    /// while the guest runs. Only a cold run ([`Hypervisor::run`]) can be debugged; a snapshot
    /// or a run restored from one is refused with [`DebugError::Unsupported`].
    pub fn debugger(mut self, debugger: Debugger) -> Self {
        self.debugger = Some(debugger);
        self
    }

    /// Ends the run with [`Exit::Cancelled`] as soon as `token` is cancelled, from any thread
    /// (see [`CancelToken`]).
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Lets the guest call `function` by `name` (the `host_call` hypercall).
    ///
    /// ```
    /// use std::sync::{Arc, OnceLock};
    /// let config = mote_host::RunConfig::default().host_function(
    ///     "upper",
    ///     Arc::new(|request: &[u8]| Ok(request.to_ascii_uppercase())),
    /// );
    /// ```
    pub fn host_function(mut self, name: &str, function: HostFunction) -> Self {
        self.host_functions.insert(name.to_owned(), function);
        self
    }
}

/// A process-wide handle on KVM: open it once, run many guests through it, from many threads.
///
/// `Hypervisor` is cheap to clone: clones share one KVM handle and mote's helper threads.
/// A finished VM is destroyed on a background thread, off the caller's path; dropping the last
/// clone (pools hold one) waits until every VM it ran is gone. Deadlines
/// ([`RunConfig::timeout`]) kick a vCPU out of the guest with the first real-time signal
/// (`SIGRTMIN`): mote installs a handler for it that does nothing, and a run with a deadline
/// keeps it blocked on the calling thread except inside `KVM_RUN` (the thread's signal mask is
/// restored when the run returns).
///
/// A caller may pin the threads it runs guests on: mote's helper threads, and the thread KVM
/// starts for each VM, run on the CPUs of the process (its main thread's), not on the CPU of the
/// pinned thread that happened to start them.
///
/// From its second VM on, a hypervisor also holds a VM of its own with one vCPU that never
/// runs (two descriptors): while it exists, KVM does not patch its code in and out of the
/// kernel each time a VM is made and destroyed, which made every cold start about a quarter
/// slower on a machine where no other vCPU held KVM's keys.
#[derive(Clone)]
pub struct Hypervisor {
    shared: Arc<Shared>,
}

/// What every clone of a [`Hypervisor`] shares.
pub(crate) struct Shared {
    // Dropped first: no deadline outlives the runs, and pending tear-downs finish while KVM is
    // still open. Both threads start when first needed.
    watchdog: OnceLock<watchdog::Watchdog>,
    reaper: OnceLock<Option<reaper::Reaper>>,
    /// Keeps KVM's static keys on between runs (see [`vm::ResidentVcpu`]), made with the
    /// hypervisor's second VM.
    resident_vcpu: OnceLock<Option<vm::ResidentVcpu>>,
    /// A VM has been made (a run's, a snapshot's, a pool's).
    made_a_vm: AtomicBool,
    kvm: Kvm,
    supported_cpuid: kvm_bindings::CpuId,
    /// Learnt from the first vCPU.
    machine: OnceLock<vm::MachineInfo>,
    /// The MSRs a snapshot saves, learnt from the first vCPU that needs them.
    saveable_msrs: OnceLock<Vec<u32>>,
    /// KVM can hold a guest to the paravirtual features its CPUID table offers.
    enforce_pv_cpuid: bool,
    /// The host memory the guests may take together.
    budget: Arc<budget::Budget>,
    /// Each run on a thread of mote's, filtered ([`Hypervisor::set_filtered_runs`]).
    filtered_runs: AtomicBool,
}

impl Shared {
    /// Called as a VM is about to be made: from the second on, a vCPU that never runs is held
    /// for the hypervisor's life ([`vm::ResidentVcpu`]). A process that makes one VM and exits
    /// (`mote run`) has nothing to gain from it, and does not hold the descriptors and memory.
    pub(crate) fn making_a_vm(&self) {
        if self.made_a_vm.swap(true, Ordering::Relaxed) {
            self.resident_vcpu
                .get_or_init(|| vm::ResidentVcpu::new(&self.kvm));
        }
    }

    /// Does `work` here, or on a filtered thread of its own if the embedder asked for that.
    pub(crate) fn run_where_asked<T: Send>(
        &self,
        kind: seccomp::Work,
        work: impl FnOnce() -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        if self.filtered_runs.load(Ordering::Relaxed) {
            seccomp::on_filtered_thread(kind, work)
        } else {
            work()
        }
    }
}

impl Hypervisor {
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Opens `/dev/kvm` and reads what it supports.
    pub fn open() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(|e| {
            Error::KvmUnavailable(match e.errno() {
                libc::ENOENT => "/dev/kvm does not exist: KVM is not available on this machine. \
                     Load the kvm_intel or kvm_amd module, or enable (nested) virtualization"
                    .to_owned(),
                libc::EACCES | libc::EPERM => "no permission to open /dev/kvm: add your user \
                     to the group that owns it (often `kvm`: `sudo usermod -aG kvm $USER`, \
                     then log in again) or run mote as root"
                    .to_owned(),
                _ => format!("cannot open /dev/kvm: {e}"),
            })
        })?;
        let supported_cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let enforce_pv_cpuid = kvm
            .check_extension_raw(u64::from(kvm_bindings::KVM_CAP_ENFORCE_PV_FEATURE_CPUID) as _)
            > 0;
        Ok(Self {
            shared: Arc::new(Shared {
                watchdog: OnceLock::new(),
                reaper: OnceLock::new(),
                resident_vcpu: OnceLock::new(),
                made_a_vm: AtomicBool::new(false),
                kvm,
                supported_cpuid,
                machine: OnceLock::new(),
                saveable_msrs: OnceLock::new(),
                enforce_pv_cpuid,
                budget: budget::Budget::new(budget::default_limit()),
                filtered_runs: AtomicBool::new(false),
            }),
        })
    }

    /// Sets the memory budget: how much host memory the guests of this hypervisor (and its
    /// clones and pools) may take together. Each run is charged its worst case before it
    /// starts (its memory size, the output, console and timing samples mote may hold for it,
    /// its input), a snapshot its memory size for as long as it is held, and a pooled VM the
    /// pages it may keep between runs; a run that would go past the budget is refused with
    /// [`Error::OverBudget`], or waits for room ([`RunConfig::wait_for_memory`]). Default:
    /// three quarters of the machine's memory, or of this process's memory cgroup's limit if
    /// that is lower.
    pub fn set_memory_budget(&self, bytes: u64) {
        self.shared.budget.set_limit(bytes);
    }

    /// The memory budget and how much of it is charged now, in bytes: `(limit, used)`.
    pub fn memory_budget(&self) -> (u64, u64) {
        self.shared.budget.usage()
    }

    /// Runs every guest of this hypervisor (its clones, snapshots and pools too) from now on on a thread
    /// of mote's that a seccomp filter holds to the system calls a run needs (KVM's ioctls,
    /// memory, threads, signals, the host's random source; no files, sockets or processes):
    /// the same filter `mote run` puts on its whole process. A guest that escaped KVM would
    /// find that thread. A call outside the filter ends the process, after a line on standard
    /// error that names it.
    ///
    /// Everything a run does happens on that thread, so host functions and the console's
    /// writer run under the filter too: they may not open files or sockets. The price is a
    /// thread started and filtered per call: about 300 µs on the nested hosts mote is measured
    /// on, where a pooled call takes about 120 µs (`cargo xtask bench`,
    /// `filtered_warm_call_null`). A process that does nothing but run guests pays nothing per
    /// call with [`restrict_process`] instead. A run fails with [`Error::Internal`] if the host
    /// cannot install the filter. Default: off.
    pub fn set_filtered_runs(&self, on: bool) {
        self.shared.filtered_runs.store(on, Ordering::Relaxed);
    }

    /// The TSC frequency mote tells its guests, in kHz (runtime note and CPUID leaf
    /// `0x4000_0001`): the rate of a guest's TSC ticks, such as [`Sample::cycles`]. `None` when
    /// KVM cannot say (guests are then told 0).
    ///
    /// KVM reports the frequency per vCPU; mote asks the first vCPU it makes and tells every
    /// guest that. Before the first run, this makes a VM to ask (about a millisecond, once);
    /// `None` too if that VM cannot be made.
    pub fn tsc_khz(&self) -> Option<u64> {
        let info = match self.shared.machine.get() {
            Some(info) => info,
            None => self.shared.learn_machine().ok()?,
        };
        (info.tsc_khz != 0).then_some(u64::from(info.tsc_khz))
    }

    /// Boots `image` in a fresh VM and runs it until it ends.
    pub fn run(&self, image: &GuestImage, config: RunConfig) -> Result<Outcome, Error> {
        let work = match &config.debugger {
            Some(debugger) => seccomp::Work::Debugged(debugger.socket()),
            None => seccomp::Work::Run,
        };
        self.shared
            .run_where_asked(work, || self.run_here(image, config))
    }

    fn run_here(&self, image: &GuestImage, mut config: RunConfig) -> Result<Outcome, Error> {
        config.check_input()?;
        let input_len = config.input.as_ref().map_or(0, |input| input.len() as u64);
        config.check_fits(image, input_len)?;
        let shared = &*self.shared;
        let charge = shared.charge(config.worst_case(config.boot_memory_size()), &config)?;
        let reserved = Instant::now();
        let ram = ram::anonymous(config.boot_memory_size())?;
        let Booted {
            mut vm,
            guest,
            stats,
        } = vm::boot(shared, image, &config, ram, reserved.elapsed(), None)?;
        vm.charge = Some(charge);
        let start = RunStart {
            generation: 0,
            seed: snapshot::fresh_seed()?,
            input_len: config.input.as_ref().map_or(0, |input| input.len() as u64),
        };
        let result = machine::run(
            shared,
            &mut vm,
            &guest,
            Serial::default(),
            &mut config,
            Purpose::Run(start),
            stats,
        );
        let screen = config.screenshot || guest.framebuffer.is_some();
        let outcome = result.and_then(|finished| outcome(finished, &vm, &guest, screen));
        shared.dispose(Box::new(vm));
        outcome
    }

    /// Boots `image` until it is ready for input (its `ready_for_input` hypercall, which
    /// `mote-guest` makes just before `main`) and captures its whole state there.
    ///
    /// `config` sets how the guest is laid out (memory size, framebuffer, ACPI, a plain boot)
    /// and what the boot may spend. It must give no input: input belongs to each run. A guest
    /// that ends before it is ready gives [`Error::NotReady`] with its outcome.
    ///
    /// ```
    /// use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
    ///
    /// let hypervisor = Hypervisor::open()?;
    /// let echo = GuestImage::from_file("../guest/target/x86_64-unknown-none/release/echo")?;
    /// let snapshot = hypervisor.snapshot(&echo, RunConfig::default())?;
    /// for word in ["one", "two"] {
    ///     let config = RunConfig::default().input(word.as_bytes().to_vec());
    ///     let outcome = hypervisor.run_snapshot(&snapshot, config)?;
    ///     assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    ///     assert_eq!(outcome.output, word.as_bytes());
    /// }
    /// # Ok::<(), mote_host::Error>(())
    /// ```
    pub fn snapshot(&self, image: &GuestImage, config: RunConfig) -> Result<Snapshot, Error> {
        self.shared.run_where_asked(seccomp::Work::Snapshot, || {
            snapshot::capture(&self.shared, image, config)
        })
    }

    /// Reads a snapshot file that [`Snapshot::save`] wrote (on this machine, with this mote
    /// version). Whether this host can restore it (the same CPU, a TSC that has not gone
    /// backwards since) is checked when it is first restored: a host that cannot gives
    /// [`Error::Incompatible`].
    pub fn load_snapshot(&self, path: impl AsRef<Path>) -> Result<Snapshot, Error> {
        Snapshot::load(&self.shared, path.as_ref())
    }

    /// Runs `snapshot` in a fresh VM: the guest continues from its snapshot point with the
    /// input, host functions and limits of `config`, and its memory maps the snapshot's
    /// copy-on-write. `config` cannot change the layout fixed by the snapshot (memory size,
    /// framebuffer, ACPI, plain boot).
    pub fn run_snapshot(&self, snapshot: &Snapshot, config: RunConfig) -> Result<Outcome, Error> {
        self.shared.run_where_asked(seccomp::Work::Run, || {
            self.run_snapshot_here(snapshot, config)
        })
    }

    fn run_snapshot_here(
        &self,
        snapshot: &Snapshot,
        mut config: RunConfig,
    ) -> Result<Outcome, Error> {
        config.check_restorable(snapshot)?;
        let shared = &*self.shared;
        let charge = shared.charge(config.worst_case(snapshot.memory_size()), &config)?;
        let mut stats = Stats::default();
        let mut vm = snapshot::new_vm(shared, snapshot, false, &mut stats.phases)?;
        vm.charge = Some(charge);
        let screen = config.screenshot;
        let result = snapshot::run_on(shared, snapshot, &mut vm, &mut config, true, stats)
            .and_then(|finished| outcome(finished, &vm, &snapshot.inner.guest, screen));
        shared.dispose(Box::new(vm));
        result
    }
}

/// The outcome of a finished run on `vm`, with the screen's contents if `screen` asks and the
/// guest has one.
pub(crate) fn outcome(
    finished: Finished,
    vm: &Vm,
    guest: &GuestFacts,
    screen: bool,
) -> Result<Outcome, Error> {
    let End::Exit(exit) = finished.end else {
        return Err(Error::Internal("a run stopped at a snapshot point".into()));
    };
    Ok(Outcome {
        exit,
        console: finished.console,
        output: finished.output,
        framebuffer: guest
            .framebuffer
            .filter(|_| screen)
            .map(|framebuffer| machine::screen(&vm.ram, &framebuffer)),
        samples: finished.samples,
        stats: finished.stats,
    })
}

impl Shared {
    /// What every vCPU gets, learnt from `vcpu` the first time.
    fn machine_info(&self, vcpu: &kvm_ioctls::VcpuFd) -> Result<&vm::MachineInfo, Error> {
        if let Some(info) = self.machine.get() {
            return Ok(info);
        }
        let info = vm::MachineInfo::new(&self.supported_cpuid, vcpu)?;
        Ok(self.machine.get_or_init(|| info))
    }

    /// What every vCPU gets, learnt from a VM made for the purpose: for a question asked before
    /// any run made a vCPU.
    fn learn_machine(&self) -> Result<&vm::MachineInfo, Error> {
        let vm = self
            .kvm
            .create_vm()
            .map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;
        self.machine_info(&vcpu)
    }

    /// The MSRs a snapshot saves, learnt from `vcpu` the first time.
    fn saveable_msrs(&self, vcpu: &kvm_ioctls::VcpuFd) -> Result<&[u32], Error> {
        if let Some(msrs) = self.saveable_msrs.get() {
            return Ok(msrs);
        }
        let msrs = vcpu_state::saveable_msrs(&self.kvm, vcpu)?;
        Ok(self.saveable_msrs.get_or_init(|| msrs))
    }

    /// Charges `bytes` against the memory budget, waiting as `config` says.
    pub(crate) fn charge(&self, bytes: u64, config: &RunConfig) -> Result<budget::Charge, Error> {
        self.budget.charge(bytes, config.memory_wait)
    }

    /// The deadline thread, started on first use.
    fn watchdog(&self) -> Result<&watchdog::Watchdog, Error> {
        if let Some(watchdog) = self.watchdog.get() {
            return Ok(watchdog);
        }
        let watchdog = watchdog::Watchdog::start()
            .map_err(|e| Error::Internal(format!("cannot start the deadline thread: {e}")))?;
        Ok(self.watchdog.get_or_init(|| watchdog))
    }

    /// Destroys what a finished run leaves: off the caller's path when the tear-down thread can
    /// be had, here when it cannot.
    fn dispose(&self, remains: Box<dyn Send>) {
        match self.reaper.get_or_init(|| reaper::Reaper::start().ok()) {
            Some(reaper) => reaper.dispose(remains),
            None => drop(remains),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_too_small_names_a_size_that_fits() {
        assert_eq!(suggested_memory(17 << 20), 24 << 20);
        assert_eq!(suggested_memory(7 << 20), 8 << 20);
        assert_eq!(suggested_memory((7 << 20) + 1), 16 << 20);
        let error = Error::MemoryTooSmall {
            needed: (16 << 20) + (1200 << 10),
            size: 8 << 20,
            input: 16 << 20,
        };
        assert_eq!(error.class(), Class::Usage);
        let message = error.to_string();
        assert!(
            message.starts_with("the input (16 MiB) does not fit in 8 MiB of guest memory"),
            "{message}"
        );
        assert!(message.contains("use --mem 24M or more"), "{message}");
        let error = Error::MemoryTooSmall {
            needed: 5 << 30,
            size: 8 << 20,
            input: 5 << 30,
        };
        assert!(error.to_string().contains("give it less input"), "{error}");
    }

    #[test]
    fn every_run_has_finite_limits_unless_told_otherwise() {
        let config = RunConfig::default();
        let limits = config.limits;
        assert_eq!(limits.timeout, Some(DEFAULT_TIMEOUT));
        assert!(DEFAULT_TIMEOUT <= std::time::Duration::from_secs(60));
        // The worst a default run holds in host memory is a small multiple of its RAM: its
        // memory, 1 MiB of console, 16 MiB of output, 1.5 MiB of timing samples.
        let held = config.worst_case(DEFAULT_MEMORY_SIZE);
        assert_eq!(held, DEFAULT_MEMORY_SIZE + (17 << 20) + (3 << 19));
        assert!(held <= 8 * DEFAULT_MEMORY_SIZE, "{held}");
        assert_eq!(std::mem::size_of::<Sample>(), 24);
        assert_eq!(limits.input_bytes, DEFAULT_INPUT_LIMIT);
        assert_eq!(RunConfig::default().no_timeout().limits.timeout, None);
    }
}
