//! `mote`: boot a guest kernel under KVM and exit with its exit code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mote_host::{GuestImage, Hypervisor, RunConfig, exit_status};

const EXIT_CODES: &str = "\
Exit codes of `mote run`:
  0-111  the guest's own exit code (the `exit` hypercall, or isa-debug-exit at port 0xF4:
         0x10 means 0, 0x11 means 1, any other value v means v << 1 | 1).
         Guest codes above 111 are reported as 111.
  112    bad command line
  113    the guest file cannot be read
  114    the guest file is not a kernel mote can boot
  115    KVM is missing or /dev/kvm is not accessible
  116    a host-side failure (a KVM call, guest memory)
  117    the guest triple-faulted (an exception it could not handle)
  118    the guest halted with nothing to wake it
  119    KVM internal error: KVM could not run or emulate a guest instruction
  120    the guest accessed an I/O port or address that nothing serves
  121    the CPU refused to enter the guest
  122    the guest stopped for an unexpected reason
  123    the guest panicked (message and location on standard error)
  124    the guest took a CPU exception (a fault or a stack overflow)";

/// mote: a minimal VMM that boots `bootloader_api` kernels directly under KVM.
#[derive(Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest kernel ELF, show its console, exit with its exit code.
    ///
    /// The guest is any kernel built with `bootloader_api::entry_point!` for
    /// x86_64-unknown-none. Its console (mote's console hypercall and COM1) goes to standard
    /// output; why the run ended goes to standard error when that is not a clean exit 0.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The guest kernel ELF file.
        guest: PathBuf,
        /// Guest memory size: bytes, or a number with K, M or G (binary units), e.g. 64M.
        #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
        mem: u64,
        /// The guest's input (its `bootloader_api` ramdisk): a file, or - for standard input.
        #[arg(long, value_name = "FILE", visible_alias = "ramdisk")]
        input: Option<PathBuf>,
        /// Give the guest a linear framebuffer of this size, as UEFI firmware would (e.g. 640x480).
        #[arg(long, value_name = "WIDTHxHEIGHT", value_parser = parse_resolution)]
        framebuffer: Option<(u32, u32)>,
        /// Write the framebuffer's contents to this PNG file when the run ends.
        #[arg(long, value_name = "FILE.png", requires = "framebuffer")]
        screenshot: Option<PathBuf>,
        /// Give the guest ACPI tables (RSDP, XSDT, MADT, FADT), as PC firmware would.
        #[arg(long)]
        acpi: bool,
    },
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
    match cli.command {
        Command::Run {
            guest,
            mem,
            input,
            framebuffer,
            screenshot,
            acpi,
        } => run(&RunArgs {
            guest,
            memory: mem,
            input,
            framebuffer,
            screenshot,
            acpi,
        }),
    }
}

/// Reads the input file, or standard input for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    let read = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    read.map_err(|e| format!("cannot read input {}: {e}", path.display()))
}

/// `mote run`'s options.
struct RunArgs {
    guest: PathBuf,
    memory: u64,
    input: Option<PathBuf>,
    framebuffer: Option<(u32, u32)>,
    screenshot: Option<PathBuf>,
    acpi: bool,
}

/// Parses `640x480`.
fn parse_resolution(text: &str) -> Result<(u32, u32), String> {
    let invalid = || format!("`{text}` is not a resolution; write WIDTHxHEIGHT, e.g. 640x480");
    let (width, height) = text.split_once(['x', 'X']).ok_or_else(invalid)?;
    let side = |s: &str| s.trim().parse::<u32>().map_err(|_| invalid());
    Ok((side(width)?, side(height)?))
}

/// Writes the guest's screen as a PNG file.
fn write_png(path: &Path, screen: &mote_host::Screen) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), screen.width, screen.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(&screen.rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))
}

fn run(args: &RunArgs) -> ExitCode {
    let input = match args.input.as_deref().map(read_input).transpose() {
        Ok(input) => input,
        Err(message) => {
            eprintln!("mote: error: {message}");
            return ExitCode::from(exit_status::USAGE);
        }
    };
    let result = (|| {
        let mut config = RunConfig::default()
            .memory_size(args.memory)?
            .console_to(Box::new(std::io::stdout()));
        if let Some(input) = input {
            config = config.input(input);
        }
        if let Some((width, height)) = args.framebuffer {
            config = config.framebuffer(width, height)?;
        }
        if args.acpi {
            config = config.acpi();
        }
        let image = GuestImage::from_file(&args.guest)?;
        let hypervisor = Hypervisor::open()?;
        hypervisor.run(&image, config)
    })();
    match result {
        Ok(outcome) => {
            // The guest's output (its result) follows its console text.
            let mut stdout = std::io::stdout();
            if stdout
                .write_all(&outcome.output)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                eprintln!("mote: error: cannot write the guest's output to standard output");
                return ExitCode::from(exit_status::HOST_ERROR);
            }
            if let (Some(path), Some(screen)) = (&args.screenshot, &outcome.framebuffer)
                && let Err(message) = write_png(path, screen)
            {
                eprintln!("mote: error: {message}");
                return ExitCode::from(exit_status::HOST_ERROR);
            }
            let code = outcome.exit.process_exit_code();
            if code != 0 {
                eprintln!("mote: {}", outcome.exit);
            }
            ExitCode::from(code)
        }
        Err(error) => {
            eprintln!("mote: error: {error}");
            ExitCode::from(error.process_exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

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
    fn resolutions_parse() {
        use super::parse_resolution;
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
