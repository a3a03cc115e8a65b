//! Makes hostile hypercalls and checks that each gets its documented error code and that the
//! host keeps serving afterwards. Exits 0 only if every answer was right.
#![no_std]
#![no_main]

use mote_abi::{HYPERCALL_PORT, Hypercall, HypercallError};
use mote_guest::hypercall::{check, console_write, raw};
use mote_guest::println;

mote_guest::entry!(main);

fn expect(what: &str, got: Result<u64, HypercallError>, want: Result<u64, HypercallError>) -> bool {
    let ok = got == want;
    println!("{what}: {got:?} {}", if ok { "ok" } else { "WRONG" });
    ok
}

/// A hypercall made with a one-byte `out`, which the ABI forbids.
fn narrow_out(call: u32) -> u64 {
    let result: u64;
    // SAFETY: an `out` to mote's port, which answers in rax.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") HYPERCALL_PORT,
            inlateout("rax") u64::from(call) => result, options(nostack));
    }
    result
}

static READ_ONLY: [u8; 16] = [7; 16];

fn main() -> u32 {
    use HypercallError::*;
    let write = Hypercall::ConsoleWrite as u32;
    let random = Hypercall::Random as u32;
    let text = b"x";
    let args = |a: u64, b: u64| [a, b, 0, 0, 0, 0];
    let mut all_ok = true;
    // SAFETY (every raw call below): the host must refuse these without touching the memory.
    unsafe {
        all_ok &= expect("unknown call", check(raw(0xDEAD, [0; 6])), Err(UnknownCall));
        all_ok &= expect(
            "unmapped address",
            check(raw(write, args(0x10, 4))),
            Err(BadAddress),
        );
        all_ok &= expect(
            "non-canonical address",
            check(raw(write, args(0x8000_0000_0000_0000, 4))),
            Err(BadAddress),
        );
        all_ok &= expect(
            "length wrapping the address space",
            check(raw(write, args(text.as_ptr() as u64, u64::MAX))),
            Err(BadAddress),
        );
        all_ok &= expect(
            "length past the end of the mapping",
            check(raw(write, args(text.as_ptr() as u64, 1 << 40))),
            Err(BadAddress),
        );
        all_ok &= expect(
            "random bytes into read-only memory",
            check(raw(random, args(READ_ONLY.as_ptr() as u64, 8))),
            Err(BadAddress),
        );
        all_ok &= expect(
            "exit code that is not a u32",
            check(raw(Hypercall::Exit as u32, args(1 << 40, 0))),
            Err(InvalidArgument),
        );
        let name = "no-such-function";
        let host_call = [name.as_ptr() as u64, name.len() as u64, 0, 0, 0, 0];
        all_ok &= expect(
            "unknown host function",
            check(raw(Hypercall::HostCall as u32, host_call)),
            Err(UnknownFunction),
        );
    }
    all_ok &= expect(
        "a one-byte out on the hypercall port",
        check(narrow_out(Hypercall::Nop as u32)),
        Err(BadAccessWidth),
    );
    if mote_guest::hypercall::cpl() == 3 {
        // The GDT page is mapped for the kernel only: a user-mode guest may not name it.
        let gdt = x86_64::instructions::tables::sgdt();
        // SAFETY: as above.
        let got = unsafe { check(raw(write, args(gdt.base.as_u64(), 8))) };
        all_ok &= expect(
            "supervisor-only memory from user mode",
            got,
            Err(BadAddress),
        );
    }
    all_ok &= expect(
        "a good write after all that",
        console_write(b"still served\n").map(|n| n as u64),
        Ok(13),
    );
    if all_ok { 0 } else { 1 }
}
