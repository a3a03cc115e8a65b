//! What `mote bench` can control about noise (the CPU the runs use) and what it can only
//! report (frequency scaling, a busy SMT sibling, the machine's load). The preemptions of the
//! vCPU's thread are counted by the run itself (`RunConfig::count_preemptions`).

use std::path::Path;

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "CPU {cpu} is beyond the {} a CPU set holds",
                libc::CPU_SETSIZE
            ),
        ));
    }
    // SAFETY: `set` is a plain bit set, zeroed by `CPU_ZERO` and given one bit below
    // `CPU_SETSIZE` (checked above); `sched_setaffinity` reads `size_of::<cpu_set_t>()` bytes
    // of it, and pid 0 names the calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What the machine was like while the benchmark ran: what could not be controlled.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// The CPU model, from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// CPUs online.
    pub cpus: usize,
    /// The frequency governor of the CPU the runs used (of CPU 0 when not pinned), or `None`
    /// when the kernel offers no cpufreq interface (as in most VMs).
    pub governor: Option<String>,
    /// Whether simultaneous multithreading is on.
    pub smt_active: Option<bool>,
    /// The pinned CPU's SMT siblings (itself included), as the kernel lists them.
    pub smt_siblings: Option<String>,
    /// The one-minute load average at the start and at the end.
    pub load_before: Option<f64>,
    /// See `load_before`.
    pub load_after: Option<f64>,
}

impl Environment {
    /// Reads what can be read now (the load average at the end is filled in later).
    pub fn probe(pinned: Option<usize>) -> Self {
        let cpu = pinned.unwrap_or(0);
        let cpu_dir = format!("/sys/devices/system/cpu/cpu{cpu}");
        Self {
            cpu_model: read_trimmed("/proc/cpuinfo").and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            }),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            governor: read_trimmed(format!("{cpu_dir}/cpufreq/scaling_governor")),
            smt_active: read_trimmed("/sys/devices/system/cpu/smt/active").map(|v| v == "1"),
            smt_siblings: pinned
                .and_then(|_| read_trimmed(format!("{cpu_dir}/topology/thread_siblings_list"))),
            load_before: load_average(),
            load_after: None,
        }
    }

    /// What the report must say was not controlled, one line each.
    pub fn uncontrolled(&self, pinned: Option<usize>) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.governor {
            None => lines.push(
                "CPU frequency: no cpufreq interface here (usual in a VM), so scaling and turbo \
                 are unknown; TSC cycles count at a fixed rate whatever the core's clock"
                    .to_owned(),
            ),
            Some(governor) if governor != "performance" => lines.push(format!(
                "CPU frequency: the governor is `{governor}`, which changes the clock with load \
                 (`performance` holds it)"
            )),
            Some(_) => {}
        }
        match (pinned, self.smt_active, &self.smt_siblings) {
            (_, Some(false), _) => {}
            (Some(cpu), _, Some(siblings)) if siblings.contains([',', '-']) => lines.push(format!(
                "SMT: CPU {cpu} shares its core with CPUs {siblings}; work there slows the runs"
            )),
            (None, Some(true), _) => lines.push(
                "SMT: on, and the runs are not pinned (--pin CPU); a busy sibling slows them"
                    .to_owned(),
            ),
            _ => {}
        }
        if pinned.is_none() {
            lines.push(
                "placement: the vCPU's thread is not pinned (--pin CPU), so it may move between \
                 CPUs"
                    .to_owned(),
            );
        }
        let busiest = self
            .load_before
            .into_iter()
            .chain(self.load_after)
            .fold(0.0, f64::max);
        if busiest >= 0.5 {
            lines.push(format!(
                "load: the one-minute load average reached {busiest:.2}: other work shared the \
                 machine"
            ));
        }
        lines
    }
}

/// The one-minute load average.
pub fn load_average() -> Option<f64> {
    read_trimmed("/proc/loadavg")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_not_controlled_is_said() {
        let environment = Environment {
            governor: Some("powersave".into()),
            smt_active: Some(true),
            smt_siblings: Some("1,3".into()),
            load_before: Some(1.5),
            ..Environment::default()
        };
        let lines = environment.uncontrolled(Some(1));
        assert!(lines.iter().any(|l| l.contains("`powersave`")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("CPUs 1,3")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("1.50")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("not pinned")), "{lines:?}");

        let quiet = Environment {
            governor: Some("performance".into()),
            smt_active: Some(false),
            load_before: Some(0.1),
            load_after: Some(0.2),
            ..Environment::default()
        };
        assert_eq!(quiet.uncontrolled(Some(0)), Vec::<String>::new());
        assert!(quiet.uncontrolled(None)[0].contains("not pinned"));
    }

    #[test]
    fn pinning_to_a_cpu_beyond_the_set_is_refused() {
        assert!(pin_to(libc::CPU_SETSIZE as usize).is_err());
    }
}
