//! seccomp allowlists: the system calls mote's own threads make, and nothing else.
//!
//! A guest that found a way out of KVM would find itself in a thread of mote's; these filters
//! (built with rust-vmm's `seccompiler`, as Firecracker's are) keep what that thread could then
//! ask of the kernel to what mote itself needs. A call outside the list raises `SIGSYS`, and
//! mote's handler names the call on standard error before the process ends: a kill that said
//! nothing could not be told from any other crash.
//!
//! - [`restrict_process`] filters every thread of the process: `mote run` installs it once it
//!   has opened and read everything it needs, just before the guest starts.
//! - The reaper and watchdog threads a [`Hypervisor`](crate::Hypervisor) starts, and a pool's
//!   thread, run only mote's code, so they filter themselves as they start, in any process. The threads that run an
//!   embedder's code (the caller's own, console writers, host functions) are left alone: a
//!   filter cannot be lifted again.
//! - [`on_filtered_thread`] runs one run on a thread of its own under the same filter as
//!   [`restrict_process`], when the embedder asks for it
//!   ([`Hypervisor::set_filtered_runs`](crate::Hypervisor::set_filtered_runs)).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::Error;

/// What a thread may call besides its own list: ending, waiting, memory, signals.
const COMMON: &[i64] = &[
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_futex,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    // A thread's own CPU use: `mote bench` counts the vCPU thread's preemptions around a run.
    libc::SYS_getrusage,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_close,
    // Panic messages and logs go to standard error.
    libc::SYS_write,
    libc::SYS_writev,
];

/// The reaper: tears VMs down (closes their descriptors, unmaps their memory).
const REAPER: &[i64] = &[];

/// The watchdog: sleeps until a deadline and kicks the vCPU's thread.
const WATCHDOG: &[i64] = &[libc::SYS_tgkill];

/// Everything a run needs once it is set up, on any of its threads: KVM, memory, threads,
/// signals, the host's random source, standard output.
const RUN: &[i64] = &[
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_pread64,
    libc::SYS_getrandom,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigtimedwait,
    // Starting the watchdog, reaper and console threads.
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    // Mote's own threads add their filters as they start: a filter can only take away.
    libc::SYS_seccomp,
];

/// What taking a snapshot needs besides [`RUN`]: a memfd to keep the guest's memory in, sized,
/// written, read back by extent and sealed (the seal is an `fcntl`, see [`filter`]).
const SNAPSHOT: &[i64] = &[
    libc::SYS_memfd_create,
    libc::SYS_ftruncate,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
];

/// The ioctl request type of KVM's requests.
const KVM_IOCTL_TYPE: u64 = 0xAE;

/// Which of mote's threads a filter is for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Thread {
    Reaper,
    Watchdog,
    /// A pool's thread: makes VMs from a snapshot and tears idle ones down.
    Pool,
}

fn fail(e: seccompiler::BackendError) -> Error {
    Error::Internal(format!("seccomp filter: {e}"))
}

/// The programs of a filter that allows `calls` (with [`COMMON`]), KVM's ioctls if `ioctl`,
/// sealing a memfd if `seal`, and traps everything else.
///
/// `clone3` passes its flags in memory, where a filter cannot look, so a second program makes
/// it fail with `ENOSYS`: the C library then starts threads with `clone`, whose flags the first
/// program checks. (Of two programs the kernel takes the stricter answer, so `clone3` must be
/// allowed by the main program for the second's `ENOSYS` to be the answer.)
///
/// `openat` fails with `EACCES` the same way, through a third program, rather than trap: glibc's
/// allocator opens `/proc/sys/vm/overcommit_memory` once per process, the first time a thread's
/// heap gives memory back to the kernel, and goes on without it if the open fails (seen: a
/// `mote serve` worker was stopped there once a change moved its allocations a little). No
/// file is opened either way.
///
/// With `socket`, a debugger's connection may also be read (`recvfrom`), written (`sendto`) and shut down, and
/// nothing else.
fn filter(
    calls: &[i64],
    ioctl: bool,
    seal: bool,
    socket: Option<std::os::fd::RawFd>,
) -> Result<Vec<BpfProgram>, Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(calls)
        .map(|&call| (call, Vec::new()))
        .collect();
    // Only threads (the flags `std` uses), never a new process.
    let thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .map_err(fail)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![thread]).map_err(fail)?],
    );
    if ioctl {
        // A thread's own CPUs (pid 0), no other thread's: a pinned run thread widens itself
        // while KVM starts a VM's thread, and threads started under a run's filter leave a
        // pinned creator's CPU (the `cpus` module). (The reaper and watchdog do that before
        // they filter themselves.)
        let own_thread = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0)
            .and_then(|condition| SeccompRule::new(vec![condition]))
            .map_err(fail)?;
        rules.insert(libc::SYS_sched_setaffinity, vec![own_thread]);
    }
    // Answered by the `refuse_open` program below.
    rules.insert(libc::SYS_openat, Vec::new());
    // Closing a descriptor first asks whether it is open (the standard library checks, to
    // catch a descriptor closed twice): that, sealing a snapshot's memfd where asked, and
    // nothing else fcntl does.
    let fcntl = [libc::F_GETFD]
        .into_iter()
        .chain(seal.then_some(libc::F_ADD_SEALS))
        .map(|command| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, command as u64)
                .and_then(|condition| SeccompRule::new(vec![condition]))
                .map_err(fail)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_fcntl, fcntl);
    if let Some(socket) = socket {
        for call in [libc::SYS_recvfrom, libc::SYS_sendto, libc::SYS_shutdown] {
            let on_socket = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                socket as u32 as u64,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
            .map_err(fail)?;
            rules.insert(call, vec![on_socket]);
        }
    }
    if ioctl {
        let kvm = SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xFF00),
            KVM_IOCTL_TYPE << 8,
        );
        // Debug builds check pool resets against the kernel's list of written pages.
        let pagemap_scan = cfg!(debug_assertions).then(|| {
            SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                crate::ram::PAGEMAP_SCAN,
            )
        });
        let kinds = std::iter::once(kvm)
            .chain(pagemap_scan)
            .map(|condition| {
                condition
                    .and_then(|condition| SeccompRule::new(vec![condition]))
                    .map_err(fail)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_ioctl, kinds);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(fail)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(fail)?;
    let refuse_open = SeccompFilter::new(
        [(libc::SYS_openat, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )
    .map_err(fail)?;
    // Installing a program takes a `prctl` first, which the main program may not allow: it
    // goes last.
    Ok(vec![
        BpfProgram::try_from(clone3).map_err(fail)?,
        BpfProgram::try_from(refuse_open).map_err(fail)?,
        BpfProgram::try_from(filter).map_err(fail)?,
    ])
}

/// Installs `programs` on the calling thread, or on every thread of the process.
fn install(programs: &[BpfProgram], every_thread: bool) -> Result<(), Error> {
    for program in programs {
        if every_thread {
            seccompiler::apply_filter_all_threads(program)
        } else {
            seccompiler::apply_filter(program)
        }
        .map_err(|e| Error::Internal(format!("cannot install a seccomp filter: {e}")))?;
    }
    Ok(())
}

/// Filters the calling thread, one of mote's own.
pub(crate) fn restrict_thread(thread: Thread) -> Result<(), Error> {
    install_reporter()?;
    let programs = match thread {
        Thread::Reaper => filter(REAPER, false, false, None)?,
        Thread::Watchdog => filter(WATCHDOG, false, false, None)?,
        Thread::Pool => filter(RUN, true, false, None)?,
    };
    install(&programs, false)
}

/// Filters the calling thread, and the threads it starts from now on, to what running guests
/// needs: the filter [`restrict_process`] installs, for one thread. For a thread that does
/// nothing but run guests (cold, restored or pooled), such as a server's worker threads: the
/// filter cannot be lifted, and a call outside it ends the process after a line on standard
/// error that names it. Host functions called by the guests it runs are held to it too.
pub fn restrict_run_thread() -> Result<(), Error> {
    restrict_thread(Thread::Pool)
}

/// Filters every thread of the process, those started later included, to what running guests
/// needs: for a process that does nothing else from here on (`mote run` installs it just
/// before its guest starts). The filter cannot be lifted. A call outside it ends the process,
/// after a line on standard error that names it.
pub fn restrict_process() -> Result<(), Error> {
    install_reporter()?;
    install(&filter(RUN, true, false, None)?, true)
}

/// [`restrict_process`] for a process that debugs its run: the run may also read the
/// debugger's connection and shut it down, and no other socket. Set the debugger up
/// ([`Debugger::accept`](crate::Debugger::accept)) first: accepting a connection is not
/// allowed.
pub fn restrict_process_debugged(debugger: &crate::Debugger) -> Result<(), Error> {
    install_reporter()?;
    install(&filter(RUN, true, false, Some(debugger.socket()))?, true)
}

/// What a filtered thread does: run a guest, boot one to snapshot it (which also keeps its
/// memory in a memfd), or run one under a debugger connected through this socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    Run,
    Snapshot,
    Debugged(std::os::fd::RawFd),
}

/// Calls `run` on a new thread held to the filter [`restrict_process`] installs (with what a
/// snapshot needs, for [`Work::Snapshot`]), and returns what it returns; a panic in `run` goes
/// on in the caller.
pub(crate) fn on_filtered_thread<T: Send>(
    work: Work,
    run: impl FnOnce() -> Result<T, Error> + Send,
) -> Result<T, Error> {
    type Programs = OnceLock<Result<Vec<BpfProgram>, String>>;
    static RUN_FILTER: Programs = OnceLock::new();
    static SNAPSHOT_FILTER: Programs = OnceLock::new();
    let debugged;
    let programs = match work {
        Work::Debugged(socket) => {
            debugged = Ok(filter(RUN, true, false, Some(socket))?);
            &debugged
        }
        Work::Run => {
            RUN_FILTER.get_or_init(|| filter(RUN, true, false, None).map_err(|e| e.to_string()))
        }
        Work::Snapshot => SNAPSHOT_FILTER.get_or_init(|| {
            filter(&[RUN, SNAPSHOT].concat(), true, true, None).map_err(|e| e.to_string())
        }),
    }
    .as_ref()
    .map_err(|e| Error::Internal(e.clone()))?;
    install_reporter()?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("mote-run".into())
            .spawn_scoped(scope, move || {
                install(programs, false)?;
                run()
            })
            .map_err(|e| Error::Internal(format!("cannot start a thread for the run: {e}")))?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Installs the `SIGSYS` handler that reports a call a filter stopped, once per process.
fn install_reporter() -> Result<(), Error> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let installed = *INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only formats into a stack buffer,
        // writes it with write(2) and calls _exit(2), all async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = report_blocked_call as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) == 0
        }
    });
    if installed {
        Ok(())
    } else {
        Err(Error::Internal("cannot install the SIGSYS handler".into()))
    }
}

/// The exit status after a stopped call: mote's "host-side failure".
const STOPPED_STATUS: i32 = crate::exit_status::HOST_FAILURE as i32;

extern "C" fn report_blocked_call(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // `si_syscall` of a SIGSYS `siginfo_t`: after the signal number, error and code (three
    // ints, padded to 16 bytes) and `si_call_addr` (a pointer), `<asm-generic/siginfo.h>`.
    // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO; the offset is inside it.
    let call = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    let mut line = [0u8; 160];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let take = bytes.len().min(line.len() - len);
        line[len..len + take].copy_from_slice(&bytes[..take]);
        len += take;
    };
    put(b"mote: the seccomp filter stopped system call ");
    let mut digits = [0u8; 12];
    let mut at = digits.len();
    let mut value = call.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    put(&digits[at..]);
    put(b" (");
    put(name(call).as_bytes());
    put(b"): mote never makes it, so something is wrong; please report this\n");
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `line` is a live buffer of `len`
    // bytes.
    unsafe {
        libc::write(2, line.as_ptr().cast(), len);
        libc::_exit(STOPPED_STATUS);
    }
}

/// The names of calls an escaped guest might try first.
fn name(call: i32) -> &'static str {
    match i64::from(call) {
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_execve => "execve",
        libc::SYS_execveat => "execveat",
        libc::SYS_fork => "fork",
        libc::SYS_vfork => "vfork",
        libc::SYS_clone => "clone",
        libc::SYS_ptrace => "ptrace",
        libc::SYS_kill => "kill",
        libc::SYS_mount => "mount",
        libc::SYS_unlink => "unlink",
        libc::SYS_unlinkat => "unlinkat",
        libc::SYS_read => "read",
        libc::SYS_ioctl => "ioctl",
        _ => "see `ausyscall` or the kernel's syscall table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile() {
        assert!(filter(RUN, true, false, None).is_ok());
        assert!(filter(&[RUN, SNAPSHOT].concat(), true, true, None).is_ok());
        assert!(filter(REAPER, false, false, None).is_ok());
        assert!(filter(WATCHDOG, false, false, None).is_ok());
        assert!(filter(RUN, true, false, Some(7)).is_ok());
    }
}
