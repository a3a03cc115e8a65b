//! `cargo xtask`: the one entry point that knows both the host and the guest targets.
//!
//! Cargo builds a workspace for one target at a time, so the guests (x86_64-unknown-none) live
//! in `guest/`, a workspace of their own; this tool drives both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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
    cargo(&[
        "build",
        "--quiet",
        "--package",
        "mote-host",
        "--bin",
        "mote",
    ])?;
    let guest = guest_bin_dir().join(name);
    if !guest.is_file() {
        bail!(
            "no guest named `{name}`; the guests are: {}",
            guest_names()?.join(", ")
        );
    }
    let mote = root().join("target").join("debug").join("mote");
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
        "mote-host",
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
