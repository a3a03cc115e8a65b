//! One VM: create it, set up its vCPU, run it to an outcome.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use kvm_bindings::{
    CpuId, Msrs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region,
};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd, VmFd};
use mote_abi::{ABORT_TEXT_MAX, HypercallError, TRANSFER_MAX};
use mote_boot::{GuardPage, LoadOptions, Segment, VcpuState, msr};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::console::{Console, DeadlinePassed};
use crate::decode::{self, GuestBuffer, PortAccess, PortEvent, Request};
use crate::guest_memory::{AddressSpace, GuestRam, read_virtual, write_virtual};
use crate::serial::Serial;
use crate::watchdog::{Armed, Kick, Kickable};
use crate::{
    Error, Exit, GuestImage, HostFunctions, Hypervisor, Limit, Limits, Outcome, RunConfig, Screen,
    Stats,
};

/// Where KVM may put the three pages it needs for real-mode emulation on Intel (`KVM_SET_TSS_ADDR`):
/// just below 4 GiB, above any guest RAM mote allows.
const KVM_TSS_ADDRESS: usize = 0xFFFB_D000;

/// The guest's RFLAGS.IF bit.
const RFLAGS_IF: u64 = 1 << 9;

/// The CPUID table every vCPU gets: what KVM supports (`supported`), with mote's hypervisor
/// leaves in place of KVM's own (or no hypervisor leaves at all, without `mote_leaves`).
/// `tsc_khz` goes into the info leaf so the guest can time itself without exits.
fn guest_cpuid(supported: &CpuId, tsc_khz: u32, mote_leaves: bool) -> Result<CpuId, Error> {
    let mut entries: Vec<_> = supported
        .as_slice()
        .iter()
        .filter(|e| !(0x4000_0000..0x5000_0000).contains(&e.function))
        .copied()
        .collect();
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

/// What every vCPU of this machine gets, learnt from the first one: the TSC frequency, and the
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
}

/// A VM being run: its KVM handles, its memory and its devices.
struct Machine<'a> {
    // Field order is drop order, on every path out of a run: the deadline is disarmed before the
    // thread's signal mask is restored; the vCPU goes before the VM, the VM before its memory.
    deadline: Option<Armed<'a>>,
    /// Takes back a late kick and restores the thread's signal mask, once disarmed.
    _kickable: Option<Kickable>,
    vcpu: VcpuFd,
    _vm: VmFd,
    ram: GuestRam,
    serial: Serial,
    console: Console,
    console_bytes: u64,
    output: Vec<u8>,
    limits: Limits,
    host_functions: &'a HostFunctions,
    /// The guest runs in user mode: every address it names must be USER.
    user_mode: bool,
    guard_pages: Vec<GuardPage>,
    started: Instant,
    stats: Stats,
}

pub(crate) fn run(
    hypervisor: &Hypervisor,
    image: &GuestImage,
    config: &mut RunConfig,
) -> Result<Outcome, Error> {
    let mut stats = Stats::default();

    // Guest RAM is reserved first, so that it is released last, after the VM that maps it, on
    // every path out of this function.
    let reserved = Instant::now();
    let ram = GuestRam::from_ranges(&[(GuestAddress(0), config.memory_size as usize)])
        .map_err(|e| Error::Memory(e.to_string()))?;
    let reserve_time = reserved.elapsed();

    let start = Instant::now();
    let vm = hypervisor
        .kvm
        .create_vm()
        .map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
    vm.set_tss_address(KVM_TSS_ADDRESS)
        .map_err(|e| Error::kvm("KVM_SET_TSS_ADDR", e))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;
    let machine = hypervisor.machine_info(&vcpu)?;
    stats.phases.vm = start.elapsed();

    let start = Instant::now();
    let options = LoadOptions {
        ramdisk: config.input.as_deref(),
        tsc_khz: u64::from(machine.tsc_khz),
        plain: config.plain,
        framebuffer: config.framebuffer,
        acpi: config.acpi,
        aslr_seed: aslr_seed(image),
    };
    let loaded = image.prepared.load(&ram, &options).map_err(Error::Load)?;
    register_memory(&vm, &ram)?;
    stats.phases.memory = reserve_time + start.elapsed();

    let start = Instant::now();
    let cpuid = if config.plain {
        &machine.plain_cpuid
    } else {
        &machine.mote_cpuid
    };
    vcpu.set_cpuid2(cpuid)
        .map_err(|e| Error::kvm("KVM_SET_CPUID2", e))?;
    set_initial_state(&vcpu, &loaded.vcpu)?;
    // Exits carry the registers along, so a hypercall costs no extra ioctl to read its
    // arguments or write its result.
    vcpu.set_sync_valid_reg(SyncReg::Register);
    vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
    stats.phases.vcpu = start.elapsed();

    // The deadline counts from the first guest instruction.
    let started = Instant::now();
    // A deadline too far away to represent is no deadline.
    let deadline = config
        .limits
        .timeout
        .and_then(|timeout| started.checked_add(timeout));
    let (kickable, armed) = match deadline {
        Some(deadline) => {
            let watchdog = hypervisor.watchdog()?;
            let kickable = Kickable::enter(vcpu.as_raw_fd())
                .map_err(|e| Error::Internal(format!("cannot prepare the deadline: {e}")))?;
            let armed = watchdog.arm(deadline, Kick::for_this_thread());
            (Some(kickable), Some(armed))
        }
        None => (None, None),
    };
    let console = Console::new(config.console.take());
    let mut machine = Machine {
        deadline: armed,
        _kickable: kickable,
        vcpu,
        _vm: vm,
        ram,
        serial: Serial::default(),
        console,
        console_bytes: 0,
        output: Vec::new(),
        limits: config.limits,
        host_functions: &config.host_functions,
        user_mode: loaded.user_mode,
        guard_pages: loaded.guard_pages,
        started,
        stats,
    };
    tracing::debug!(
        user_mode = machine.user_mode,
        memory = config.memory_size,
        rip = format_args!("{:#x}", loaded.vcpu.rip),
        "guest starts"
    );
    let exit = machine.run_to_exit()?;
    machine.stats.phases.run = machine.started.elapsed();
    tracing::debug!(outcome = %exit, stats = ?machine.stats, "guest ended");
    let framebuffer = loaded.framebuffer.map(|f| screen(&machine.ram, &f));
    let Machine {
        deadline,
        _kickable: kickable,
        vcpu,
        _vm: vm,
        ram,
        console,
        output,
        stats,
        ..
    } = machine;
    // Disarm, then take back a kick that came too late.
    drop(deadline);
    drop(kickable);
    // The vCPU goes before the VM, the VM before its memory: the tuple drops in that order.
    hypervisor.dispose(Box::new((vcpu, vm, ram)));
    let console = console.finish(matches!(exit, Exit::Timeout { .. }));
    Ok(Outcome {
        exit,
        stats,
        console,
        output,
        framebuffer,
    })
}

/// The framebuffer's pixels, converted from the guest's BGRX to RGB.
fn screen(ram: &GuestRam, framebuffer: &mote_boot::Framebuffer) -> Screen {
    let mut bgrx = vec![0u8; framebuffer.len() as usize];
    // The framebuffer lies in guest RAM (the loader placed it), so this read succeeds; were it
    // to fail, the screen would just stay black.
    let _ = vm_memory::Bytes::read_slice(ram, &mut bgrx, GuestAddress(framebuffer.physical));
    let row = (framebuffer.stride * framebuffer.bytes_per_pixel) as usize;
    let mut rgb = Vec::with_capacity((framebuffer.width * framebuffer.height * 3) as usize);
    for line in bgrx.chunks(row).take(framebuffer.height as usize) {
        for pixel in line.chunks(4).take(framebuffer.width as usize) {
            rgb.extend_from_slice(&[pixel[2], pixel[1], pixel[0]]);
        }
    }
    Screen {
        width: framebuffer.width,
        height: framebuffer.height,
        rgb,
    }
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

fn register_memory(vm: &VmFd, ram: &GuestRam) -> Result<(), Error> {
    for (slot, region) in ram.iter().enumerate() {
        let host_address = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        let region_info = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host_address as u64,
        };
        // SAFETY: the range is a live mapping owned by `ram`, which outlives the VM: `run`
        // reserves the memory before creating the VM (so early returns drop the VM first), and
        // `Machine` and the reaper drop the vCPU and the VM before the memory.
        unsafe { vm.set_user_memory_region(region_info) }
            .map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(())
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

/// What an exit leaves to do after the `VcpuExit` borrow of the vCPU ends.
enum Step {
    Continue,
    Port { access: PortAccess, value: u32 },
    Stop(Exit),
}

impl Machine<'_> {
    fn run_to_exit(&mut self) -> Result<Exit, Error> {
        loop {
            let step = self.run_once()?;
            self.stats.exits.total += 1;
            match step {
                Step::Continue => {}
                Step::Stop(exit) => return Ok(exit),
                Step::Port { access, value } => {
                    let r = self.vcpu.sync_regs().regs;
                    let args = [r.rdi, r.rsi, r.r8, r.r9, r.r10, r.r12];
                    let event = decode::decode_out(access, value, args);
                    tracing::trace!(?event, "exit");
                    if let Some(exit) = self.serve_out(access, event)? {
                        return Ok(exit);
                    }
                }
            }
        }
    }

    /// Runs the vCPU to its next exit and handles what needs the exit's borrowed data.
    fn run_once(&mut self) -> Result<Step, Error> {
        let exit = match self.vcpu.run() {
            Ok(exit) => exit,
            // A signal interrupted KVM_RUN: nothing happened to the guest, enter it again.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // The watchdog's kick, or some other signal: only the first ends the run.
                return Ok(if self.deadline_passed() {
                    Step::Stop(self.timeout())
                } else {
                    Step::Continue
                });
            }
            Err(e) => return Err(Error::kvm("KVM_RUN", e)),
        };
        let step = match exit {
            VcpuExit::IoOut(port, data) => Step::Port {
                access: PortAccess {
                    port,
                    size: data.len(),
                },
                value: decode::out_value(data),
            },
            VcpuExit::IoIn(port, data) => {
                let access = PortAccess {
                    port,
                    size: data.len(),
                };
                match decode::decode_in(access) {
                    PortEvent::SerialRead { offset } => {
                        self.stats.exits.serial += 1;
                        data.fill(0);
                        if let Some(first) = data.first_mut() {
                            *first = self.serial.read(offset);
                        }
                        Step::Continue
                    }
                    _ => Step::Stop(Exit::UnservedPort {
                        port,
                        write: false,
                        size: access.size,
                    }),
                }
            }
            VcpuExit::MmioRead(address, data) => Step::Stop(Exit::UnservedMmio {
                address,
                write: false,
                size: data.len(),
            }),
            VcpuExit::MmioWrite(address, data) => Step::Stop(Exit::UnservedMmio {
                address,
                write: true,
                size: data.len(),
            }),
            VcpuExit::Hlt => {
                let regs = self.vcpu.sync_regs().regs;
                Step::Stop(Exit::Halted {
                    rip: regs.rip,
                    interrupts_enabled: regs.rflags & RFLAGS_IF != 0,
                })
            }
            VcpuExit::Shutdown => Step::Stop(Exit::Shutdown),
            VcpuExit::InternalError => {
                let rip = self.vcpu.sync_regs().regs.rip;
                let run = self.vcpu.get_kvm_run();
                // SAFETY: KVM filled the `internal` member of the union: the exit reason is
                // KVM_EXIT_INTERNAL_ERROR, which is the member this reads.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                Step::Stop(Exit::InternalError { suberror, rip })
            }
            VcpuExit::FailEntry(reason, _cpu) => Step::Stop(Exit::FailedEntry { reason }),
            VcpuExit::Intr => Step::Continue,
            other => Step::Stop(Exit::Unexpected {
                reason: format!("{other:?}"),
            }),
        };
        Ok(step)
    }

    /// Serves an `out`; returns the outcome if it ends the run.
    fn serve_out(&mut self, access: PortAccess, event: PortEvent) -> Result<Option<Exit>, Error> {
        match event {
            PortEvent::Hypercall(request) => {
                self.stats.exits.hypercalls += 1;
                if self.stats.exits.hypercalls > self.limits.hypercalls {
                    return Ok(Some(Exit::LimitExceeded(Limit::Hypercalls(
                        self.limits.hypercalls,
                    ))));
                }
                let result = match request {
                    Ok(request) => match self.serve(request) {
                        Served::Result(result) => result,
                        Served::Stop(exit) => return Ok(Some(exit)),
                    },
                    Err(error) => Err(error),
                };
                let rax = result.unwrap_or_else(HypercallError::to_result);
                self.vcpu.sync_regs_mut().regs.rax = rax;
                self.vcpu.set_sync_dirty_reg(SyncReg::Register);
                Ok(None)
            }
            PortEvent::SerialWrite { offset, value } => {
                self.stats.exits.serial += 1;
                if let Some(byte) = self.serial.write(offset, value) {
                    if let Some(exceeded) = self.take_console(1) {
                        return Ok(Some(exceeded));
                    }
                    if self.console_out(&[byte]).is_err() {
                        return Ok(Some(self.timeout()));
                    }
                }
                Ok(None)
            }
            PortEvent::DebugExit { value } => Ok(Some(Exit::DebugExit { value })),
            PortEvent::SerialRead { .. } | PortEvent::Unserved => Ok(Some(Exit::UnservedPort {
                port: access.port,
                write: true,
                size: access.size,
            })),
        }
    }

    /// The guest's address space as its hypercalls see it.
    fn address_space(&self) -> AddressSpace {
        AddressSpace {
            cr3: self.vcpu.sync_regs().sregs.cr3,
            user: self.user_mode,
        }
    }

    fn read(&self, buffer: GuestBuffer) -> Result<Vec<u8>, HypercallError> {
        let mut bytes = Vec::with_capacity(buffer.len as usize);
        read_virtual(
            &self.ram,
            self.address_space(),
            buffer.address,
            buffer.len,
            &mut bytes,
        )?;
        Ok(bytes)
    }

    fn write(&self, address: u64, bytes: &[u8]) -> Result<(), HypercallError> {
        write_virtual(&self.ram, self.address_space(), address, bytes)
    }

    /// Guest text for a report: cut to `ABORT_TEXT_MAX` bytes, lossy UTF-8, and a placeholder
    /// if the guest named memory it cannot read.
    fn text(&self, buffer: GuestBuffer) -> String {
        match self.read(buffer.truncated(ABORT_TEXT_MAX)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => format!("<unreadable guest memory at {:#x}>", buffer.address),
        }
    }

    fn serve(&mut self, request: Request) -> Served {
        let result = match request {
            Request::Exit { code } => return Served::Stop(Exit::Guest { code }),
            Request::Abort {
                message,
                file,
                line,
            } => {
                return Served::Stop(Exit::Aborted {
                    message: self.text(message),
                    file: self.text(file),
                    line,
                });
            }
            Request::Exception {
                vector,
                error_code,
                rip,
                cr2,
            } => {
                let overflowed = self
                    .guard_pages
                    .iter()
                    .find(|guard| matches!(vector, 8 | 14) && guard.contains(cr2))
                    .map(|guard| guard.stack);
                return Served::Stop(Exit::Exception {
                    vector,
                    error_code,
                    rip,
                    cr2,
                    stack_overflow: overflowed,
                });
            }
            Request::ConsoleWrite(buffer) => {
                let buffer = buffer.truncated(TRANSFER_MAX);
                match self.read(buffer) {
                    // Only text the guest could really send counts against its limit.
                    Ok(bytes) => {
                        if let Some(exceeded) = self.take_console(buffer.len) {
                            return Served::Stop(exceeded);
                        }
                        if self.console_out(&bytes).is_err() {
                            return Served::Stop(self.timeout());
                        }
                        Ok(buffer.len)
                    }
                    Err(error) => Err(error),
                }
            }
            Request::OutputWrite(buffer) => {
                let buffer = buffer.truncated(TRANSFER_MAX);
                if self.output.len() as u64 + buffer.len > self.limits.output_bytes {
                    return Served::Stop(Exit::LimitExceeded(Limit::OutputBytes(
                        self.limits.output_bytes,
                    )));
                }
                self.output_write(buffer)
            }
            Request::WallClock => Ok(wall_clock_ns()),
            Request::Random(buffer) => self.random(buffer),
            Request::HostCall {
                name,
                request,
                response,
            } => self.host_call(name, request, response),
            Request::Ready => {
                self.stats
                    .phases
                    .ready
                    .get_or_insert(self.started.elapsed());
                Ok(0)
            }
            Request::Nop => Ok(0),
        };
        Served::Result(result)
    }

    /// Sends console text on, waiting for a slow reader no longer than the deadline.
    fn console_out(&mut self, bytes: &[u8]) -> Result<(), DeadlinePassed> {
        let deadline = &self.deadline;
        self.console
            .write(bytes, &|| deadline.as_ref().is_some_and(Armed::fired))
    }

    /// Whether the run has a deadline and it passed.
    fn deadline_passed(&self) -> bool {
        self.deadline.as_ref().is_some_and(Armed::fired)
    }

    /// The outcome of a run stopped at its deadline.
    fn timeout(&self) -> Exit {
        Exit::Timeout {
            limit: self.limits.timeout.unwrap_or_default(),
        }
    }

    /// Counts `bytes` more console bytes; the outcome, if that passes the limit.
    fn take_console(&mut self, bytes: u64) -> Option<Exit> {
        self.console_bytes += bytes;
        (self.console_bytes > self.limits.console_bytes).then_some(Exit::LimitExceeded(
            Limit::ConsoleBytes(self.limits.console_bytes),
        ))
    }

    fn output_write(&mut self, buffer: GuestBuffer) -> Result<u64, HypercallError> {
        read_virtual(
            &self.ram,
            self.address_space(),
            buffer.address,
            buffer.len,
            &mut self.output,
        )?;
        Ok(buffer.len)
    }

    fn random(&mut self, buffer: GuestBuffer) -> Result<u64, HypercallError> {
        let buffer = buffer.truncated(TRANSFER_MAX);
        let mut bytes = vec![0u8; buffer.len as usize];
        getrandom::fill(&mut bytes).map_err(|_| HypercallError::HostFunctionFailed)?;
        self.write(buffer.address, &bytes)?;
        Ok(buffer.len)
    }

    fn host_call(
        &mut self,
        name: GuestBuffer,
        request: GuestBuffer,
        response: GuestBuffer,
    ) -> Result<u64, HypercallError> {
        let name = self.read(name)?;
        let function = std::str::from_utf8(&name)
            .ok()
            .and_then(|name| self.host_functions.get(name))
            .ok_or(HypercallError::UnknownFunction)?
            .clone();
        // A request is passed whole or not at all: a cut one would look like a different request.
        if request.len > TRANSFER_MAX {
            return Err(HypercallError::InvalidArgument);
        }
        let request = self.read(request)?;
        let answer = function(&request).map_err(|_| HypercallError::HostFunctionFailed)?;
        let fits = answer.len().min(response.len as usize);
        self.write(response.address, &answer[..fits])?;
        Ok(answer.len() as u64)
    }
}

/// What serving a request leads to.
enum Served {
    /// Answer the guest with this result.
    Result(Result<u64, HypercallError>),
    /// End the run.
    Stop(Exit),
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}
