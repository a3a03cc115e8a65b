//! The host memory a [`Hypervisor`](crate::Hypervisor)'s guests may take together.
//!
//! Guest RAM is reserved lazily (`MAP_NORESERVE`): a run costs nothing until its guest writes,
//! and then up to its whole memory size. Two guests within their own limits could therefore
//! take more than the machine (or the process's memory cgroup) has, and the kernel's OOM killer
//! would end the whole process, every other guest with it. So every run is charged its worst
//! case up front (its memory size, the output, console and timing samples it may make mote hold,
//! its input), and a run that would take the budget past its limit is refused, or waits, as the
//! embedder chooses. What many runs share (a snapshot's memory) is charged once, for as long as
//! it is held.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

/// The share of the machine's memory (or of the memory cgroup's limit) the default budget
/// takes: the rest is for the process itself, the kernel's own structures for each VM, and
/// everything else on the machine.
const DEFAULT_SHARE_PERCENT: u64 = 75;

/// The budget: its limit and what is charged against it.
#[derive(Debug)]
pub(crate) struct Budget {
    state: Mutex<Charged>,
    freed: Condvar,
}

#[derive(Debug)]
struct Charged {
    limit: u64,
    used: u64,
}

/// A charge against the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Charge {
    /// One charge for both: given back together, when the result is dropped.
    pub(crate) fn join(mut self, mut other: Charge) -> Charge {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget));
        self.bytes += std::mem::take(&mut other.bytes);
        self
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.used = state.used.saturating_sub(self.bytes);
        drop(state);
        self.budget.freed.notify_all();
    }
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Charged { limit, used: 0 }),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Charged> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_limit(&self, limit: u64) {
        self.lock().limit = limit;
        self.freed.notify_all();
    }

    /// (limit, used) in bytes.
    pub(crate) fn usage(&self) -> (u64, u64) {
        let state = self.lock();
        (state.limit, state.used)
    }

    /// Charges `bytes`, waiting up to `wait` for room; refuses at once what could never fit.
    pub(crate) fn charge(self: &Arc<Self>, bytes: u64, wait: Duration) -> Result<Charge, Error> {
        let deadline = Instant::now().checked_add(wait);
        let mut state = self.lock();
        loop {
            let over = |state: &Charged| Error::OverBudget {
                needed: bytes,
                free: state.limit.saturating_sub(state.used),
                limit: state.limit,
            };
            if bytes > state.limit {
                return Err(over(&state));
            }
            if state.used.saturating_add(bytes) <= state.limit {
                state.used += bytes;
                return Ok(Charge {
                    budget: Arc::clone(self),
                    bytes,
                });
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(over(&state));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The default budget: three quarters of the memory this process may use, the lower of the
/// machine's memory and its memory cgroup's limit.
pub(crate) fn default_limit() -> u64 {
    let machine = meminfo_total().unwrap_or(u64::MAX);
    let cgroup = cgroup_limit().unwrap_or(u64::MAX);
    let available = machine.min(cgroup);
    if available == u64::MAX {
        // Neither could be read: a budget too large to bind, as before budgets.
        return u64::MAX;
    }
    available / 100 * DEFAULT_SHARE_PERCENT
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&meminfo)
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of this process's memory cgroup, in bytes, if it has one (v2 `memory.max`,
/// else v1 `memory.limit_in_bytes`).
fn cgroup_limit() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in groups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            }
            _ => continue,
        };
        if let Some(limit) = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_limit(&text))
        {
            return Some(limit);
        }
    }
    None
}

/// A cgroup limit file's value; `max` (v2), or a v1 "no limit" that is near `i64::MAX`, is none.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 62).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_come_back_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.charge(60, Duration::ZERO).unwrap();
        let refused = budget.charge(50, Duration::ZERO).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::OverBudget {
                    needed: 50,
                    free: 40,
                    limit: 100
                }
            ),
            "{refused}"
        );
        assert!(matches!(
            budget.charge(101, Duration::from_secs(60)).unwrap_err(),
            Error::OverBudget { needed: 101, .. }
        ));
        drop(a);
        assert_eq!(budget.usage(), (100, 0));
        let _b = budget.charge(100, Duration::ZERO).unwrap();
    }

    #[test]
    fn joined_charges_come_back_together() {
        let budget = Budget::new(100);
        let a = budget.charge(30, Duration::ZERO).unwrap();
        let b = budget.charge(20, Duration::ZERO).unwrap();
        let both = a.join(b);
        assert_eq!(budget.usage(), (100, 50));
        drop(both);
        assert_eq!(budget.usage(), (100, 0));
    }

    #[test]
    fn a_charge_can_wait_for_room() {
        let budget = Budget::new(100);
        let held = budget.charge(80, Duration::ZERO).unwrap();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.charge(50, Duration::from_secs(10)).map(|_| ()))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap().is_ok());
        let held = budget.charge(80, Duration::ZERO).unwrap();
        let started = Instant::now();
        assert!(budget.charge(50, Duration::from_millis(50)).is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
    }

    #[test]
    fn limits_are_read_from_meminfo_and_cgroup_files() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24684096 kB\nMemFree: 1 kB\n"),
            Some(24684096 * 1024)
        );
        assert_eq!(parse_meminfo_total("nothing"), None);
        assert_eq!(parse_limit("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert!(default_limit() > 0);
    }
}
