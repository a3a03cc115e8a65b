//! The mote hypercall contract, shared by the host and every guest.
//!
//! This crate is the single source of the numbers and layouts that both sides of a mote VM must
//! agree on: the I/O ports, the hypercall numbers, their argument registers, their error codes
//! and the CPUID leaves a guest uses to discover mote. `docs/abi.md` explains the contract in
//! prose; this crate is its machine-readable half.
//!
//! # Calling convention (ABI version 0)
//!
//! A guest makes a hypercall with one 32-bit `out` to [`HYPERCALL_PORT`]: the value written
//! (`eax`) is the call number ([`Hypercall`]). Arguments travel in `rdi`, `rsi` and `rdx`; the
//! result comes back in `rax`. A result at or above [`ERROR_BASE`] is an error
//! ([`HypercallError`]); anything below is the call's success value.
//!
//! Guest addresses passed to a hypercall are guest-virtual: the host translates them through the
//! guest's page tables, page by page.
#![no_std]
#![warn(missing_docs)]

/// The ABI version this crate describes. A guest reads the host's from CPUID
/// ([`CPUID_LEAF_VERSION`]) and refuses to run if the major part differs.
pub const ABI_VERSION: u32 = 0;

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

/// The most bytes one `console_write` takes. A longer write is cut here: the call returns how
/// many bytes it took and the guest writes the rest in another call.
pub const CONSOLE_WRITE_MAX: u64 = 64 * 1024;

/// The hypercalls of this ABI version, by number (the value written to [`HYPERCALL_PORT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Hypercall {
    /// Ends the run. `rdi`: the exit code (`u32`). Does not return.
    Exit = 0,
    /// Writes console text. `rdi`: guest-virtual address, `rsi`: length in bytes. Returns the
    /// number of bytes taken (at most [`CONSOLE_WRITE_MAX`]).
    ConsoleWrite = 1,
}

impl Hypercall {
    /// The call with this number, if there is one.
    pub const fn from_number(number: u32) -> Option<Self> {
        match number {
            0 => Some(Self::Exit),
            1 => Some(Self::ConsoleWrite),
            _ => None,
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
    /// A guest address is not mapped, or a range leaves guest memory.
    BadAddress = 2,
    /// An argument is out of its range.
    InvalidArgument = 3,
    /// The call was made with an `out` of the wrong width (it must be 32 bits).
    BadAccessWidth = 4,
}

impl HypercallError {
    /// The value the guest receives in `rax`.
    pub const fn to_result(self) -> u64 {
        ERROR_BASE + self as u64
    }

    /// The error a result value carries, if it is one.
    pub const fn from_result(result: u64) -> Option<Self> {
        if result < ERROR_BASE {
            return None;
        }
        match result - ERROR_BASE {
            1 => Some(Self::UnknownCall),
            2 => Some(Self::BadAddress),
            3 => Some(Self::InvalidArgument),
            4 => Some(Self::BadAccessWidth),
            _ => None,
        }
    }
}

/// CPUID leaf whose `ebx`, `ecx`, `edx` hold [`CPUID_SIGNATURE`] and whose `eax` is the highest
/// hypervisor leaf mote serves.
pub const CPUID_LEAF_SIGNATURE: u32 = 0x4000_0000;

/// CPUID leaf whose `eax` holds [`ABI_VERSION`].
pub const CPUID_LEAF_VERSION: u32 = 0x4000_0001;

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
        for error in [
            HypercallError::UnknownCall,
            HypercallError::BadAddress,
            HypercallError::InvalidArgument,
            HypercallError::BadAccessWidth,
        ] {
            assert_eq!(HypercallError::from_result(error.to_result()), Some(error));
        }
        assert_eq!(HypercallError::from_result(0), None);
        assert_eq!(HypercallError::from_result(CONSOLE_WRITE_MAX), None);
        assert_eq!(HypercallError::from_result(ERROR_BASE), None);
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
        for call in [Hypercall::Exit, Hypercall::ConsoleWrite] {
            assert_eq!(Hypercall::from_number(call as u32), Some(call));
        }
        assert_eq!(Hypercall::from_number(99), None);
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
