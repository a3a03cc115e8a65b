//! `cargo xtask`: the one entry point that knows both the host and the guest targets.
//!
//! Cargo builds a workspace for one target at a time, so the guests (x86_64-unknown-none) live
//! in `guest/`, a workspace of their own; this tool drives both.
//!
//! It builds no more than a command needs and lets cargo show its own progress: on a small
//! machine a fresh build takes minutes, and a silent minute looks like a hang.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod watch;

const GUEST_TARGET: &str = "x86_64-unknown-none";

/// The guest `cargo xtask run` boots when none is named.
const DEFAULT_GUEST: &str = "hello";

const USAGE: &str = "\
cargo xtask: build, run, test and benchmark mote

Usage:
  cargo xtask build              build every guest and the host
  cargo xtask run [--watch] [NAME] [-- ARGS]
                                 build guest NAME (default: hello) and the `mote` command,
                                 nothing else, then boot NAME with `mote run`, handing ARGS
                                 to it; exits with mote's code. With --watch, rebuild and
                                 reboot whenever the guests' sources (guest/) or the mote
                                 command's (cli, host, boot, abi) change, stopping a guest
                                 still running; Ctrl-C stops
  cargo xtask test               what CI runs: cargo fmt --check, build the guests (installing
                                 their target if missing), clippy -D warnings on the root,
                                 guest and fuzz workspaces, then the unit, integration, doc
                                 and end-to-end tests; ends with a summary of every step
  cargo xtask bench              measure start-up against the raw KVM floor; writes
                                 target/mote-bench.json
  cargo xtask fuzz [--seconds N] [TARGET]
                                 build the guests, seed fuzz/corpus/TARGET and fuzz TARGET
                                 (elf_loader, the default; boot_config; hypercall_decoder;
                                 snapshot_file; run_path) for N seconds (default: 60) with
                                 cargo-fuzz, installing it if missing; crashing inputs land
                                 in fuzz/artifacts/TARGET
  cargo xtask guests             list the guests `run` knows, by the package they come from";

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
        "test" => return test(),
        "bench" => bench()?,
        "fuzz" => fuzz(rest)?,
        "guests" => list_guests()?,
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

/// Says what is about to be built or run, and why, before cargo's own output starts.
fn announce(what: &str) {
    eprintln!("xtask: {what}");
}

/// A command as one would type it, `cargo fmt --all --check`: short enough for the summary
/// line of a failed step.
fn describe(command: &Command) -> String {
    let program = command.get_program();
    let program = Path::new(program).file_name().unwrap_or(program);
    std::iter::once(program)
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_command(mut command: Command) -> Result<()> {
    let shown = format!("`{}`", describe(&command));
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// A `cargo` command in `dir`: the cargo that runs this tool (so the pinned toolchain's), or
/// the one on the PATH.
fn cargo_command(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(dir);
    command
}

fn cargo_in(dir: &Path, args: &[&str]) -> Result<()> {
    let mut command = cargo_command(dir);
    command.args(args);
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
        announce(&format!("installing the {GUEST_TARGET} target"));
        let mut command = Command::new("rustup");
        command
            .current_dir(root())
            .args(["target", "add", GUEST_TARGET]);
        run_command(command)?;
    }
    Ok(())
}

/// The cargo arguments that build the guests: release, since the tests, the benchmarks and
/// `run` all boot the release ELF files.
const GUEST_BUILD: [&str; 4] = ["build", "--release", "--target", GUEST_TARGET];

/// Builds every guest (about thirty kernels): the tests, the benchmarks and the fuzz seeds
/// need them all.
fn build_guests() -> Result<()> {
    ensure_guest_target()?;
    announce("building every guest (release, x86_64-unknown-none)");
    cargo_in(&guest_dir(), &GUEST_BUILD)
}

/// Builds the one guest `guest`, and of its package only that bin: booting `hello` should not
/// wait for the test, conformance and benchmark kernels.
fn build_guest(guest: &Guest) -> Result<()> {
    ensure_guest_target()?;
    announce(&format!(
        "building guest `{}` (package {}, release, {GUEST_TARGET}): the kernel to boot",
        guest.name, guest.package
    ));
    let mut args = GUEST_BUILD.to_vec();
    args.extend(["--package", &guest.package, "--bin", &guest.name]);
    cargo_in(&guest_dir(), &args)
}

/// A guest kernel: a bin target of a package of the guest workspace.
struct Guest {
    name: String,
    package: String,
    /// The heading `cargo xtask guests` lists it under.
    group: String,
}

/// The headings `cargo xtask guests` shows, in order, and the guest packages under each, by
/// their directory in `guest/` (`conformance/higher_half` is under `conformance`). A package
/// missing here is still listed, under its directory's name.
const GUEST_GROUPS: [(&str, &[&str]); 4] = [
    ("examples", &["examples", "stock"]),
    ("tests", &["test-guests"]),
    ("conformance", &["conformance"]),
    ("bench", &["bench"]),
];

/// Every guest the guest workspace defines, whether built or not, from `cargo metadata`: the
/// manifests say which package holds which bin, so `run` can build just that one.
fn guest_catalog() -> Result<Vec<Guest>> {
    let output = cargo_command(&guest_dir())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata in guest/ failed ({})", output.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    let guest_dir = guest_dir();
    let mut guests = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let package_name = package["name"].as_str().unwrap_or_default();
        // The first directory below guest/ says what kind of guest the package holds.
        let directory = package["manifest_path"]
            .as_str()
            .map(Path::new)
            .and_then(|manifest| manifest.strip_prefix(&guest_dir).ok())
            .and_then(|relative| relative.components().next())
            .map(|first| first.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_else(|| package_name.to_owned());
        let group = GUEST_GROUPS
            .iter()
            .find(|(_, directories)| directories.contains(&directory.as_str()))
            .map_or(directory, |(heading, _)| heading.to_string());
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
            if let (true, Some(name)) = (is_bin, target["name"].as_str()) {
                guests.push(Guest {
                    name: name.to_owned(),
                    package: package_name.to_owned(),
                    group: group.clone(),
                });
            }
        }
    }
    // Known headings in their order, any others after them; names sorted within each.
    let rank = |group: &str| {
        GUEST_GROUPS
            .iter()
            .position(|(heading, _)| *heading == group)
            .unwrap_or(GUEST_GROUPS.len())
    };
    guests.sort_by(|a, b| {
        (rank(&a.group), &a.group, &a.name).cmp(&(rank(&b.group), &b.group, &b.name))
    });
    Ok(guests)
}

fn list_guests() -> Result<()> {
    let mut heading = None;
    for guest in guest_catalog()? {
        if heading != Some(guest.group.clone()) {
            if heading.is_some() {
                println!();
            }
            println!("{}:", guest.group);
            heading = Some(guest.group.clone());
        }
        println!("  {}", guest.name);
    }
    Ok(())
}

fn run(args: &[String]) -> Result<ExitCode> {
    let (watching, args) = match args.split_first() {
        Some((first, rest)) if first == "--watch" => (true, rest),
        _ => (false, args),
    };
    let (name, mote_args) = match args.split_first() {
        Some((first, rest)) if first != "--" => (first.as_str(), rest),
        _ => (DEFAULT_GUEST, args),
    };
    let mote_args = match mote_args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        Some(_) => bail!("put arguments for mote after `--`: cargo xtask run {name} -- ARGS"),
        None => mote_args,
    };
    let catalog = guest_catalog()?;
    let Some(guest) = catalog.iter().find(|guest| guest.name == name) else {
        let names: Vec<&str> = catalog.iter().map(|guest| guest.name.as_str()).collect();
        bail!(
            "no guest named `{name}`; `cargo xtask guests` lists them: {}",
            names.join(", ")
        );
    };
    let boot = Boot {
        guest,
        mote_args: mote_args.iter().map(OsString::from).collect(),
    };
    if watching {
        return watch::watch(&boot, &watched_sources());
    }
    watch::Target::build(&boot)?;
    let mut command = watch::Target::command(&boot);
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", describe(&command)))?;
    // Pass mote's exit code through: it is the guest's (or mote's reserved) code.
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// What `cargo xtask run --watch` watches: the guest workspace (the guest's sources and the
/// crates it uses) and what the `mote` command is built from.
fn watched_sources() -> Vec<PathBuf> {
    let root = root();
    [
        "guest",
        "cli",
        "host",
        "boot",
        "abi",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .map(|path| root.join(path))
    .collect()
}

/// One boot of `cargo xtask run`: a guest and the arguments for `mote run`.
struct Boot<'a> {
    guest: &'a Guest,
    mote_args: Vec<OsString>,
}

impl watch::Target for Boot<'_> {
    fn build(&self) -> Result<()> {
        build_guest(self.guest)?;
        build_mote(&format!("the host that boots `{}`", self.guest.name))?;
        Ok(())
    }

    fn command(&self) -> Command {
        let guest_path = guest_bin_dir().join(&self.guest.name);
        announce(&format!(
            "booting `{}`: mote run {}",
            self.guest.name,
            guest_path.display()
        ));
        let mut command = Command::new(mote_path());
        command.arg("run").arg(guest_path).args(&self.mote_args);
        command
    }
}

/// One step of `cargo xtask test`: a name for the summary and what it runs. A step's `Ok`
/// may carry a detail for its summary line (the test counts).
struct Step {
    name: &'static str,
    run: Box<dyn FnOnce() -> Result<Option<String>>>,
}

impl Step {
    fn new(name: &'static str, run: impl FnOnce() -> Result<Option<String>> + 'static) -> Self {
        Step {
            name,
            run: Box::new(run),
        }
    }

    /// A step that is one cargo command in `dir`.
    fn cargo(name: &'static str, dir: PathBuf, args: &'static [&'static str]) -> Self {
        Step::new(name, move || cargo_in(&dir, args).map(|()| None))
    }
}

/// What CI runs (`.ci/run`). The order is cheapest-to-fail first, and each build reuses what
/// the one before it left in a shared target directory:
///
/// - fmt first: seconds, and the commonest failure.
/// - The guests build in their own target directory (another target, other profiles: nothing
///   there could be shared with the host).
/// - The root clippy checks every host dependency; the fuzz workspace's clippy then runs in
///   the root's target directory, so it reuses every dependency checked with the same
///   features. It checks again only what fuzz/ alone has (libfuzzer-sys, arbitrary), mote's
///   own crates (linted there as members, checked here as dependencies) and the few crates
///   the root's dev-dependencies give more features (serde, zerocopy, and what depends on
///   them). It runs with `--no-default-features`, so libfuzzer-sys does not compile
///   libFuzzer's C++ (see fuzz/Cargo.toml).
/// - The host build takes `--tests` along with `--bins`: the tests turn on features of shared
///   dependencies (their dev-dependencies do), and a build without them would give a `mote`
///   that `cargo test` then compiles everything under it again for. Built together, `cargo
///   test` compiles nothing more but its doctests.
fn test() -> Result<ExitCode> {
    let fuzz_clippy = {
        let fuzz_dir = fuzz_dir();
        move || {
            let mut command = cargo_command(&fuzz_dir);
            command.args([
                "clippy",
                "--all-targets",
                "--no-default-features",
                "--",
                "-D",
                "warnings",
            ]);
            // A target directory of their own would check every dependency a second time.
            if std::env::var_os("CARGO_TARGET_DIR").is_none() {
                command.env("CARGO_TARGET_DIR", root().join("target"));
            }
            run_command(command).map(|()| None)
        }
    };
    let steps = vec![
        Step::cargo("fmt (root)", root(), &["fmt", "--all", "--check"]),
        Step::cargo("fmt (guest)", guest_dir(), &["fmt", "--all", "--check"]),
        Step::cargo("fmt (fuzz)", fuzz_dir(), &["fmt", "--all", "--check"]),
        Step::new("build guests", || build_guests().map(|()| None)),
        Step::cargo(
            "clippy (guest)",
            guest_dir(),
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
        ),
        Step::cargo(
            "clippy (root)",
            root(),
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        Step::new("clippy (fuzz)", fuzz_clippy),
        // The end-to-end tests run the `mote` binary, which `cargo test` does not build.
        Step::cargo(
            "build host",
            root(),
            &["build", "--workspace", "--bins", "--tests"],
        ),
        Step::new("cargo test", cargo_test),
    ];
    Ok(run_steps("xtask test", steps))
}

/// Runs `steps` in order until one fails, then prints one line per step and a total.
fn run_steps(title: &str, steps: Vec<Step>) -> ExitCode {
    let started = Instant::now();
    let count = steps.len();
    // (name, outcome, time, detail) of each step that ran.
    let mut results: Vec<(&str, bool, Duration, String)> = Vec::new();
    let mut names = steps.iter().map(|step| step.name).collect::<Vec<_>>();
    for (index, step) in steps.into_iter().enumerate() {
        announce(&format!("step {}/{count}: {}", index + 1, step.name));
        let step_started = Instant::now();
        let outcome = (step.run)();
        let time = step_started.elapsed();
        let (passed, detail) = match outcome {
            Ok(detail) => (true, detail.unwrap_or_default()),
            Err(error) => (false, format!("{error:#}")),
        };
        results.push((step.name, passed, time, detail));
        if !passed {
            break;
        }
    }
    let not_run = names.split_off(results.len());
    let failed = results.iter().filter(|(_, passed, ..)| !passed).count();
    let passed = results.len() - failed;

    println!();
    println!("{title} summary:");
    let width = results
        .iter()
        .map(|(name, ..)| name.len())
        .chain(not_run.iter().map(|name| name.len()))
        .max()
        .unwrap_or(0);
    for (name, step_passed, time, detail) in &results {
        let outcome = if *step_passed { "passed" } else { "FAILED" };
        let line = format!(
            "  {name:width$}  {outcome}  {:>7}  {detail}",
            duration(*time)
        );
        println!("{}", line.trim_end());
    }
    for name in &not_run {
        println!("  {name:width$}  not run");
    }
    let not_run = match not_run.len() {
        0 => String::new(),
        n => format!(", {n} not run"),
    };
    println!(
        "{title}: {count} steps, {passed} passed, {failed} failed{not_run} in {}",
        duration(started.elapsed())
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo test --workspace`, its output shown as it comes; its summary detail is the sum of
/// libtest's `test result:` lines, one per test binary and one per crate's doctests.
fn cargo_test() -> Result<Option<String>> {
    let mut command = cargo_command(&root());
    command.args(["test", "--workspace"]);
    let mut counts = TestCounts::default();
    let result = run_command_watching(command, Watched::Stdout, |line| counts.add_line(line));
    match result {
        Ok(()) => Ok(Some(counts.to_string())),
        // A failing run still reports its counts: how many failed, beside why cargo stopped.
        Err(error) => bail!("{counts}; {error:#}"),
    }
}

/// Test counts summed over libtest's `test result:` lines.
#[derive(Default, Debug, PartialEq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds the counts of `line` if it is libtest's summary of one test binary:
    /// `test result: ok. 42 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some((_, rest)) = line.split_once("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            // The first part is `ok. 42 passed` (or `FAILED. 41 passed`): the last two words.
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(number)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

impl std::fmt::Display for TestCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.ignored > 0 {
            write!(f, ", {} ignored", self.ignored)?;
        }
        Ok(())
    }
}

/// A duration as people read it: `0.4s`, `41.2s`, `3m 12s`.
fn duration(time: Duration) -> String {
    let seconds = time.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = time.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

fn bench() -> Result<()> {
    build_guests()?;
    announce("building `mote` (release): the benchmark times the command as users run it");
    cargo(&[
        "build",
        "--release",
        "--package",
        "mote-cli",
        "--bin",
        "mote",
    ])?;
    announce("running the start-up benchmark");
    let mut command = cargo_command(&root());
    command
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
    let mut command = cargo_command(&fuzz_dir());
    command
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"));
    // libFuzzer ends a run that found nothing with `Done N runs in S second(s)`.
    let mut done = None;
    run_command_watching(command, Watched::Stderr, |line| {
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
        let mote = build_mote("to snapshot the seed guests")?;
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
    for guest in guest_catalog()? {
        let from = guest_bin_dir().join(&guest.name);
        let to = dir.join(&guest.name);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Builds the `mote` binary (debug), and of the host workspace nothing else, saying `why`;
/// then says where it is.
fn build_mote(why: &str) -> Result<PathBuf> {
    announce(&format!("building `mote` (package mote-cli, debug): {why}"));
    cargo(&["build", "--package", "mote-cli", "--bin", "mote"])?;
    Ok(mote_path())
}

/// Where [`build_mote`] puts `mote`.
fn mote_path() -> PathBuf {
    root().join("target").join("debug").join("mote")
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

/// Which output of a command [`run_command_watching`] reads.
#[derive(Clone, Copy)]
enum Watched {
    Stdout,
    Stderr,
}

/// Like [`run_command`], but also hands each line of the command's standard output or error
/// to `on_line`, still showing it as it comes: libtest reports its counts on standard output,
/// libFuzzer its totals on standard error, and a long run should not look hung.
fn run_command_watching(
    mut command: Command,
    watched: Watched,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let shown = format!("`{}`", describe(&command));
    match watched {
        Watched::Stdout => command.stdout(Stdio::piped()),
        Watched::Stderr => command.stderr(Stdio::piped()),
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let output: Box<dyn std::io::Read> = match watched {
        Watched::Stdout => Box::new(child.stdout.take().expect("stdout was piped")),
        Watched::Stderr => Box::new(child.stderr.take().expect("stderr was piped")),
    };
    for line in BufReader::new(output).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        match watched {
            Watched::Stdout => println!("{line}"),
            Watched::Stderr => eprintln!("{line}"),
        }
        on_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counts_sum_every_libtest_result_line() {
        let mut counts = TestCounts::default();
        for line in [
            "running 42 tests",
            "test boot::loads ... ok",
            "test result: ok. 42 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 0.03s",
            "test result: FAILED. 5 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 1.20s",
            "   Doc-tests mote_host",
            "test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 0.06s",
        ] {
            counts.add_line(line);
        }
        assert_eq!(
            counts,
            TestCounts {
                passed: 54,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(counts.to_string(), "54 passed, 2 failed, 1 ignored");
    }

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_millis(41_249)), "41.2s");
        assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
    }

    #[test]
    fn libfuzzer_done_line_gives_runs_and_seconds() {
        assert_eq!(
            libfuzzer_done_line("Done 123456 runs in 61 second(s)"),
            Some((123456, 61))
        );
        assert_eq!(libfuzzer_done_line("#2 INITED cov: 10"), None);
    }
}
