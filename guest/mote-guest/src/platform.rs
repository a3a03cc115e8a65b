//! Are we under mote? Decided once at start-up; it says where console text and exit codes go.
//!
//! Started at CPL3, the guest was booted by mote (no other loader enters a `bootloader_api`
//! kernel in user mode) and mote wrote its ABI version into the runtime note. Started at CPL0,
//! the guest looks for mote's CPUID signature: CPUID is reliable there, but not at CPL3, where
//! some hypervisors run it natively.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{exceptions, hypercall};

static UNDER_MOTE: AtomicBool = AtomicBool::new(false);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// Finds out whether mote runs this guest, and what it says about the machine.
pub(crate) fn detect() {
    let (host_abi, note_tsc_khz) = exceptions::host_info();
    let (found, tsc_khz) = if hypercall::cpl() == 3 {
        (host_abi != 0, note_tsc_khz)
    } else {
        let leaf = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_SIGNATURE);
        if [leaf.ebx, leaf.ecx, leaf.edx] == mote_abi::signature_registers() {
            let info = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_INFO);
            (true, u64::from(info.ecx))
        } else {
            (false, 0)
        }
    };
    UNDER_MOTE.store(found, Ordering::Relaxed);
    TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
}

/// Whether the guest runs under mote.
pub fn under_mote() -> bool {
    UNDER_MOTE.load(Ordering::Relaxed)
}

/// The TSC frequency mote reported, in kHz (0 if unknown).
pub(crate) fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}
