//! Raw hypercalls: one `out` to mote's hypercall port each. See `docs/abi.md`.

use mote_abi::{HYPERCALL_PORT, Hypercall, HypercallError};

/// Makes hypercall `call` with arguments in `rdi` and `rsi`; returns `rax`.
///
/// # Safety
/// The arguments must be what `call` expects: an address argument must point at memory the
/// guest owns for the call's length.
#[inline(always)]
pub unsafe fn raw(call: u32, arg0: u64, arg1: u64) -> u64 {
    let result: u64;
    // SAFETY: an `out` to mote's port; the host reads rdi/rsi and writes rax, nothing else. The
    // caller vouches for what the arguments point at.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") HYPERCALL_PORT,
            inlateout("rax") u64::from(call) => result,
            in("rdi") arg0,
            in("rsi") arg1,
            options(nostack, preserves_flags),
        );
    }
    result
}

/// Splits a result into its success value or its error.
pub fn check(result: u64) -> Result<u64, HypercallError> {
    match HypercallError::from_result(result) {
        Some(error) => Err(error),
        None => Ok(result),
    }
}

/// Writes console text; returns how many bytes the host took.
pub fn console_write(bytes: &[u8]) -> Result<usize, HypercallError> {
    // SAFETY: the address and length describe `bytes`, which lives for the call.
    let result = unsafe {
        raw(
            Hypercall::ConsoleWrite as u32,
            bytes.as_ptr() as u64,
            bytes.len() as u64,
        )
    };
    check(result).map(|n| n as usize)
}

/// Ends the run with `code`.
pub fn exit(code: u32) -> ! {
    // SAFETY: `exit` takes a plain number.
    unsafe {
        raw(Hypercall::Exit as u32, u64::from(code), 0);
    }
    // The host never resumes a guest after `exit`; if one did, spin rather than run on.
    loop {
        core::hint::spin_loop();
    }
}
