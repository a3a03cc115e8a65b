//! One container: its bundle, the guest its image holds, and the one run of that guest.
//!
//! A mote container image holds a guest kernel ELF and names it as the container's command
//! (`mote package` builds such images). At `create` the shim mounts the container's root
//! filesystem, reads the spec and the guest, and unmounts it again: the guest is in memory
//! from then on, so nothing stays mounted while it runs. At `start` a thread runs the guest:
//! the container's stdin is its input, its console and then its output go to the container's
//! stdout, and why it ended (when it did not exit 0) to the container's stderr.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use containerd_shim::api::{CreateTaskRequest, Status};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use mote_host::{CancelToken, Exit, GuestImage, Hypervisor, RunConfig};

use crate::cgroup;

/// What the shim keeps for itself and for KVM out of a container's memory limit: the shim
/// process, the VM's kernel structures, and the guest's output held until the run ends. The
/// guest gets the rest.
pub const OVERHEAD: u64 = 16 << 20;

/// The output a container's guest may write, at most (it is held in the shim until the run
/// ends, so it counts against the memory limit).
pub const OUTPUT_LIMIT: u64 = 16 << 20;

/// The console a container's guest may write (streamed to its stdout as it comes, but
/// counted against the memory limit as mote counts any run's).
pub const CONSOLE_LIMIT: u64 = 1 << 20;

/// The timing samples a container's guest may report (`mote_guest::bench`). The shim passes
/// them nowhere, but mote holds them until the run ends, so they count against the memory
/// limit (24 bytes each: 1.5 MiB); a guest that reports more is stopped as past a limit.
pub const SAMPLE_LIMIT: u64 = 64 * 1024;

/// Host memory the guest's timing samples may take.
const SAMPLES_HELD: u64 = SAMPLE_LIMIT * std::mem::size_of::<mote_host::Sample>() as u64;

/// The input a container's guest may be given on stdin, at most.
pub const INPUT_LIMIT: u64 = mote_host::DEFAULT_INPUT_LIMIT;

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Stopped,
}

impl Phase {
    pub fn status(self) -> Status {
        match self {
            Phase::Created => Status::CREATED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        }
    }
}

#[derive(Debug)]
pub struct State {
    pub phase: Phase,
    pub exit_status: u32,
    pub exited_at: Option<Timestamp>,
    /// The signal `kill` sent, if one stopped the guest.
    killed_by: Option<u32>,
}

type ExitHook = Box<dyn FnOnce(u32, Timestamp) + Send>;

/// The annotation containerd's CRI plugin puts on a pod's sandbox ("pause") container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// A container and its guest.
pub struct Container {
    pub id: String,
    pub bundle: String,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    /// The guest; `None` for a pod's sandbox container, which runs nothing.
    image: Mutex<Option<GuestImage>>,
    sandbox: bool,
    /// Called once the container has stopped, after it was started.
    on_exit: Mutex<Option<ExitHook>>,
    memory: Option<u64>,
    /// The container's memory limit, if it has one.
    limit: Option<u64>,
    output_limit: u64,
    state: Mutex<State>,
    changed: Condvar,
    cancel: CancelToken,
    cgroup: Mutex<Option<cgroup::Joined>>,
    /// Set while the run waits for its input on stdin: a kill then ends the container at once
    /// (the read cannot be cancelled; the thread is left to the shim's exit).
    reading_input: std::sync::atomic::AtomicBool,
}

/// Now, as containerd's events and answers carry it.
fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

/// The guest memory a container with a memory limit of `limit` bytes gets, and the output
/// limit it runs with; or why it cannot run. The input, held by the shim while it is copied
/// into the guest, comes out of the guest's share when the container starts.
pub fn split_memory(limit: u64) -> Result<(u64, u64), String> {
    let output = OUTPUT_LIMIT.min(limit / 4);
    let guest = limit.saturating_sub(OVERHEAD + output + CONSOLE_LIMIT + SAMPLES_HELD) & !0xFFF;
    if guest < 2 << 20 {
        return Err(format!(
            "the container's memory limit of {} leaves no room for a guest: mote keeps {} for \
             itself and KVM, {} for the console, {} for timing samples and a quarter of the limit \
             (at most {}) for the guest's output, and a guest needs at least 2 MiB; raise the \
             limit",
            mote_host::human_size(limit),
            mote_host::human_size(OVERHEAD),
            mote_host::human_size(CONSOLE_LIMIT),
            mote_host::human_size(SAMPLES_HELD),
            mote_host::human_size(OUTPUT_LIMIT)
        ));
    }
    Ok((guest, output))
}

impl Container {
    /// Mounts the container's root filesystem, reads the guest its spec names, and unmounts.
    pub fn create(request: &CreateTaskRequest) -> Result<Self, String> {
        let bundle = Path::new(&request.bundle);
        let spec = containerd_shim::util::read_spec_from_file(&request.bundle)
            .map_err(|e| format!("cannot read the bundle's config.json: {e}"))?;
        let sandbox = spec
            .annotations()
            .as_ref()
            .and_then(|annotations| annotations.get(CONTAINER_TYPE))
            .is_some_and(|kind| kind == "sandbox");
        if sandbox {
            // A pod's sandbox container only holds the pod's place (its namespaces, for a
            // runc pod): a mote pod's containers are VMs, so it runs nothing at all.
            return Ok(Self::new(request, None, None, None, OUTPUT_LIMIT, None));
        }
        let root = spec
            .root()
            .as_ref()
            .map(|root| bundle.join(root.path()))
            .unwrap_or_else(|| bundle.join("rootfs"));
        let mounted = mount_rootfs(request, &root)?;
        let guest = (|| {
            let args = spec
                .process()
                .as_ref()
                .and_then(|process| process.args().clone())
                .unwrap_or_default();
            let command = args.first().ok_or(
                "the container has no command: a mote image names its guest as its entrypoint \
                 (build it with `mote package`)",
            )?;
            let path = inside(&root, command)?;
            GuestImage::from_file(&path).map_err(|e| {
                format!(
                    "the container's command {command} is not a guest mote can boot: {}",
                    e.full_message()
                )
            })
        })();
        if mounted {
            unmount(&root);
        }
        let image = guest?;
        let limit = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().as_ref())
            .and_then(|resources| resources.memory().as_ref())
            .and_then(|memory| memory.limit())
            .filter(|&limit| limit > 0)
            .map(|limit| limit as u64);
        let (memory, output_limit) = match limit {
            Some(limit) => {
                let (guest, output) = split_memory(limit)?;
                (Some(guest), output)
            }
            None => (None, OUTPUT_LIMIT),
        };
        let cgroups_path = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.cgroups_path().clone())
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let joined = match cgroup::join(&cgroups_path, limit) {
            Ok(joined) => joined,
            // A limit mote cannot enforce is refused; without one, the cgroup only counts.
            Err(message) if limit.is_some() => return Err(message),
            Err(message) => {
                log::warn!("{message}");
                None
            }
        };
        Ok(Self::new(
            request,
            Some(image),
            memory,
            limit,
            output_limit,
            joined,
        ))
    }

    fn new(
        request: &CreateTaskRequest,
        image: Option<GuestImage>,
        memory: Option<u64>,
        limit: Option<u64>,
        output_limit: u64,
        cgroup: Option<cgroup::Joined>,
    ) -> Self {
        Self {
            id: request.id.clone(),
            bundle: request.bundle.clone(),
            stdin: request.stdin.clone(),
            stdout: request.stdout.clone(),
            stderr: request.stderr.clone(),
            sandbox: image.is_none(),
            image: Mutex::new(image),
            on_exit: Mutex::new(None),
            memory,
            limit,
            output_limit,
            state: Mutex::new(State {
                phase: Phase::Created,
                exit_status: 0,
                exited_at: None,
                killed_by: None,
            }),
            changed: Condvar::new(),
            cancel: CancelToken::new(),
            cgroup: Mutex::new(cgroup),
            reading_input: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the container stopped with `status` and tells whoever waits.
    fn finish(&self, status: u32) {
        let at = now();
        {
            let mut state = self.state();
            if state.phase == Phase::Stopped {
                return;
            }
            state.phase = Phase::Stopped;
            state.exit_status = status;
            state.exited_at = Some(at.clone());
        }
        self.changed.notify_all();
        let hook = self
            .on_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            hook(status, at);
        }
    }

    /// Leaves and removes the container's cgroup: the container is being deleted.
    pub fn release(&self) {
        if let Some(joined) = self.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take() {
            joined.leave();
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the guest on a thread of its own; `exited` is called once it has ended.
    pub fn start(
        self: &Arc<Self>,
        hypervisor: &Hypervisor,
        exited: impl FnOnce(u32, Timestamp) + Send + 'static,
    ) -> Result<(), String> {
        let image = {
            let mut state = self.state();
            if state.phase != Phase::Created {
                return Err(format!("container {} was already started", self.id));
            }
            state.phase = Phase::Running;
            *self.on_exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(exited));
            self.image.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        // A sandbox runs until it is killed.
        let Some(image) = image else {
            return Ok(());
        };
        let container = Arc::clone(self);
        let hypervisor = hypervisor.clone();
        std::thread::Builder::new()
            .name("mote-container".into())
            .spawn(move || {
                let status = container.run(&hypervisor, &image);
                container.finish(status);
            })
            .map_err(|e| {
                self.finish(u32::from(mote_host::exit_status::HOST_FAILURE));
                format!("cannot start the guest's thread: {e}")
            })?;
        Ok(())
    }

    /// Runs the guest to its end; the container's exit status.
    fn run(&self, hypervisor: &Hypervisor, image: &GuestImage) -> u32 {
        let mut stdout = open_fifo(&self.stdout, true);
        let mut stderr: Box<dyn Write> = match open_fifo(&self.stderr, true) {
            Some(file) => Box::new(file),
            None => Box::new(std::io::sink()),
        };
        use std::sync::atomic::Ordering;
        self.reading_input.store(true, Ordering::SeqCst);
        let input = read_input(&self.stdin);
        self.reading_input.store(false, Ordering::SeqCst);
        if self.cancel.is_cancelled() {
            // Killed while it waited for its input (`kill` may have ended the container
            // already; a second end changes nothing).
            return 128 + self.state().killed_by.unwrap_or(libc::SIGKILL as u32);
        }
        let input = match input {
            Ok(input) => input,
            Err(message) => {
                let _ = writeln!(stderr, "mote: {message}");
                return u32::from(mote_host::exit_status::USAGE);
            }
        };
        let console = match stdout.as_ref().map(File::try_clone) {
            Some(Ok(file)) => Box::new(file) as Box<dyn Write + Send>,
            _ => Box::new(std::io::sink()),
        };
        // The guest's share of the limit holds the input twice (in the shim, and in the
        // guest): what the input takes comes out of the guest's memory.
        let memory = self.memory.map(|memory| {
            let input = (input.len() as u64).next_multiple_of(4096);
            memory.saturating_sub(input).max(2 << 20)
        });
        let config = RunConfig::default()
            .no_timeout()
            .input_limit(INPUT_LIMIT)
            .console_limit(CONSOLE_LIMIT)
            .output_limit(self.output_limit)
            .sample_limit(SAMPLE_LIMIT)
            .console_to(console)
            .cancel_token(self.cancel.clone())
            .input(input);
        let config = match memory {
            Some(bytes) => config.memory_size(bytes),
            None => Ok(config),
        };
        if let Some(limit) = self.limit {
            // The container's cgroup bounds the shim; mote's budget is the guest's part of it
            // (its default, a share of the cgroup's limit, would leave the guest's part unused).
            hypervisor.set_memory_budget(limit.saturating_sub(OVERHEAD));
        }
        let result = config.and_then(|config| hypervisor.run(image, config));
        match result {
            Ok(outcome) => {
                if let Some(stdout) = stdout.as_mut() {
                    let _ = stdout.write_all(&outcome.output);
                }
                let killed_by = self.state().killed_by;
                match (&outcome.exit, killed_by) {
                    (Exit::Cancelled, Some(signal)) => 128 + signal,
                    (exit, _) => {
                        let code = exit.process_exit_code();
                        if code != 0 {
                            let _ = writeln!(stderr, "mote: {exit}");
                        }
                        u32::from(code)
                    }
                }
            }
            Err(error) => {
                let _ = writeln!(stderr, "mote: error: {}", error.full_message());
                u32::from(error.process_exit_code())
            }
        }
    }

    /// Stops the guest with `signal`'s meaning: the run is cancelled, and the container exits
    /// with 128 + `signal`, as a process killed by it would.
    pub fn kill(&self, signal: u32) {
        let mut state = self.state();
        match state.phase {
            Phase::Created => {
                drop(state);
                self.finish(128 + signal);
            }
            Phase::Running
                if self.sandbox || self.reading_input.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                state.killed_by.get_or_insert(signal);
                drop(state);
                self.cancel.cancel();
                self.finish(128 + signal);
            }
            Phase::Running => {
                state.killed_by.get_or_insert(signal);
                drop(state);
                self.cancel.cancel();
            }
            Phase::Stopped => {}
        }
    }

    /// Waits until the container has stopped; its exit status and time.
    pub fn wait(&self) -> (u32, Timestamp) {
        let mut state = self.state();
        while state.phase != Phase::Stopped {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        (
            state.exit_status,
            state.exited_at.clone().unwrap_or_default(),
        )
    }
}

/// `command` resolved inside the container's root filesystem `root`: the image names it, and
/// a root process opens it, so `..` and symbolic links may not lead out of the image.
fn inside(root: &Path, command: &str) -> Result<PathBuf, String> {
    let outside = || format!("the container's command {command} leads out of its root filesystem");
    let root = std::fs::canonicalize(root)
        .map_err(|e| format!("cannot resolve the root filesystem {}: {e}", root.display()))?;
    let path = std::fs::canonicalize(root.join(command.trim_start_matches('/')))
        .map_err(|e| format!("the container's command {command} cannot be found: {e}"))?;
    if path.starts_with(&root) {
        Ok(path)
    } else {
        Err(outside())
    }
}

/// Mounts the request's root filesystem at `root`; whether anything was mounted.
fn mount_rootfs(request: &CreateTaskRequest, root: &Path) -> Result<bool, String> {
    if request.rootfs.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(root).map_err(|e| format!("cannot make {}: {e}", root.display()))?;
    for mount in &request.rootfs {
        let fs_type = (!mount.type_.is_empty()).then_some(mount.type_.as_str());
        let source = (!mount.source.is_empty()).then_some(mount.source.as_str());
        if let Err(error) =
            containerd_shim::mount::mount_rootfs(fs_type, source, &mount.options, root)
        {
            unmount(root);
            return Err(format!(
                "cannot mount the container's root filesystem: {error}"
            ));
        }
    }
    Ok(true)
}

/// Unmounts what is mounted at `root`, logging (not failing) on trouble: a shim that cannot
/// unmount still reports the container's outcome.
pub fn unmount(root: &Path) {
    let Some(target) = root.to_str() else { return };
    if let Err(error) = containerd_shim::mount::umount_recursive(Some(target), libc::MNT_DETACH) {
        log::warn!("cannot unmount {target}: {error}");
    }
}

/// Where the bundle's root filesystem is mounted.
pub fn rootfs_of(bundle: &str) -> PathBuf {
    Path::new(bundle).join("rootfs")
}

/// Opens one of the container's fifos: without blocking on a missing other end, then
/// blocking for the copy. `None` if there is no fifo (or no one at its other end).
fn open_fifo(path: &str, write: bool) -> Option<File> {
    if path.is_empty() {
        return None;
    }
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| log::warn!("cannot open {path}: {e}"))
        .ok()?;
    set_blocking(&file);
    Some(file)
}

fn set_blocking(file: &File) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns, reading and then clearing
    // one status flag.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// The container's stdin, up to [`INPUT_LIMIT`] bytes.
fn read_input(path: &str) -> Result<Vec<u8>, String> {
    let Some(file) = open_fifo(path, false) else {
        return Ok(Vec::new());
    };
    let mut input = Vec::new();
    file.take(INPUT_LIMIT + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the container's stdin: {e}"))?;
    if input.len() as u64 > INPUT_LIMIT {
        return Err(format!(
            "the container's stdin is more than {}, the most a guest takes as input",
            mote_host::human_size(INPUT_LIMIT)
        ));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_is_split_between_mote_and_the_guest() {
        let (guest, output) = split_memory(128 << 20).unwrap();
        assert_eq!(output, 16 << 20);
        assert_eq!(
            guest,
            (128 << 20) - OVERHEAD - (16 << 20) - CONSOLE_LIMIT - (1536 << 10)
        );
        let (guest, output) = split_memory(32 << 20).unwrap();
        assert_eq!(output, 8 << 20);
        assert_eq!(guest, 5632 << 10);
        let refused = split_memory(16 << 20).unwrap_err();
        assert!(refused.contains("raise the limit"), "{refused}");
    }
}
