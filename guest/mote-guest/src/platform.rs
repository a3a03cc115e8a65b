//! Are we under mote? One CPUID at start-up decides where console text and exit codes go.

use core::sync::atomic::{AtomicBool, Ordering};

static UNDER_MOTE: AtomicBool = AtomicBool::new(false);

/// Looks for mote's CPUID signature and remembers the answer.
pub(crate) fn detect() {
    // The hypervisor range of leaves is reserved: without a hypervisor it returns data that
    // will not match.
    let leaf = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_SIGNATURE);
    let found = [leaf.ebx, leaf.ecx, leaf.edx] == mote_abi::signature_registers();
    UNDER_MOTE.store(found, Ordering::Relaxed);
}

/// Whether the guest runs under mote.
pub(crate) fn under_mote() -> bool {
    UNDER_MOTE.load(Ordering::Relaxed)
}
