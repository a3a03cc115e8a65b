//! The mote hypercall contract, shared by the host and every guest.
//!
//! This crate is the single source of the numbers and layouts that both sides of a mote VM must
//! agree on: the I/O ports, the hypercall numbers, their argument registers, their error codes,
//! the CPUID leaves a guest uses to discover mote, and the runtime note a guest carries to be run
//! in user mode. `docs/abi.md` explains the contract in prose; this crate is its machine-readable
//! half.
//!
//! # Calling convention
//!
//! A guest makes a hypercall with one 32-bit `out` to [`HYPERCALL_PORT`]: the value written
//! (`eax`) is the call number ([`Hypercall`]). Arguments travel in the registers of
//! [`ARGUMENT_REGISTERS`], in that order; the result comes back in `rax`. A result at or above
//! [`ERROR_BASE`] is an error ([`HypercallError`]); anything below is the call's success value.
//! `rdx` holds the port and `rcx`/`r11` are left out so that the same registers work when the
//! `out` is made by a `syscall` stub (which clobbers them).
//!
//! Guest addresses passed to a hypercall are guest-virtual: the host translates them through the
//! guest's page tables, page by page, and a guest running in user mode may only name pages that
//! user mode may access.
#![no_std]
#![warn(missing_docs)]

pub mod note;

/// The ABI version this crate describes. A user-mode guest reads the host's from its runtime
/// note, a kernel-mode one from CPUID ([`CPUID_LEAF_INFO`]); either refuses to run if it differs.
pub const ABI_VERSION: u32 = 1;

/// The registers that carry hypercall arguments, in order.
pub const ARGUMENT_REGISTERS: [&str; 6] = ["rdi", "rsi", "r8", "r9", "r10", "r12"];

/// The I/O port of every hypercall. A 32-bit `out` to it makes a hypercall.
pub const HYPERCALL_PORT: u16 = 0x0500;

/// COM1, the legacy serial port mote serves for kernels that know nothing of mote.
pub const COM1_PORT: u16 = 0x03F8;

/// QEMU's isa-debug-exit port: writing `v` ends the VM. mote reads `0x10` as exit code 0 and
/// `0x11` as exit code 1 (so `bootloader_api` test kernels work unchanged); any other value `v`
/// means exit code `v << 1 | 1`, as under QEMU.
pub const DEBUG_EXIT_PORT: u16 = 0x00F4;

/// The debug-exit value that means success (exit code 0).
pub const DEBUG_EXIT_SUCCESS: u32 = 0x10;

/// The debug-exit value that means failure (exit code 1).
pub const DEBUG_EXIT_FAILURE: u32 = 0x11;

/// The exit code a debug-exit value stands for.
pub const fn debug_exit_code(value: u32) -> u32 {
    match value {
        DEBUG_EXIT_SUCCESS => 0,
        DEBUG_EXIT_FAILURE => 1,
        other => (other << 1) | 1,
    }
}

/// The most bytes one `console_write`, `output_write` or `random` call takes. A longer request
/// is cut here: the call returns how many bytes it took and the guest makes another call for the
/// rest.
pub const TRANSFER_MAX: u64 = 1024 * 1024;

/// The most bytes of message and of file name an `abort` carries; longer ones are cut.
pub const ABORT_TEXT_MAX: u64 = 4096;

/// The longest host-function name.
pub const HOST_FUNCTION_NAME_MAX: u64 = 256;

/// The longest name of a timing sample ([`Hypercall::Samples`]), in bytes of UTF-8. A name has
/// at least one byte.
pub const SAMPLE_NAME_MAX: u64 = 64;

/// The most samples one [`Hypercall::Samples`] call hands over.
pub const SAMPLES_PER_CALL_MAX: u64 = 8192;

/// The most distinct sample names one run may report; a call that names one more ends the run.
pub const SAMPLE_NAMES_MAX: u64 = 256;

/// The hypercalls, by number (the value written to [`HYPERCALL_PORT`]).
///
/// Arguments are listed in [`ARGUMENT_REGISTERS`] order: `rdi`, `rsi`, `r8`, `r9`, `r10`, `r12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Hypercall {
    /// Ends the run. Args: exit code (`u32`). Does not return.
    Exit = 0,
    /// Writes console text. Args: address, length. Returns the bytes taken (at most
    /// [`TRANSFER_MAX`]).
    ConsoleWrite = 1,
    /// Ends the run reporting a panic. Args: message address, message length, file address,
    /// file length, line. Does not return. Texts are cut at [`ABORT_TEXT_MAX`] bytes.
    Abort = 2,
    /// Appends to the run's output (the function's result). Args: address, length. Returns the
    /// bytes taken (at most [`TRANSFER_MAX`]).
    OutputWrite = 3,
    /// Returns the host's wall-clock time in nanoseconds since the Unix epoch. No args.
    WallClock = 4,
    /// Fills a buffer with random bytes from the host's `getrandom`. Args: address, length.
    /// Returns the bytes written (at most [`TRANSFER_MAX`]).
    Random = 5,
    /// Calls a function the embedder registered. Args: name address, name length, request
    /// address, request length, response buffer address, response buffer capacity. Writes
    /// `min(response length, capacity)` bytes and returns the full response length: a result
    /// larger than the capacity means the response was cut.
    HostCall = 6,
    /// Marks the end of the guest's initialisation. No args. Returns 0.
    Ready = 7,
    /// Does nothing and returns 0: the cost of a hypercall round trip, for benchmarks.
    Nop = 8,
    /// Ends the run reporting a CPU exception (used by the runtime's exception handlers).
    /// Args: vector, error code, faulting instruction address, CR2. Does not return.
    Exception = 9,
    /// Marks the end of the guest's initialisation and waits for the run's input: mote may
    /// take a snapshot here, and every run restored from it returns from this call. No args.
    /// Returns the run's generation in `rax` (0 in a cold run, 1 and up for runs restored from
    /// a snapshot), [`SEED_BYTES`] fresh random bytes in [`READY_SEED_REGISTERS`], and the
    /// input's length in [`READY_INPUT_LENGTH_REGISTER`]; the input itself is at the start of
    /// the `bootloader_api` ramdisk. See [`RunStart`].
    ReadyForInput = 10,
    /// Hands the host a batch of timing samples of one name. Args: name address, name length
    /// (1 to [`SAMPLE_NAME_MAX`] bytes of UTF-8), address of an array of `u64` TSC tick counts,
    /// how many (at most [`SAMPLES_PER_CALL_MAX`]). Returns how many samples the host took
    /// (all of them). A run may report at most [`SAMPLE_NAMES_MAX`] names and as many samples
    /// as its host allows; the call that would pass either ends the run. Hosts older than this
    /// call answer [`HypercallError::UnknownCall`].
    Samples = 11,
}

impl Hypercall {
    /// Every call, in number order.
    pub const ALL: [Hypercall; 12] = [
        Hypercall::Exit,
        Hypercall::ConsoleWrite,
        Hypercall::Abort,
        Hypercall::OutputWrite,
        Hypercall::WallClock,
        Hypercall::Random,
        Hypercall::HostCall,
        Hypercall::Ready,
        Hypercall::Nop,
        Hypercall::Exception,
        Hypercall::ReadyForInput,
        Hypercall::Samples,
    ];

    /// The call with this number, if there is one.
    pub const fn from_number(number: u32) -> Option<Self> {
        if (number as usize) < Self::ALL.len() {
            Some(Self::ALL[number as usize])
        } else {
            None
        }
    }
}

/// How many bytes of fresh randomness [`Hypercall::ReadyForInput`] returns.
pub const SEED_BYTES: usize = 32;

/// The registers that carry [`Hypercall::ReadyForInput`]'s seed, 8 bytes each, little-endian,
/// in order. They are results of that call only: every other call leaves them as they were.
pub const READY_SEED_REGISTERS: [&str; 4] = ["rdi", "rsi", "r8", "r9"];

/// The register that carries the input's length after [`Hypercall::ReadyForInput`].
pub const READY_INPUT_LENGTH_REGISTER: &str = "r10";

/// What [`Hypercall::ReadyForInput`] tells a guest about the run it is now in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunStart {
    /// 0 in a cold run; in runs restored from a snapshot, a number that grows by one with every
    /// restore of that snapshot.
    pub generation: u64,
    /// Fresh random bytes for this run: every run restored from one snapshot shares the
    /// snapshot's memory, RNG states and address layout included, so a guest reseeds from these.
    pub seed: [u8; SEED_BYTES],
    /// The input's length in bytes. The input is at the start of the `bootloader_api` ramdisk
    /// (`BootInfo::ramdisk_addr`), which a snapshot's guest gets as an empty window of the
    /// snapshot's input capacity.
    pub input_len: u64,
}

impl RunStart {
    /// The registers as the host writes them: `rax`, then [`READY_SEED_REGISTERS`], then
    /// [`READY_INPUT_LENGTH_REGISTER`].
    pub fn to_registers(&self) -> [u64; 6] {
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&self.seed[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        [
            self.generation,
            word(0),
            word(1),
            word(2),
            word(3),
            self.input_len,
        ]
    }

    /// Reads the registers back, as the guest sees them.
    pub fn from_registers(registers: [u64; 6]) -> Self {
        let mut seed = [0u8; SEED_BYTES];
        for (i, word) in registers[1..5].iter().enumerate() {
            seed[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        Self {
            generation: registers[0],
            seed,
            input_len: registers[5],
        }
    }
}

/// Results at or above this value are errors; see [`HypercallError`].
pub const ERROR_BASE: u64 = u64::MAX - 0xFFF;

/// Why a hypercall failed. The guest sees `ERROR_BASE + code` in `rax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum HypercallError {
    /// No hypercall has this number.
    UnknownCall = 1,
    /// A guest address is not mapped for the caller, a buffer to be written is read-only, or a
    /// range wraps around the address space.
    BadAddress = 2,
    /// An argument is out of its range.
    InvalidArgument = 3,
    /// The call was made with an `out` of the wrong width (it must be 32 bits).
    BadAccessWidth = 4,
    /// No host function has this name.
    UnknownFunction = 5,
    /// The host function failed.
    HostFunctionFailed = 6,
}

impl HypercallError {
    const ALL: [HypercallError; 6] = [
        HypercallError::UnknownCall,
        HypercallError::BadAddress,
        HypercallError::InvalidArgument,
        HypercallError::BadAccessWidth,
        HypercallError::UnknownFunction,
        HypercallError::HostFunctionFailed,
    ];

    /// The value the guest receives in `rax`.
    pub const fn to_result(self) -> u64 {
        ERROR_BASE + self as u64
    }

    /// The error a result value carries, if it is one.
    pub const fn from_result(result: u64) -> Option<Self> {
        if result <= ERROR_BASE {
            return None;
        }
        let code = (result - ERROR_BASE) as usize;
        if code <= Self::ALL.len() {
            Some(Self::ALL[code - 1])
        } else {
            None
        }
    }
}

/// CPUID leaf whose `ebx`, `ecx`, `edx` hold [`CPUID_SIGNATURE`] and whose `eax` is the highest
/// hypervisor leaf mote serves.
pub const CPUID_LEAF_SIGNATURE: u32 = 0x4000_0000;

/// CPUID leaf with mote's information: `eax` = [`ABI_VERSION`], `ebx` = feature bits (none yet),
/// `ecx` = TSC frequency in kHz (0 if unknown).
pub const CPUID_LEAF_INFO: u32 = 0x4000_0001;

/// The 12 bytes a guest finds in `ebx`, `ecx`, `edx` (in that order) of
/// [`CPUID_LEAF_SIGNATURE`] when it runs under mote.
pub const CPUID_SIGNATURE: [u8; 12] = *b"MoteMoteMote";

/// Splits [`CPUID_SIGNATURE`] into the `ebx`, `ecx`, `edx` words as CPUID returns them.
pub const fn signature_registers() -> [u32; 3] {
    let s = CPUID_SIGNATURE;
    [
        u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
        u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_and_successes_are_not_errors() {
        for error in HypercallError::ALL {
            assert_eq!(HypercallError::from_result(error.to_result()), Some(error));
        }
        assert_eq!(HypercallError::from_result(0), None);
        assert_eq!(HypercallError::from_result(TRANSFER_MAX), None);
        assert_eq!(HypercallError::from_result(ERROR_BASE), None);
        assert_eq!(HypercallError::from_result(u64::MAX), None);
    }

    #[test]
    fn debug_exit_follows_qemu_except_pass_and_fail() {
        assert_eq!(debug_exit_code(0x10), 0);
        assert_eq!(debug_exit_code(0x11), 1);
        assert_eq!(debug_exit_code(0), 1);
        assert_eq!(debug_exit_code(3), 7);
    }

    #[test]
    fn call_numbers_round_trip() {
        for (number, call) in Hypercall::ALL.iter().enumerate() {
            assert_eq!(*call as usize, number);
            assert_eq!(Hypercall::from_number(number as u32), Some(*call));
        }
        assert_eq!(Hypercall::from_number(Hypercall::ALL.len() as u32), None);
        assert_eq!(Hypercall::from_number(u32::MAX), None);
    }

    #[test]
    fn run_start_round_trips_through_registers() {
        let start = RunStart {
            generation: 7,
            seed: core::array::from_fn(|i| i as u8 * 3 + 1),
            input_len: 1 << 40,
        };
        let registers = start.to_registers();
        assert_eq!(registers[0], 7);
        assert_eq!(registers[5], 1 << 40);
        assert_eq!(registers[1] & 0xFF, 1);
        assert_eq!(RunStart::from_registers(registers), start);
    }

    #[test]
    fn signature_registers_spell_the_signature() {
        let mut bytes = [0u8; 12];
        for (i, word) in signature_registers().iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        assert_eq!(bytes, CPUID_SIGNATURE);
    }
}
