//! `cargo xtask run --watch`: rebuild and reboot a guest whenever its sources or the `mote`
//! command's change. It polls modification times (see docs/decisions.md for why not inotify).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

/// How often the watched files are looked at.
pub const POLL: Duration = Duration::from_millis(300);

/// Every watched file and its modification time.
pub type Snapshot = BTreeMap<PathBuf, SystemTime>;

/// The files that differ between two snapshots: added, removed or modified. Sorted.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(path, time)| before.get(*path) != Some(*time))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|path| !after.contains_key(*path))
            .cloned(),
    );
    changed.sort();
    changed
}

/// Whether a directory is left out of a snapshot: build output (`target`) and hidden ones
/// (`.git`, editors' state).
fn skipped(name: &str) -> bool {
    name == "target" || name.starts_with('.')
}

/// Records every file under `roots` (files or directories, walked recursively; a missing root
/// is just empty), without build output or hidden directories.
pub fn snapshot(roots: &[PathBuf]) -> Snapshot {
    let mut files = Snapshot::new();
    let mut pending: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if entry.file_type().is_ok_and(|kind| kind.is_dir())
                    && skipped(&name.to_string_lossy())
                {
                    continue;
                }
                pending.push(entry.path());
            }
        } else if let Ok(modified) = metadata.modified() {
            files.insert(path, modified);
        }
    }
    files
}

/// What one boot needs: build it (guest and `mote`), then the command that runs it.
pub trait Target {
    /// Builds what the boot runs.
    fn build(&self) -> Result<()>;
    /// The `mote run` command.
    fn command(&self) -> Command;
}

/// Builds and boots `target`, then rebuilds and reboots it whenever a file under `roots`
/// changes, stopping a guest still running first. Runs until killed (Ctrl-C: the terminal
/// stops mote and this loop together).
pub fn watch(target: &dyn Target, roots: &[PathBuf]) -> Result<ExitCode> {
    let root_list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    crate::announce(&format!(
        "watching {} (every {} ms); Ctrl-C stops",
        root_list.join(", "),
        POLL.as_millis()
    ));
    loop {
        let before = settled(roots);
        let mut running = start(target)?;
        let mut now = before.clone();
        // Wait for a change, noting when the guest ends on its own.
        while changes(&before, &now).is_empty() {
            std::thread::sleep(POLL);
            if let Some(child) = &mut running
                && let Some(status) = child.try_wait().context("cannot wait for mote")?
            {
                crate::announce(&format!(
                    "mote exited ({}); waiting for a change",
                    status
                        .code()
                        .map_or_else(|| status.to_string(), |code| format!("code {code}"))
                ));
                running = None;
            }
            now = snapshot(roots);
        }
        let changed = changes(&before, &now);
        crate::announce(&format!(
            "{} changed{}: rebuilding",
            display(&changed[0]),
            match changed.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ));
        if let Some(mut child) = running {
            // SIGKILL: mote's guest goes with it, and nothing of it is worth keeping.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A snapshot taken once the files stop changing (an editor or `git checkout` writes several
/// files, not all at once).
fn settled(roots: &[PathBuf]) -> Snapshot {
    let mut last = snapshot(roots);
    loop {
        std::thread::sleep(POLL);
        let now = snapshot(roots);
        if changes(&last, &now).is_empty() {
            return now;
        }
        last = now;
    }
}

/// Builds and starts the boot; a failed build is reported, and the watch goes on (the next
/// change may fix it).
fn start(target: &dyn Target) -> Result<Option<Child>> {
    if let Err(error) = target.build() {
        crate::announce(&format!("build failed: {error:#}; waiting for a change"));
        return Ok(None);
    }
    let mut command = target.command();
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            // If this watch dies (killed, not Ctrl-C'd with its terminal's process group),
            // mote gets SIGTERM, stops its guest and exits, rather than run on orphaned.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", crate::describe(&command)))?;
    Ok(Some(child))
}

/// A path relative to the workspace root, for messages.
fn display(path: &Path) -> String {
    let root = crate::root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn snap(files: &[(&str, u64)]) -> Snapshot {
        files
            .iter()
            .map(|&(path, seconds)| (PathBuf::from(path), at(seconds)))
            .collect()
    }

    #[test]
    fn changes_are_files_added_removed_or_modified() {
        let before = snap(&[("a.rs", 1), ("b.rs", 1), ("c.rs", 1)]);
        assert!(changes(&before, &before.clone()).is_empty());
        let after = snap(&[("a.rs", 1), ("b.rs", 2), ("d.rs", 1)]);
        assert_eq!(
            changes(&before, &after),
            [
                PathBuf::from("b.rs"),
                PathBuf::from("c.rs"),
                PathBuf::from("d.rs")
            ]
        );
        // A time going backwards (a checkout of an older file) is a change too.
        let older = snap(&[("a.rs", 0), ("b.rs", 1), ("c.rs", 1)]);
        assert_eq!(changes(&before, &older), [PathBuf::from("a.rs")]);
        assert!(changes(&Snapshot::new(), &Snapshot::new()).is_empty());
    }

    #[test]
    fn a_snapshot_sees_sources_and_skips_build_output_and_hidden_directories() {
        let dir = std::env::temp_dir().join(format!("xtask-watch-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for path in ["src/main.rs", "Cargo.toml", "target/debug/x", ".git/HEAD"] {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let missing = dir.join("missing");
        let files = snapshot(&[dir.clone(), missing]);
        let names: Vec<_> = files
            .keys()
            .map(|path| path.strip_prefix(&dir).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            [PathBuf::from("Cargo.toml"), PathBuf::from("src/main.rs")]
        );
        // Touching a source shows as its change.
        let main = dir.join("src/main.rs");
        let file = std::fs::File::options().write(true).open(&main).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            changes(&files, &snapshot(std::slice::from_ref(&dir))),
            [main]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
