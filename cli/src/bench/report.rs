//! From the runs to what `mote bench` reports: a summary per guest and measured quantity
//! (each sample name, and the wall time of a run), the comparisons, the warnings; as text, as
//! JSON (docs/bench.md) and as CSV.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Value, json};

use super::noise::Environment;
use super::run::RunRecord;
use super::stats::{self, CompareOptions, Comparison, Interval, Outliers, Summary, Verdict};

/// The version of `mote bench`'s JSON; a change that could break a reader bumps it.
pub const BENCH_JSON_VERSION: u64 = 1;

/// Resamples of the median's bootstrap interval. Each resample pools and selects over every
/// sample of the runs drawn, so this sets the analysis' cost: 2,000 keeps 30 runs of a
/// thousand samples each well under a second, and the interval's ends move by less than their
/// width's noise beyond it.
const RESAMPLES: usize = 2_000;

/// Above this coefficient of variation of the run medians, the report warns.
const HIGH_VARIATION: f64 = 0.05;

/// How the benchmark was run, as the report states it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Warm-up runs of each guest.
    pub warmup: usize,
    /// Runs from a snapshot (true) or booted afresh.
    pub warm: bool,
    /// The CPU the vCPU's thread was pinned to.
    pub pin: Option<usize>,
    /// The seed of the run order and the bootstrap.
    pub seed: u64,
    /// Whether preempted runs were left out of the statistics.
    pub drop_preempted: bool,
    /// The TSC frequency, to turn cycles into time.
    pub tsc_khz: Option<u64>,
    /// The input each run had, in bytes.
    pub input_bytes: usize,
    /// The comparison's thresholds.
    pub compare: CompareOptions,
}

/// A guest's runs, from this benchmark or from a baseline file.
#[derive(Debug, Clone)]
pub struct GuestRuns {
    /// Its name in the report.
    pub name: String,
    /// Its file.
    pub path: String,
    /// Every counted run.
    pub runs: Vec<RunRecord>,
}

/// One measured quantity of a guest: a sample name, or the run's wall time.
#[derive(Debug, Clone, PartialEq)]
pub enum Quantity {
    /// The guest's samples of this name, in TSC cycles.
    Sample(Arc<str>),
    /// The wall time of each run, measured by mote, in nanoseconds.
    Wall,
}

impl Quantity {
    fn unit(&self) -> &'static str {
        match self {
            Quantity::Sample(_) => "cycles",
            Quantity::Wall => "ns",
        }
    }

    fn label(&self) -> String {
        match self {
            Quantity::Sample(name) => name.to_string(),
            Quantity::Wall => "wall time per run".into(),
        }
    }

    fn sample_name(&self) -> Value {
        match self {
            Quantity::Sample(name) => Value::from(name.as_ref()),
            Quantity::Wall => Value::Null,
        }
    }
}

/// The statistics of one quantity of one guest.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What was measured.
    pub quantity: Quantity,
    /// The values, one list per run used.
    pub per_run: Vec<Vec<f64>>,
    /// Over every value of every run used.
    pub summary: Summary,
    /// The interval of the median, from resampling runs.
    pub median_interval: Interval,
    /// Tukey's fences over every value.
    pub outliers: Outliers,
    /// How much the run medians vary: their coefficient of variation.
    pub run_to_run: f64,
}

/// One guest's part of the report.
#[derive(Debug, Clone)]
pub struct GuestReport {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: String,
    /// Counted runs.
    pub runs: usize,
    /// Runs whose vCPU thread was preempted.
    pub preempted: usize,
    /// Runs the statistics used (all, or the unpreempted with --drop-preempted).
    pub used: usize,
    /// The median exits per run.
    pub exits: f64,
    /// Each quantity: the samples by name in order of appearance, then the wall time.
    pub measured: Vec<Measured>,
}

/// One comparison: a candidate guest against a baseline, for one quantity.
#[derive(Debug, Clone)]
pub struct Compared {
    /// The baseline's name.
    pub baseline: String,
    /// The candidate's name.
    pub candidate: String,
    /// What was compared.
    pub quantity: Quantity,
    /// The result.
    pub comparison: Comparison,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    /// How the benchmark ran.
    pub settings: Settings,
    /// What the machine was like.
    pub environment: Environment,
    /// Per guest.
    pub guests: Vec<GuestReport>,
    /// Each candidate against its baseline.
    pub comparisons: Vec<Compared>,
    /// What the reader should know about the figures' quality.
    pub warnings: Vec<String>,
    /// What was not controlled.
    pub uncontrolled: Vec<String>,
    /// The runs themselves, for the full export.
    pub raw: Vec<GuestRuns>,
}

/// The runs a quantity's statistics use: all, or only those never preempted.
fn used_runs(guest: &GuestRuns, drop_preempted: bool) -> Vec<&RunRecord> {
    guest
        .runs
        .iter()
        .filter(|run| !(drop_preempted && run.preemptions > 0))
        .collect()
}

/// The quantities of a guest: its sample names in order of first appearance, then wall time.
fn quantities(runs: &[&RunRecord]) -> Vec<Quantity> {
    let mut names: Vec<Arc<str>> = Vec::new();
    for run in runs {
        for (name, _) in &run.samples {
            if !names.contains(name) {
                names.push(Arc::clone(name));
            }
        }
    }
    names
        .into_iter()
        .map(Quantity::Sample)
        .chain([Quantity::Wall])
        .collect()
}

/// A quantity's values, one list per run (runs that did not report it are left out).
fn values_per_run(runs: &[&RunRecord], quantity: &Quantity) -> Vec<Vec<f64>> {
    runs.iter()
        .filter_map(|run| match quantity {
            Quantity::Wall => Some(vec![run.wall.as_nanos() as f64]),
            Quantity::Sample(name) => run
                .samples
                .iter()
                .find(|(have, _)| have == name)
                .map(|(_, cycles)| cycles.iter().map(|&c| c as f64).collect()),
        })
        .filter(|values: &Vec<f64>| !values.is_empty())
        .collect()
}

fn measure(quantity: Quantity, per_run: Vec<Vec<f64>>, settings: &Settings) -> Option<Measured> {
    let all: Vec<f64> = per_run.iter().flatten().copied().collect();
    let summary = Summary::of(&all)?;
    let medians: Vec<f64> = per_run
        .iter()
        .filter_map(|run| Summary::of(run).map(|s| s.median))
        .collect();
    let run_to_run = Summary::of(&medians).map_or(0.0, |s| s.coefficient_of_variation());
    Some(Measured {
        median_interval: stats::bootstrap_median_ci(
            &per_run,
            settings.compare.confidence,
            RESAMPLES,
            settings.seed,
        )?,
        outliers: Outliers::of(&all)?,
        quantity,
        per_run,
        summary,
        run_to_run,
    })
}

fn guest_report(guest: &GuestRuns, settings: &Settings) -> GuestReport {
    let runs = used_runs(guest, settings.drop_preempted);
    let exits: Vec<f64> = runs
        .iter()
        .map(|run| run.stats.exits.total as f64)
        .collect();
    GuestReport {
        name: guest.name.clone(),
        path: guest.path.clone(),
        runs: guest.runs.len(),
        preempted: guest.runs.iter().filter(|run| run.preemptions > 0).count(),
        used: runs.len(),
        exits: Summary::of(&exits).map_or(0.0, |s| s.median),
        measured: quantities(&runs)
            .into_iter()
            .filter_map(|quantity| {
                let per_run = values_per_run(&runs, &quantity);
                measure(quantity, per_run, settings)
            })
            .collect(),
    }
}

fn compare_guests(
    baseline: &GuestReport,
    candidate: &GuestReport,
    baseline_label: &str,
    options: &CompareOptions,
) -> Vec<Compared> {
    candidate
        .measured
        .iter()
        .filter_map(|measured| {
            let base = baseline
                .measured
                .iter()
                .find(|b| b.quantity == measured.quantity)?;
            Some(Compared {
                baseline: baseline_label.to_owned(),
                candidate: candidate.name.clone(),
                quantity: measured.quantity.clone(),
                comparison: stats::compare(&base.per_run, &measured.per_run, *options)?,
            })
        })
        .collect()
}

/// Analyses the runs. With `baseline` (the guests of an earlier report), each guest is
/// compared with the baseline guest of its name, or the first; without, every guest after
/// the first is compared with the first.
pub fn analyse(
    guests: Vec<GuestRuns>,
    baseline: Option<(String, Vec<GuestRuns>)>,
    settings: Settings,
    environment: Environment,
) -> Report {
    let reports: Vec<GuestReport> = guests
        .iter()
        .map(|guest| guest_report(guest, &settings))
        .collect();
    let mut comparisons = Vec::new();
    match &baseline {
        Some((file, earlier)) => {
            let earlier: Vec<GuestReport> = earlier
                .iter()
                .map(|guest| guest_report(guest, &settings))
                .collect();
            for candidate in &reports {
                let Some(base) = earlier
                    .iter()
                    .find(|b| b.name == candidate.name)
                    .or(earlier.first())
                else {
                    continue;
                };
                let label = format!("{} ({file})", base.name);
                comparisons.extend(compare_guests(base, candidate, &label, &settings.compare));
            }
        }
        None => {
            if let Some((first, rest)) = reports.split_first() {
                for candidate in rest {
                    comparisons.extend(compare_guests(
                        first,
                        candidate,
                        &first.name,
                        &settings.compare,
                    ));
                }
            }
        }
    }
    let mut warnings = Vec::new();
    for guest in &reports {
        if guest.preempted > 0 {
            warnings.push(if settings.drop_preempted {
                format!(
                    "{} of {} runs of {} were preempted and are left out",
                    guest.preempted, guest.runs, guest.name
                )
            } else {
                format!(
                    "{} of {} runs of {} were preempted (another thread ran on the vCPU's CPU \
                     while the TSC counted on); --drop-preempted leaves them out",
                    guest.preempted, guest.runs, guest.name
                )
            });
        }
        if !guest
            .measured
            .iter()
            .any(|m| matches!(m.quantity, Quantity::Sample(_)))
        {
            warnings.push(format!(
                "{} reported no samples: only the wall time of its runs is measured (a guest \
                 reports samples with mote_guest::bench)",
                guest.name
            ));
        }
        for measured in &guest.measured {
            if measured.run_to_run > HIGH_VARIATION && measured.per_run.len() > 1 {
                warnings.push(format!(
                    "{} of {}: the run medians vary by {:.1} % (coefficient of variation); \
                     differences below that are hard to tell from noise",
                    measured.quantity.label(),
                    guest.name,
                    measured.run_to_run * 100.0
                ));
            }
        }
    }
    let uncontrolled = environment.uncontrolled(settings.pin);
    Report {
        settings,
        environment,
        guests: reports,
        comparisons,
        warnings,
        uncontrolled,
        raw: guests,
    }
}

impl Report {
    /// Cycles to nanoseconds, when the TSC frequency is known.
    fn nanos(&self, cycles: f64) -> Option<f64> {
        self.settings
            .tsc_khz
            .map(|khz| cycles * 1_000_000.0 / khz as f64)
    }

    /// A value of `quantity` for a person: cycles with the time beside them, or a time.
    fn show(&self, quantity: &Quantity, value: f64) -> String {
        match quantity {
            Quantity::Wall => duration(value),
            Quantity::Sample(_) => match self.nanos(value) {
                Some(ns) => format!("{} cycles ({})", grouped(value), duration(ns)),
                None => format!("{} cycles", grouped(value)),
            },
        }
    }

    /// The report as text for a person.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for guest in &self.guests {
            let _ = writeln!(
                text,
                "{}: {} runs{}, {} exits per run",
                guest.name,
                guest.used,
                if guest.used < guest.runs {
                    format!(" of {}", guest.runs)
                } else {
                    String::new()
                },
                guest.exits
            );
            for measured in &guest.measured {
                let s = &measured.summary;
                let q = &measured.quantity;
                let interval = &measured.median_interval;
                let _ = writeln!(
                    text,
                    "  {:<18} median {}  [{} .. {}] {:.0} % CI",
                    q.label(),
                    self.show(q, s.median),
                    compact(q, interval.lower),
                    compact(q, interval.upper),
                    interval.confidence * 100.0
                );
                let _ = writeln!(
                    text,
                    "  {:<18} {} values; min {}  mean {} ± {} σ  p90 {}  p99 {}  max {}",
                    "",
                    grouped(s.count as f64),
                    compact(q, s.min),
                    compact(q, s.mean),
                    compact(q, s.std_dev),
                    compact(q, s.p90),
                    compact(q, s.p99),
                    compact(q, s.max)
                );
                let o = &measured.outliers;
                let outliers = o.total();
                if outliers > 0 {
                    let _ = writeln!(
                        text,
                        "  {:<18} {outliers} outliers ({:.1} %): {} low severe, {} low mild, \
                         {} high mild, {} high severe",
                        "",
                        outliers as f64 * 100.0 / s.count as f64,
                        o.low_severe,
                        o.low_mild,
                        o.high_mild,
                        o.high_severe
                    );
                }
            }
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(text);
        }
        for compared in &self.comparisons {
            let c = &compared.comparison;
            let verdict = match c.verdict {
                Verdict::Faster => "faster",
                Verdict::Slower => "slower",
                Verdict::NoChange => "no change",
            };
            let _ = writeln!(
                text,
                "{} against {}, {}: {verdict}, {:.3}x as long [{:.3}x .. {:.3}x] (p = {:.4})",
                compared.candidate,
                compared.baseline,
                compared.quantity.label(),
                c.ratio,
                c.ratio_interval.lower,
                c.ratio_interval.upper,
                c.p_value
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        for line in &self.uncontrolled {
            let _ = writeln!(text, "not controlled: {line}");
        }
        text
    }

    /// The report as JSON: the summary, and with `runs` every run's figures and samples too.
    pub fn json(&self, runs: bool) -> Value {
        let settings = &self.settings;
        let environment = &self.environment;
        let mut guests = Vec::new();
        for (guest, raw) in self.guests.iter().zip(&self.raw) {
            let mut object = json!({
                "name": guest.name,
                "path": guest.path,
                "runs": guest.runs,
                "runs_used": guest.used,
                "runs_preempted": guest.preempted,
                "exits_per_run": guest.exits,
                "quantities": guest.measured.iter().map(|m| self.measured_json(m)).collect::<Vec<_>>(),
            });
            if runs {
                object["run_records"] = raw
                    .runs
                    .iter()
                    .map(|run| {
                        let samples: Vec<Value> = run
                            .samples
                            .iter()
                            .map(
                                |(name, cycles)| json!({ "name": name.as_ref(), "cycles": cycles }),
                            )
                            .collect();
                        json!({
                            "wall_ns": nanos(run.wall),
                            "preemptions": run.preemptions,
                            "stats": crate::report::stats(&run.stats),
                            "samples": samples,
                        })
                    })
                    .collect();
            }
            guests.push(object);
        }
        let comparisons: Vec<Value> = self
            .comparisons
            .iter()
            .map(|compared| {
                let c = &compared.comparison;
                json!({
                    "baseline": compared.baseline,
                    "candidate": compared.candidate,
                    "sample": compared.quantity.sample_name(),
                    "unit": compared.quantity.unit(),
                    "ratio": c.ratio,
                    "ratio_interval": interval(&c.ratio_interval),
                    "change": c.change,
                    "p_value": c.p_value,
                    "verdict": match c.verdict {
                        Verdict::Faster => "faster",
                        Verdict::Slower => "slower",
                        Verdict::NoChange => "no_change",
                    },
                })
            })
            .collect();
        json!({
            "version": BENCH_JSON_VERSION,
            "command": "bench",
            "mote_version": crate::VERSION,
            "settings": {
                "warmup": settings.warmup,
                "warm": settings.warm,
                "pin": settings.pin,
                "seed": settings.seed,
                "drop_preempted": settings.drop_preempted,
                "tsc_khz": settings.tsc_khz,
                "input_bytes": settings.input_bytes,
                "confidence": settings.compare.confidence,
                "significance": settings.compare.significance,
                "noise_threshold": settings.compare.noise_threshold,
            },
            "environment": {
                "cpu_model": environment.cpu_model,
                "cpus": environment.cpus,
                "governor": environment.governor,
                "smt_active": environment.smt_active,
                "smt_siblings": environment.smt_siblings,
                "load_before": environment.load_before,
                "load_after": environment.load_after,
            },
            "guests": guests,
            "comparisons": comparisons,
            "warnings": self.warnings,
            "not_controlled": self.uncontrolled,
        })
    }

    fn measured_json(&self, measured: &Measured) -> Value {
        let s = &measured.summary;
        let o = &measured.outliers;
        let mut object = json!({
            "sample": measured.quantity.sample_name(),
            "unit": measured.quantity.unit(),
            "runs": measured.per_run.len(),
            "count": s.count,
            "min": s.min,
            "median": s.median,
            "mean": s.mean,
            "p90": s.p90,
            "p99": s.p99,
            "max": s.max,
            "std_dev": s.std_dev,
            "median_interval": interval(&measured.median_interval),
            "run_to_run_cv": measured.run_to_run,
            "outliers": {
                "low_severe": o.low_severe,
                "low_mild": o.low_mild,
                "high_mild": o.high_mild,
                "high_severe": o.high_severe,
            },
        });
        if let (Quantity::Sample(_), Some(ns)) = (&measured.quantity, self.nanos(1.0)) {
            object["ns_per_cycle"] = json!(ns);
        }
        object
    }

    /// Every sample and run wall time as CSV, one value a row.
    pub fn csv(&self) -> String {
        let mut csv = String::from("guest,run,kind,name,index,cycles,nanoseconds,preempted\n");
        for guest in &self.raw {
            let name = csv_field(&guest.name);
            for (run, record) in guest.runs.iter().enumerate() {
                let preempted = record.preemptions > 0;
                for (sample, cycles) in &record.samples {
                    let sample = csv_field(sample);
                    for (index, &value) in cycles.iter().enumerate() {
                        let ns = self
                            .nanos(value as f64)
                            .map_or(String::new(), |ns| format!("{ns:.1}"));
                        let _ = writeln!(
                            csv,
                            "{name},{run},sample,{sample},{index},{value},{ns},{preempted}"
                        );
                    }
                }
                let _ = writeln!(
                    csv,
                    "{name},{run},wall,,0,,{},{preempted}",
                    nanos(record.wall)
                );
            }
        }
        csv
    }
}

/// Reads the guests' runs back from a report written with `--export-json`.
pub fn runs_from_json(report: &Value) -> Result<Vec<GuestRuns>, String> {
    let version = report["version"].as_u64();
    if report["command"] != "bench" || version != Some(BENCH_JSON_VERSION) {
        return Err(format!(
            "not a `mote bench` report of version {BENCH_JSON_VERSION} (write one with \
             --export-json)"
        ));
    }
    let guests = report["guests"]
        .as_array()
        .ok_or("the report has no `guests` list")?;
    guests
        .iter()
        .map(|guest| {
            let name = guest["name"].as_str().ok_or("a guest has no name")?;
            let records = guest["run_records"].as_array().ok_or(format!(
                "{name} has no `run_records`: the baseline must be a full report, written with \
                 --export-json"
            ))?;
            let runs = records
                .iter()
                .map(|record| {
                    let wall = record["wall_ns"]
                        .as_u64()
                        .ok_or(format!("a run of {name} has no `wall_ns`"))?;
                    let samples = record["samples"]
                        .as_array()
                        .ok_or(format!("a run of {name} has no `samples` list"))?
                        .iter()
                        .map(|sample| {
                            let cycles = &sample["cycles"];
                            let sample = sample["name"]
                                .as_str()
                                .ok_or(format!("a sample of {name} has no name"))?;
                            let cycles = cycles
                                .as_array()
                                .ok_or(format!("{name}'s {sample} is not a list"))?
                                .iter()
                                .map(|v| {
                                    v.as_u64()
                                        .ok_or(format!("{name}'s {sample} holds a non-integer"))
                                })
                                .collect::<Result<Vec<u64>, String>>()?;
                            Ok((Arc::from(sample), cycles))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    Ok(RunRecord {
                        wall: std::time::Duration::from_nanos(wall),
                        preemptions: record["preemptions"].as_u64().unwrap_or(0),
                        samples,
                        ..RunRecord::default()
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(GuestRuns {
                name: name.to_owned(),
                path: guest["path"].as_str().unwrap_or_default().to_owned(),
                runs,
            })
        })
        .collect()
}

fn interval(interval: &Interval) -> Value {
    json!({
        "lower": interval.lower,
        "upper": interval.upper,
        "confidence": interval.confidence,
    })
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A value in its unit, short: cycles grouped by thousands, or a time.
fn compact(quantity: &Quantity, value: f64) -> String {
    match quantity {
        Quantity::Sample(_) => grouped(value),
        Quantity::Wall => duration(value),
    }
}

/// A whole number with its thousands grouped: 1,234,567.
pub fn grouped(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Nanoseconds for a person: 850 ns, 12.3 µs, 4.56 ms, 1.23 s.
pub fn duration(ns: f64) -> String {
    let abs = ns.abs();
    if abs < 1e3 {
        format!("{ns:.0} ns")
    } else if abs < 1e6 {
        format!("{:.3} µs", ns / 1e3)
    } else if abs < 1e9 {
        format!("{:.3} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(wall_us: u64, preemptions: u64, samples: &[(&str, &[u64])]) -> RunRecord {
        RunRecord {
            wall: Duration::from_micros(wall_us),
            preemptions,
            samples: samples
                .iter()
                .map(|(name, cycles)| (Arc::from(*name), cycles.to_vec()))
                .collect(),
            ..RunRecord::default()
        }
    }

    fn settings(drop_preempted: bool) -> Settings {
        Settings {
            warmup: 0,
            warm: false,
            pin: None,
            seed: 7,
            drop_preempted,
            tsc_khz: Some(2_000_000),
            input_bytes: 0,
            compare: CompareOptions::default(),
        }
    }

    fn guest(name: &str, runs: Vec<RunRecord>) -> GuestRuns {
        GuestRuns {
            name: name.into(),
            path: format!("/guests/{name}"),
            runs,
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1234567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(-1000.0), "-1,000");
        assert_eq!(duration(850.0), "850 ns");
        assert_eq!(duration(12_345.0), "12.345 µs");
        assert_eq!(duration(4_560_000.0), "4.560 ms");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }

    #[test]
    fn quantities_come_in_order_of_appearance_then_wall_time() {
        let runs = [
            run(10, 0, &[("parse", &[1, 2]), ("eval", &[3])]),
            run(11, 0, &[("eval", &[4]), ("emit", &[5])]),
        ];
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let names: Vec<String> = quantities(&refs).iter().map(Quantity::label).collect();
        assert_eq!(names, ["parse", "eval", "emit", "wall time per run"]);
        // Runs without a name are left out of that name's runs.
        let emit = values_per_run(&refs, &Quantity::Sample(Arc::from("emit")));
        assert_eq!(emit, vec![vec![5.0]]);
    }

    #[test]
    fn dropped_runs_leave_the_statistics_but_not_the_export() {
        let runs = vec![
            run(10, 0, &[("work", &[100, 100])]),
            run(10, 2, &[("work", &[900])]),
            run(10, 0, &[("work", &[100])]),
        ];
        let report = analyse(
            vec![guest("a", runs.clone())],
            None,
            settings(true),
            Environment::default(),
        );
        let a = &report.guests[0];
        assert_eq!((a.runs, a.used, a.preempted), (3, 2, 1));
        assert_eq!(a.measured[0].summary.max, 100.0);
        assert!(report.warnings.iter().any(|w| w.contains("left out")));
        let csv = report.csv();
        assert_eq!(csv.lines().filter(|l| l.contains(",sample,")).count(), 4);
        assert!(csv.contains("a,1,sample,work,0,900,450.0,true"), "{csv}");

        let kept = analyse(
            vec![guest("a", runs)],
            None,
            settings(false),
            Environment::default(),
        );
        assert_eq!(kept.guests[0].measured[0].summary.max, 900.0);
        assert!(kept.warnings.iter().any(|w| w.contains("--drop-preempted")));
    }

    #[test]
    fn guests_after_the_first_are_compared_with_it() {
        let a: Vec<RunRecord> = (0..20)
            .map(|i| run(10, 0, &[("work", &[1000 + i, 1010 + i])]))
            .collect();
        let b: Vec<RunRecord> = (0..20)
            .map(|i| run(20, 0, &[("work", &[2000 + 2 * i, 2020 + 2 * i])]))
            .collect();
        let report = analyse(
            vec![guest("a", a), guest("b", b)],
            None,
            settings(false),
            Environment::default(),
        );
        let work = &report.comparisons[0];
        assert_eq!(
            (work.baseline.as_str(), work.candidate.as_str()),
            ("a", "b")
        );
        assert_eq!(work.comparison.verdict, Verdict::Slower);
        assert!(work.comparison.ratio_interval.lower > 1.0);
        assert!(
            report.text().contains("b against a, work: slower, 2.0"),
            "{}",
            report.text()
        );
        // The wall time is compared too.
        assert_eq!(report.comparisons[1].quantity, Quantity::Wall);
    }

    #[test]
    fn a_full_report_reads_back_as_a_baseline() {
        let runs = vec![
            run(10, 0, &[("work", &[1, 2, 3])]),
            run(12, 1, &[("work", &[4]), ("other", &[5])]),
        ];
        let report = analyse(
            vec![guest("a", runs.clone())],
            None,
            settings(false),
            Environment::default(),
        );
        let back = runs_from_json(&report.json(true)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].name, "a");
        assert_eq!(back[0].runs.len(), 2);
        assert_eq!(back[0].runs[1].samples, runs[1].samples);
        assert_eq!(back[0].runs[1].wall, runs[1].wall);
        assert_eq!(back[0].runs[1].preemptions, 1);
        // A summary alone has no runs to compare with.
        let error = runs_from_json(&report.json(false)).unwrap_err();
        assert!(error.contains("--export-json"), "{error}");
        assert!(runs_from_json(&json!({"version": 99, "command": "bench"})).is_err());
    }
}
