//! One VM: create it with its vCPU and memory, and boot a guest image into it.

use std::time::Instant;

use kvm_bindings::{
    CpuId, Msrs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region,
};
use kvm_ioctls::{SyncReg, VcpuFd, VmFd};
use mote_boot::{GuardPage, LoadOptions, Segment, VcpuState, msr};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::ram::{GuestRam, HostWrites};
use crate::{Error, GuestImage, RunConfig, Shared, Stats};

/// Where KVM may put the three pages it needs for real-mode emulation on Intel (`KVM_SET_TSS_ADDR`):
/// just below 4 GiB, above any guest RAM mote allows.
const KVM_TSS_ADDRESS: usize = 0xFFFB_D000;

/// CPUID leaf 1, ECX: VMX (Intel's virtualization).
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CPUID leaf 0x8000_0001, ECX: SVM (AMD's virtualization).
const CPUID_8000_0001_ECX_SVM: u32 = 1 << 2;

/// The CPUID table every vCPU gets: what KVM supports (`supported`), with mote's hypervisor
/// leaves in place of KVM's own (or no hypervisor leaves at all, without `mote_leaves`).
/// `tsc_khz` goes into the info leaf so the guest can time itself without exits.
///
/// KVM fills the APIC ID fields of the supported table with those of the host CPU the ioctl ran
/// on (measured: leaf 1 EBX bits 31:24 and leaf 0xB EDX read 0 or 1 depending on the CPU), so they
/// are set to the one vCPU's, 0: a guest sees the same table on every run, and a snapshot taken
/// in one process matches the table of another.
fn guest_cpuid(supported: &CpuId, tsc_khz: u32, mote_leaves: bool) -> Result<CpuId, Error> {
    let mut entries: Vec<_> = supported
        .as_slice()
        .iter()
        .filter(|e| !(0x4000_0000..0x5000_0000).contains(&e.function))
        .copied()
        .collect();
    for entry in &mut entries {
        match entry.function {
            // The initial APIC ID; and VMX: no nested virtualization (a kernel-mode guest
            // could otherwise run VMXON, and the nested state is not what snapshots hold).
            0x1 => {
                entry.ebx &= 0x00FF_FFFF;
                entry.ecx &= !CPUID_1_ECX_VMX;
            }
            0xB | 0x1F => entry.edx = 0,
            // No performance-monitoring unit: its counters and MSRs are not what snapshots hold.
            0xA => (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0),
            0x8000_0001 => entry.ecx &= !CPUID_8000_0001_ECX_SVM,
            _ => {}
        }
    }
    let [ebx, ecx, edx] = mote_abi::signature_registers();
    let leaf = |function, eax, ebx, ecx, edx| kvm_bindings::kvm_cpuid_entry2 {
        function,
        eax,
        ebx,
        ecx,
        edx,
        ..Default::default()
    };
    if mote_leaves {
        entries.push(leaf(
            mote_abi::CPUID_LEAF_SIGNATURE,
            mote_abi::CPUID_LEAF_INFO,
            ebx,
            ecx,
            edx,
        ));
        entries.push(leaf(
            mote_abi::CPUID_LEAF_INFO,
            mote_abi::ABI_VERSION,
            0,
            tsc_khz,
            0,
        ));
    }
    CpuId::from_entries(&entries).map_err(|_| Error::Internal("too many CPUID entries".into()))
}

/// What every vCPU of this machine gets, learnt from the first one: the TSC frequency and the
/// CPUID tables that carry it.
pub(crate) struct MachineInfo {
    /// The TSC frequency KVM gives its vCPUs, in kHz (0 if KVM cannot say).
    pub tsc_khz: u32,
    /// With mote's hypervisor leaves.
    pub mote_cpuid: CpuId,
    /// Without them, for a plain boot that should not find mote.
    pub plain_cpuid: CpuId,
}

impl MachineInfo {
    pub(crate) fn new(supported: &CpuId, vcpu: &VcpuFd) -> Result<Self, Error> {
        let tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
        Ok(Self {
            tsc_khz,
            mote_cpuid: guest_cpuid(supported, tsc_khz, true)?,
            plain_cpuid: guest_cpuid(supported, tsc_khz, false)?,
        })
    }

    /// The CPUID table of a guest booted plain or not.
    pub(crate) fn cpuid(&self, plain: bool) -> &CpuId {
        if plain {
            &self.plain_cpuid
        } else {
            &self.mote_cpuid
        }
    }
}

/// A VM with its one vCPU and its memory.
pub(crate) struct Vm {
    // Field order is drop order: the vCPU goes before the VM, the VM before its memory.
    pub(crate) vcpu: VcpuFd,
    pub(crate) fd: VmFd,
    pub(crate) ram: GuestRam,
    /// What mote wrote into `ram` since a pool last reset it.
    pub(crate) host_writes: HostWrites,
    /// The pages of `ram` this VM holds copies of its own (written since it was made or its
    /// copies last dropped): a pool bounds them.
    pub(crate) private: Vec<std::ops::Range<u64>>,
    /// What the VM is charged against the memory budget, given back once its memory is gone.
    pub(crate) charge: Option<crate::budget::Charge>,
    /// The signal mask the vCPU carries for `KVM_RUN`, if a run with a deadline set one.
    pub(crate) signal_mask: Option<u64>,
    /// The VM has KVM's in-kernel interrupt controllers and PIT: `hlt` stays in KVM.
    pub(crate) irqchip: bool,
    /// KVM's thread for this VM has been seen to (see [`Vm::place_kvm_thread`]).
    kvm_thread_placed: bool,
}

impl Vm {
    /// Creates a VM whose memory is `ram`, and its vCPU (without CPUID yet: that depends on the
    /// guest). Exits carry the registers along, so a hypercall costs no extra ioctl to read its
    /// arguments or write its result. With `dirty_log`, KVM logs the pages the guest writes
    /// (`KVM_GET_DIRTY_LOG`): a pool resets by them. With `irqchip`, the VM gets KVM's
    /// in-kernel interrupt controllers and PIT ([`RunConfig::irqchip`]).
    pub(crate) fn new(
        shared: &Shared,
        ram: GuestRam,
        dirty_log: bool,
        irqchip: bool,
    ) -> Result<Self, Error> {
        shared.making_a_vm();
        let fd = shared
            .kvm
            .create_vm()
            .map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(|e| Error::kvm("KVM_SET_TSS_ADDR", e))?;
        let create_vcpu = |fd: &VmFd| {
            fd.create_vcpu(0)
                .map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))
        };
        let mut vcpu = if irqchip {
            // KVM refuses an irqchip once a vCPU exists; after the memory slot rather than
            // before it, creating it costs about 7 ms less (docs/decisions.md).
            register_memory(&fd, &ram, dirty_log)?;
            create_irqchip(&fd)?;
            create_vcpu(&fd)?
        } else {
            let vcpu = create_vcpu(&fd)?;
            register_memory(&fd, &ram, dirty_log)?;
            vcpu
        };
        if shared.enforce_pv_cpuid {
            // KVM's paravirtual MSRs answer even though mote's CPUID table hides KVM's leaves
            // (measured): with this, writing them raises #GP, as the table says it should.
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_ENFORCE_PV_FEATURE_CPUID,
                args: [1, 0, 0, 0],
                ..Default::default()
            };
            vcpu.enable_cap(&cap)
                .map_err(|e| Error::kvm("KVM_ENABLE_CAP", e))?;
        }
        vcpu.set_sync_valid_reg(SyncReg::Register);
        vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        Ok(Self {
            vcpu,
            fd,
            ram,
            host_writes: HostWrites::default(),
            private: Vec::new(),
            charge: None,
            signal_mask: None,
            irqchip,
            kvm_thread_placed: false,
        })
    }

    /// Keeps the thread KVM starts for this VM off the CPU of a pinned caller. Since Linux 6.14
    /// (and 6.13.3) KVM starts it at the VM's first `KVM_RUN`, from the thread that makes that
    /// call and with its CPUs: a thread pinned to one CPU would find KVM's thread pinned there too,
    /// preempting its runs (see the `cpus` module). So a pinned thread widens itself to the
    /// process's CPUs and makes one `KVM_RUN` with `immediate_exit` set first. That call returns
    /// before the guest is entered: KVM still counts the vCPU as never run (its CPUID may still be
    /// set), and nothing the guest sees changes. A thread that is not pinned does nothing: the
    /// run's own first `KVM_RUN` starts KVM's thread with the process's CPUs. Best effort: if the
    /// call fails, the run's first `KVM_RUN` tries again and reports what is wrong. Called before
    /// the vCPU first runs; from then on it does nothing.
    pub(crate) fn place_kvm_thread(&mut self) {
        if self.kvm_thread_placed {
            return;
        }
        self.kvm_thread_placed = true;
        let Some(widened) = crate::cpus::ProcessCpus::widen() else {
            return;
        };
        // A vCPU that has not run has no instruction to complete: whether it "settled" says
        // nothing here.
        if let Err(error) = crate::vcpu_state::settle(&mut self.vcpu) {
            tracing::debug!(%error, "KVM's thread for a VM may share a pinned caller's CPU");
        }
        drop(widened);
    }

    pub(crate) fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), Error> {
        self.vcpu
            .set_cpuid2(cpuid)
            .map_err(|e| Error::kvm("KVM_SET_CPUID2", e))
    }
}

/// Gives the VM KVM's in-kernel PIC pair, I/O APIC and local APICs, and its PIT (whose PC
/// speaker port stays unserved, as mote serves no speaker). KVM's default routing then sends
/// ISA IRQ n to 8259 pin n and I/O APIC pin n; the PIT raises IRQ 0.
fn create_irqchip(vm: &VmFd) -> Result<(), Error> {
    vm.create_irq_chip()
        .map_err(|e| Error::kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| Error::kvm("KVM_CREATE_PIT2", e))
}

fn register_memory(vm: &VmFd, ram: &GuestRam, dirty_log: bool) -> Result<(), Error> {
    for (slot, region) in ram.iter().enumerate() {
        let host_address = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        let region_info = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if dirty_log {
                kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the range is a live mapping owned by the `Vm` being built, which drops its vCPU
        // and its VM before its memory (field order), so KVM never maps it once it is gone.
        unsafe { vm.set_user_memory_region(region_info) }
            .map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
}

/// What the host knows of a guest laid out in memory, for as long as it runs (and in a snapshot
/// of it).
#[derive(Clone, Debug)]
pub(crate) struct GuestFacts {
    /// The guest runs in user mode: every address it names must be USER.
    pub(crate) user_mode: bool,
    /// Unmapped pages below the stacks: a fault there is a stack overflow.
    pub(crate) guard_pages: Vec<GuardPage>,
    /// The framebuffer, if the guest has one.
    pub(crate) framebuffer: Option<mote_boot::Framebuffer>,
    /// Booted as the real bootloader would (no mote CPUID leaves).
    pub(crate) plain: bool,
    /// The frames of the ramdisk, where each run restored from a snapshot finds its input.
    pub(crate) input_window: Option<mote_boot::RamdiskFrames>,
    /// How far the loader moved the kernel from its link-time addresses (0 for a guest restored
    /// from a snapshot file, which does not keep it: only a debugger needs it, and debugged
    /// runs are cold).
    pub(crate) kernel_offset: u64,
    /// Where the kernel's first two loadable segments are, for a debugger (GDB's `qOffsets`);
    /// empty unless the run is debugged.
    pub(crate) kernel_segments: Vec<u64>,
    /// The page of the gate a user-mode guest's #DB and #BP enter while a debugger watches.
    pub(crate) debug_gate: Option<u64>,
}

/// A VM with one vCPU that never runs, held by a hypervisor from its second VM on. Making a vCPU
/// turned some of KVM's static keys on (seen with `perf`: `kvm_create_lapic` →
/// `static_key_slow_inc`, code switched by patching the kernel's text) and destroying it turned
/// them off again (`kvm_arch_vcpu_destroy` → `static_key_slow_dec`) when no other vCPU held
/// them: with one VM at a time, every run paid for both patches, each interrupting every CPU (a
/// quarter of a cold run's CPU time; a snapshot's cold run went from 0.84-0.87 ms to 0.60-0.62
/// ms with one such vCPU held). Which keys, and whether other VMs on the machine hold them
/// already, depends on the kernel and on those VMs. It costs two descriptors and a little of
/// the kernel's memory. If making it fails, the hypervisor goes on without it (and does not
/// try again).
pub(crate) struct ResidentVcpu {
    // Field order is drop order: the vCPU before its VM.
    _vcpu: VcpuFd,
    _vm: VmFd,
}

impl ResidentVcpu {
    /// Makes it; `None` if KVM refuses (mote works without it, only slower to make VMs).
    pub(crate) fn new(kvm: &kvm_ioctls::Kvm) -> Option<Self> {
        // Kernels that start KVM's thread for a VM as the VM is made (6.13.0-6.13.2) would give
        // it a pinned caller's CPUs for the hypervisor's life.
        let widened = crate::cpus::ProcessCpus::widen();
        let made = kvm.create_vm().and_then(|vm| Ok((vm.create_vcpu(0)?, vm)));
        drop(widened);
        match made {
            Ok((vcpu, vm)) => Some(Self {
                _vcpu: vcpu,
                _vm: vm,
            }),
            Err(error) => {
                tracing::debug!(%error, "no resident vCPU: making VMs will patch KVM's keys");
                None
            }
        }
    }
}

/// A guest laid out in a fresh VM, about to run its first instruction.
pub(crate) struct Booted {
    pub(crate) vm: Vm,
    pub(crate) guest: GuestFacts,
    pub(crate) stats: Stats,
}

/// Creates a VM over `ram` (reserved in `reserve_time`) and lays `image` out in it as `config`
/// says. A boot for a snapshot gives the snapshot's input capacity: the guest then gets an
/// empty input window of that size, and is told to ask for its input.
pub(crate) fn boot(
    shared: &Shared,
    image: &GuestImage,
    config: &RunConfig,
    ram: GuestRam,
    reserve_time: std::time::Duration,
    snapshot_input_capacity: Option<u64>,
) -> Result<Booted, Error> {
    let mut stats = Stats::default();
    let start = Instant::now();
    let vm = Vm::new(shared, ram, false, config.irqchip)?;
    let machine = shared.machine_info(&vm.vcpu)?;
    stats.phases.vm = start.elapsed();

    let start = Instant::now();
    let options = LoadOptions {
        ramdisk: config.input.as_deref(),
        ramdisk_capacity: snapshot_input_capacity.unwrap_or(0),
        tsc_khz: u64::from(machine.tsc_khz),
        plain: config.plain,
        framebuffer: config.boot_framebuffer()?,
        acpi: config.acpi,
        irqchip: config.irqchip,
        test_sentinel: config
            .boot_config
            .as_ref()
            .map_or(0, |boot| boot.test_sentinel),
        aslr_seed: aslr_seed(image),
        snapshot: snapshot_input_capacity.is_some(),
        debug_gate: config.debugger.is_some(),
    };
    let loaded = image
        .prepared
        .load(&vm.ram, &options)
        .map_err(|error| match error {
            mote_boot::BootError::OutOfMemory { needed } => Error::MemoryTooSmall {
                needed,
                size: vm.ram.last_addr().0 + 1,
                input: options
                    .ramdisk_capacity
                    .max(options.ramdisk.map_or(0, |bytes| bytes.len() as u64)),
            },
            other => Error::Load(other),
        })?;
    stats.phases.memory = reserve_time + start.elapsed();

    let start = Instant::now();
    vm.set_cpuid(machine.cpuid(config.plain))?;
    set_initial_state(&vm.vcpu, &loaded.vcpu)?;
    stats.phases.vcpu = start.elapsed();
    tracing::debug!(
        user_mode = loaded.user_mode,
        memory = config.boot_memory_size(),
        rip = format_args!("{:#x}", loaded.vcpu.rip),
        "guest laid out"
    );
    Ok(Booted {
        vm,
        guest: GuestFacts {
            user_mode: loaded.user_mode,
            guard_pages: loaded.guard_pages,
            framebuffer: loaded.framebuffer,
            plain: config.plain,
            input_window: loaded.ramdisk,
            kernel_offset: loaded.kernel_offset,
            kernel_segments: match config.debugger {
                Some(_) => {
                    // `describe` places the segments at the image's fixed offset; this load's
                    // offset differs under ASLR.
                    let description = image.describe();
                    description
                        .segments
                        .iter()
                        .take(2)
                        .map(|&(address, ..)| {
                            address
                                .wrapping_sub(description.kernel_offset)
                                .wrapping_add(loaded.kernel_offset)
                        })
                        .collect()
                }
                None => Vec::new(),
            },
            debug_gate: loaded.debug_gate,
        },
        stats,
    })
}

/// Fresh randomness for a kernel whose config asks for ASLR (none for the others: they load the
/// same way every time, and save the system call).
fn aslr_seed(image: &GuestImage) -> Option<u64> {
    if !image.prepared.config().aslr {
        return None;
    }
    let mut seed = [0u8; 8];
    // Without the host's randomness the layout falls back to the fixed one, which is still a
    // valid boot.
    getrandom::fill(&mut seed).ok()?;
    Some(u64::from_le_bytes(seed))
}

fn kvm_segment_from(segment: &Segment) -> kvm_segment {
    kvm_segment {
        base: segment.base,
        limit: segment.limit,
        selector: segment.selector,
        type_: segment.type_,
        present: u8::from(segment.present),
        dpl: segment.dpl,
        db: u8::from(segment.db),
        s: u8::from(segment.s),
        l: u8::from(segment.l),
        g: u8::from(segment.g),
        avl: 0,
        unusable: u8::from(!segment.present),
        padding: 0,
    }
}

fn set_initial_state(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), Error> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
    sregs.cr0 = state.cr0;
    sregs.cr3 = state.cr3;
    sregs.cr4 = state.cr4;
    sregs.efer = state.efer;
    sregs.cs = kvm_segment_from(&state.code);
    let data = kvm_segment_from(&state.data);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment_from(&state.task);
    sregs.gdt.base = state.gdt.base;
    sregs.gdt.limit = state.gdt.limit;
    sregs.idt.base = state.idt.base;
    sregs.idt.limit = state.idt.limit;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::kvm("KVM_SET_SREGS", e))?;
    if let Some(syscall) = state.syscall {
        let entry = |index, data| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        };
        let msrs = Msrs::from_entries(&[
            entry(msr::STAR, syscall.star),
            entry(msr::LSTAR, syscall.lstar),
            entry(msr::FMASK, syscall.fmask),
        ])
        .map_err(|_| Error::Internal("too many MSRs".into()))?;
        let written = vcpu
            .set_msrs(&msrs)
            .map_err(|e| Error::kvm("KVM_SET_MSRS", e))?;
        if written != 3 {
            return Err(Error::Internal(format!(
                "KVM took {written} of the 3 syscall MSRs"
            )));
        }
    }
    let regs = kvm_regs {
        rip: state.rip,
        rsp: state.rsp,
        rdi: state.rdi,
        rflags: state.rflags,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| Error::kvm("KVM_SET_REGS", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(function: u32, ebx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            ebx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn the_guest_table_names_vcpu_0_and_mote_whatever_cpu_kvm_answered_on() {
        let supported = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                ecx: 0x8120_2020,
                ..leaf(0x1, 0x0102_0800, 0x78B_FBFF)
            },
            kvm_cpuid_entry2 {
                eax: 0x0704_0002,
                ..leaf(0xA, 0x7F, 0x603)
            },
            kvm_cpuid_entry2 {
                ecx: 0x4 | 0x1,
                ..leaf(0x8000_0001, 0, 0)
            },
            leaf(0xB, 0, 1),
            leaf(0x1F, 0, 1),
            leaf(0x4000_0000, 0x4B4D_564B, 0x4D),
            leaf(0x8000_0002, 0x4000_0000, 7),
        ])
        .unwrap();
        let table = guest_cpuid(&supported, 2_000_000, true).unwrap();
        let find = |function| {
            *table
                .as_slice()
                .iter()
                .find(|e| e.function == function)
                .unwrap()
        };
        assert_eq!(
            find(0x1).ebx,
            0x0002_0800,
            "initial APIC ID 0, the rest kept"
        );
        assert_eq!(find(0x1).edx, 0x78B_FBFF);
        assert_eq!(find(0x1).ecx, 0x8120_2000, "no VMX");
        assert_eq!(find(0x8000_0001).ecx, 0x1, "no SVM");
        let pmu = find(0xA);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0), "no PMU");
        assert_eq!(find(0xB).edx, 0, "x2APIC ID 0");
        assert_eq!(find(0x1F).edx, 0);
        assert_eq!(find(0x8000_0002).edx, 7, "other leaves untouched");
        let signature = find(mote_abi::CPUID_LEAF_SIGNATURE);
        assert_eq!(
            signature.ebx,
            mote_abi::signature_registers()[0],
            "KVM's leaves replaced"
        );
        assert_eq!(find(mote_abi::CPUID_LEAF_INFO).ecx, 2_000_000);
        let plain = guest_cpuid(&supported, 2_000_000, false).unwrap();
        assert!(
            plain
                .as_slice()
                .iter()
                .all(|e| e.function < 0x4000_0000 || e.function >= 0x5000_0000)
        );
    }
}
