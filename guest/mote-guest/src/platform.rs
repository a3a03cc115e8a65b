//! Are we under mote? Decided once at start-up; it says where console text and exit codes go.
//!
//! Started at CPL3, the guest was booted by mote (no other loader enters a `bootloader_api`
//! kernel in user mode) and mote wrote its ABI version into the runtime note. Started at CPL0,
//! the guest looks for mote's CPUID signature: CPUID is reliable there, but not at CPL3, where
//! some hypervisors run it natively.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::{exceptions, hypercall};

static UNDER_MOTE: AtomicBool = AtomicBool::new(false);
static HOST_ABI_VERSION: AtomicU32 = AtomicU32::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static SNAPSHOT_BOOT: AtomicBool = AtomicBool::new(false);

/// Finds out whether mote runs this guest, and what it says about the machine.
pub(crate) fn detect() {
    let (host_abi, host_flags, note_tsc_khz) = exceptions::host_info();
    // At CPL0 the guest cannot tell a cold run from a snapshot boot: it always makes the call.
    let snapshot_boot =
        hypercall::cpl() != 3 || host_flags & mote_abi::note::HOST_FLAG_SNAPSHOT != 0;
    SNAPSHOT_BOOT.store(snapshot_boot, Ordering::Relaxed);
    let (abi, tsc_khz) = if hypercall::cpl() == 3 {
        (host_abi, note_tsc_khz)
    } else {
        let leaf = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_SIGNATURE);
        if [leaf.ebx, leaf.ecx, leaf.edx] == mote_abi::signature_registers() {
            let info = core::arch::x86_64::__cpuid(mote_abi::CPUID_LEAF_INFO);
            (info.eax, u64::from(info.ecx))
        } else {
            (0, 0)
        }
    };
    UNDER_MOTE.store(abi != 0, Ordering::Relaxed);
    HOST_ABI_VERSION.store(abi, Ordering::Relaxed);
    TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
}

/// Whether the guest runs under mote.
pub fn under_mote() -> bool {
    UNDER_MOTE.load(Ordering::Relaxed)
}

/// Whether mote may snapshot this boot, so that the guest must ask for its input
/// (`ready_for_input`) rather than find it in the ramdisk.
pub(crate) fn snapshot_boot() -> bool {
    SNAPSHOT_BOOT.load(Ordering::Relaxed)
}

/// The hypercall ABI version mote reported (0 when not under mote).
pub(crate) fn host_abi_version() -> u32 {
    HOST_ABI_VERSION.load(Ordering::Relaxed)
}

/// The TSC frequency mote reported, in kHz (0 if unknown).
pub(crate) fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}
