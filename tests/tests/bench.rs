//! `mote bench` end to end: samples from real guests under KVM, the comparison's verdict on
//! guests whose work differs by a known factor and on a guest against itself, the JSON report
//! against its schema (docs/bench-schema.json), the CSV, the SVG, a baseline, and refusals.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mote_host::exit_status;
use mote_tests::{guest_path, mote, text};
use serde_json::Value;

fn schema(file: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the schema is there"))
            .expect("the schema is JSON");
    jsonschema::draft202012::new(&schema).expect("the schema is a valid JSON Schema")
}

fn bench_schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| schema("bench-schema.json"))
}

fn check(validator: &jsonschema::Validator, object: &Value) {
    let problems: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{object:#}\ndoes not match the schema: {problems:#?}"
    );
}

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mote-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mote bench --json` with `args`; returns the report, checked against its schema.
fn bench_json(args: &[&OsStr]) -> Value {
    let mut all: Vec<&OsStr> = vec!["bench".as_ref(), "--json".as_ref()];
    all.extend_from_slice(args);
    let out = mote(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    check(bench_schema(), &report);
    report
}

/// The comparison of `sample` (null: the wall time) in `report`.
fn comparison<'a>(report: &'a Value, candidate: &str, sample: Option<&str>) -> &'a Value {
    report["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["candidate"] == candidate && c["sample"].as_str() == sample)
        .unwrap_or_else(|| panic!("no comparison of {candidate}'s {sample:?}: {report:#}"))
}

#[test]
fn twice_the_work_is_slower_and_the_same_guest_is_no_change() {
    let one = guest_path("samples-work-1x");
    let two = guest_path("samples-work-2x");
    let report = bench_json(&[
        one.as_os_str(),
        two.as_os_str(),
        one.as_os_str(),
        "--runs".as_ref(),
        "8".as_ref(),
        "--warmup".as_ref(),
        "1".as_ref(),
        "--seed".as_ref(),
        "42".as_ref(),
    ]);
    assert_eq!(report["settings"]["seed"], 42);
    let guests = report["guests"].as_array().unwrap();
    let names: Vec<&str> = guests.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["samples-work-1x", "samples-work-2x", "samples-work-1x#2"]
    );
    for guest in guests {
        assert_eq!(guest["runs"], 8);
        let work = guest["quantities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["sample"] == "work")
            .expect("a `work` quantity");
        assert_eq!(work["unit"], "cycles");
        assert_eq!(work["runs"], 8);
        // 200 samples a run.
        assert_eq!(work["count"], 8 * 200);
        assert!(work["median_interval"]["lower"].as_f64() <= work["median"].as_f64());
        assert!(work["median"].as_f64() <= work["median_interval"]["upper"].as_f64());
    }
    // The summary leaves the runs themselves to --export-json.
    assert!(guests[0].get("run_records").is_none());

    let doubled = comparison(&report, "samples-work-2x", Some("work"));
    assert_eq!(doubled["baseline"], "samples-work-1x");
    assert_eq!(doubled["verdict"], "slower", "{doubled:#}");
    let lower = doubled["ratio_interval"]["lower"].as_f64().unwrap();
    let upper = doubled["ratio_interval"]["upper"].as_f64().unwrap();
    assert!(lower > 1.0, "{doubled:#}");
    assert!(
        (1.8..2.2).contains(&doubled["ratio"].as_f64().unwrap()),
        "{doubled:#}"
    );
    assert!(upper < 2.2, "{doubled:#}");
    assert!(doubled["p_value"].as_f64().unwrap() < 0.05);

    let same = comparison(&report, "samples-work-1x#2", Some("work"));
    assert_eq!(same["verdict"], "no_change", "{same:#}");
    // The wall time per run is compared as well.
    comparison(&report, "samples-work-2x", None);
}

#[test]
fn exports_hold_every_sample_and_the_plot_draws_each_quantity() {
    let dir = scratch("exports");
    let (json, csv, svg) = (
        dir.join("report.json"),
        dir.join("samples.csv"),
        dir.join("plot.svg"),
    );
    let hash = guest_path("hashbench");
    let out = mote(&[
        "bench".as_ref(),
        hash.as_os_str(),
        "--runs".as_ref(),
        "3".as_ref(),
        "--warmup".as_ref(),
        "0".as_ref(),
        "--export-json".as_ref(),
        json.as_os_str(),
        "--export-csv".as_ref(),
        csv.as_os_str(),
        "--plot".as_ref(),
        svg.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for line in [
        "hashbench: 3 runs",
        "  hash ",
        "  sort ",
        "wall time per run",
    ] {
        assert!(shown.contains(line), "{line:?} not in:\n{shown}");
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check(bench_schema(), &report);
    let records = report["guests"][0]["run_records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    let mut samples_in_json = 0;
    for record in records {
        let names: Vec<&str> = record["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                samples_in_json += s["cycles"].as_array().unwrap().len();
                s["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(names, ["hash", "sort"]);
        assert!(record["wall_ns"].as_u64().unwrap() > 0);
    }

    let csv = std::fs::read_to_string(&csv).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("guest,run,kind,name,index,cycles,nanoseconds,preempted")
    );
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert!(rows.iter().all(|row| row.len() == 8), "{csv}");
    let sample_rows: Vec<&Vec<&str>> = rows.iter().filter(|row| row[2] == "sample").collect();
    assert_eq!(sample_rows.len(), samples_in_json);
    assert_eq!(rows.iter().filter(|row| row[2] == "wall").count(), 3);
    for row in &sample_rows {
        assert_eq!(row[0], "hashbench");
        row[5].parse::<u64>().expect("cycles are integers");
    }

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for title in ["hash (", "sort (", "wall time per run ("] {
        assert!(svg.contains(title), "no panel titled {title:?}");
    }
    // One density curve per guest and quantity: the only lines drawn through many points.
    let curves = svg
        .split("<polyline")
        .skip(1)
        .filter(|element| {
            let points = element.split("points=\"").nth(1).unwrap_or_default();
            points
                .split('"')
                .next()
                .unwrap_or_default()
                .split(' ')
                .count()
                > 20
        })
        .count();
    assert_eq!(
        curves, 3,
        "one curve for each of hash, sort and the wall time"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_baseline_report_is_compared_with_a_later_run() {
    let dir = scratch("baseline");
    let baseline = dir.join("before.json");
    let one = guest_path("samples-work-1x");
    let two = guest_path("samples-work-2x");
    let out = mote(&[
        "bench".as_ref(),
        one.as_os_str(),
        "--runs".as_ref(),
        "5".as_ref(),
        "--export-json".as_ref(),
        baseline.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Pinned and cold: the runner thread, under its seccomp filter, lets each new VM's KVM
    // thread start beyond its CPU (a call the filter must allow).
    let report = bench_json(&[
        two.as_os_str(),
        "--runs".as_ref(),
        "5".as_ref(),
        "--baseline".as_ref(),
        baseline.as_os_str(),
        "--pin".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(report["settings"]["pin"], 0);
    let work = comparison(&report, "samples-work-2x", Some("work"));
    assert_eq!(work["baseline"], "samples-work-1x (before.json)");
    assert_eq!(work["verdict"], "slower", "{work:#}");

    // A summary has no runs to compare with: refused, saying what to use.
    let summary = dir.join("summary.json");
    std::fs::write(&summary, serde_json::to_string(&report).unwrap()).unwrap();
    let out = mote(&[
        "bench".as_ref(),
        two.as_os_str(),
        "--baseline".as_ref(),
        summary.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(exit_status::USAGE.into()));
    assert!(
        text(&out.stderr).contains("--export-json"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_benchmarks_are_refused_with_the_reason() {
    let one = guest_path("samples-work-1x");
    let panic = guest_path("panic");
    // Too few runs to say anything.
    let out = mote(&[
        "bench".as_ref(),
        one.as_os_str(),
        "--runs".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(exit_status::USAGE.into()));
    assert!(text(&out.stderr).contains("at least 2 runs"));
    // A guest that fails ends the benchmark with its class, as JSON with --json.
    let out = mote(&[
        "bench".as_ref(),
        panic.as_os_str(),
        "--runs".as_ref(),
        "2".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(exit_status::GUEST_FAULT.into()));
    let failure: Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&schema("json-schema.json"), &failure);
    assert_eq!(failure["command"], "bench");
    assert_eq!(failure["error"]["class"], "guest_fault");
    assert!(
        failure["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended without exit code 0"),
        "{failure:#}"
    );
    // An export that cannot be written fails before any run.
    let out = mote(&[
        "bench".as_ref(),
        one.as_os_str(),
        "--export-csv".as_ref(),
        "/nonexistent-dir/x.csv".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(exit_status::USAGE.into()));
    assert!(text(&out.stderr).contains("/nonexistent-dir/x.csv"));
}

#[test]
fn warm_runs_restore_a_snapshot_and_still_report_samples() {
    let hash = guest_path("hashbench");
    let report = bench_json(&[
        hash.as_os_str(),
        "--warm".as_ref(),
        "--runs".as_ref(),
        "3".as_ref(),
        "--pin".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(report["settings"]["warm"], true);
    assert_eq!(report["settings"]["pin"], 0);
    let quantities = report["guests"][0]["quantities"].as_array().unwrap();
    let hash = quantities.iter().find(|q| q["sample"] == "hash").unwrap();
    assert_eq!(hash["runs"], 3);
    assert!(hash["count"].as_u64().unwrap() >= 3);
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed CPU set with one bit below CPU_SETSIZE, read by sched_setaffinity for
    // the calling thread (pid 0).
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn preemptions_are_counted_while_the_guest_runs_when_asked() {
    use mote_host::{Exit, RunConfig};
    use mote_tests::run_guest_with;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    assert_eq!(
        run_guest_with("hello", RunConfig::default())
            .stats
            .preemptions,
        None
    );
    // A spinning guest shares CPU 0 with a busy thread for 300 ms: the scheduler must take
    // the CPU from the vCPU's thread many times.
    let stop = AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            pin_to(0);
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let runner = scope.spawn(|| {
            pin_to(0);
            let config = RunConfig::default()
                .timeout(Duration::from_millis(300))
                .unwrap()
                .count_preemptions();
            run_guest_with("spin", config)
        });
        let outcome = runner.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    assert!(
        matches!(outcome.exit, Exit::Timeout { .. }),
        "{:?}",
        outcome.exit
    );
    let preemptions = outcome.stats.preemptions.expect("counted when asked");
    assert!(preemptions > 0, "{preemptions}");
}

/// The CPUs each thread of this process named `mote-*` or `kvm-*` may use, as the kernel lists
/// them (`/proc/self/task/TID/status`, `Cpus_allowed_list`).
fn mote_and_kvm_threads() -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("a task").path();
        // A thread may end between the listing and the read.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        let name = name.trim().to_owned();
        if !(name.starts_with("mote-") || name.starts_with("kvm-")) {
            continue;
        }
        let cpus = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim()
            .to_owned();
        threads.push((name, cpus));
    }
    threads
}

/// The CPUs the calling thread may use.
fn own_cpus() -> Vec<usize> {
    // SAFETY: a zeroed CPU set, filled by sched_getaffinity (at most its size), read bit by bit
    // below CPU_SETSIZE; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Whether this kernel starts KVM's thread for a VM (`kvm-nx-lpage-recovery`) as a thread of
/// the process at the VM's first `KVM_RUN`: Linux 6.14 and later (6.13.3 and later 6.13 kernels
/// do too, but are not told apart here: the check is skipped on them).
fn kvm_thread_starts_at_first_run() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 14)
}

#[test]
fn a_pinned_caller_keeps_its_cpu_to_itself() {
    use mote_host::{Exit, Hypervisor, RunConfig};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let cpus = own_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: this process may use only one CPU");
        return;
    }
    let pinned = *cpus.last().unwrap();
    let only_pinned = pinned.to_string();
    let alone = |threads: &[(String, String)]| -> Vec<String> {
        threads
            .iter()
            .filter(|(_, cpus)| *cpus == only_pinned)
            .map(|(name, _)| name.clone())
            .collect()
    };
    let (kvm_threads, mote_threads) = std::thread::spawn(move || {
        pin_to(pinned);
        // A hypervisor of this thread's own: its threads start from the pinned thread.
        let hypervisor = Hypervisor::open().expect("KVM");
        let guest = mote_host::GuestImage::from_file(guest_path("hostcall")).expect("hostcall");
        // The host function looks while the run's VM, and KVM's thread for it, lives.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let looking: mote_host::HostFunction = Arc::new(move |request: &[u8]| {
            record.lock().unwrap().extend(mote_and_kvm_threads());
            Ok(request.to_ascii_uppercase())
        });
        let config = || {
            RunConfig::default()
                .input(b"b".to_vec())
                .host_function("upper", Arc::clone(&looking))
        };
        // Two cold runs: the first starts the watchdog (its deadline) and, as its VM is torn
        // down, the reaper.
        for _ in 0..2 {
            let cold = hypervisor.run(&guest, config()).expect("a run");
            assert_eq!(cold.exit, Exit::Guest { code: 0 });
            assert_eq!(cold.output, b"B");
        }
        // A pool's thread, which makes the pool's second VM.
        let snapshot = hypervisor
            .snapshot(&guest, RunConfig::default())
            .expect("a snapshot of hostcall");
        let pool = mote_host::Pool::new(
            &hypervisor,
            &snapshot,
            mote_host::PoolConfig::default().min_idle(2).max_vms(2),
        )
        .expect("a pool");
        let made = Instant::now();
        while pool.size().0 < 2 {
            assert!(made.elapsed().as_secs() < 10, "the pool made no second VM");
            std::thread::sleep(Duration::from_millis(1));
        }
        let warm = pool.run(config()).expect("a warm run");
        assert_eq!(warm.exit, Exit::Guest { code: 0 });
        let kvm_threads: Vec<_> = std::mem::take(&mut *seen.lock().unwrap())
            .into_iter()
            .filter(|(name, _)| name.starts_with("kvm-"))
            .collect();
        // A thread of mote's widens itself once it first runs, which on a busy pinned CPU may
        // take a moment: this thread sleeps meanwhile.
        let mut mote_threads = mote_and_kvm_threads();
        let looked = Instant::now();
        while mote_threads
            .iter()
            .any(|(_, cpus)| *cpus == pinned.to_string())
            && looked.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
            mote_threads = mote_and_kvm_threads();
        }
        mote_threads.retain(|(name, _)| name.starts_with("mote-"));
        (kvm_threads, mote_threads)
    })
    .join()
    .expect("the pinned thread");
    let names: Vec<&str> = mote_threads.iter().map(|(name, _)| name.as_str()).collect();
    for expected in ["mote-watchdog", "mote-reaper", "mote-pool"] {
        assert!(
            names.contains(&expected),
            "no {expected} among {mote_threads:?}"
        );
    }
    assert!(
        alone(&mote_threads).is_empty(),
        "mote's threads on the pinned caller's CPU {pinned} alone: {mote_threads:?}"
    );
    if kvm_thread_starts_at_first_run() {
        assert!(!kvm_threads.is_empty(), "no thread of KVM's seen");
        assert!(
            alone(&kvm_threads).is_empty(),
            "KVM's threads on the pinned caller's CPU {pinned} alone: {kvm_threads:?}"
        );
    }
}
