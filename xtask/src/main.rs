//! `cargo xtask`: the one entry point that knows both the host and the guest targets.
//!
//! Cargo builds a workspace for one target at a time, so the guests (x86_64-unknown-none) live
//! in `guest/`, a workspace of their own; this tool drives both.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

const GUEST_TARGET: &str = "x86_64-unknown-none";

const USAGE: &str = "\
cargo xtask: build, run, test and benchmark mote

Usage:
  cargo xtask build              build every guest and the host
  cargo xtask run [NAME] [-- ARGS]
                                 build, then boot guest NAME (default: hello) with
                                 `mote run`, handing ARGS to it; exits with mote's code
  cargo xtask test               what CI runs: install the guest target if missing, build
                                 the guests, cargo fmt --check, clippy -D warnings, then
                                 unit, integration, doc and end-to-end tests
  cargo xtask bench              measure start-up against the raw KVM floor; writes
                                 target/mote-bench.json
  cargo xtask fuzz [--seconds N] [TARGET]
                                 build the guests, seed fuzz/corpus/TARGET and fuzz TARGET
                                 (elf_loader, the default; boot_config; hypercall_decoder;
                                 snapshot_file; run_path) for N seconds (default: 60) with
                                 cargo-fuzz, installing it if missing; crashing inputs land
                                 in fuzz/artifacts/TARGET
  cargo xtask guests             list the guests `run` knows";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let Some(command) = args.first() else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    let rest = &args[1..];
    match command.as_str() {
        "build" => {
            build_guests()?;
            cargo(&["build", "--workspace", "--bins"])?;
        }
        "run" => return run(rest),
        "test" => test()?,
        "bench" => bench()?,
        "fuzz" => fuzz(rest)?,
        "guests" => {
            build_guests()?;
            for name in guest_names()? {
                println!("{name}");
            }
        }
        "help" | "--help" | "-h" => println!("{USAGE}"),
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn guest_dir() -> PathBuf {
    root().join("guest")
}

/// Where the built guest ELF files are.
fn guest_bin_dir() -> PathBuf {
    guest_dir()
        .join("target")
        .join(GUEST_TARGET)
        .join("release")
}

fn run_command(mut command: Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo_in(dir: &Path, args: &[&str]) -> Result<()> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir).args(args);
    run_command(command)
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_in(&root(), args)
}

/// Installs the guest target through rustup if the toolchain lacks it.
fn ensure_guest_target() -> Result<()> {
    let output = Command::new("rustup")
        .current_dir(root())
        .args(["target", "list", "--installed"])
        .output();
    let installed = match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == GUEST_TARGET),
        // Without rustup, trust that the toolchain has the target; the build will say if not.
        _ => return Ok(()),
    };
    if !installed {
        eprintln!("xtask: installing the {GUEST_TARGET} target");
        let mut command = Command::new("rustup");
        command
            .current_dir(root())
            .args(["target", "add", GUEST_TARGET]);
        run_command(command)?;
    }
    Ok(())
}

fn build_guests() -> Result<()> {
    ensure_guest_target()?;
    cargo_in(
        &guest_dir(),
        &["build", "--release", "--target", GUEST_TARGET],
    )
}

/// The guests that have been built, by name.
fn guest_names() -> Result<Vec<String>> {
    let dir = guest_bin_dir();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !name.contains('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn run(args: &[String]) -> Result<ExitCode> {
    let (name, mote_args) = match args.split_first() {
        Some((first, rest)) if first != "--" => (first.as_str(), rest),
        _ => ("hello", args),
    };
    let mote_args = match mote_args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        Some(_) => bail!("put arguments for mote after `--`: cargo xtask run {name} -- ARGS"),
        None => mote_args,
    };
    build_guests()?;
    let mote = build_mote()?;
    let guest = guest_bin_dir().join(name);
    if !guest.is_file() {
        bail!(
            "no guest named `{name}`; the guests are: {}",
            guest_names()?.join(", ")
        );
    }
    let mut command_args: Vec<OsString> = vec!["run".into(), guest.into_os_string()];
    command_args.extend(mote_args.iter().map(OsString::from));
    let status = Command::new(&mote)
        .args(&command_args)
        .status()
        .with_context(|| format!("cannot start {}", mote.display()))?;
    // Pass mote's exit code through: it is the guest's (or mote's reserved) code.
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

fn test() -> Result<()> {
    build_guests()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo_in(&guest_dir(), &["fmt", "--all", "--check"])?;
    cargo_in(&fuzz_dir(), &["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo_in(
        &guest_dir(),
        &[
            "clippy",
            "--workspace",
            "--release",
            "--target",
            GUEST_TARGET,
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo_in(
        &fuzz_dir(),
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    // The end-to-end tests run the `mote` binary: build it first.
    cargo(&["build", "--workspace", "--bins"])?;
    cargo(&["test", "--workspace"])
}

fn bench() -> Result<()> {
    build_guests()?;
    cargo(&[
        "build",
        "--release",
        "--package",
        "mote-cli",
        "--bin",
        "mote",
    ])?;
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(root())
        .args(["bench", "--package", "mote-host", "--bench", "startup"])
        .env("MOTE_GUEST_DIR", guest_bin_dir())
        .env(
            "MOTE_BIN",
            root().join("target").join("release").join("mote"),
        )
        .env(
            "MOTE_BENCH_JSON",
            root().join("target").join("mote-bench.json"),
        );
    run_command(command)
}

/// The fuzz target `cargo xtask fuzz` runs when none is named.
const DEFAULT_FUZZ_TARGET: &str = "elf_loader";

/// How long `cargo xtask fuzz` fuzzes when not told: long enough to get past the seeds, short
/// enough to run by hand before a commit.
const DEFAULT_FUZZ_SECONDS: u64 = 60;

/// The fuzz targets whose inputs are kernel files, so the built guests make good seeds.
const ELF_FUZZ_TARGETS: &[&str] = &["elf_loader"];

/// The fuzz targets whose inputs are snapshot files, and the guests whose snapshots seed them.
const SNAPSHOT_FUZZ_TARGETS: &[&str] = &["snapshot_file"];
const SNAPSHOT_SEED_GUESTS: &[&str] = &["echo", "isolation-kernel"];

/// The fuzz target whose inputs are scripts for the `script` test guest.
const SCRIPT_FUZZ_TARGET: &str = "run_path";

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_FUZZ_SECONDS;
    let mut target = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--seconds") {
            Some("") => args.next().map(String::as_str),
            Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
            _ if arg.starts_with('-') => bail!("unknown option `{arg}`\n\n{USAGE}"),
            _ if target.is_some() => bail!("more than one fuzz target given\n\n{USAGE}"),
            _ => {
                target = Some(arg.as_str());
                continue;
            }
        };
        seconds = value
            .and_then(|value| value.parse().ok())
            .filter(|&seconds| seconds > 0)
            .context("--seconds needs a whole number of seconds above 0")?;
    }
    let target = target.unwrap_or(DEFAULT_FUZZ_TARGET);

    build_guests()?;
    ensure_cargo_fuzz()?;
    let corpus = Path::new("corpus").join(target);
    seed_corpus(target, &fuzz_dir().join(&corpus))?;

    // cargo-fuzz adds `-Z` flags (and so needs nightly) only for sanitizers, -Zbuild-std and
    // --careful; with `--sanitizer none` its RUSTFLAGS are all stable `-C` flags and `--cfg
    // fuzzing`, so the project's pinned stable toolchain builds the target without
    // RUSTC_BOOTSTRAP. The price is no AddressSanitizer, which safe Rust barely needs.
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(fuzz_dir())
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"));
    // libFuzzer ends a run that found nothing with `Done N runs in S second(s)`.
    let mut done = None;
    run_command_watching_stderr(command, |line| {
        done = libfuzzer_done_line(line).or(done);
    })?;
    match done {
        Some((runs, secs)) => println!(
            "xtask: {target}: {runs} executions in {secs} s ({} per second), no crash",
            runs / secs.max(1)
        ),
        None => println!("xtask: {target}: libFuzzer reported no execution count"),
    }
    Ok(())
}

/// Parses libFuzzer's closing `Done N runs in S second(s)` into (N, S).
fn libfuzzer_done_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("Done ")?;
    let (runs, rest) = rest.split_once(" runs in ")?;
    let (secs, _) = rest.split_once(' ')?;
    Some((runs.parse().ok()?, secs.parse().ok()?))
}

/// Installs cargo-fuzz if `cargo fuzz` is not there: it is a cargo subcommand, not a
/// dependency, so nothing else would bring it.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!("xtask: installing cargo-fuzz");
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    Ok(())
}

/// Creates `dir`, the corpus of `target`, and copies the built guests into it when the target
/// reads kernel files. The seeds are rebuilt each time rather than committed: they follow the
/// guests and the toolchain, and binaries in git would go stale.
fn seed_corpus(target: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if SNAPSHOT_FUZZ_TARGETS.contains(&target) {
        let mote = build_mote()?;
        for name in SNAPSHOT_SEED_GUESTS {
            let mut command = Command::new(&mote);
            command
                .args(["snapshot", "-q", "--input-capacity", "4K", "-o"])
                .arg(dir.join(format!("{name}.snap")))
                .arg(guest_bin_dir().join(name));
            run_command(command)?;
        }
        return Ok(());
    }
    if target == SCRIPT_FUZZ_TARGET {
        // Every call, and the first number past them.
        let calls = mote_abi::Hypercall::ALL.map(|call| call as u32);
        for call in calls.into_iter().chain([calls.len() as u32]) {
            let path = dir.join(format!("call-{call}"));
            std::fs::write(&path, script_calling(call))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    if !ELF_FUZZ_TARGETS.contains(&target) {
        return Ok(());
    }
    for name in guest_names()? {
        let from = guest_bin_dir().join(&name);
        let to = dir.join(&name);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Builds the `mote` binary (debug) and says where it is.
fn build_mote() -> Result<PathBuf> {
    cargo(&["build", "--quiet", "--package", "mote-cli", "--bin", "mote"])?;
    Ok(root().join("target").join("debug").join("mote"))
}

/// A script for the `script` test guest (see its source for the format) that makes hypercall
/// `call` with its arguments pointing into the guest's buffer, then records the result.
fn script_calling(call: u32) -> Vec<u8> {
    const BUFFER: u64 = 0xFFFF_FF00_0000_0000;
    let mut script = vec![1];
    script.extend(call.to_le_bytes());
    script.push(4);
    for arg in [BUFFER, 8, BUFFER, 8, BUFFER, 8] {
        script.extend(arg.to_le_bytes());
    }
    script.push(8);
    script
}

/// Like [`run_command`], but also hands each line of the command's standard error to
/// `on_line`, still showing it as it comes: libFuzzer reports its totals there, and a long
/// run should not look hung.
fn run_command_watching_stderr(mut command: Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    let shown = format!("{command:?}");
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let stderr = child.stderr.take().expect("stderr was piped");
    for line in BufReader::new(stderr).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        eprintln!("{line}");
        on_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
