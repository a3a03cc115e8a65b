//! Reports what CPUID says to a user-mode guest: `leaf.subleaf=eax ebx ecx edx` lines for the
//! leaves mote sets or filters, so the host can check what a guest sees.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    let mut report = String::new();
    for (leaf, subleaf) in [
        (0u32, 0u32),
        (1, 0),
        (7, 0),
        (0xA, 0),
        (0x4000_0000, 0),
        (0x4000_0001, 0),
        (0x8000_0001, 0),
    ] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        report.push_str(&format!(
            "{leaf:#x}.{subleaf}={:#x} {:#x} {:#x} {:#x}\n",
            r.eax, r.ebx, r.ecx, r.edx
        ));
    }
    mote_guest::output(report.as_bytes())
}
