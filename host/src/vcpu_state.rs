//! A vCPU's whole architectural state, as KVM exposes it: captured at a snapshot point and put
//! back into every VM restored from the snapshot, and into a pooled VM before each run.
//!
//! "Whole" means everything a guest can change, at any privilege level: general and special
//! registers, the XSAVE area (x87, SSE, AVX, ...) and the XCRs, every MSR KVM can save (not only
//! those mote sets: a kernel-mode guest may write any), pending events, the MP state and the
//! debug registers. There is no local APIC to save: mote creates no in-kernel irqchip.

use kvm_bindings::{
    Msrs, kvm_debugregs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuFd};

use crate::Error;

/// The most bytes of XSAVE state mote saves: the legacy `kvm_xsave` area. A host whose XSAVE
/// state is larger (AMX tiles) gets a clear refusal rather than a silently cut snapshot.
pub(crate) const XSAVE_BYTES: usize = 4096;

/// `IA32_TSC`.
pub(crate) const MSR_IA32_TSC: u32 = 0x10;

/// CR4's page global enable bit.
const CR4_PGE: u64 = 1 << 7;

/// Every state KVM gives for one vCPU.
pub(crate) struct SavedVcpu {
    pub(crate) regs: kvm_regs,
    pub(crate) sregs: kvm_sregs,
    pub(crate) xcrs: kvm_xcrs,
    pub(crate) xsave: kvm_xsave,
    pub(crate) msrs: Msrs,
    pub(crate) events: kvm_vcpu_events,
    pub(crate) mp_state: kvm_mp_state,
    pub(crate) debugregs: kvm_debugregs,
}

impl std::fmt::Debug for SavedVcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedVcpu")
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("cr3", &format_args!("{:#x}", self.sregs.cr3))
            .field("msrs", &self.msrs.as_slice().len())
            .finish_non_exhaustive()
    }
}

/// Architectural MSRs a kernel-mode guest can write that KVM may leave out of
/// `KVM_GET_MSR_INDEX_LIST` (measured on kvm_pvm: `IA32_TSC_AUX` and `IA32_SPEC_CTRL` read and
/// write but are not listed), besides those the special registers carry (EFER, FS and GS base,
/// APIC base). The MTRRs: default type, fixed ranges, and eight variable pairs.
const UNLISTED_MSRS: &[u32] = &[
    0xC000_0103, // IA32_TSC_AUX
    0x48,        // IA32_SPEC_CTRL
    0x2FF,       // IA32_MTRR_DEF_TYPE
    0x250,       // IA32_MTRR_FIX64K_00000
    0x258,       // IA32_MTRR_FIX16K_80000
    0x259,       // IA32_MTRR_FIX16K_A0000
    0x268,
    0x269,
    0x26A,
    0x26B,
    0x26C,
    0x26D,
    0x26E,
    0x26F, // IA32_MTRR_FIX4K_*
    0x200,
    0x201,
    0x202,
    0x203,
    0x204,
    0x205,
    0x206,
    0x207, // IA32_MTRR_PHYSBASE/MASK 0-3
    0x208,
    0x209,
    0x20A,
    0x20B,
    0x20C,
    0x20D,
    0x20E,
    0x20F, // IA32_MTRR_PHYSBASE/MASK 4-7
];

/// The MSRs a snapshot saves: those KVM lists as saveable, and the [`UNLISTED_MSRS`], that a
/// vCPU of this host really reads and takes back (measured on kvm_pvm: without an in-kernel
/// irqchip, KVM lists `MSR_KVM_ASYNC_PF_INT` but refuses to set it). Learnt once, from the first
/// vCPU snapshotted: each MSR is written back with the value just read from it, which changes
/// nothing.
pub(crate) fn saveable_msrs(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<u32>, Error> {
    let listed = kvm
        .get_msr_index_list()
        .map_err(|e| Error::kvm("KVM_GET_MSR_INDEX_LIST", e))?;
    let mut candidates = listed.as_slice().to_vec();
    for &index in UNLISTED_MSRS {
        if !candidates.contains(&index) {
            candidates.push(index);
        }
    }
    let mut saveable = Vec::with_capacity(candidates.len());
    // KVM_GET_MSRS and KVM_SET_MSRS stop at the first MSR they refuse: try each one alone.
    for &index in &candidates {
        let mut one = msrs_for(&[index])?;
        if vcpu.get_msrs(&mut one).is_ok_and(|read| read == 1)
            && vcpu.set_msrs(&one).is_ok_and(|written| written == 1)
        {
            saveable.push(index);
        }
    }
    Ok(saveable)
}

fn msrs_for(indices: &[u32]) -> Result<Msrs, Error> {
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| Error::Internal("too many MSRs".into()))
}

impl SavedVcpu {
    /// Reads the state of `vcpu`, which must not be inside `KVM_RUN` and must have no
    /// instruction left to complete (see [`settle`]).
    pub(crate) fn capture(vcpu: &VcpuFd, msr_indices: &[u32]) -> Result<Self, Error> {
        let mp_state = vcpu
            .get_mp_state()
            .map_err(|e| Error::kvm("KVM_GET_MP_STATE", e))?;
        let regs = vcpu.get_regs().map_err(|e| Error::kvm("KVM_GET_REGS", e))?;
        let sregs = vcpu
            .get_sregs()
            .map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
        let xsave = vcpu
            .get_xsave()
            .map_err(|e| Error::kvm("KVM_GET_XSAVE", e))?;
        let xcrs = vcpu.get_xcrs().map_err(|e| Error::kvm("KVM_GET_XCRS", e))?;
        let debugregs = vcpu
            .get_debug_regs()
            .map_err(|e| Error::kvm("KVM_GET_DEBUGREGS", e))?;
        let mut msrs = msrs_for(msr_indices)?;
        let read = vcpu
            .get_msrs(&mut msrs)
            .map_err(|e| Error::kvm("KVM_GET_MSRS", e))?;
        if read != msr_indices.len() {
            return Err(Error::Internal(format!(
                "KVM read {read} of the {} saveable MSRs",
                msr_indices.len()
            )));
        }
        let events = vcpu
            .get_vcpu_events()
            .map_err(|e| Error::kvm("KVM_GET_VCPU_EVENTS", e))?;
        Ok(Self {
            regs,
            sregs,
            xcrs,
            xsave,
            msrs,
            events,
            mp_state,
            debugregs,
        })
    }

    /// Puts the saved state into `vcpu`, with `regs` in place of the saved general registers.
    /// `fresh` says the vCPU was just created (rather than run since the snapshot's state was
    /// last put into it).
    ///
    /// The general and special registers and the pending events go through `kvm_run`'s synced
    /// registers, which KVM loads at the next `KVM_RUN`: every vCPU ioctl costs about 4.4 µs on
    /// kvm_pvm however little it moves (measured), and these three would be three more.
    ///
    /// A vCPU that ran since must also forget every translation it cached: a pool puts memory
    /// back behind KVM's back (see `pool::reset_vm`), page tables included, so a translation
    /// the last run built from a page table entry it rewrote would outlive the entry. So the
    /// special registers are loaded first with CR4.PGE flipped: a change of CR4.PGE flushes
    /// every TLB entry, global ones included (Intel SDM vol. 3, 4.10.4.1), and KVM rebuilds a
    /// vCPU's MMU context whenever its CR4 changes; the synced load then puts CR4 back, which
    /// does it again.
    pub(crate) fn restore(
        &self,
        vcpu: &mut VcpuFd,
        regs: &kvm_regs,
        fresh: bool,
    ) -> Result<(), Error> {
        if fresh {
            // Without an in-kernel irqchip nothing can change the MP state (HLT exits to mote
            // instead of halting the vCPU, and there is no INIT or SIPI), so a vCPU keeps the
            // state it was given at creation.
            vcpu.set_mp_state(self.mp_state)
                .map_err(|e| Error::kvm("KVM_SET_MP_STATE", e))?;
        } else {
            let flipped = kvm_sregs {
                cr4: self.sregs.cr4 ^ CR4_PGE,
                ..self.sregs
            };
            vcpu.set_sregs(&flipped)
                .map_err(|e| Error::kvm("KVM_SET_SREGS", e))?;
        }
        // SAFETY: `xsave` is a whole `kvm_xsave`, 4 KiB, wherever it came from (a vCPU, or a
        // snapshot file, which holds exactly that many bytes). KVM_SET_XSAVE reads as many bytes
        // as this VM's XSAVE state takes (KVM_CAP_XSAVE2), and every restore of a snapshot
        // comes after `check_xsave_size` found that at most 4 KiB on this host (when it was
        // taken, and before its first restore here), so KVM reads no more than the buffer holds.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(|e| Error::kvm("KVM_SET_XSAVE", e))?;
        vcpu.set_xcrs(&self.xcrs)
            .map_err(|e| Error::kvm("KVM_SET_XCRS", e))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(|e| Error::kvm("KVM_SET_DEBUGREGS", e))?;
        let written = vcpu
            .set_msrs(&self.msrs)
            .map_err(|e| Error::kvm("KVM_SET_MSRS", e))?;
        let expected = self.msrs.as_slice().len();
        if written != expected {
            let index = self.msrs.as_slice().get(written).map_or(0, |e| e.index);
            return Err(Error::Incompatible(format!(
                "this host refuses MSR {index:#x}, which the snapshot holds"
            )));
        }
        let synced = vcpu.sync_regs_mut();
        synced.regs = *regs;
        synced.sregs = self.sregs;
        synced.events = self.events;
        for reg in [
            SyncReg::Register,
            SyncReg::SystemRegister,
            SyncReg::VcpuEvents,
        ] {
            vcpu.set_sync_dirty_reg(reg);
        }
        Ok(())
    }

    /// The saved value of MSR `index`, if it was saved.
    pub(crate) fn msr(&self, index: u32) -> Option<u64> {
        self.msrs
            .as_slice()
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.data)
    }
}

/// Refuses hosts whose XSAVE state does not fit the legacy area mote saves.
pub(crate) fn check_xsave_size(vm: &kvm_ioctls::VmFd) -> Result<(), Error> {
    let size = vm.check_extension_int(kvm_ioctls::Cap::Xsave2);
    // 0: KVM predates KVM_CAP_XSAVE2, and its XSAVE state is the legacy 4 KiB area.
    if size > XSAVE_BYTES as i32 {
        return Err(Error::Unsupported(format!(
            "this host's XSAVE state is {size} bytes (AMX tiles?); mote snapshots only the \
             first {XSAVE_BYTES}"
        )));
    }
    Ok(())
}

/// Lets KVM finish an instruction it is still completing, so that the state read or written
/// next is the one the guest would see: after an `out` exit, KVM moves RIP past the `out` only
/// on the next `KVM_RUN` on some hosts; after an MMIO read it still has to deliver the data.
/// A `KVM_RUN` with `immediate_exit` set does that and returns without running the guest, as
/// the KVM API asks before saving state.
///
/// Returns false if the vCPU would not settle (KVM asked for another device access instead).
pub(crate) fn settle(vcpu: &mut VcpuFd) -> Result<bool, Error> {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ()).map_err(|e| e.errno());
    vcpu.set_kvm_immediate_exit(0);
    match result {
        Err(libc::EINTR) | Err(libc::EAGAIN) => Ok(true),
        // An exit: KVM needs another round with a device before the instruction completes.
        Ok(()) => Ok(false),
        Err(errno) => Err(Error::kvm("KVM_RUN", kvm_ioctls::Error::new(errno))),
    }
}
