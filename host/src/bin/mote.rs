//! `mote`: boot a guest kernel under KVM and exit with its exit code.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use mote_host::{GuestImage, Hypervisor, Outcome, RunConfig, Snapshot, exit_status};

const EXIT_CODES: &str = "\
Exit codes of `mote run`:
  0-111  the guest's own exit code (the `exit` hypercall, or isa-debug-exit at port 0xF4:
         0x10 means 0, 0x11 means 1, any other value v means v << 1 | 1).
         Guest codes above 111 are reported as 111.
  112    bad command line or option value
  113    the guest file cannot be read
  114    the guest file is not a kernel mote can boot
  115    KVM is missing or /dev/kvm is not accessible
  116    a host-side failure (a KVM call, guest memory, writing a result file)
  117    the guest triple-faulted (an exception it could not handle)
  118    the guest halted with nothing to wake it
  119    KVM internal error: KVM could not run or emulate a guest instruction
  120    the guest accessed an I/O port or address that nothing serves
  121    the CPU refused to enter the guest
  122    the guest stopped for an unexpected reason
  123    the guest panicked (message and location on standard error)
  124    the guest took a CPU exception (a fault or a stack overflow)
  125    the guest ran past --timeout (30 s unless told otherwise)
  126    the guest used up a limit (--console-limit, --output-limit, --hypercall-limit)";

/// mote: a minimal VMM that boots `bootloader_api` kernels directly under KVM.
#[derive(Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    /// Log what mote does on standard error (-v: each run, -vv: each exit).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest kernel ELF (or restore a snapshot), show its console, exit with its exit
    /// code.
    ///
    /// The guest is any kernel built with `bootloader_api::entry_point!` for
    /// x86_64-unknown-none, or a snapshot file `mote snapshot` wrote (the run then starts
    /// where the snapshot was taken, with this run's input and limits). Its console (mote's
    /// console hypercall and COM1) goes to standard output, then its output (the
    /// `output_write` hypercall); why the run ended goes to standard error when that is not a
    /// clean exit 0.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Boot a guest until it is ready for input and save its whole state to a snapshot file.
    ///
    /// `mote run FILE.snap` then starts from there instead of booting, with its own input,
    /// timeout and limits. The guest marks the point with the `ready_for_input` hypercall,
    /// which `mote-guest` makes just before `main`. A snapshot file is for this machine and
    /// this mote version. The boot's console goes to standard output (unless -q).
    #[command(after_help = EXIT_CODES)]
    Snapshot(SnapshotArgs),
    /// Show a guest's boot configuration, its segments and where mote would map everything.
    Inspect {
        /// The guest kernel ELF file.
        guest: PathBuf,
    },
}

/// How the guest is laid out: fixed when a snapshot is taken.
#[derive(clap::Args)]
struct LayoutArgs {
    /// Guest memory size: bytes, or a number with K, M or G (binary units), e.g. 64M
    /// [default: 8M; a snapshot's own size when running a snapshot].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    mem: Option<u64>,
    /// Give the guest a linear framebuffer of this size, as UEFI firmware would (e.g. 640x480).
    #[arg(long, value_name = "WIDTHxHEIGHT", value_parser = parse_resolution)]
    framebuffer: Option<(u32, u32)>,
    /// Give the guest ACPI tables (RSDP, XSDT, MADT, FADT), as PC firmware would.
    #[arg(long)]
    acpi: bool,
}

/// What a run (or the boot of a snapshot) may spend.
#[derive(clap::Args)]
struct LimitArgs {
    /// Stop the guest after this long (e.g. 500ms, 2s, 1m), or `none` to let it run as long
    /// as it likes; it ends with code 125 [default: 30s].
    #[arg(long, value_name = "DURATION|none", value_parser = parse_timeout)]
    timeout: Option<Deadline>,
    /// Stop the guest once its console passes this many bytes (e.g. 1M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    console_limit: Option<u64>,
    /// Stop the guest once its output passes this many bytes (e.g. 16M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    output_limit: Option<u64>,
    /// Stop the guest at its hypercall number N + 1.
    #[arg(long, value_name = "N")]
    hypercall_limit: Option<u64>,
    /// Refuse input longer than this (e.g. 64M) [default: 16M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    input_limit: Option<u64>,
}

#[derive(clap::Args)]
struct SnapshotArgs {
    /// The guest kernel ELF file.
    guest: PathBuf,
    /// The snapshot file to write (replaced whole, once complete).
    #[arg(short, long, value_name = "FILE.snap")]
    output: PathBuf,
    /// How much input each run restored from the snapshot may have (e.g. 64K, 16M): the size
    /// of the window the guest finds it in, taken from guest memory.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    input_capacity: u64,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Do not show the boot's console.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The guest kernel ELF file, or a snapshot file.
    guest: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// The guest's input (its `bootloader_api` ramdisk): a file, or - for standard input.
    #[arg(long, value_name = "FILE", visible_alias = "ramdisk")]
    input: Option<PathBuf>,
    /// Where the guest's output goes: a file, or - for standard output (the default).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print a JSON object with the outcome and statistics on standard output; the console
    /// then goes to standard error, and the output into the object unless --output is given.
    #[arg(long)]
    json: bool,
    /// Do not show the guest's console.
    #[arg(short, long)]
    quiet: bool,
    /// Write the framebuffer's contents to this PNG file when the run ends (the guest needs
    /// --framebuffer, or a snapshot taken with one).
    #[arg(long, value_name = "FILE.png")]
    screenshot: Option<PathBuf>,
}

/// Parses `4096`, `64K`, `16M`, `1G` (binary units, optional trailing `iB` or `B`).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let number = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match number.chars().last() {
        Some('K') => (&number[..number.len() - 1], 10),
        Some('M') => (&number[..number.len() - 1], 20),
        Some('G') => (&number[..number.len() - 1], 30),
        _ => (number, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 64M, 1G or 4194304"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A run's deadline, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    After(Duration),
    Never,
}

/// Parses `none`, or a duration as [`parse_duration`] does.
fn parse_timeout(text: &str) -> Result<Deadline, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Deadline::Never);
    }
    parse_duration(text).map(Deadline::After)
}

/// Parses `500ms`, `2s`, `1m 30s`; zero is refused (it would stop every guest at once).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 500ms, 2s or 1m"))?;
    if duration.is_zero() {
        return Err("a timeout of zero would stop every guest at once".into());
    }
    Ok(duration)
}

/// Parses `640x480`.
fn parse_resolution(text: &str) -> Result<(u32, u32), String> {
    let invalid = || format!("`{text}` is not a resolution; write WIDTHxHEIGHT, e.g. 640x480");
    let (width, height) = text.split_once(['x', 'X']).ok_or_else(invalid)?;
    let side = |s: &str| s.trim().parse::<u32>().map_err(|_| invalid());
    Ok((side(width)?, side(height)?))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit_status::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.verbose > 0 {
        let level = if cli.verbose > 1 {
            tracing::Level::TRACE
        } else {
            tracing::Level::DEBUG
        };
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Snapshot(args) => snapshot(&args),
        Command::Inspect { guest } => inspect(&guest),
    }
}

/// A failure of the command itself, with its exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<mote_host::Error> for Failure {
    fn from(error: mote_host::Error) -> Self {
        Self {
            code: error.process_exit_code(),
            message: error.to_string(),
        }
    }
}

fn usage(message: String) -> Failure {
    Failure {
        message,
        code: exit_status::USAGE,
    }
}

fn host_error(message: String) -> Failure {
    Failure {
        message,
        code: exit_status::HOST_ERROR,
    }
}

/// Reads the input file, or standard input for `-`, up to `limit` bytes: more is refused
/// without reading on (`--input /dev/zero` ends at once).
fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>, Failure> {
    let fail = |e: std::io::Error| usage(format!("cannot read input {}: {e}", path.display()));
    let source: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(fail)?)
    };
    let mut bytes = Vec::new();
    source
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > limit {
        return Err(usage(format!(
            "input {} is more than {limit} bytes, the input limit (raise it with --input-limit)",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Writes the guest's screen as a PNG file.
fn write_png(path: &Path, file: File, screen: &mote_host::Screen) -> Result<(), Failure> {
    let fail =
        |e: &dyn std::fmt::Display| host_error(format!("cannot write {}: {e}", path.display()));
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), screen.width, screen.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(&screen.rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}

/// A configuration with the layout, limits and console of the command line.
fn config(
    layout: &LayoutArgs,
    limits: &LimitArgs,
    console: Box<dyn Write + Send>,
) -> Result<RunConfig, Failure> {
    let mut config = RunConfig::default().console_to(console);
    if let Some(bytes) = layout.mem {
        config = config.memory_size(bytes)?;
    }
    if let Some((width, height)) = layout.framebuffer {
        config = config.framebuffer(width, height)?;
    }
    if layout.acpi {
        config = config.acpi();
    }
    match limits.timeout {
        Some(Deadline::After(timeout)) => config = config.timeout(timeout)?,
        Some(Deadline::Never) => config = config.no_timeout(),
        None => {}
    }
    if let Some(bytes) = limits.input_limit {
        config = config.input_limit(bytes);
    }
    if let Some(bytes) = limits.console_limit {
        config = config.console_limit(bytes);
    }
    if let Some(bytes) = limits.output_limit {
        config = config.output_limit(bytes);
    }
    if let Some(count) = limits.hypercall_limit {
        config = config.hypercall_limit(count);
    }
    Ok(config)
}

/// Where the console goes: nowhere with -q, else standard output (standard error when
/// standard output carries JSON).
fn console(quiet: bool, json: bool) -> Box<dyn Write + Send> {
    match (quiet, json) {
        (true, _) => Box::new(std::io::sink()),
        (false, true) => Box::new(std::io::stderr()),
        (false, false) => Box::new(std::io::stdout()),
    }
}

/// Whether the file at `path` is a snapshot file (else it is taken for a kernel ELF).
fn is_snapshot(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == mote_host::snapshot_file::MAGIC)
}

/// Delivers the guest's output where `--output` says.
fn deliver_output(args: &RunArgs, output: &[u8], file: Option<File>) -> Result<(), Failure> {
    match (args.output.as_deref(), file) {
        (Some(path), Some(mut file)) => file
            .write_all(output)
            .map_err(|e| host_error(format!("cannot write output {}: {e}", path.display()))),
        // With --json and no --output the output travels inside the JSON object.
        (None, _) if args.json => Ok(()),
        // Nothing to write: leave standard output alone. The console's writer thread may still
        // hold it, blocked on a reader that stopped reading, and must not hold mote too.
        _ if output.is_empty() => Ok(()),
        _ => {
            let mut stdout = std::io::stdout();
            stdout
                .write_all(output)
                .and_then(|()| stdout.flush())
                .map_err(|e| host_error(format!("cannot write the output to standard output: {e}")))
        }
    }
}

/// Creates the files the run's results go to (`--output`, `--screenshot`) before the guest
/// runs: a path that cannot be written is a mistake to report before the guest's time is
/// spent, and once the guest starts mote opens nothing (its seccomp filter forbids it).
fn result_files(args: &RunArgs) -> Result<(Option<File>, Option<File>), Failure> {
    let create = |path: &Path| {
        File::create(path).map_err(|e| {
            usage(format!(
                "cannot write {}: {e} (give a path in a directory you can write)",
                path.display()
            ))
        })
    };
    let output = match args.output.as_deref() {
        Some(path) if path != Path::new("-") => Some(create(path)?),
        _ => None,
    };
    let screenshot = args.screenshot.as_deref().map(create).transpose()?;
    Ok((output, screenshot))
}

/// Filters every thread of the process to what running the guest needs, with a warning where
/// the host cannot.
fn restrict() {
    if let Err(error) = mote_host::restrict_process() {
        eprintln!("mote: warning: running without a seccomp filter: {error}");
    }
}

/// The run as a JSON object: outcome, exit code, statistics.
fn json(outcome: &Outcome, include_output: bool) -> serde_json::Value {
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let phases = &outcome.stats.phases;
    let exits = &outcome.stats.exits;
    let mut object = serde_json::json!({
        "outcome": outcome.exit.to_string(),
        "exit_code": outcome.exit.process_exit_code(),
        "guest_exit_code": outcome.exit.guest_code(),
        "phases_us": {
            "memory": micros(phases.memory),
            "vm": micros(phases.vm),
            "vcpu": micros(phases.vcpu),
            "run": micros(phases.run),
            "ready": phases.ready.map(micros),
            "reset": micros(phases.reset),
        },
        "dirtied_pages": outcome.stats.dirtied_pages,
        "exits": {
            "total": exits.total,
            "hypercalls": exits.hypercalls,
            "serial": exits.serial,
        },
        "output_bytes": outcome.output.len(),
    });
    if include_output {
        object["output"] = String::from_utf8_lossy(&outcome.output).into();
    }
    object
}

fn run(args: &RunArgs) -> ExitCode {
    let result = (|| -> Result<Outcome, Failure> {
        let mut config = config(&args.layout, &args.limits, console(args.quiet, args.json))?;
        if let Some(path) = &args.input {
            let limit = config.max_input();
            config = config.input(read_input(path, limit)?);
        }
        let hypervisor = Hypervisor::open()?;
        let files;
        let outcome = if is_snapshot(&args.guest) {
            let snapshot = hypervisor.load_snapshot(&args.guest)?;
            if args.screenshot.is_some() && !snapshot.has_framebuffer() {
                return Err(usage(
                    "--screenshot: the snapshot's guest has no framebuffer (take the snapshot \
                     with --framebuffer)"
                        .into(),
                ));
            }
            if args.screenshot.is_some() {
                config = config.screenshot();
            }
            files = result_files(args)?;
            restrict();
            hypervisor.run_snapshot(&snapshot, config)?
        } else {
            if args.screenshot.is_some() && args.layout.framebuffer.is_none() {
                return Err(usage(
                    "--screenshot needs --framebuffer WIDTHxHEIGHT: without one the guest has \
                     no screen"
                        .into(),
                ));
            }
            let image = GuestImage::from_file(&args.guest)?;
            files = result_files(args)?;
            restrict();
            hypervisor.run(&image, config)?
        };
        let (output_file, screenshot_file) = files;
        deliver_output(args, &outcome.output, output_file)?;
        if let (Some(path), Some(file), Some(screen)) =
            (&args.screenshot, screenshot_file, &outcome.framebuffer)
        {
            write_png(path, file, screen)?;
        }
        Ok(outcome)
    })();
    match result {
        Ok(outcome) => {
            let code = outcome.exit.process_exit_code();
            if args.json {
                println!("{}", json(&outcome, args.output.is_none()));
            }
            if code != 0 {
                eprintln!("mote: {}", outcome.exit);
            }
            ExitCode::from(code)
        }
        Err(failure) => {
            eprintln!("mote: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let result = (|| -> Result<Snapshot, Failure> {
        let config = config(&args.layout, &args.limits, console(args.quiet, false))?
            .input_capacity(args.input_capacity);
        let image = GuestImage::from_file(&args.guest)?;
        let hypervisor = Hypervisor::open()?;
        let snapshot = hypervisor.snapshot(&image, config)?;
        snapshot.save(&args.output)?;
        Ok(snapshot)
    })();
    match result {
        Ok(snapshot) => {
            if !args.quiet {
                eprintln!(
                    "mote: snapshot of {} written to {} ({} MiB of guest memory, input up to {} \
                     bytes)",
                    args.guest.display(),
                    args.output.display(),
                    snapshot.memory_size() >> 20,
                    snapshot.input_capacity()
                );
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("mote: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn inspect(path: &Path) -> ExitCode {
    let image = match GuestImage::from_file(path) {
        Ok(image) => image,
        Err(error) => {
            eprintln!("mote: error: {error}");
            return ExitCode::from(error.process_exit_code());
        }
    };
    let config = image.boot_config();
    let about = image.describe();
    let version = config.api_version;
    println!("{}", path.display());
    println!(
        "  bootloader_api {}.{}.{}{}, {}, runs in {} mode",
        version.major,
        version.minor,
        version.patch,
        if version.pre_release {
            " (pre-release)"
        } else {
            ""
        },
        if about.position_independent {
            "position-independent (ET_DYN)"
        } else {
            "at fixed addresses (ET_EXEC)"
        },
        if about.user_mode {
            "user (CPL3, mote runtime note)"
        } else {
            "kernel (CPL0)"
        },
    );
    println!(
        "  entry {:#x}, loaded {:#x} above its link addresses",
        about.entry, about.kernel_offset
    );
    println!("  stack {} KiB", config.kernel_stack_size / 1024);
    println!("  config {config:?}");
    println!("segments:");
    for (address, size, writable, executable) in &about.segments {
        println!(
            "  {address:#018x}  {size:>10} bytes  r{}{}",
            if *writable { "w" } else { "-" },
            if *executable { "x" } else { "-" }
        );
    }
    println!(
        "mappings{}:",
        if about.aslr {
            " (ASLR: these move at every run)"
        } else {
            ""
        }
    );
    for (what, address) in &about.placements {
        println!("  {address:#018x}  {what}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_resolution, parse_size};

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn a_timeout_is_a_duration_or_none() {
        use super::{Deadline, parse_timeout};
        assert_eq!(
            parse_timeout("250ms"),
            Ok(Deadline::After(std::time::Duration::from_millis(250)))
        );
        assert_eq!(parse_timeout("none"), Ok(Deadline::Never));
        assert_eq!(parse_timeout("NONE"), Ok(Deadline::Never));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("never").is_err());
    }

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2s"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn resolutions_parse() {
        assert_eq!(parse_resolution("640x480"), Ok((640, 480)));
        assert_eq!(parse_resolution("1920X1080"), Ok((1920, 1080)));
        assert!(parse_resolution("640").is_err());
        assert!(parse_resolution("ax4").is_err());
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
