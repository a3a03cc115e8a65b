//! The container's memory cgroup: the shim joins it, so its guest's memory (anonymous memory
//! of the shim's, which KVM maps into the guest) and KVM's own counts against the container's
//! memory limit, as a runc container's processes do.
//!
//! Only the memory controller is used, at the spec's `cgroupsPath` under `/sys/fs/cgroup`
//! (cgroup v2, where the memory controller is enabled down the path as runc does) or
//! `/sys/fs/cgroup/memory` (v1). A path in systemd's `slice:prefix:name` form (kubelet's
//! systemd cgroup driver) is not supported yet: the shim then stays where containerd started
//! it, and says so in its log. The tests run on a cgroup v1 host.

use std::path::{Path, PathBuf};

/// A memory cgroup the shim has joined; [`leave`](Self::leave) moves it back and removes
/// what joining made.
pub struct Joined {
    /// Where the shim was before.
    original: PathBuf,
    /// The directories joining made, outermost first.
    created: Vec<PathBuf>,
    directory: PathBuf,
}

fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The shim's own cgroup, relative to the memory hierarchy's root.
fn own_cgroup(unified: bool) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    table.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let wanted = if unified {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "memory")
        };
        wanted.then(|| path.to_owned())
    })
}

fn remove_all(created: &[PathBuf]) {
    for directory in created.iter().rev() {
        if let Err(error) = std::fs::remove_dir(directory) {
            log::warn!("cannot remove {}: {error}", directory.display());
        }
    }
}

/// Joins the cgroup at `path` (relative to the memory hierarchy), made if missing, with
/// `limit` bytes as its memory limit when given. On failure nothing it made is left.
pub fn join(path: &str, limit: Option<u64>) -> Result<Option<Joined>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    if path.contains(':') {
        log::warn!(
            "cgroup path {path} is in systemd's form, which this shim does not handle: the \
             guest's memory is not charged to the container's cgroup"
        );
        return Ok(None);
    }
    let unified = unified();
    let (root, limit_file) = if unified {
        (PathBuf::from("/sys/fs/cgroup"), "memory.max")
    } else {
        (
            PathBuf::from("/sys/fs/cgroup/memory"),
            "memory.limit_in_bytes",
        )
    };
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return Err(format!(
            "cgroup path {path} leads out of the cgroup hierarchy"
        ));
    }
    let original = own_cgroup(unified)
        .map(|own| root.join(own.trim_start_matches('/')))
        .ok_or("cannot tell which cgroup the shim is in (/proc/self/cgroup)")?;
    let directory = root.join(relative);
    let mut created = Vec::new();
    let made = (|| {
        let mut at = root.clone();
        for part in relative.split('/').filter(|part| !part.is_empty()) {
            if unified {
                // A v2 cgroup has a controller only if its parent hands it down.
                std::fs::write(at.join("cgroup.subtree_control"), "+memory").map_err(|e| {
                    format!(
                        "cannot enable the memory controller in {}: {e}",
                        at.display()
                    )
                })?;
            }
            at.push(part);
            if !at.is_dir() {
                std::fs::create_dir(&at)
                    .map_err(|e| format!("cannot make the cgroup {}: {e}", at.display()))?;
                created.push(at.clone());
            }
        }
        if let Some(limit) = limit {
            std::fs::write(directory.join(limit_file), limit.to_string())
                .map_err(|e| format!("cannot limit the cgroup {}: {e}", directory.display()))?;
        }
        std::fs::write(
            directory.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| format!("cannot join the cgroup {}: {e}", directory.display()))
    })();
    match made {
        Ok(()) => Ok(Some(Joined {
            original,
            created,
            directory,
        })),
        Err(message) => {
            remove_all(&created);
            Err(message)
        }
    }
}

impl Joined {
    /// Moves the shim back to the cgroup it came from and removes what joining made.
    pub fn leave(self) {
        if let Err(error) = std::fs::write(
            self.original.join("cgroup.procs"),
            std::process::id().to_string(),
        ) {
            log::warn!("cannot leave {}: {error}", self.directory.display());
            return;
        }
        remove_all(&self.created);
    }
}
