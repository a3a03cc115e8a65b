//! `mote`: boot a guest kernel under KVM and exit with its exit code.

/// Writes a line to standard error. Unlike `eprintln!`, a closed standard error (a reader that
/// went away) does not make mote panic: the line is lost, the exit code still says what happened.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes a line to standard output, without `println!`'s panic on a closed pipe.
macro_rules! print_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Writes text to standard output, without `print!`'s panic on a closed pipe.
macro_rules! print_text {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod boot_config;
mod inspect;
mod interrupt;
mod package;
mod parse;
mod report;
mod serve;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use mote_host::{
    CancelToken, Class, GuestImage, Hypervisor, Outcome, RunConfig, Snapshot, exit_status,
};
use serde_json::{Value, json};

use report::EXIT_CODES;

/// `mote --version`: the package's version, and the commit it was built from when known.
const VERSION: &str = env!("MOTE_VERSION");

/// mote: a minimal VMM that boots `bootloader_api` kernels directly under KVM.
#[derive(Parser)]
#[command(name = "mote", version = VERSION, after_help = EXIT_CODES)]
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
    Inspect(InspectArgs),
    /// Serve guests as functions over HTTP: `POST /functions/NAME` runs NAME's guest with the
    /// request body as its input and answers with its output.
    ///
    /// Warm functions (the default) are snapshotted once and run on pools of VMs restored from
    /// the snapshot. Answers: 200 with the output for exit code 0; otherwise mote's outcome
    /// JSON with 422 (another exit code), 502 (the guest crashed), 504 (timeout), 507 (a limit),
    /// 413 (a body over the input limit), 503 with Retry-After (busy), 500 (mote's own
    /// failure). Also `GET /healthz` and `GET /metrics` (Prometheus). SIGTERM or Ctrl-C stops
    /// accepting and lets the calls in flight finish (see docs/serve.md).
    Serve(serve::ServeArgs),
    /// Benchmark guests: run each many times, collect the samples they report
    /// (`mote_guest::bench`) and mote's own figures, and report statistics, comparisons,
    /// JSON, CSV and plots.
    ///
    /// Runs of several guests interleave in a random order, and each guest after the first is
    /// compared with the first (or with --baseline): faster, slower or no change, with a
    /// confidence interval and a p-value. Intervals resample whole runs, since the samples of
    /// one run are not independent. See docs/bench.md.
    #[command(after_help = EXIT_CODES)]
    Bench(bench::BenchArgs),
    /// Package a guest kernel as an OCI image (an image-layout tar, no registry needed) for
    /// containerd and Kubernetes, run by `containerd-shim-mote-v1` (see docs/kubernetes.md).
    Package(package::PackageArgs),
}

/// How the guest is laid out: fixed when a snapshot is taken.
#[derive(clap::Args)]
struct LayoutArgs {
    /// Guest memory size: bytes, or a number with K, M or G (binary units), e.g. 64M
    /// [default: 8M; a snapshot's own size when running a snapshot].
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    mem: Option<u64>,
    /// Give the guest a linear framebuffer of this size, as UEFI firmware would (e.g. 640x480).
    #[arg(long, value_name = "WIDTHxHEIGHT", value_parser = parse::resolution)]
    framebuffer: Option<(u32, u32)>,
    /// Give the guest what PC firmware leaves: ACPI tables (RSDP, XSDT, MADT, FADT) and a PC's
    /// memory map (the EBDA, VGA and BIOS areas and the APIC pages reserved).
    #[arg(long)]
    acpi: bool,
    /// Give the guest interrupt controllers and a timer, as a PC has them: KVM's local APIC
    /// (with its timer, at 0xFEE00000), I/O APIC (0xFEC00000), 8259 pair and 8254 PIT, for
    /// kernels that enable interrupts and wait for ticks. `hlt` then waits for an interrupt;
    /// a guest halted with interrupts off still ends as halted. Off by default: it costs
    /// milliseconds per run (mostly tearing the VM down), and such a guest cannot be
    /// snapshotted.
    #[arg(long)]
    irqchip: bool,
    /// Boot as on a PC, for stock kernels: --acpi, a framebuffer (640x480 unless --framebuffer
    /// says otherwise) and 128 MiB of memory (unless --mem says otherwise).
    #[arg(long)]
    pc: bool,
    /// Boot with this run-time boot config: the JSON the `bootloader` crate's `BootConfig`
    /// serialises to (its boot.json). mote honours its framebuffer minimum and
    /// `_test_sentinel`; see docs/boot-protocol.md.
    #[arg(long, value_name = "FILE.json")]
    boot_config: Option<PathBuf>,
}

/// The framebuffer `--pc` gives when `--framebuffer` does not say.
const PC_FRAMEBUFFER: (u32, u32) = (640, 480);
/// The memory `--pc` gives when `--mem` does not say: QEMU's default.
const PC_MEMORY: u64 = 128 << 20;

impl LayoutArgs {
    /// The guest memory size asked for, if any.
    fn mem(&self) -> Option<u64> {
        self.mem.or(self.pc.then_some(PC_MEMORY))
    }

    /// The framebuffer asked for, if any.
    fn framebuffer(&self) -> Option<(u32, u32)> {
        self.framebuffer.or(self.pc.then_some(PC_FRAMEBUFFER))
    }

    /// Whether firmware's ACPI tables and memory map were asked for.
    fn acpi(&self) -> bool {
        self.acpi || self.pc
    }
}

/// What a run (or the boot of a snapshot) may spend.
#[derive(clap::Args)]
struct LimitArgs {
    /// Stop the guest after this long (e.g. 500ms, 2s, 1m), or `none` to let it run as long
    /// as it likes; it ends with code 119 [default: 30s].
    #[arg(long, value_name = "DURATION|none", value_parser = parse::timeout)]
    timeout: Option<parse::Deadline>,
    /// Stop the guest once its console passes this many bytes (e.g. 1M).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    console_limit: Option<u64>,
    /// Stop the guest once its output passes this many bytes (e.g. 16M).
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    output_limit: Option<u64>,
    /// Stop the guest at its hypercall number N + 1.
    #[arg(long, value_name = "N")]
    hypercall_limit: Option<u64>,
    /// Refuse input longer than this (e.g. 64M) [default: 16M].
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
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
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse::size)]
    input_capacity: u64,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Do not show the boot's console.
    #[arg(short, long)]
    quiet: bool,
    /// Print the result as a JSON object on standard output (the boot's console then goes to
    /// standard error); see docs/json.md.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The guest kernel ELF file.
    guest: PathBuf,
    /// Print the description as a JSON object on standard output; see docs/json.md.
    #[arg(long)]
    json: bool,
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
    /// Print the outcome, output and statistics as one JSON object on standard output (see
    /// docs/json.md); the console then goes to standard error, and the output into the
    /// object (base64) unless --output is given.
    #[arg(long)]
    json: bool,
    /// Do not show the guest's console.
    #[arg(short, long)]
    quiet: bool,
    /// Write the framebuffer's contents to this PNG file when the run ends (the guest needs
    /// --framebuffer, or a snapshot taken with one).
    #[arg(long, value_name = "FILE.png")]
    screenshot: Option<PathBuf>,
    /// Debug the guest with GDB: listen on 127.0.0.1:PORT (0 picks a free port; mote prints
    /// it), wait for `gdb KERNEL -ex 'target remote :PORT'`, and start the guest stopped at
    /// its first instruction. Without --timeout the run has no deadline; with one, it counts
    /// only while the guest runs. See docs/debugging.md.
    #[arg(long, value_name = "PORT")]
    gdb: Option<u16>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
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
        Command::Inspect(args) => inspect::inspect(&args.guest, args.json),
        Command::Serve(args) => serve::serve(&args),
        Command::Package(args) => package::package(&args),
        Command::Bench(args) => bench::bench(&args),
    }
}

/// A command line clap refused: its message, or with `--json` the error object (a reader of
/// JSON gets JSON whatever went wrong).
fn usage_error(error: &clap::Error) -> ExitCode {
    if !error.use_stderr() {
        // --help or --version.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let mut args = std::env::args().skip(1);
    let command = args
        .by_ref()
        .find(|arg| !arg.starts_with('-'))
        .unwrap_or_default();
    if std::env::args().any(|arg| arg == "--json")
        && ["run", "snapshot", "inspect", "package", "bench"].contains(&command.as_str())
    {
        let message = error.kind().as_str().map_or_else(
            || error.to_string().trim().to_owned(),
            |kind| format!("{kind}: {}", first_line(&error.to_string())),
        );
        let failure = Failure::usage(message);
        print_line!("{}", failure.document(&command));
    }
    let _ = error.print();
    ExitCode::from(exit_status::USAGE)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
}

/// A failure of the command itself: what went wrong, its kind and class.
struct Failure {
    kind: &'static str,
    class: Class,
    code: u8,
    message: String,
}

impl From<mote_host::Error> for Failure {
    fn from(error: mote_host::Error) -> Self {
        Self {
            kind: error.kind(),
            class: error.class(),
            code: error.process_exit_code(),
            message: error.full_message(),
        }
    }
}

impl Failure {
    fn new(kind: &'static str, class: Class, message: String) -> Self {
        Self {
            kind,
            class,
            code: class.exit_code(),
            message,
        }
    }

    fn usage(message: String) -> Self {
        Self::new("usage", Class::Usage, message)
    }

    fn host(kind: &'static str, message: String) -> Self {
        Self::new(kind, Class::HostFailure, message)
    }

    /// The command's JSON object for this failure.
    fn document(&self, command: &str) -> Value {
        report::document(
            command,
            self.code,
            json!({ "error": report::error(self.kind, self.class, &self.message) }),
        )
    }

    /// Reports the failure (a line on standard error; with `json`, the object on standard
    /// output too) and gives the exit code.
    fn report(&self, command: &str, json: bool) -> ExitCode {
        if json {
            print_line!("{}", self.document(command));
        }
        say!("mote: error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// Reads the input file, or standard input for `-`, up to `limit` bytes: more is refused
/// without reading on (`--input /dev/zero` ends at once).
fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>, Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            "read_input",
            Class::Usage,
            format!("cannot read input {}: {e}", path.display()),
        )
    };
    let source: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).map_err(fail)?)
    };
    let mut bytes = Vec::new();
    source
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(
            "input_too_large",
            Class::Usage,
            format!(
                "input {} is more than {}, the input limit (raise it with --input-limit)",
                path.display(),
                mote_host::human_size(limit)
            ),
        ));
    }
    Ok(bytes)
}

/// Writes the guest's screen as a PNG file.
fn write_png(path: &Path, file: File, screen: &mote_host::Screen) -> Result<(), Failure> {
    let fail = |e: &dyn std::fmt::Display| {
        Failure::host(
            "write_result",
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), screen.width, screen.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(&screen.rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}

/// A configuration with the layout, limits and console of the command line, stopped early by
/// `cancel`.
fn config(
    layout: &LayoutArgs,
    limits: &LimitArgs,
    console: Box<dyn Write + Send>,
    cancel: CancelToken,
) -> Result<RunConfig, Failure> {
    let mut config = RunConfig::default()
        .console_to(console)
        .cancel_token(cancel);
    if let Some(bytes) = layout.mem() {
        config = config.memory_size(bytes)?;
    }
    if let Some((width, height)) = layout.framebuffer() {
        config = config.framebuffer(width, height)?;
    }
    if layout.acpi() {
        config = config.acpi();
    }
    if layout.irqchip {
        config = config.irqchip();
    }
    if let Some(path) = &layout.boot_config {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                "boot_config",
                Class::Usage,
                format!("cannot read boot config {}: {e}", path.display()),
            )
        })?;
        let boot_config = boot_config::from_json(&text).map_err(|bad| {
            Failure::new(
                "boot_config",
                Class::Usage,
                format!("{}: {bad}", path.display()),
            )
        })?;
        config = config.boot_config(boot_config)?;
    }
    match limits.timeout {
        Some(parse::Deadline::After(timeout)) => config = config.timeout(timeout)?,
        Some(parse::Deadline::Never) => config = config.no_timeout(),
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
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == mote_host::snapshot_file::MAGIC)
}

/// Delivers the guest's output where `--output` says.
fn deliver_output(args: &RunArgs, output: &[u8], file: Option<File>) -> Result<(), Failure> {
    let fail = |what: String, e: std::io::Error| {
        Failure::host("write_result", format!("cannot write {what}: {e}"))
    };
    match (args.output.as_deref(), file) {
        (Some(path), Some(mut file)) => file
            .write_all(output)
            .map_err(|e| fail(format!("output {}", path.display()), e)),
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
                .map_err(|e| fail("the output to standard output".into(), e))
        }
    }
}

/// Creates the files the run's results go to (`--output`, `--screenshot`) before the guest
/// runs: a path that cannot be written is a mistake to report before the guest's time is
/// spent, and once the guest starts mote opens nothing (its seccomp filter forbids it).
fn result_files(args: &RunArgs) -> Result<(Option<File>, Option<File>), Failure> {
    let create = |path: &Path| {
        File::create(path).map_err(|e| {
            Failure::new(
                "write_result",
                Class::Usage,
                format!(
                    "cannot write {}: {e} (give a path in a directory you can write)",
                    path.display()
                ),
            )
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
        say!(
            "mote: warning: running without a seccomp filter: {}",
            error.full_message()
        );
    }
}

/// Listens on 127.0.0.1:`port` and waits for GDB to connect, saying where on standard error.
fn wait_for_gdb(guest: &Path, port: u16) -> Result<mote_host::Debugger, Failure> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        Failure::usage(format!(
            "--gdb: cannot listen on 127.0.0.1:{port}: {e} (pick another port, or 0 for any)"
        ))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::host("debugger", format!("--gdb: cannot read the port: {e}")))?
        .port();
    say!(
        "mote: waiting for gdb on 127.0.0.1:{port}: gdb {} -ex 'target remote :{port}'",
        guest.display()
    );
    let debugger = mote_host::Debugger::accept(&listener)
        .map_err(|e| Failure::from(mote_host::Error::from(e)))?;
    say!("mote: gdb connected; the guest waits at its first instruction");
    Ok(debugger)
}

/// [`restrict`], for a process whose run reads the debugger's connection.
fn restrict_debugged(debugger: &mote_host::Debugger) {
    if let Err(error) = mote_host::restrict_process_debugged(debugger) {
        say!(
            "mote: warning: running without a seccomp filter: {}",
            error.full_message()
        );
    }
}

/// Stops the run at SIGINT or SIGTERM; without the signal thread, those end mote as they
/// would any program (the guest goes with it).
fn cancel_on_signal(token: &CancelToken) -> interrupt::Interrupted {
    interrupt::cancel_on_signal(token.clone()).unwrap_or_else(|error| {
        say!("mote: warning: Ctrl-C will not stop the guest cleanly: {error}");
        interrupt::Interrupted::default()
    })
}

/// What a run leaves to report.
struct Ran {
    outcome: Outcome,
}

fn run(args: &RunArgs) -> ExitCode {
    let cancel = CancelToken::new();
    let interrupted = cancel_on_signal(&cancel);
    let result = (|| -> Result<Ran, Failure> {
        let console = console(args.quiet, args.json);
        let mut config = config(&args.layout, &args.limits, console, cancel.clone())?;
        if let Some(path) = &args.input {
            let limit = config.max_input();
            config = config.input(read_input(path, limit)?);
        }
        let hypervisor = Hypervisor::open()?;
        let files;
        let outcome = if is_snapshot(&args.guest) {
            if args.gdb.is_some() {
                return Err(Failure::usage(
                    "--gdb debugs a guest booted afresh, not one restored from a snapshot: give \
                     the kernel's ELF file"
                        .into(),
                ));
            }
            let snapshot = hypervisor.load_snapshot(&args.guest)?;
            if args.screenshot.is_some() && !snapshot.has_framebuffer() {
                return Err(Failure::usage(
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
            if args.screenshot.is_some() && config.boot_framebuffer()?.is_none() {
                return Err(Failure::usage(
                    "--screenshot needs --framebuffer WIDTHxHEIGHT (or --pc): without one the \
                     guest has no screen"
                        .into(),
                ));
            }
            let image = GuestImage::from_file(&args.guest)?;
            files = result_files(args)?;
            match args.gdb {
                Some(port) => {
                    let debugger = wait_for_gdb(&args.guest, port)?;
                    restrict_debugged(&debugger);
                    if args.limits.timeout.is_none() {
                        config = config.no_timeout();
                    }
                    config = config.debugger(debugger);
                }
                None => restrict(),
            }
            hypervisor.run(&image, config)?
        };
        let (output_file, screenshot_file) = files;
        deliver_output(args, &outcome.output, output_file)?;
        if let (Some(path), Some(file), Some(screen)) =
            (&args.screenshot, screenshot_file, &outcome.framebuffer)
        {
            write_png(path, file, screen)?;
        }
        Ok(Ran { outcome })
    })();
    let signal = interrupted.signal();
    match result {
        Ok(Ran { outcome }) => {
            let code = match signal {
                Some(signal) if outcome.exit == mote_host::Exit::Cancelled => 128 + signal as u8,
                _ => outcome.exit.process_exit_code(),
            };
            if args.json {
                let mut exit = report::exit(&outcome.exit);
                if let (Some(signal), mote_host::Exit::Cancelled) = (signal, &outcome.exit) {
                    exit["signal"] = interrupt::name(signal).into();
                }
                let output = report::output(
                    &outcome.output,
                    args.output
                        .as_deref()
                        .filter(|path| *path != Path::new("-")),
                );
                let fields = json!({
                    "guest": args.guest.display().to_string(),
                    "exit": exit,
                    "output": output,
                    "samples": report::samples(&outcome.samples),
                    "stats": report::stats(&outcome.stats),
                });
                print_line!("{}", report::document("run", code, fields));
            }
            match (signal, &outcome.exit) {
                (Some(signal), mote_host::Exit::Cancelled) => say!(
                    "mote: {} received: the guest was stopped",
                    interrupt::name(signal)
                ),
                _ if code != 0 => say!("mote: {}", outcome.exit),
                _ => {}
            }
            ExitCode::from(code)
        }
        Err(failure) => failure.report("run", args.json),
    }
}

fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let cancel = CancelToken::new();
    let interrupted = cancel_on_signal(&cancel);
    let result = (|| -> Result<Snapshot, Failure> {
        let console = console(args.quiet, args.json);
        let config = config(&args.layout, &args.limits, console, cancel.clone())?
            .input_capacity(args.input_capacity);
        let image = GuestImage::from_file(&args.guest)?;
        let hypervisor = Hypervisor::open()?;
        let snapshot = hypervisor.snapshot(&image, config)?;
        snapshot.save(&args.output)?;
        Ok(snapshot)
    })();
    match result {
        Ok(snapshot) => {
            if args.json {
                let fields = json!({
                    "guest": args.guest.display().to_string(),
                    "snapshot": {
                        "path": args.output.display().to_string(),
                        "memory_bytes": snapshot.memory_size(),
                        "input_capacity": snapshot.input_capacity(),
                    },
                });
                print_line!("{}", report::document("snapshot", 0, fields));
            }
            if !args.quiet {
                say!(
                    "mote: snapshot of {} written to {} ({} of guest memory, input up to {})",
                    args.guest.display(),
                    args.output.display(),
                    mote_host::human_size(snapshot.memory_size()),
                    mote_host::human_size(snapshot.input_capacity())
                );
            }
            ExitCode::SUCCESS
        }
        Err(failure) => match interrupted.signal() {
            Some(signal) if failure.class == Class::Cancelled => {
                let code = 128 + signal as u8;
                if args.json {
                    print_line!("{}", Failure { code, ..failure }.document("snapshot"));
                }
                say!(
                    "mote: {} received: the guest was stopped, no snapshot written",
                    interrupt::name(signal)
                );
                ExitCode::from(code)
            }
            _ => failure.report("snapshot", args.json),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
