//! `mote bench`: runs guests many times, collects the samples they report with
//! `mote_guest::bench` and mote's own figures per run, and reports statistics people can
//! trust: intervals from resampling runs (samples inside one run are not independent),
//! outliers, comparisons with a verdict, what was not controlled, JSON, CSV and a picture.
//! docs/bench.md is the user's guide and the JSON's schema.

mod noise;
mod plot;
mod report;
mod run;
pub mod stats;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mote_host::{CancelToken, GuestImage, Hypervisor, RunConfig};

use crate::{Failure, LayoutArgs, LimitArgs, parse};
use report::{GuestRuns, Settings};
use run::{Length, Progress, RunRecord, Subject};

/// Runs of each guest when neither --runs nor --time is given.
const DEFAULT_RUNS: usize = 30;
/// The fewest runs of each guest a time budget may end with: fewer give no useful interval.
const MIN_RUNS_IN_TIME: usize = 10;
/// Timing samples a run may report: 1 Mi, 24 MiB of host memory for the one run at a time a
/// benchmark makes (a library run's default is 64 Ki).
const SAMPLE_LIMIT: u64 = 1 << 20;

/// `mote bench`'s options.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The guest kernel ELF files; with two or more, each is compared with the first.
    #[arg(required = true, value_name = "GUEST.elf")]
    guests: Vec<PathBuf>,
    /// Counted runs of each guest [default: 30].
    #[arg(long, short, value_name = "N", conflicts_with = "time")]
    runs: Option<usize>,
    /// Run for this long instead of a number of runs (e.g. 10s), with at least 10 runs of
    /// each guest.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    time: Option<Duration>,
    /// Uncounted runs of each guest before the counted ones.
    #[arg(long, short, value_name = "N", default_value_t = 3)]
    warmup: usize,
    /// Restore every run from a snapshot taken once at the guest's `ready_for_input` point
    /// (as a function host runs it), instead of booting the guest afresh each run.
    #[arg(long)]
    warm: bool,
    /// Every run's input (the guest's ramdisk): a file, or - for standard input.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Pin the thread that runs the vCPUs to this CPU.
    #[arg(long, value_name = "CPU")]
    pin: Option<usize>,
    /// Leave the runs whose vCPU thread was preempted out of the statistics (they are counted
    /// and flagged either way).
    #[arg(long)]
    drop_preempted: bool,
    /// Compare with the guests of an earlier report, written with --export-json, instead of
    /// with the first guest (each guest with the baseline's guest of its name, or its first).
    #[arg(long, value_name = "FILE.json")]
    baseline: Option<PathBuf>,
    /// A change smaller than this share is "no change" whatever its p-value (0.02: 2 %).
    #[arg(long, value_name = "SHARE", default_value_t = 0.02)]
    noise_threshold: f64,
    /// The p-value below which a change counts.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    significance: f64,
    /// The confidence level of the intervals.
    #[arg(long, value_name = "LEVEL", default_value_t = 0.95)]
    confidence: f64,
    /// The seed of the run order and of the resampling [default: a random one, which the
    /// JSON report states].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print the summary as JSON on standard output instead of text (see docs/bench.md).
    #[arg(long)]
    json: bool,
    /// Write the full report, every run's samples included, as JSON to FILE.
    #[arg(long, value_name = "FILE.json")]
    export_json: Option<PathBuf>,
    /// Write every sample (and every run's wall time) as CSV to FILE.
    #[arg(long, value_name = "FILE.csv")]
    export_csv: Option<PathBuf>,
    /// Draw the distributions to an SVG file: a density curve per guest and measured quantity,
    /// the medians marked.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// The files the report goes to, created before the runs so that a path that cannot be
/// written fails at once, not after minutes of runs.
struct Outputs {
    json: Option<(PathBuf, File)>,
    csv: Option<(PathBuf, File)>,
    plot: Option<(PathBuf, File)>,
}

fn create(path: &Option<PathBuf>) -> Result<Option<(PathBuf, File)>, Failure> {
    path.as_ref()
        .map(|path| {
            File::create(path)
                .map(|file| (path.clone(), file))
                .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))
        })
        .transpose()
}

fn write_out(target: Option<(PathBuf, File)>, text: &str) -> Result<(), Failure> {
    if let Some((path, mut file)) = target {
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| {
                Failure::host(
                    "write_result",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
    }
    Ok(())
}

fn check_share(name: &str, value: f64, low: f64, high: f64) -> Result<(), Failure> {
    if value.is_finite() && value > low && value < high {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "--{name} must be between {low} and {high} (exclusive), not {value}"
        )))
    }
}

/// Unique names for the guests: their file names, numbered where they repeat.
fn names(paths: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for path in paths {
        let base = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let mut name = base.clone();
        let mut copy = 1;
        while names.contains(&name) {
            copy += 1;
            name = format!("{base}#{copy}");
        }
        names.push(name);
    }
    names
}

pub fn bench(args: &BenchArgs) -> ExitCode {
    let cancel = CancelToken::new();
    let interrupted = crate::cancel_on_signal(&cancel);
    match bench_inner(args, &cancel) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let code = match interrupted.signal() {
                Some(signal) if failure.class == mote_host::Class::Cancelled => {
                    ExitCode::from(128 + signal as u8)
                }
                _ => ExitCode::from(failure.code),
            };
            let _ = failure.report("bench", args.json);
            code
        }
    }
}

fn bench_inner(args: &BenchArgs, cancel: &CancelToken) -> Result<(), Failure> {
    check_share("noise-threshold", args.noise_threshold, 0.0, 1.0)?;
    check_share("significance", args.significance, 0.0, 1.0)?;
    check_share("confidence", args.confidence, 0.0, 1.0)?;
    let length = match (args.runs, args.time) {
        (Some(runs), _) if runs < 2 => {
            return Err(Failure::usage(format!(
                "--runs {runs}: a benchmark needs at least 2 runs of each guest to say how \
                 much they vary"
            )));
        }
        (Some(runs), _) => Length::Runs(runs),
        (None, Some(budget)) => Length::Time {
            budget,
            min: MIN_RUNS_IN_TIME,
        },
        (None, None) => Length::Runs(DEFAULT_RUNS),
    };
    let outputs = Outputs {
        json: create(&args.export_json)?,
        csv: create(&args.export_csv)?,
        plot: create(&args.plot)?,
    };
    let baseline = args
        .baseline
        .as_ref()
        .map(|path| read_baseline(path))
        .transpose()?;
    let input = match &args.input {
        Some(path) => Some(crate::read_input(
            path,
            crate::config(
                &args.layout,
                &args.limits,
                Box::new(std::io::sink()),
                cancel.clone(),
            )?
            .max_input(),
        )?),
        None => None,
    };
    let hypervisor = Hypervisor::open()?;
    let names = names(&args.guests);
    let mut subjects = Vec::new();
    for (name, path) in names.iter().zip(&args.guests) {
        let image = GuestImage::from_file(path)?;
        let subject = if args.warm {
            let boot = crate::config(
                &args.layout,
                &args.limits,
                Box::new(std::io::sink()),
                cancel.clone(),
            )?;
            Subject::warm(name.clone(), path.clone(), &hypervisor, &image, boot).map_err(
                |error| Failure {
                    message: format!(
                        "cannot snapshot {name} for --warm: {}",
                        error.full_message()
                    ),
                    ..Failure::from(error)
                },
            )?
        } else {
            Subject::cold(name.clone(), path.clone(), &hypervisor, image)
        };
        subjects.push(subject);
    }
    let no_layout = LayoutArgs {
        mem: None,
        framebuffer: None,
        acpi: false,
        irqchip: false,
        pc: false,
        boot_config: None,
    };
    // A warm run keeps the layout its snapshot fixed; a cold one boots with the command's.
    let layout = if args.warm { &no_layout } else { &args.layout };
    let make_config = || -> Result<RunConfig, Failure> {
        let config = crate::config(
            layout,
            &args.limits,
            Box::new(std::io::sink()),
            cancel.clone(),
        )?
        .sample_limit(SAMPLE_LIMIT);
        Ok(match &input {
            Some(bytes) => config.input(bytes.clone()),
            None => config,
        })
    };
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut environment = noise::Environment::probe(args.pin);

    let mut runs: Vec<Vec<RunRecord>> = vec![Vec::new(); subjects.len()];
    let bar = progress_bar(&subjects, args.warmup, length);
    let (sender, receiver) = mpsc::channel();
    let (subjects_ref, make_config_ref) = (&subjects, &make_config);
    let result = std::thread::scope(|scope| {
        let runner = std::thread::Builder::new()
            .name("mote-bench".into())
            .spawn_scoped(scope, move || {
                if let Some(cpu) = args.pin {
                    noise::pin_to(cpu).map_err(|e| {
                        Failure::usage(format!("--pin {cpu}: cannot pin to that CPU: {e}"))
                    })?;
                }
                if let Err(error) = mote_host::restrict_run_thread() {
                    say!(
                        "mote: warning: running without a seccomp filter: {}",
                        error.full_message()
                    );
                }
                run::run_all(
                    subjects_ref,
                    args.warmup,
                    length,
                    seed,
                    make_config_ref,
                    &sender,
                )
            })
            .map_err(|e| Failure::host("bench", format!("cannot start the run thread: {e}")))?;
        for message in receiver {
            match message {
                Progress::WarmedUp(index) => {
                    bar.set_message(format!("warming up {}", subjects[index].name));
                }
                Progress::Ran(index, record) => {
                    bar.set_message(subjects[index].name.clone());
                    runs[index].push(*record);
                    if let Length::Time { .. } = length {
                        grow(&bar);
                    }
                }
            }
            bar.inc(1);
        }
        runner
            .join()
            .unwrap_or_else(|_| Err(Failure::host("bench", "the run thread panicked".into())))
    });
    bar.finish_and_clear();
    result?;
    environment.load_after = noise::load_average();

    let guests: Vec<GuestRuns> = subjects
        .iter()
        .zip(runs)
        .map(|(subject, runs)| GuestRuns {
            name: subject.name.clone(),
            path: subject.path.display().to_string(),
            runs,
        })
        .collect();
    let settings = Settings {
        warmup: args.warmup,
        warm: args.warm,
        pin: args.pin,
        seed,
        drop_preempted: args.drop_preempted,
        tsc_khz: hypervisor.tsc_khz(),
        input_bytes: input.as_ref().map_or(0, Vec::len),
        compare: stats::CompareOptions {
            confidence: args.confidence,
            significance: args.significance,
            noise_threshold: args.noise_threshold,
            seed,
            ..stats::CompareOptions::default()
        },
    };
    let report = report::analyse(guests, baseline, settings, environment);
    if args.json {
        print_line!("{}", report.json(false));
    } else {
        print_text!("{}", report.text());
    }
    let Outputs { json, csv, plot } = outputs;
    write_out(json, &report.json(true).to_string())?;
    write_out(csv, &report.csv())?;
    if plot.is_some() {
        let picture = plot::svg(&report)
            .map_err(|e| Failure::host("plot", format!("cannot draw the plot: {e}")))?;
        write_out(plot, &picture)?;
    }
    Ok(())
}

/// The baseline's guests, from a report `--export-json` wrote.
fn read_baseline(path: &Path) -> Result<(String, Vec<GuestRuns>), Failure> {
    let bad = |why: String| Failure::usage(format!("--baseline {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let guests = report::runs_from_json(&value).map_err(bad)?;
    if guests.is_empty() {
        return Err(bad("the report has no guests".into()));
    }
    let label = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    Ok((label, guests))
}

/// A progress bar on standard error, with an estimate of the time left; none when standard
/// error is not a terminal.
fn progress_bar(subjects: &[Subject], warmup: usize, length: Length) -> ProgressBar {
    let rounds = match length {
        Length::Runs(runs) => runs,
        Length::Time { min, .. } => min,
    };
    let total = (subjects.len() * (warmup + rounds)) as u64;
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {wide_bar} {pos}/{len} runs, {eta} left  {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// With a time budget the number of runs is not known: the bar grows ahead of its position.
fn grow(bar: &ProgressBar) {
    if let Some(length) = bar.length()
        && bar.position() + 2 >= length
    {
        bar.set_length(length + length / 4 + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_guests_get_numbered_names() {
        let paths: Vec<PathBuf> = ["a/work", "b/work", "c/other", "a/work"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names(&paths), ["work", "work#2", "other", "work#3"]);
    }

    #[test]
    fn shares_must_lie_strictly_between_their_bounds() {
        assert!(check_share("x", 0.5, 0.0, 1.0).is_ok());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(check_share("x", bad, 0.0, 1.0).is_err(), "{bad}");
        }
    }
}
