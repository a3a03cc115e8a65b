//! The smallest function host: runs the guest kernel named on the command line once, with
//! standard input as its input, writes its output to standard output and exits with the
//! guest's exit code (1 for any other outcome, with the reason on standard error).

use std::io::{Read, Write};
use std::process::ExitCode;

use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};

fn main() -> ExitCode {
    let Some(guest) = std::env::args_os().nth(1) else {
        eprintln!("usage: mote-embedder-example GUEST.elf < INPUT");
        return ExitCode::from(2);
    };
    match run(&guest) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // The error, then what caused it.
            let mut line = error.to_string();
            let mut cause = error.source();
            while let Some(inner) = cause {
                line = format!("{line}: {inner}");
                cause = inner.source();
            }
            eprintln!("error: {line}");
            ExitCode::from(1)
        }
    }
}

fn run(guest: &std::ffi::OsStr) -> Result<u8, Box<dyn std::error::Error>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let hypervisor = Hypervisor::open()?;
    let image = GuestImage::from_file(guest)?;
    let outcome = hypervisor.run(&image, RunConfig::default().input(input))?;
    std::io::stdout().write_all(&outcome.output)?;
    match outcome.exit {
        Exit::Guest { code } => Ok(u8::try_from(code).unwrap_or(u8::MAX)),
        other => {
            eprintln!("the guest did not exit: {other}");
            Ok(1)
        }
    }
}
