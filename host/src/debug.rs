//! Debugging a guest with GDB: the GDB remote protocol (through the `gdbstub` crate) over a TCP
//! connection, served by the vCPU's own thread between exits.
//!
//! - **Stopped.** The guest starts stopped at its first instruction, as GDB expects a target
//!   it attaches to. While it is stopped the vCPU's thread answers GDB's packets: registers
//!   (`KVM_GET_REGS`, `KVM_GET_SREGS`, `KVM_GET_FPU` and their setters), memory by
//!   guest-virtual address (translated through the guest's page tables, then read or written
//!   by guest-physical address, so a breakpoint's patch reaches read-only code), breakpoints.
//! - **Running.** On `continue` or `stepi` the run loop runs the guest as usual (hypercalls,
//!   limits), with `KVM_SET_GUEST_DEBUG` set for the breakpoints and single-stepping, until
//!   `KVM_EXIT_DEBUG` reports a stop or the guest ends (GDB is told its exit code).
//! - **Interrupts.** A thread of its own (`mote-gdb`) reads the connection. Whatever it reads
//!   goes to the vCPU's thread through a channel, and it kicks that thread out of `KVM_RUN`
//!   with the deadline's signal (without stopping the run), so GDB's Ctrl-C stops a running
//!   guest.
//! - **Breakpoints.** KVM's software breakpoints (an `int3` KVM catches) do not work on every
//!   host (on the nested development hosts the `int3` reached the guest's IDT, or failed inside
//!   KVM), so mote does not use them. In a user-mode guest, GDB's `break` patches an `int3`,
//!   and the guest's IDT sends #BP (and #DB) to a gate of mote's own (`LoadOptions::debug_gate`):
//!   an `out` that mote turns back into the state before the exception, and a stop. As many as
//!   GDB likes. In a kernel-mode guest, whose IDT is its own, `break` uses the four debug
//!   registers, as `hbreak` does everywhere; a fifth is refused (GDB says it cannot insert it).
//! - **Single steps** are KVM's (`KVM_GUESTDBG_SINGLESTEP`); where the step's trap reaches a
//!   user-mode guest's IDT instead of KVM (the nested development hosts), the gate catches it.
//! - **The deadline** counts only while the guest runs.
//! - **Ending.** If GDB detaches or the connection closes, the guest runs on without the
//!   debugger to its own end; if GDB kills it, the run ends as [`Exit::Cancelled`].

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;

use gdbstub::common::Signal;
use gdbstub::conn::Connection;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, SingleThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::section_offsets::{Offsets, SectionOffsets, SectionOffsetsOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::X86_64_SSE;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

use crate::guest_memory;
use crate::machine::{End, Machine, Progress};
use crate::{Error, Exit};

/// A GDB connection for one run: give it to [`RunConfig::debugger`](crate::RunConfig::debugger).
///
/// The guest then starts stopped at its first instruction and runs as GDB says. Only cold runs
/// ([`Hypervisor::run`](crate::Hypervisor::run)) can be debugged. A process filtered with
/// [`restrict_process`](crate::restrict_process) cannot read the connection: filter it with
/// [`restrict_process_debugged`](crate::restrict_process_debugged) instead (filtered runs,
/// [`Hypervisor::set_filtered_runs`](crate::Hypervisor::set_filtered_runs), take care of it
/// themselves; a thread held by [`restrict_run_thread`](crate::restrict_run_thread) cannot
/// debug).
///
/// ```no_run
/// use std::net::TcpListener;
/// use mote_host::{Debugger, GuestImage, Hypervisor, RunConfig};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hypervisor = Hypervisor::open()?;
/// let image = GuestImage::from_file("hello.elf")?;
/// let listener = TcpListener::bind("127.0.0.1:1234")?;
/// // Blocks until `gdb hello.elf -ex 'target remote :1234'` connects.
/// let debugger = Debugger::accept(&listener)?;
/// let outcome = hypervisor.run(&image, RunConfig::default().no_timeout().debugger(debugger))?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Debugger {
    stream: Arc<TcpStream>,
}

/// Why a debugger could not be set up or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebugError {
    /// No connection could be accepted.
    #[error("cannot accept the debugger's connection")]
    Accept(#[source] std::io::Error),
    /// The connection could not be set up.
    #[error("cannot set up the debugger's connection")]
    Connection(#[source] std::io::Error),
    /// The thread that reads the connection could not start.
    #[error("cannot start the thread that reads the debugger's connection")]
    Thread(#[source] std::io::Error),
    /// The run cannot be debugged.
    #[error("{0} cannot be debugged: only a guest booted afresh (not a snapshot) can")]
    Unsupported(&'static str),
}

impl Debugger {
    /// Waits for one connection on `listener` and debugs through it.
    pub fn accept(listener: &TcpListener) -> Result<Self, DebugError> {
        let (stream, _) = listener.accept().map_err(DebugError::Accept)?;
        Self::new(stream)
    }

    /// Debugs through `stream`, connected to GDB.
    pub fn new(stream: TcpStream) -> Result<Self, DebugError> {
        // GDB waits for each answer: send every packet at once. Set here, before any seccomp
        // filter: the filtered run may not change sockets.
        stream.set_nodelay(true).map_err(DebugError::Connection)?;
        stream
            .set_nonblocking(false)
            .map_err(DebugError::Connection)?;
        Ok(Self {
            stream: Arc::new(stream),
        })
    }

    /// The connection's descriptor, which a seccomp filter lets the run read and shut down.
    pub(crate) fn socket(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// What the connection's reader hands the vCPU's thread.
enum Incoming {
    /// Bytes from GDB.
    Bytes(Vec<u8>),
    /// GDB went away.
    Closed,
    /// The run was stopped (cancelled) while the guest was held: stop waiting for GDB.
    Wake,
}

/// The connection as `gdbstub` writes to it: packets are gathered and sent whole on `flush`.
struct Wire {
    stream: Arc<TcpStream>,
    buffer: Vec<u8>,
}

impl Connection for Wire {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.buffer.push(byte);
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        let result = (&*self.stream).write_all(&self.buffer);
        self.buffer.clear();
        result
    }
}

/// The x86 debug registers a breakpoint can use.
const SLOTS: usize = 4;

/// DR6's bit for a single step.
const DR6_SINGLE_STEP: u64 = 1 << 14;

/// Which kind of GDB breakpoint holds a debug register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `Z0`, GDB's `break`.
    Software,
    /// `Z1`, GDB's `hbreak`.
    Hardware,
}

/// How GDB asked the guest to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    Continue,
    Step,
}

/// The four debug registers, as GDB's breakpoints hold them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slots([Option<(u64, Kind)>; SLOTS]);

impl Slots {
    /// Puts a breakpoint in a free register; `false` if all four are taken (GDB then says it
    /// cannot insert the breakpoint).
    fn add(&mut self, address: u64, kind: Kind) -> bool {
        if self.0.contains(&Some((address, kind))) {
            return true;
        }
        match self.0.iter_mut().find(|slot| slot.is_none()) {
            Some(free) => {
                *free = Some((address, kind));
                true
            }
            None => false,
        }
    }

    /// Takes a breakpoint out; `false` if there was none.
    fn remove(&mut self, address: u64, kind: Kind) -> bool {
        match self
            .0
            .iter_mut()
            .find(|slot| **slot == Some((address, kind)))
        {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    /// What `KVM_SET_GUEST_DEBUG` is given for these breakpoints, single-stepping or not.
    fn guest_debug(&self, step: bool) -> kvm_bindings::kvm_guest_debug {
        let mut debug = kvm_bindings::kvm_guest_debug::default();
        // DR7: bit 10 reads as one; each breakpoint is global-enabled (G0..G3), on execution
        // (R/W 00) of one byte (LEN 00).
        let mut dr7 = 1 << 10;
        for (i, slot) in self.0.iter().enumerate() {
            if let Some((address, _)) = slot {
                debug.arch.debugreg[i] = *address;
                dr7 |= 2 << (i * 2);
            }
        }
        if self.0.iter().any(Option::is_some) {
            debug.control |= kvm_bindings::KVM_GUESTDBG_USE_HW_BP;
            debug.arch.debugreg[7] = dr7;
        }
        if step {
            debug.control |= kvm_bindings::KVM_GUESTDBG_SINGLESTEP;
        }
        if debug.control != 0 {
            debug.control |= kvm_bindings::KVM_GUESTDBG_ENABLE;
        }
        debug
    }

    /// Why the guest stopped at a debug exit (DR6 says which breakpoint, or a single step).
    fn stop_reason(
        &self,
        debug: &kvm_bindings::kvm_debug_exit_arch,
        stepping: bool,
    ) -> SingleThreadStopReason<u64> {
        let hit = (0..SLOTS).find(|&i| debug.dr6 & (1 << i) != 0);
        match hit.and_then(|i| self.0[i]) {
            Some((_, Kind::Software)) => SingleThreadStopReason::SwBreak(()),
            Some((_, Kind::Hardware)) => SingleThreadStopReason::HwBreak(()),
            None if debug.dr6 & DR6_SINGLE_STEP != 0 || stepping => {
                SingleThreadStopReason::DoneStep
            }
            None => SingleThreadStopReason::Signal(Signal::SIGTRAP),
        }
    }
}

/// The guest as GDB sees it: the run, its breakpoints and how it goes on.
struct Session<'m, 'a> {
    machine: &'m mut Machine<'a>,
    slots: Slots,
    /// A user-mode guest's software breakpoints: `int3` patched in, and the byte it replaced.
    patched: std::collections::BTreeMap<u64, u8>,
    /// A user-mode guest's code and stack segments, to return to from the debug gate.
    user_segments: Option<(kvm_bindings::kvm_segment, kvm_bindings::kvm_segment)>,
    resume: Resume,
}

fn kvm(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> TargetError<Error> {
    move |e| TargetError::Fatal(Error::kvm(call, e))
}

impl Session<'_, '_> {
    /// Sets `KVM_SET_GUEST_DEBUG` for the breakpoints and the way the guest goes on. Set again
    /// at every resume, changed or not: KVM steps from the instruction the vCPU is at when it is
    /// set (it keeps the trap flag only at that RIP), and registers written since (by GDB, or
    /// by the debug gate's return) would otherwise lose the step.
    fn apply(&mut self) -> Result<(), Error> {
        let debug = self.slots.guest_debug(self.resume == Resume::Step);
        self.machine
            .vcpu
            .set_guest_debug(&debug)
            .map_err(|e| Error::kvm("KVM_SET_GUEST_DEBUG", e))
    }

    /// Why the guest stopped at a debug exit.
    fn stop_reason(
        &self,
        debug: &kvm_bindings::kvm_debug_exit_arch,
    ) -> SingleThreadStopReason<u64> {
        self.slots.stop_reason(debug, self.resume == Resume::Step)
    }

    /// The guest's CR3, for its page tables.
    fn cr3(&self) -> TargetResult<u64, Self> {
        Ok(self
            .machine
            .vcpu
            .get_sregs()
            .map_err(kvm("KVM_GET_SREGS"))?
            .cr3)
    }

    /// Takes the debugger's breakpoints and single-stepping out of the vCPU, and its `int3`s
    /// out of memory.
    fn forget(&mut self) -> Result<(), Error> {
        if let Ok(cr3) = self.cr3() {
            for (address, byte) in std::mem::take(&mut self.patched) {
                let _ = guest_memory::debugger_write(
                    self.machine.ram,
                    cr3,
                    address,
                    &[byte],
                    self.machine.host_writes,
                );
            }
        }
        self.slots = Slots::default();
        self.resume = Resume::Continue;
        self.apply()
    }
}

impl Session<'_, '_> {
    /// A software breakpoint: an `int3` in a user-mode guest, whose #BP enters the debug gate
    /// (KVM's own software breakpoints do not work on every host); a debug register otherwise.
    fn add_software(&mut self, address: u64) -> TargetResult<bool, Self> {
        if self.machine.guest.debug_gate.is_none() {
            return Ok(self.slots.add(address, Kind::Software));
        }
        if self.patched.contains_key(&address) {
            return Ok(true);
        }
        let cr3 = self.cr3()?;
        let mut byte = [0u8];
        if guest_memory::debugger_read(self.machine.ram, cr3, address, &mut byte) != 1 {
            return Err(TargetError::NonFatal);
        }
        guest_memory::debugger_write(
            self.machine.ram,
            cr3,
            address,
            &[INT3],
            self.machine.host_writes,
        )
        .map_err(|_| TargetError::NonFatal)?;
        self.patched.insert(address, byte[0]);
        Ok(true)
    }

    fn remove_software(&mut self, address: u64) -> TargetResult<bool, Self> {
        let Some(byte) = self.patched.remove(&address) else {
            return Ok(self.slots.remove(address, Kind::Software));
        };
        let cr3 = self.cr3()?;
        guest_memory::debugger_write(
            self.machine.ram,
            cr3,
            address,
            &[byte],
            self.machine.host_writes,
        )
        .map_err(|_| TargetError::NonFatal)?;
        Ok(true)
    }

    /// If the guest stopped in the debug gate (its `out` is an unserved port to the run loop),
    /// puts the vCPU back where the exception came from, as the gate's `iretq` would, and says
    /// why it stopped. `None` for anything else: an `out` to that port from anywhere but the
    /// gate is the guest's own, and ends the run as any unserved port does.
    fn gate_stop(&mut self) -> Result<Option<SingleThreadStopReason<u64>>, Error> {
        let Some(gate) = self.machine.guest.debug_gate else {
            return Ok(None);
        };
        let vcpu = &self.machine.vcpu;
        let mut regs = vcpu.get_regs().map_err(|e| Error::kvm("KVM_GET_REGS", e))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
        if sregs.cs.selector & 3 != 0 || !(gate..gate + 4096).contains(&regs.rip) {
            return Ok(None);
        }
        let breakpoint = regs.rip >= gate + mote_boot::DEBUG_GATE_BP;
        // The frame the CPU pushed: RIP, CS, RFLAGS, RSP, SS (no error code for #DB or #BP).
        let mut frame = [0u8; 40];
        if guest_memory::debugger_read(self.machine.ram, sregs.cr3, regs.rsp, &mut frame) != 40 {
            return Ok(None);
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&frame[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        let (rip, cs, rflags, rsp) = (word(0), word(1), word(2), word(3));
        let (code, stack) = if cs & 3 == 3 {
            match self.user_segments {
                Some(segments) => segments,
                None => return Ok(None),
            }
        } else {
            (sregs.cs, sregs.ss)
        };
        let ours = breakpoint && self.patched.contains_key(&rip.wrapping_sub(1));
        regs.rip = if ours { rip.wrapping_sub(1) } else { rip };
        // The trap flag of a single step is KVM's (or the CPU's), not the guest's.
        regs.rflags = (rflags & !RFLAGS_TF) | 0b10;
        regs.rsp = rsp;
        (sregs.cs, sregs.ss) = (code, stack);
        vcpu.set_regs(&regs)
            .map_err(|e| Error::kvm("KVM_SET_REGS", e))?;
        vcpu.set_sregs(&sregs)
            .map_err(|e| Error::kvm("KVM_SET_SREGS", e))?;
        Ok(Some(match (breakpoint, ours) {
            (true, true) => SingleThreadStopReason::SwBreak(()),
            (false, _) if self.resume == Resume::Step => SingleThreadStopReason::DoneStep,
            _ => SingleThreadStopReason::Signal(Signal::SIGTRAP),
        }))
    }
}

/// The `int3` instruction.
const INT3: u8 = 0xCC;

/// RFLAGS' trap flag.
const RFLAGS_TF: u64 = 1 << 8;

impl Target for Session<'_, '_> {
    type Arch = X86_64_SSE;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_section_offsets(&mut self) -> Option<SectionOffsetsOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for Session<'_, '_> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = &self.machine.vcpu;
        let r = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let s = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let fpu = vcpu.get_fpu().map_err(kvm("KVM_GET_FPU"))?;
        regs.regs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        regs.rip = r.rip;
        regs.eflags = r.rflags as u32;
        regs.segments.cs = u32::from(s.cs.selector);
        regs.segments.ss = u32::from(s.ss.selector);
        regs.segments.ds = u32::from(s.ds.selector);
        regs.segments.es = u32::from(s.es.selector);
        regs.segments.fs = u32::from(s.fs.selector);
        regs.segments.gs = u32::from(s.gs.selector);
        for (st, fpr) in regs.st.iter_mut().zip(&fpu.fpr) {
            st.copy_from_slice(&fpr[..10]);
        }
        regs.fpu.fctrl = u32::from(fpu.fcw);
        regs.fpu.fstat = u32::from(fpu.fsw);
        regs.fpu.ftag = u32::from(fpu.ftwx);
        regs.fpu.fop = u32::from(fpu.last_opcode);
        regs.fpu.fioff = fpu.last_ip as u32;
        regs.fpu.fooff = fpu.last_dp as u32;
        for (xmm, bytes) in regs.xmm.iter_mut().zip(&fpu.xmm) {
            *xmm = u128::from_le_bytes(*bytes);
        }
        regs.mxcsr = fpu.mxcsr;
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = &self.machine.vcpu;
        let mut r = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ] = regs.regs;
        r.rip = regs.rip;
        // RFLAGS' upper half is reserved (zero); bit 1 always reads as one.
        r.rflags = u64::from(regs.eflags) | 0b10;
        vcpu.set_regs(&r).map_err(kvm("KVM_SET_REGS"))?;
        let mut fpu = vcpu.get_fpu().map_err(kvm("KVM_GET_FPU"))?;
        for (fpr, st) in fpu.fpr.iter_mut().zip(&regs.st) {
            fpr[..10].copy_from_slice(st);
        }
        fpu.fcw = regs.fpu.fctrl as u16;
        fpu.fsw = regs.fpu.fstat as u16;
        fpu.ftwx = regs.fpu.ftag as u8;
        for (bytes, xmm) in fpu.xmm.iter_mut().zip(&regs.xmm) {
            *bytes = xmm.to_le_bytes();
        }
        fpu.mxcsr = regs.mxcsr;
        vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;
        // Segment selectors are not written: a selector means nothing without the descriptor
        // the CPU loads with it, which only the guest's own code can load.
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let cr3 = self.cr3()?;
        let read = guest_memory::debugger_read(self.machine.ram, cr3, start, data);
        if read == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        // GDB sees the guest's code, not the `int3`s in it.
        let end = start.saturating_add(read as u64);
        for (&address, &byte) in self.patched.range(start..end) {
            data[(address - start) as usize] = byte;
        }
        Ok(read)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let cr3 = self.cr3()?;
        guest_memory::debugger_write(self.machine.ram, cr3, start, data, self.machine.host_writes)
            .map_err(|_| TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Session<'_, '_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        // A signal GDB passes on has nowhere to go: a guest has no signals.
        self.resume = Resume::Continue;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Session<'_, '_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Resume::Step;
        Ok(())
    }
}

impl Breakpoints for Session<'_, '_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Session<'_, '_> {
    fn add_sw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.add_software(address)
    }

    fn remove_sw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.remove_software(address)
    }
}

impl HwBreakpoint for Session<'_, '_> {
    fn add_hw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.slots.add(address, Kind::Hardware))
    }

    fn remove_hw_breakpoint(&mut self, address: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.slots.remove(address, Kind::Hardware))
    }
}

impl SectionOffsets for Session<'_, '_> {
    fn get_section_offsets(&mut self) -> Result<Offsets<u64>, Self::Error> {
        // The loader moves the whole kernel by one offset (relocation, ASLR). Told as where the
        // first two segments are, GDB moves every section with its segment; told as section
        // offsets, it would move only .text, .data and .bss (not .rodata).
        let guest = self.machine.guest;
        Ok(match guest.kernel_segments[..] {
            [text_seg, data_seg, ..] => Offsets::Segments {
                text_seg,
                data_seg: Some(data_seg),
            },
            [text_seg] => Offsets::Segments {
                text_seg,
                data_seg: None,
            },
            [] => Offsets::Sections {
                text: guest.kernel_offset,
                data: guest.kernel_offset,
                bss: Some(guest.kernel_offset),
            },
        })
    }
}

/// What GDB is told when the run ends while it watches.
fn final_stop(exit: &Exit) -> SingleThreadStopReason<u64> {
    match exit {
        Exit::Guest { code } => SingleThreadStopReason::Exited(u8::try_from(*code).unwrap_or(255)),
        Exit::Exception { vector: 0, .. } => SingleThreadStopReason::Terminated(Signal::SIGFPE),
        Exit::Exception { vector: 6, .. } => SingleThreadStopReason::Terminated(Signal::SIGILL),
        Exit::Exception { .. } | Exit::Shutdown => {
            SingleThreadStopReason::Terminated(Signal::SIGSEGV)
        }
        Exit::Aborted { .. } => SingleThreadStopReason::Terminated(Signal::SIGABRT),
        _ => SingleThreadStopReason::Terminated(Signal::SIGKILL),
    }
}

/// The connection's reader: hands what GDB sends to the vCPU's thread and kicks it out of
/// `KVM_RUN`, until the connection closes (at the latest when the run shuts it down).
fn start_reader(
    stream: Arc<TcpStream>,
    to_vcpu: mpsc::Sender<Incoming>,
    stop: Arc<crate::stop::RunStop>,
) -> Result<std::thread::JoinHandle<()>, DebugError> {
    crate::cpus::spawn_helper("mote-gdb", move || {
        let mut buffer = [0u8; 4096];
        loop {
            let message = match (&*stream).read(&mut buffer) {
                Ok(0) | Err(_) => Incoming::Closed,
                Ok(n) => Incoming::Bytes(buffer[..n].to_vec()),
            };
            let closed = matches!(message, Incoming::Closed);
            let delivered = to_vcpu.send(message).is_ok();
            stop.kick();
            if closed || !delivered {
                return;
            }
        }
    })
    .map_err(DebugError::Thread)
}

/// The end of a debugging session.
enum Outcome {
    /// The run ended while GDB watched.
    Ended(End),
    /// GDB left (detached, or the connection closed): the guest runs on without it.
    Detached,
    /// GDB killed the guest.
    Killed,
}

/// Runs `machine` under GDB, through `debugger`, to the run's end.
pub(crate) fn serve(machine: &mut Machine<'_>, debugger: Debugger) -> Result<End, Error> {
    let stream = debugger.stream;
    let (to_vcpu, incoming) = mpsc::channel();
    let waker = to_vcpu.clone();
    machine.stop.set_waker(Some(Box::new(move || {
        let _ = waker.send(Incoming::Wake);
    })));
    let reader = start_reader(Arc::clone(&stream), to_vcpu, Arc::clone(&machine.stop));
    let result = match reader {
        Ok(reader) => {
            let result = session(machine, &stream, &incoming);
            // Ends the reader's read, whatever GDB does.
            let _ = stream.shutdown(Shutdown::Both);
            let _ = reader.join();
            // The reader's last kicks would end every `KVM_RUN` of a guest that runs on.
            crate::watchdog::take_pending_kick();
            result
        }
        Err(error) => Err(Error::Debugger(error)),
    };
    machine.stop.set_waker(None);
    match result? {
        Outcome::Ended(end) => Ok(end),
        Outcome::Killed => Ok(End::Exit(Exit::Cancelled)),
        Outcome::Detached => {
            tracing::debug!("the debugger left: the guest runs on");
            machine.resume_deadline();
            machine.run_to_end()
        }
    }
}

/// Serves GDB until the run ends or GDB leaves.
fn session(
    machine: &mut Machine<'_>,
    stream: &Arc<TcpStream>,
    incoming: &mpsc::Receiver<Incoming>,
) -> Result<Outcome, Error> {
    // The guest is held from its first instruction until GDB lets it go.
    machine.pause_deadline();
    let user_segments = match machine.vcpu.get_sregs() {
        Ok(sregs) if sregs.cs.selector & 3 == 3 => Some((sregs.cs, sregs.ss)),
        _ => None,
    };
    let mut session = Session {
        machine,
        slots: Slots::default(),
        patched: std::collections::BTreeMap::new(),
        user_segments,
        resume: Resume::Continue,
    };
    let wire = Wire {
        stream: Arc::clone(stream),
        buffer: Vec::new(),
    };
    let result = drive(&mut session, wire, incoming);
    // Whatever happened, the vCPU goes on (if it does) without the debugger's state.
    let forgotten = session.forget();
    let outcome = result?;
    forgotten?;
    Ok(outcome)
}

/// What the protocol's errors mean for the run: the target's own end it, the connection's
/// (GDB went away, or spoke nonsense) end the session.
fn protocol(error: GdbStubError<Error, std::io::Error>) -> Result<Outcome, Error> {
    if error.is_target_error() {
        return Err(error
            .into_target_error()
            .unwrap_or_else(|| Error::Internal("a debugger error lost its cause".into())));
    }
    tracing::warn!(%error, "the debugger's session ended");
    Ok(Outcome::Detached)
}

/// The protocol's state machine, fed from the connection's reader.
fn drive(
    session: &mut Session<'_, '_>,
    wire: Wire,
    incoming: &mpsc::Receiver<Incoming>,
) -> Result<Outcome, Error> {
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut gdb = match GdbStub::new(wire).run_state_machine(session) {
        Ok(gdb) => gdb,
        Err(error) => return protocol(error),
    };
    let mut running = false;
    loop {
        let next = match gdb {
            GdbStubStateMachine::Idle(idle) => {
                let byte = match pending.pop_front() {
                    Some(byte) => byte,
                    None => match incoming.recv() {
                        Ok(Incoming::Bytes(bytes)) => {
                            pending.extend(bytes);
                            gdb = GdbStubStateMachine::Idle(idle);
                            continue;
                        }
                        Ok(Incoming::Closed) | Err(_) => return Ok(Outcome::Detached),
                        Ok(Incoming::Wake) => match session.machine.stopped() {
                            // Cancelled while held: GDB is not waiting for an answer.
                            Some(exit) => return Ok(Outcome::Ended(End::Exit(exit))),
                            None => {
                                gdb = GdbStubStateMachine::Idle(idle);
                                continue;
                            }
                        },
                    },
                };
                idle.incoming_data(session, byte)
            }
            GdbStubStateMachine::Running(run) => {
                if let Some(byte) = pending.pop_front() {
                    run.incoming_data(session, byte)
                } else {
                    if !running {
                        session.apply()?;
                        session.machine.resume_deadline();
                        running = true;
                    }
                    match session.machine.advance()? {
                        Progress::Running => Ok(GdbStubStateMachine::Running(run)),
                        Progress::Interrupted => {
                            // The reader's kick was taken back as the run stepped
                            // (`Machine::run_once`), before its bytes are read here: a kick
                            // for bytes sent after this is kept for the next entry.
                            for message in incoming.try_iter() {
                                match message {
                                    Incoming::Bytes(bytes) => pending.extend(bytes),
                                    Incoming::Closed => return Ok(Outcome::Detached),
                                    Incoming::Wake => {}
                                }
                            }
                            Ok(GdbStubStateMachine::Running(run))
                        }
                        Progress::Debug(debug) => {
                            session.machine.pause_deadline();
                            running = false;
                            let reason = session.stop_reason(&debug);
                            run.report_stop(session, reason)
                        }
                        Progress::Ended(End::Exit(Exit::UnservedPort {
                            port,
                            write: true,
                            size: 1,
                        })) if port == u16::from(mote_boot::DEBUG_GATE_PORT)
                            && session.machine.guest.debug_gate.is_some() =>
                        {
                            match session.gate_stop()? {
                                Some(reason) => {
                                    session.machine.pause_deadline();
                                    running = false;
                                    run.report_stop(session, reason)
                                }
                                None => {
                                    let exit = Exit::UnservedPort {
                                        port,
                                        write: true,
                                        size: 1,
                                    };
                                    let _ = run.report_stop(session, final_stop(&exit));
                                    return Ok(Outcome::Ended(End::Exit(exit)));
                                }
                            }
                        }
                        Progress::Ended(end) => {
                            if let End::Exit(exit) = &end {
                                // GDB hears of the end if it can; the run ends either way.
                                let _ = run.report_stop(session, final_stop(exit));
                            }
                            return Ok(Outcome::Ended(end));
                        }
                    }
                }
            }
            GdbStubStateMachine::CtrlCInterrupt(interrupt) => {
                session.machine.pause_deadline();
                running = false;
                let stop = Some(SingleThreadStopReason::Signal(Signal::SIGINT));
                interrupt.interrupt_handled(session, stop)
            }
            GdbStubStateMachine::Disconnected(disconnected) => {
                return Ok(match disconnected.get_reason() {
                    DisconnectReason::Kill => Outcome::Killed,
                    _ => Outcome::Detached,
                });
            }
        };
        gdb = match next {
            Ok(gdb) => gdb,
            Err(error) => return protocol(error),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_breakpoints_fit_the_debug_registers_and_a_fifth_does_not() {
        let mut slots = Slots::default();
        assert_eq!(slots.guest_debug(false).control, 0);
        for i in 0..4 {
            assert!(slots.add(0x1000 + i, Kind::Software));
        }
        assert!(slots.add(0x1000, Kind::Software), "the same one again");
        assert!(!slots.add(0x2000, Kind::Hardware));
        let debug = slots.guest_debug(true);
        assert_eq!(
            debug.control,
            kvm_bindings::KVM_GUESTDBG_ENABLE
                | kvm_bindings::KVM_GUESTDBG_USE_HW_BP
                | kvm_bindings::KVM_GUESTDBG_SINGLESTEP
        );
        assert_eq!(debug.arch.debugreg[..4], [0x1000, 0x1001, 0x1002, 0x1003]);
        // G0..G3, execution breakpoints of one byte, and the bit that reads as one.
        assert_eq!(debug.arch.debugreg[7], 0x4AA);
        assert!(!slots.remove(0x1001, Kind::Hardware), "not of that kind");
        assert!(slots.remove(0x1001, Kind::Software));
        assert!(slots.add(0x2000, Kind::Hardware));
        assert_eq!(slots.guest_debug(false).arch.debugreg[1], 0x2000);
        assert_eq!(
            slots.guest_debug(false).control,
            kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP
        );
    }

    #[test]
    fn dr6_says_which_breakpoint_or_a_step_stopped_the_guest() {
        let mut slots = Slots::default();
        slots.add(0x1000, Kind::Software);
        slots.add(0x2000, Kind::Hardware);
        let exit = |dr6| kvm_bindings::kvm_debug_exit_arch {
            exception: 1,
            dr6,
            ..Default::default()
        };
        assert_eq!(
            slots.stop_reason(&exit(0b01), false),
            SingleThreadStopReason::SwBreak(())
        );
        assert_eq!(
            slots.stop_reason(&exit(0b10), true),
            SingleThreadStopReason::HwBreak(())
        );
        assert_eq!(
            slots.stop_reason(&exit(DR6_SINGLE_STEP), true),
            SingleThreadStopReason::DoneStep
        );
        assert_eq!(
            slots.stop_reason(&exit(0), false),
            SingleThreadStopReason::Signal(Signal::SIGTRAP)
        );
    }

    #[test]
    fn gdb_hears_the_guests_exit_code_or_a_signal() {
        assert_eq!(
            final_stop(&Exit::Guest { code: 7 }),
            SingleThreadStopReason::Exited(7)
        );
        assert_eq!(
            final_stop(&Exit::Guest { code: 300 }),
            SingleThreadStopReason::Exited(255)
        );
        assert_eq!(
            final_stop(&Exit::Cancelled),
            SingleThreadStopReason::Terminated(Signal::SIGKILL)
        );
        assert_eq!(
            final_stop(&Exit::Shutdown),
            SingleThreadStopReason::Terminated(Signal::SIGSEGV)
        );
    }
}
