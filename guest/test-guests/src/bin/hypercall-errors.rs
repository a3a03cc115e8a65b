//! Makes hostile hypercalls and checks that each gets its documented error code and that the
//! host keeps serving afterwards. Exits 0 only if every answer was right.
#![no_std]
#![no_main]

use mote_abi::{Hypercall, HypercallError};
use mote_guest::hypercall::{check, console_write, raw};
use mote_guest::println;

mote_guest::entry!(main);

fn expect(what: &str, got: Result<u64, HypercallError>, want: Result<u64, HypercallError>) -> bool {
    let ok = got == want;
    println!("{what}: {got:?} {}", if ok { "ok" } else { "WRONG" });
    ok
}

fn main() -> u32 {
    let write = Hypercall::ConsoleWrite as u32;
    let mut all_ok = true;
    // SAFETY (all raw calls below): the host must reject these, never touch the addresses.
    unsafe {
        all_ok &= expect(
            "unknown call",
            check(raw(0xDEAD, 0, 0)),
            Err(HypercallError::UnknownCall),
        );
        all_ok &= expect(
            "unmapped address",
            check(raw(write, 0x10, 4)),
            Err(HypercallError::BadAddress),
        );
        all_ok &= expect(
            "non-canonical address",
            check(raw(write, 0x8000_0000_0000_0000, 4)),
            Err(HypercallError::BadAddress),
        );
        let text = b"x";
        all_ok &= expect(
            "length overflowing the address space",
            check(raw(write, text.as_ptr() as u64, u64::MAX)),
            Err(HypercallError::BadAddress),
        );
    }
    all_ok &= expect(
        "a good write after all that",
        console_write(b"still served\n").map(|n| n as u64),
        Ok(13),
    );
    if all_ok { 0 } else { 1 }
}
