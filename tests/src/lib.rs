//! Helpers for mote's end-to-end tests: where the guests and the `mote` binary are, and how to
//! run them. The guests must have been built (`cargo xtask build` or `cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mote_host::{GuestImage, Hypervisor, Outcome, RunConfig};

pub mod script;

/// Where `cargo xtask build` puts the guest ELF files.
pub fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/target/x86_64-unknown-none/release")
}

/// The path of a built guest; panics with what to do if it is missing.
pub fn guest_path(name: &str) -> PathBuf {
    let path = guest_dir().join(name);
    assert!(
        path.is_file(),
        "guest `{name}` is not built ({}): run `cargo xtask build` or `cargo xtask test`",
        path.display()
    );
    path
}

/// The `mote` binary of the same build as this test.
pub fn mote_bin() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries in target/<profile>.
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let mote = profile_dir.join("mote");
    assert!(
        mote.is_file(),
        "{} is not built: run `cargo build --workspace --bins` (cargo xtask test does)",
        mote.display()
    );
    mote
}

/// One KVM handle for every test in the process, as an embedder would have.
pub fn hypervisor() -> &'static Hypervisor {
    static HYPERVISOR: OnceLock<Hypervisor> = OnceLock::new();
    HYPERVISOR.get_or_init(|| Hypervisor::open().expect("KVM must be usable for these tests"))
}

/// Boots a built guest through the library and returns its outcome.
pub fn run_guest(name: &str) -> Outcome {
    run_guest_with(name, RunConfig::default())
}

/// Runs the `mote` binary with `args`.
pub fn mote(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(mote_bin())
        .args(args)
        .output()
        .expect("mote starts")
}

/// Boots a built guest with `config` through the library.
pub fn run_guest_with(name: &str, config: RunConfig) -> Outcome {
    let image = GuestImage::from_file(guest_path(name)).expect("the guest image is valid");
    hypervisor()
        .run(&image, config)
        .expect("the run reaches an outcome")
}

/// Boots a built guest with `input` through the library.
pub fn run_guest_with_input(name: &str, input: &[u8]) -> Outcome {
    run_guest_with(name, RunConfig::default().input(input.to_vec()))
}

/// Runs `mote run GUEST --input FILE` with `input` in a temporary file.
pub fn mote_run_with_input(name: &str, input: &[u8]) -> Output {
    let path = std::env::temp_dir().join(format!(
        "mote-test-input-{}-{name}-{}",
        std::process::id(),
        input.len()
    ));
    std::fs::write(&path, input).expect("writing the input file");
    let guest = guest_path(name);
    let out = mote(&[
        "run".as_ref(),
        guest.as_os_str(),
        "--input".as_ref(),
        path.as_os_str(),
    ]);
    let _ = std::fs::remove_file(&path);
    out
}

/// Runs `mote run GUEST` on a built guest.
pub fn mote_run(name: &str) -> Output {
    let path = guest_path(name);
    mote(&["run".as_ref(), path.as_os_str()])
}

/// Text of an output stream, for assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The process's open descriptors, less the one debug builds of mote keep open for the
/// process's life (`/proc/self/pagemap`, to check every pool reset against the kernel's view).
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists the descriptors")
        .filter(|entry| {
            let target = entry
                .as_ref()
                .ok()
                .and_then(|entry| std::fs::read_link(entry.path()).ok())
                .unwrap_or_default();
            !target.ends_with("pagemap")
        })
        .count()
}

/// The process's resident memory, in KiB.
pub fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .expect("statm's second field is the resident page count");
    pages * 4
}

/// Runs `f` on a thread of its own and returns what it returns; panics if that takes longer
/// than `limit` (a bound on a hang, not a timing check).
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not end within {limit:?}"))
}
