//! The container's memory cgroup: the shim joins it, so its guest's memory (anonymous memory
//! of the shim's, which KVM maps into the guest) and KVM's own counts against the container's
//! memory limit, as a runc container's processes do.
//!
//! Only the memory controller is used, at the spec's `cgroupsPath` under `/sys/fs/cgroup`
//! (cgroup v2) or `/sys/fs/cgroup/memory` (v1). A path in systemd's `slice:prefix:name` form
//! (kubelet's systemd cgroup driver) is not supported yet: the shim then stays where
//! containerd started it, and says so in its log.

use std::path::{Path, PathBuf};

/// A memory cgroup the shim has joined; [`leave`](Self::leave) moves it out and removes it.
pub struct Joined {
    directory: PathBuf,
    parent: PathBuf,
}

fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Joins the cgroup at `path` (relative to the memory hierarchy), made if missing, with
/// `limit` bytes as its memory limit when given.
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
    let (root, limit_file) = if unified() {
        (PathBuf::from("/sys/fs/cgroup"), "memory.max")
    } else {
        (
            PathBuf::from("/sys/fs/cgroup/memory"),
            "memory.limit_in_bytes",
        )
    };
    let directory = root.join(path.trim_start_matches('/'));
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "cannot {what} the container's cgroup {}: {e}",
            directory.display()
        )
    };
    std::fs::create_dir_all(&directory).map_err(|e| fail("make", e))?;
    if let Some(limit) = limit {
        std::fs::write(directory.join(limit_file), limit.to_string())
            .map_err(|e| fail("limit", e))?;
    }
    std::fs::write(
        directory.join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| fail("join", e))?;
    Ok(Some(Joined {
        parent: directory.parent().unwrap_or(&root).to_path_buf(),
        directory,
    }))
}

impl Joined {
    /// Moves the shim to the parent cgroup and removes the container's.
    pub fn leave(self) {
        if let Err(error) = std::fs::write(
            self.parent.join("cgroup.procs"),
            std::process::id().to_string(),
        ) {
            log::warn!("cannot leave {}: {error}", self.directory.display());
            return;
        }
        if let Err(error) = std::fs::remove_dir(&self.directory) {
            log::warn!("cannot remove {}: {error}", self.directory.display());
        }
    }
}
