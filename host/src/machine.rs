//! Running a VM: its exits, its hypercalls and its limits, until an outcome.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd, VmFd};
use mote_abi::{ABORT_TEXT_MAX, HypercallError, RunStart, TRANSFER_MAX};
use vm_memory::GuestAddress;

use crate::console::{self, Console};
use crate::decode::{self, GuestBuffer, PortAccess, PortEvent, Request};
use crate::guest_memory::{AddressSpace, read_virtual, write_virtual};
use crate::ram::{GuestRam, HostWrites};
use crate::samples::{self, SampleLog};
use crate::serial::Serial;
use crate::stop::{Attached, RunStop, StopReason, Watched};
use crate::vm::{GuestFacts, Vm};
use crate::watchdog::{self, Armed, Kickable};
use crate::{Error, Exit, HostFunctions, Limit, Limits, RunConfig, Sample, Screen, Shared, Stats};

/// The guest's RFLAGS.IF bit.
const RFLAGS_IF: u64 = 1 << 9;

/// How often a run in a VM with an in-kernel irqchip is nudged out of `KVM_RUN` to look
/// whether its vCPU halted for good (see [`Machine::halted_for_good`]).
pub(crate) const HALT_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Local APIC registers (offsets in its 4 KiB page) with a delivery mode: CMCI, timer,
/// thermal, performance counters, LINT0, LINT1, error.
const LAPIC_LVTS: [usize; 7] = [0x2F0, 0x320, 0x330, 0x340, 0x350, 0x360, 0x370];
/// An LVT or redirection entry's mask bit.
const MASKED: u64 = 1 << 16;

/// Whether an LVT or I/O APIC redirection entry can wake a CPU halted with interrupts off:
/// unmasked, and delivering an SMI (2), an NMI (4) or an INIT (5) rather than an interrupt.
fn wakes_with_interrupts_off(entry: u64) -> bool {
    entry & MASKED == 0 && matches!((entry >> 8) & 0b111, 2 | 4 | 5)
}

/// What a run is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// Run to an outcome; `ready_for_input` answers with this.
    Run(RunStart),
    /// Boot to the guest's snapshot point (`ready_for_input`) and stop there.
    Capture,
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum End {
    /// With an outcome.
    Exit(Exit),
    /// At the snapshot point of a capture: the vCPU sits on the `ready_for_input` exit.
    SnapshotPoint,
}

/// What a run left.
pub(crate) struct Finished {
    pub(crate) end: End,
    pub(crate) console: Vec<u8>,
    pub(crate) output: Vec<u8>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) stats: Stats,
    pub(crate) serial: Serial,
}

/// A VM being run: its vCPU, its memory and its devices, and what the run may spend.
pub(crate) struct Machine<'a> {
    // Field order is drop order, on every path out of a run: the deadline is disarmed, the
    // cancel token forgets the run and the thread is detached from its stop before the thread's
    // signal mask is restored.
    deadline_armed: Option<Armed<'a>>,
    /// The nudges of a run in a VM with an in-kernel irqchip.
    _halt_checks: Option<Armed<'a>>,
    _watched: Option<Watched>,
    _attached: Option<Attached>,
    /// Takes back a late kick and restores the thread's signal mask, once nothing can kick.
    _kickable: Option<Kickable>,
    /// The deadline's thread, if the run has a deadline.
    watchdog: Option<&'a watchdog::Watchdog>,
    /// When the run ends if it has not ended before; a debugger holding the guest moves it on.
    deadline: Option<Instant>,
    /// How much of the run's time was left when a debugger stopped the guest.
    paused: Option<Duration>,
    /// Why the run is being stopped early, if it is.
    pub(crate) stop: Arc<RunStop>,
    pub(crate) vcpu: &'a mut VcpuFd,
    /// The VM, if it has KVM's in-kernel irqchip (`hlt` then stays in KVM).
    irqchip: Option<&'a VmFd>,
    pub(crate) ram: &'a GuestRam,
    /// Where mote's own writes into `ram` are noted.
    pub(crate) host_writes: &'a mut HostWrites,
    serial: Serial,
    console: Console,
    console_bytes: u64,
    output: Vec<u8>,
    samples: SampleLog,
    limits: Limits,
    host_functions: &'a HostFunctions,
    pub(crate) guest: &'a GuestFacts,
    purpose: Purpose,
    started: Instant,
    stats: Stats,
}

/// Runs `vm`, whose vCPU is set up to run `guest`, to an outcome (or, for a capture, to the
/// snapshot point). `stats` holds what getting here cost.
pub(crate) fn run(
    shared: &Shared,
    vm: &mut Vm,
    guest: &GuestFacts,
    serial: Serial,
    config: &mut RunConfig,
    purpose: Purpose,
    stats: Stats,
) -> Result<Finished, Error> {
    vm.place_kvm_thread();
    // The deadline counts from the first guest instruction.
    let started = Instant::now();
    // A deadline too far away to represent is no deadline.
    let deadline = config
        .limits
        .timeout
        .and_then(|timeout| started.checked_add(timeout));
    let stop = RunStop::new();
    let watched = config.cancel.as_ref().map(|token| token.watch(&stop));
    let debugger = config.debugger.take();
    // Only a run that something may stop early (or a debugger interrupt), or that must be
    // nudged to see a halt, needs its thread kickable.
    let kickable = if deadline.is_some() || watched.is_some() || debugger.is_some() || vm.irqchip {
        Some(
            Kickable::enter(vm.vcpu.as_raw_fd(), &mut vm.signal_mask).map_err(|e| {
                Error::Internal(format!("cannot make the run stoppable early: {e}"))
            })?,
        )
    } else {
        if vm.signal_mask.is_some() {
            // An earlier run that could be stopped gave KVM its thread's signal mask; this run
            // keeps its own thread's.
            watchdog::clear_signal_mask(&vm.vcpu)?;
            vm.signal_mask = None;
        }
        None
    };
    let attached = kickable.as_ref().map(|_| stop.attach());
    let watchdog = match deadline {
        Some(_) => Some(shared.watchdog()?),
        None => None,
    };
    let armed = watchdog
        .zip(deadline)
        .map(|(watchdog, deadline)| watchdog.arm(deadline, &stop));
    let halt_checks = if vm.irqchip {
        Some(shared.watchdog()?.tick(HALT_CHECK_INTERVAL, &stop))
    } else {
        None
    };
    let console = Console::new(config.console.take());
    let mut machine = Machine {
        deadline_armed: armed,
        _halt_checks: halt_checks,
        _watched: watched,
        _attached: attached,
        _kickable: kickable,
        watchdog,
        deadline,
        paused: None,
        stop,
        vcpu: &mut vm.vcpu,
        irqchip: vm.irqchip.then_some(&vm.fd),
        ram: &vm.ram,
        host_writes: &mut vm.host_writes,
        serial,
        console,
        console_bytes: 0,
        output: Vec::new(),
        samples: SampleLog::new(config.limits.samples),
        limits: config.limits,
        host_functions: &config.host_functions,
        guest,
        purpose,
        started,
        stats,
    };
    let preempted_before = config.count_preemptions.then(preemptions_so_far);
    let end = match debugger {
        Some(debugger) => crate::debug::serve(&mut machine, debugger)?,
        None => machine.run_to_end()?,
    };
    machine.stats.preemptions =
        preempted_before.map(|before| preemptions_so_far().saturating_sub(before));
    machine.stats.phases.run = machine.started.elapsed();
    tracing::debug!(end = ?end, stats = ?machine.stats, "guest stopped");
    let Machine {
        deadline_armed: deadline,
        _halt_checks: halt_checks,
        _watched: watched,
        _attached: attached,
        _kickable: kickable,
        serial,
        console,
        output,
        samples,
        stats,
        ..
    } = machine;
    // Disarm, forget, detach, then take back a kick that came too late.
    drop(deadline);
    drop(halt_checks);
    drop(watched);
    drop(attached);
    drop(kickable);
    Ok(Finished {
        end,
        console: console.finish(),
        output,
        samples: samples.into_samples(),
        stats,
        serial,
    })
}

/// The calling thread's involuntary context switches so far (0 if the kernel will not say).
fn preemptions_so_far() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into memory with room for it; RUSAGE_THREAD reads
    // the calling thread's own counters.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: getrusage succeeded and filled the struct (zeroed before in any case).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_nivcsw).unwrap_or(0)
}

/// The framebuffer's pixels, converted from the guest's BGRX to RGB.
pub(crate) fn screen(ram: &GuestRam, framebuffer: &mote_boot::Framebuffer) -> Screen {
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

/// What an exit leaves to do after the `VcpuExit` borrow of the vCPU ends.
enum Step {
    Continue,
    /// A signal ended `KVM_RUN` without stopping the run.
    Interrupted,
    /// A debug exception KVM caught for a debugger (`KVM_SET_GUEST_DEBUG`).
    Debug(kvm_bindings::kvm_debug_exit_arch),
    Port {
        access: PortAccess,
        value: u32,
    },
    Stop(Exit),
}

/// Where one step of the run left it.
pub(crate) enum Progress {
    /// The guest goes on.
    Running,
    /// A signal ended `KVM_RUN` (a debugger's kick, say); the guest goes on unless told not to.
    Interrupted,
    /// A breakpoint or a single step stopped the guest (only with a debugger).
    Debug(kvm_bindings::kvm_debug_exit_arch),
    /// The run is over.
    Ended(End),
}

impl Machine<'_> {
    pub(crate) fn run_to_end(&mut self) -> Result<End, Error> {
        loop {
            match self.advance()? {
                Progress::Running | Progress::Interrupted => {}
                Progress::Ended(end) => return Ok(end),
                // Only a debugger asks KVM for these; without one, it is a state mote never set.
                Progress::Debug(debug) => {
                    return Ok(End::Exit(Exit::Unexpected {
                        reason: format!("a debug exit without a debugger: {debug:?}"),
                    }));
                }
            }
        }
    }

    /// Runs the guest to its next exit and serves it.
    pub(crate) fn advance(&mut self) -> Result<Progress, Error> {
        let step = self.run_once()?;
        self.stats.exits.total += 1;
        Ok(match step {
            Step::Continue => Progress::Running,
            Step::Interrupted => Progress::Interrupted,
            Step::Debug(debug) => Progress::Debug(debug),
            Step::Stop(exit) => Progress::Ended(End::Exit(exit)),
            Step::Port { access, value } => {
                let r = self.vcpu.sync_regs().regs;
                let args = [r.rdi, r.rsi, r.r8, r.r9, r.r10, r.r12];
                let event = decode::decode_out(access, value, args);
                tracing::trace!(?event, "exit");
                match self.serve_out(access, event)? {
                    Some(end) => Progress::Ended(end),
                    None => Progress::Running,
                }
            }
        })
    }

    /// Stops the deadline's clock while a debugger holds the guest.
    pub(crate) fn pause_deadline(&mut self) {
        if let Some(deadline) = self.deadline
            && self.paused.is_none()
        {
            self.deadline_armed = None;
            self.paused = Some(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Starts the deadline's clock again with the time that was left.
    pub(crate) fn resume_deadline(&mut self) {
        if let (Some(left), Some(watchdog)) = (self.paused.take(), self.watchdog) {
            let deadline = Instant::now().checked_add(left);
            self.deadline = deadline;
            self.deadline_armed = deadline.map(|deadline| watchdog.arm(deadline, &self.stop));
        }
    }

    /// Runs the vCPU to its next exit and handles what needs the exit's borrowed data.
    fn run_once(&mut self) -> Result<Step, Error> {
        // A stop is recorded before the kick; the kick itself can be lost to this run (a run
        // started inside a host function on this thread takes a pending kick for its own when
        // it ends), the record cannot. So it is looked at before every entry: a guest whose
        // run was stopped is not entered again.
        if let Some(exit) = self.stopped() {
            return Ok(Step::Stop(exit));
        }
        let exit = match self.vcpu.run() {
            Ok(exit) => exit,
            // A signal interrupted KVM_RUN: nothing happened to the guest, enter it again.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A stop's kick, a nudge, or some other signal: only a stop ends the run, or
                // a vCPU found halted for good.
                if let Some(exit) = self.stopped() {
                    return Ok(Step::Stop(exit));
                }
                // The kick stays pending on this thread, which blocks it outside KVM_RUN: taken
                // back here, it would end every later KVM_RUN at once.
                watchdog::take_pending_kick();
                return Ok(match self.halted_for_good()? {
                    Some(exit) => Step::Stop(exit),
                    None => Step::Interrupted,
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
            VcpuExit::Intr => Step::Interrupted,
            VcpuExit::Debug(debug) => Step::Debug(debug),
            other => Step::Stop(Exit::Unexpected {
                reason: format!("{other:?}"),
            }),
        };
        Ok(step)
    }

    /// In a VM with an in-kernel irqchip, where `hlt` stays inside KVM: the outcome if the
    /// vCPU is halted with interrupts off and nothing can wake it, as a `hlt` exit would have
    /// ended the run without the irqchip. Only an NMI, SMI or INIT wakes such a vCPU, and with
    /// one vCPU and no devices of mote's, those come only from the local APIC's LVT entries or
    /// the I/O APIC's redirection entries (the PIT's line), or are already pending. The vCPU's
    /// thread asks between two `KVM_RUN`s, so the vCPU cannot change meanwhile.
    fn halted_for_good(&mut self) -> Result<Option<Exit>, Error> {
        let Some(vm) = self.irqchip else {
            return Ok(None);
        };
        let mp_state = self
            .vcpu
            .get_mp_state()
            .map_err(|e| Error::kvm("KVM_GET_MP_STATE", e))?;
        if mp_state.mp_state != kvm_bindings::KVM_MP_STATE_HALTED {
            return Ok(None);
        }
        let regs = self
            .vcpu
            .get_regs()
            .map_err(|e| Error::kvm("KVM_GET_REGS", e))?;
        if regs.rflags & RFLAGS_IF != 0 {
            return Ok(None);
        }
        let events = self
            .vcpu
            .get_vcpu_events()
            .map_err(|e| Error::kvm("KVM_GET_VCPU_EVENTS", e))?;
        if events.nmi.pending != 0 || events.nmi.injected != 0 || events.smi.pending != 0 {
            return Ok(None);
        }
        let lapic = self
            .vcpu
            .get_lapic()
            .map_err(|e| Error::kvm("KVM_GET_LAPIC", e))?;
        let lvt = |offset: usize| {
            let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
            u64::from(u32::from_le_bytes(bytes))
        };
        if LAPIC_LVTS
            .iter()
            .any(|&offset| wakes_with_interrupts_off(lvt(offset)))
        {
            return Ok(None);
        }
        let mut ioapic = kvm_bindings::kvm_irqchip {
            chip_id: kvm_bindings::KVM_IRQCHIP_IOAPIC,
            ..Default::default()
        };
        vm.get_irqchip(&mut ioapic)
            .map_err(|e| Error::kvm("KVM_GET_IRQCHIP", e))?;
        // SAFETY: KVM filled the `ioapic` member: the chip asked for is the I/O APIC. Each
        // redirection entry is a plain u64 in either view of its union.
        let woken = unsafe { ioapic.chip.ioapic.redirtbl }
            .iter()
            // SAFETY: as above.
            .any(|entry| wakes_with_interrupts_off(unsafe { entry.bits }));
        if woken {
            return Ok(None);
        }
        Ok(Some(Exit::Halted {
            rip: regs.rip,
            interrupts_enabled: false,
        }))
    }

    /// Serves an `out`; returns the outcome if it ends the run.
    fn serve_out(&mut self, access: PortAccess, event: PortEvent) -> Result<Option<End>, Error> {
        let stop = |exit| Ok(Some(End::Exit(exit)));
        match event {
            PortEvent::Hypercall(request) => {
                self.stats.exits.hypercalls += 1;
                if self.stats.exits.hypercalls > self.limits.hypercalls {
                    return stop(Exit::LimitExceeded(Limit::Hypercalls(
                        self.limits.hypercalls,
                    )));
                }
                let result = match request {
                    Ok(request) => match self.serve(request) {
                        Served::Result(result) => result,
                        Served::Stop(exit) => return stop(exit),
                        Served::SnapshotPoint => return Ok(Some(End::SnapshotPoint)),
                        Served::Start(start) => {
                            set_start_registers(self.vcpu, &start);
                            return Ok(None);
                        }
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
                        return stop(exceeded);
                    }
                    if let Err(stopped) = self.console_out(&[byte]) {
                        return stop(stopped);
                    }
                }
                Ok(None)
            }
            PortEvent::DebugExit { value } => stop(Exit::DebugExit { value }),
            PortEvent::SerialRead { .. } | PortEvent::Unserved => stop(Exit::UnservedPort {
                port: access.port,
                write: true,
                size: access.size,
            }),
        }
    }

    /// The guest's address space as its hypercalls see it.
    fn address_space(&self) -> AddressSpace {
        AddressSpace {
            cr3: self.vcpu.sync_regs().sregs.cr3,
            user: self.guest.user_mode,
        }
    }

    fn read(&self, buffer: GuestBuffer) -> Result<Vec<u8>, HypercallError> {
        let mut bytes = Vec::with_capacity(buffer.len as usize);
        read_virtual(
            self.ram,
            self.address_space(),
            buffer.address,
            buffer.len,
            &mut bytes,
        )?;
        Ok(bytes)
    }

    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), HypercallError> {
        let space = self.address_space();
        write_virtual(self.ram, space, address, bytes, self.host_writes)
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
                    .guest
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
                        if let Err(stopped) = self.console_out(&bytes) {
                            return Served::Stop(stopped);
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
            } => match self.host_call(name, request, response) {
                Ok(result) => result,
                Err(panicked) => return Served::Stop(panicked),
            },
            Request::Samples { name, cycles } => match self.record_samples(name, cycles) {
                Ok(result) => result,
                Err(exceeded) => return Served::Stop(Exit::LimitExceeded(exceeded)),
            },
            Request::Ready => {
                self.mark_ready();
                Ok(0)
            }
            Request::ReadyForInput => {
                self.mark_ready();
                return match self.purpose {
                    Purpose::Capture => Served::SnapshotPoint,
                    Purpose::Run(start) => Served::Start(start),
                };
            }

            Request::Nop => Ok(0),
        };
        Served::Result(result)
    }

    /// Records when the guest was first ready.
    fn mark_ready(&mut self) {
        self.stats
            .phases
            .ready
            .get_or_insert(self.started.elapsed());
    }

    /// Sends console text on, waiting for a slow reader no longer than until the run is stopped;
    /// the outcome that ends the run if it cannot.
    fn console_out(&mut self, bytes: &[u8]) -> Result<(), Exit> {
        let stop = &self.stop;
        match self.console.write(bytes, &|| stop.reason().is_some()) {
            Ok(()) => Ok(()),
            Err(console::Stopped::RunStopped) => Err(self.stopped().unwrap_or(Exit::Cancelled)),
            Err(console::Stopped::Closed(kind)) => Err(Exit::ConsoleClosed {
                error: kind.to_string(),
            }),
        }
    }

    /// The outcome of a run stopped early, if it was.
    pub(crate) fn stopped(&self) -> Option<Exit> {
        Some(match self.stop.reason()? {
            StopReason::Deadline => Exit::Timeout {
                limit: self.limits.timeout.unwrap_or_default(),
            },
            StopReason::Cancelled => Exit::Cancelled,
        })
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
            self.ram,
            self.address_space(),
            buffer.address,
            buffer.len,
            &mut self.output,
        )?;
        Ok(buffer.len)
    }

    /// Records timing samples for the guest: its result for the guest, or the limit that ends
    /// the run. A bad call is answered with its error before any limit is looked at: only
    /// samples the guest could really report count.
    fn record_samples(
        &mut self,
        name: GuestBuffer,
        cycles: GuestBuffer,
    ) -> Result<Result<u64, HypercallError>, Limit> {
        let name = match self.read(name) {
            Ok(name) => name,
            Err(error) => return Ok(Err(error)),
        };
        let name = match samples::parse_name(&name) {
            Ok(name) => name,
            Err(error) => return Ok(Err(error)),
        };
        let cycles = match self.read(cycles) {
            Ok(cycles) => cycles,
            Err(error) => return Ok(Err(error)),
        };
        self.samples.record(name, &cycles).map(Ok)
    }

    fn random(&mut self, buffer: GuestBuffer) -> Result<u64, HypercallError> {
        let buffer = buffer.truncated(TRANSFER_MAX);
        let mut bytes = vec![0u8; buffer.len as usize];
        getrandom::fill(&mut bytes).map_err(|_| HypercallError::HostFunctionFailed)?;
        self.write(buffer.address, &bytes)?;
        Ok(buffer.len)
    }

    /// Calls a host function for the guest: its result for the guest, or the outcome that ends
    /// the run if the function panicked.
    fn host_call(
        &mut self,
        name: GuestBuffer,
        request: GuestBuffer,
        response: GuestBuffer,
    ) -> Result<Result<u64, HypercallError>, Exit> {
        let name = match self.read(name) {
            Ok(name) => name,
            Err(error) => return Ok(Err(error)),
        };
        let Some((name, function)) = std::str::from_utf8(&name)
            .ok()
            .and_then(|name| self.host_functions.get_key_value(name))
        else {
            return Ok(Err(HypercallError::UnknownFunction));
        };
        // A request is passed whole or not at all: a cut one would look like a different request.
        if request.len > TRANSFER_MAX {
            return Ok(Err(HypercallError::InvalidArgument));
        }
        let request = match self.read(request) {
            Ok(request) => request,
            Err(error) => return Ok(Err(error)),
        };
        let deadline = self.deadline;
        let answer = match crate::host_function::call(function, &request, deadline) {
            Ok(answer) => answer,
            Err(crate::host_function::Panicked) => {
                return Err(Exit::HostFunctionPanicked {
                    function: name.clone(),
                });
            }
        };
        let Ok(answer) = answer else {
            return Ok(Err(HypercallError::HostFunctionFailed));
        };
        let fits = answer.len().min(response.len as usize);
        Ok(self
            .write(response.address, &answer[..fits])
            .map(|()| answer.len() as u64))
    }
}

/// What serving a request leads to.
enum Served {
    /// Answer the guest with this result.
    Result(Result<u64, HypercallError>),
    /// Answer `ready_for_input` with what the run starts with.
    Start(RunStart),
    /// Stop at the snapshot point.
    SnapshotPoint,
    /// End the run.
    Stop(Exit),
}

/// Writes the registers `ready_for_input` returns (see `mote_abi::RunStart`) through the synced
/// registers: they reach the vCPU with the next `KVM_RUN`.
fn set_start_registers(vcpu: &mut VcpuFd, start: &RunStart) {
    let regs = vcpu.sync_regs().regs;
    vcpu.sync_regs_mut().regs = with_start_registers(regs, start);
    vcpu.set_sync_dirty_reg(SyncReg::Register);
}

/// The general registers `ready_for_input` returns, over `regs`.
pub(crate) fn with_start_registers(
    mut regs: kvm_bindings::kvm_regs,
    start: &RunStart,
) -> kvm_bindings::kvm_regs {
    let [rax, rdi, rsi, r8, r9, r10] = start.to_registers();
    (regs.rax, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10) = (rax, rdi, rsi, r8, r9, r10);
    regs
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unmasked_nmi_smi_and_init_entries_wake_a_cpu_with_interrupts_off() {
        let entry = |mode: u64, masked: bool| (mode << 8) | if masked { MASKED } else { 0 } | 0x30;
        for (mode, wakes) in [
            (0, false),
            (1, false),
            (2, true),
            (4, true),
            (5, true),
            (7, false),
        ] {
            assert_eq!(
                wakes_with_interrupts_off(entry(mode, false)),
                wakes,
                "mode {mode}"
            );
            assert!(
                !wakes_with_interrupts_off(entry(mode, true)),
                "masked mode {mode}"
            );
        }
    }
}
