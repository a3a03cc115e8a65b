//! Where mote's own threads, and the thread KVM starts for each VM, may run: on the CPUs of
//! the process, not only on the CPU a caller pinned its own thread to.
//!
//! A thread inherits its creator's CPU mask. mote starts its watchdog, reaper, pool, console and
//! debugger threads from whichever thread first needs them (often a run's thread), and KVM
//! starts a thread of its own for each VM (Linux's `kvm-nx-lpage-recovery`: a thread of the
//! process since 6.13, started by the VM's first `KVM_RUN` since 6.14 and 6.13.3) from the
//! thread that first enters the VM. A benchmark that pinned its run thread to one CPU, to keep
//! everything else off it, would otherwise find all of them pinned there too: measured, KVM's
//! thread preempted every pinned run once while the guest ran, and again when the reaper stopped
//! it during the next run.
//!
//! "The CPUs of the process" are those its main thread may use: `taskset` on a whole process
//! keeps mote's threads within it, while one thread of the process pinned on its own does not
//! take them along. KVM's thread gets the pinned thread's CPUs and the process's.

use std::mem::{size_of, zeroed};

/// A set of CPUs, as `sched_getaffinity` reports it.
#[derive(Clone, Copy)]
struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs thread `tid` may run on (0: the calling thread), if the kernel says.
    fn of(tid: libc::pid_t) -> Option<Self> {
        // SAFETY: a zeroed cpu_set_t is an empty set, a valid value of this plain bit array.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes into `set`, which has
        // that room; it only reads `tid`.
        let read = unsafe { libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set) };
        (read == 0).then_some(Self(set))
    }

    /// The CPUs of the process: its main thread's.
    fn of_process() -> Option<Self> {
        // SAFETY: getpid has no preconditions; the process id is its main thread's id.
        Self::of(unsafe { libc::getpid() })
    }

    /// Lets the calling thread run on these CPUs; false if the kernel refused.
    fn apply_to_this_thread(&self) -> bool {
        // SAFETY: the kernel reads `size_of::<cpu_set_t>()` bytes of `self.0`, all of it; pid 0
        // is the calling thread.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) == 0 }
    }

    /// The CPUs of either set.
    fn union(&self, other: &Self) -> Self {
        let mut union = self.0;
        for cpu in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: reads a bit below CPU_SETSIZE of an initialised set, and sets the same bit
            // of another.
            unsafe {
                if libc::CPU_ISSET(cpu, &other.0) {
                    libc::CPU_SET(cpu, &mut union);
                }
            }
        }
        Self(union)
    }

    fn same_as(&self, other: &Self) -> bool {
        // SAFETY: compares two whole, initialised sets; it only reads them.
        unsafe { libc::CPU_EQUAL(&self.0, &other.0) }
    }
}

/// Starts one of mote's own threads, named `name`, running `body` on the CPUs of the process
/// whatever the CPUs of the thread that starts it.
pub(crate) fn spawn_helper<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            leave_creators_cpus();
            body()
        })
}

/// Gives the calling thread (one of mote's own, as it starts) the CPUs of the process, whatever
/// it inherited from the thread that started it. Where that fails the thread stays where it is.
fn leave_creators_cpus() {
    if let (Some(process), Some(own)) = (CpuSet::of_process(), CpuSet::of(0))
        && !own.same_as(&process)
        && !process.apply_to_this_thread()
    {
        tracing::debug!("a mote thread stays on the CPUs of the thread that started it");
    }
}

/// While it lives, the calling thread may also run on the CPUs of the process; dropping it gives
/// the thread back the CPUs it had. The thread keeps its own CPUs meanwhile: were it moved off
/// its CPU and back, each move would cost more than what this saves. `None` if the thread had
/// the process's CPUs already (or the kernel will not say or refuses): nothing to undo.
pub(crate) struct ProcessCpus {
    own: CpuSet,
}

impl ProcessCpus {
    /// Widens the calling thread's CPUs to the process's, if it lacks some of them.
    pub(crate) fn widen() -> Option<Self> {
        let own = CpuSet::of(0)?;
        let wider = own.union(&CpuSet::of_process()?);
        if own.same_as(&wider) || !wider.apply_to_this_thread() {
            return None;
        }
        Some(Self { own })
    }
}

impl Drop for ProcessCpus {
    fn drop(&mut self) {
        if !self.own.apply_to_this_thread() {
            // The thread had these CPUs a moment ago; this does not happen short of the CPUs
            // going offline, and then the kernel has moved the thread already.
            tracing::warn!("cannot give a pinned thread back its CPUs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs of the calling thread, as a list of indices.
    fn own_cpus() -> Vec<usize> {
        let set = CpuSet::of(0).expect("sched_getaffinity");
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: reads one bit below CPU_SETSIZE of an initialised set.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set.0) })
            .collect()
    }

    fn pin_to(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is an empty set.
        let mut set: libc::cpu_set_t = unsafe { zeroed() };
        // SAFETY: sets one bit of the set; `cpu` comes from the process's set, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        assert!(CpuSet(set).apply_to_this_thread(), "pinning to CPU {cpu}");
    }

    #[test]
    fn a_pinned_thread_is_widened_to_the_process_and_pinned_again_after() {
        let process = std::thread::spawn(own_cpus).join().unwrap();
        if process.len() < 2 {
            eprintln!("skipped: the process may use only one CPU");
            return;
        }
        let last = *process.last().unwrap();
        std::thread::spawn(move || {
            pin_to(last);
            let widened = ProcessCpus::widen().expect("a pinned thread is widened");
            assert_eq!(own_cpus(), process);
            drop(widened);
            assert_eq!(own_cpus(), vec![last]);
            // A thread of mote's it starts leaves its creator's CPU for the process's.
            let started = spawn_helper("mote-test", own_cpus).unwrap();
            assert_eq!(started.join().unwrap(), process);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_on_the_process_cpus_is_left_alone() {
        std::thread::spawn(|| assert!(ProcessCpus::widen().is_none()))
            .join()
            .unwrap();
    }
}
