//! Raw hypercalls. See `docs/abi.md`.
//!
//! A hypercall is one 32-bit `out` to mote's port, made directly at any privilege level: from
//! user mode (CPL3, how mote runs a mote-guest kernel) the TSS's I/O bitmap allows it. The
//! alternative, `syscall` into a CPL0 stub that makes the `out`, was measured and fails on
//! kvm_pvm (`docs/decisions.md`), so the runtime carries no such stub.

use mote_abi::{HYPERCALL_PORT, Hypercall, HypercallError, RunStart};

/// The current privilege level.
#[inline(always)]
pub fn cpl() -> u16 {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    cs & 3
}

/// Makes hypercall `call` with an `out` at the current privilege level; returns `rax`.
///
/// # Safety
/// The arguments must be what `call` expects: an address argument must point at memory the
/// guest owns for the call's length, writable if the call writes it.
#[inline(always)]
pub unsafe fn raw(call: u32, args: [u64; 6]) -> u64 {
    let result: u64;
    // SAFETY: an `out` to mote's port; the host reads the argument registers and writes rax,
    // nothing else. The caller vouches for what the arguments point at.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") HYPERCALL_PORT,
            inlateout("rax") u64::from(call) => result,
            in("rdi") args[0],
            in("rsi") args[1],
            in("r8") args[2],
            in("r9") args[3],
            in("r10") args[4],
            in("r12") args[5],
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

fn call(call: Hypercall, args: [u64; 6]) -> Result<u64, HypercallError> {
    // SAFETY: every caller in this module passes addresses of live buffers it owns.
    check(unsafe { raw(call as u32, args) })
}

/// Writes console text; returns how many bytes the host took.
pub fn console_write(bytes: &[u8]) -> Result<usize, HypercallError> {
    let args = [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0];
    call(Hypercall::ConsoleWrite, args).map(|n| n as usize)
}

/// Appends to the run's output; returns how many bytes the host took.
pub fn output_write(bytes: &[u8]) -> Result<usize, HypercallError> {
    let args = [bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0, 0];
    call(Hypercall::OutputWrite, args).map(|n| n as usize)
}

/// Fills `buffer` (a prefix of it, for very long buffers) with random bytes from the host;
/// returns how many.
pub fn random(buffer: &mut [u8]) -> Result<usize, HypercallError> {
    let args = [buffer.as_mut_ptr() as u64, buffer.len() as u64, 0, 0, 0, 0];
    call(Hypercall::Random, args).map(|n| n as usize)
}

/// The host's wall-clock time in nanoseconds since the Unix epoch.
pub fn wall_clock_ns() -> u64 {
    // The call has no failure mode; a host error would read as a time far in the future.
    call(Hypercall::WallClock, [0; 6]).unwrap_or(u64::MAX)
}

/// Calls host function `name`; writes at most `response.len()` bytes of its answer into
/// `response` and returns the answer's full length.
pub fn host_call(name: &str, request: &[u8], response: &mut [u8]) -> Result<usize, HypercallError> {
    let args = [
        name.as_ptr() as u64,
        name.len() as u64,
        request.as_ptr() as u64,
        request.len() as u64,
        response.as_mut_ptr() as u64,
        response.len() as u64,
    ];
    call(Hypercall::HostCall, args).map(|n| n as usize)
}

/// Hands the host timing samples of one name: `name` is 1 to [`mote_abi::SAMPLE_NAME_MAX`]
/// bytes, `cycles` at most [`mote_abi::SAMPLES_PER_CALL_MAX`] TSC tick counts. Returns how many
/// the host took (all of them). [`bench`](crate::bench) buffers samples and makes this call.
pub fn samples(name: &str, cycles: &[u64]) -> Result<u64, HypercallError> {
    let args = [
        name.as_ptr() as u64,
        name.len() as u64,
        cycles.as_ptr() as u64,
        cycles.len() as u64,
        0,
        0,
    ];
    call(Hypercall::Samples, args)
}

/// Tells the host the guest finished initialising (the bare marker of ABI v1; the runtime
/// makes [`ready_for_input`] instead, which also counts).
pub fn ready() {
    let _ = call(Hypercall::Ready, [0; 6]);
}

/// Tells the host the guest is ready for its input, and returns what the run starts with. The
/// host may snapshot the guest here: then this returns once in every run restored from the
/// snapshot, each time with a new generation, new seed and new input length.
pub fn ready_for_input() -> RunStart {
    let (rax, rdi, rsi, r8, r9, r10): (u64, u64, u64, u64, u64, u64);
    // SAFETY: an `out` to mote's port; the host writes rax and the five result registers
    // (mote_abi::READY_SEED_REGISTERS, READY_INPUT_LENGTH_REGISTER), which are declared as
    // outputs here, and nothing else.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") HYPERCALL_PORT,
            inlateout("rax") u64::from(Hypercall::ReadyForInput as u32) => rax,
            inlateout("rdi") 0u64 => rdi,
            inlateout("rsi") 0u64 => rsi,
            inlateout("r8") 0u64 => r8,
            inlateout("r9") 0u64 => r9,
            inlateout("r10") 0u64 => r10,
            in("r12") 0u64,
            options(nostack, preserves_flags),
        );
    }
    RunStart::from_registers([rax, rdi, rsi, r8, r9, r10])
}

/// A hypercall that does nothing: the cost of a round trip.
pub fn nop() {
    let _ = call(Hypercall::Nop, [0; 6]);
}

/// Ends the run reporting a panic.
pub fn abort(message: &str, file: &str, line: u32) -> ! {
    let args = [
        message.as_ptr() as u64,
        message.len() as u64,
        file.as_ptr() as u64,
        file.len() as u64,
        u64::from(line),
        0,
    ];
    let _ = call(Hypercall::Abort, args);
    halt_forever()
}

/// Ends the run with `code`.
pub fn exit(code: u32) -> ! {
    let _ = call(Hypercall::Exit, [u64::from(code), 0, 0, 0, 0, 0]);
    halt_forever()
}

/// The host never resumes a guest after `exit` or `abort`; if one did, spin rather than run on.
fn halt_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}
