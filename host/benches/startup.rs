//! Start-up benchmark: mote against the raw KVM floor, measured in one process.
//!
//! Run through `cargo xtask bench`, which builds the guests and the release `mote` binary and
//! tells this program where they are (`MOTE_GUEST_DIR`, `MOTE_BIN`, `MOTE_BENCH_JSON`).
//!
//! Figures (median and p90, microseconds):
//! - `kvm_floor_cold_cpl0` / `kvm_floor_cold_cpl3`: create a VM, a vCPU and 2 MiB of memory
//!   straight on kvm-ioctls, enter long mode at that ring, run to the first `out`.
//! - `mote_cold_in_process`: `Hypervisor::run` of `hello`, from the call to its return
//!   (`mote_phase_*`: where that time goes).
//! - `mote_run_process`: `mote run hello` as a whole process, spawn to exit.
//! - `kvm_floor_exit`: one port-I/O exit round trip from CPL3 (the ring mote guests run in),
//!   straight on kvm-ioctls: `KVM_RUN` returns for an `out`, and is called again.
//! - `mote_hypercall`: one no-op hypercall round trip through the whole mote path, timed with the
//!   TSC inside the `bench-hypercall` guest.
//! - `guest_compute` / `native_compute`: the same compute-bound function
//!   (`guest/bench/src/compute.rs`) inside the `bench-compute` guest and as a plain host function.
//!
//! - `timeout_overshoot`: how late a 20 ms deadline stops a spinning guest.
//! - `*_seq_runs_per_s`, `*_concurrent_runs_per_s`: 1,000 runs one after another, and over 64
//!   threads, of `hello` under mote and of the raw floor VM.
//! - `idle_guest_rss_kib`, `kvm_floor_idle_rss_kib`: host memory (RSS) per live idle guest with
//!   1,000 held: `hostcall` guests waiting in their host call, raw floor VMs stopped at their
//!   first exit.
//!
//! Samples of a floor and of mote are interleaved so that a change in machine load hits both
//! alike; ratios are of medians measured in this same run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const ROUNDS: usize = 200;
const PROCESS_ROUNDS: usize = 60;
const EXIT_ROUNDS: usize = 20;
const EXITS_PER_ROUND: u32 = 200;
const COMPUTE_SAMPLES: usize = 10;
const TIMEOUT_SAMPLES: usize = 20;
const TIMEOUT: Duration = Duration::from_millis(20);
const SEQ_RUNS: usize = 1000;
const CONCURRENT_THREADS: usize = 64;
const HELD_GUESTS: usize = 1000;
/// Rounds of the compute workload: long enough that start-up noise does not matter.
const COMPUTE_ROUNDS: u64 = 10_000_000;

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run this benchmark with `cargo xtask bench`"))
}

/// The guest code of the raw floor: `out 0x80, al`, then back to the `out` forever.
const FLOOR_CODE: [u8; 4] = [0xE6, 0x80, 0xEB, 0xFC];

/// A VM set up with the least any VMM must do: 2 MiB, one identity-mapped 2 MiB page, long
/// mode at CPL0 or CPL3, about to run `FLOOR_CODE`.
struct FloorVm {
    // Field order is drop order: the vCPU and the VM go before their memory.
    vcpu: kvm_ioctls::VcpuFd,
    _vm: kvm_ioctls::VmFd,
    _memory: GuestMemoryMmap<()>,
}

impl FloorVm {
    fn new(kvm: &Kvm, user: bool) -> Self {
        const MEMORY: usize = 2 << 20;
        const PML4: u64 = 0x1000;
        const PDPT: u64 = 0x2000;
        const PD: u64 = 0x3000;
        const CODE: u64 = 0x4000;
        const TSS: u64 = 0x5000;
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]).unwrap();
        let user_bit = if user { 4 } else { 0 };
        for (at, entry) in [
            (PML4, PDPT | 3 | user_bit),
            (PDPT, PD | 3 | user_bit),
            (PD, 0x83 | user_bit),
        ] {
            memory.write_obj::<u64>(entry, GuestAddress(at)).unwrap();
        }
        memory.write_slice(&FLOOR_CODE, GuestAddress(CODE)).unwrap();
        // A TSS whose I/O bitmap allows every port, as mote gives its user-mode guests: some
        // hypervisors (kvm_pvm) keep IOPL from the guest, so IOPL 3 alone is not enough.
        memory
            .write_obj::<u16>(0x68, GuestAddress(TSS + 0x66))
            .unwrap();
        memory
            .write_obj::<u8>(0xFF, GuestAddress(TSS + 0x68 + 0x2000))
            .unwrap();
        let region = memory.iter().next().unwrap();
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap();
        // SAFETY: `memory` is a live mapping of MEMORY bytes that outlives the VM: FloorVm
        // drops the vCPU and the VM before the memory.
        unsafe {
            vm.set_user_memory_region(kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: MEMORY as u64,
                userspace_addr: host as u64,
            })
        }
        .expect("KVM_SET_USER_MEMORY_REGION");

        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        let mut sregs = vcpu.get_sregs().unwrap();
        let code = kvm_segment {
            base: 0,
            limit: 0xFFFF_FFFF,
            selector: if user { 0x2B } else { 0x08 },
            type_: 0xB,
            present: 1,
            dpl: if user { 3 } else { 0 },
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: if user { 0x23 } else { 0x10 },
            type_: 0x3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr = kvm_segment {
            base: TSS,
            limit: 0x68 + 0x2000,
            selector: 0x18,
            type_: 0xB,
            s: 0,
            dpl: 0,
            db: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.cr0 = 0x8001_0033;
        sregs.cr3 = PML4;
        sregs.cr4 = 0x20;
        sregs.efer = 0xD00;
        vcpu.set_sregs(&sregs).unwrap();
        vcpu.set_regs(&kvm_regs {
            rip: CODE,
            rsp: 0x10_0000,
            // IOPL 3 lets CPL3 code use `out`.
            rflags: if user { 0x3002 } else { 0x2 },
            ..Default::default()
        })
        .unwrap();
        Self {
            vcpu,
            _vm: vm,
            _memory: memory,
        }
    }

    /// Runs to the next `out`.
    fn run_to_out(&mut self) {
        match self.vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(0x80, _) => {}
            other => panic!("the floor VM stopped with {other:?}"),
        }
    }
}

/// The raw cold floor: create, set up and run a VM to its first `out`.
fn kvm_floor(kvm: &Kvm, user: bool) -> Duration {
    let start = Instant::now();
    let mut vm = FloorVm::new(kvm, user);
    vm.run_to_out();
    let elapsed = start.elapsed();
    drop(vm);
    elapsed
}

/// The raw exit floor: the average time of one `out` exit round trip.
fn kvm_floor_exit(vm: &mut FloorVm, exits: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..exits {
        vm.run_to_out();
    }
    start.elapsed() / exits
}

mod compute {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest/bench/src/compute.rs"
    ));
}

/// What reading hypercall arguments from a 48-byte block at a guest-virtual address would add
/// to each call (the alternative to registers): a page walk and a read, per call.
fn argument_block_read(calls: u32) -> Duration {
    use mote_boot::paging::{Access, FrameAllocator, PageTableBuilder, flags, translate};
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut frames = FrameAllocator::new(0x10_0000, 0x40_0000);
    let mut tables = PageTableBuilder::new(&memory, &mut frames).unwrap();
    let block = 0x80_0000_1000;
    tables
        .map_page(&mut frames, block, 0x20_0000, flags::WRITABLE | flags::USER)
        .unwrap();
    let cr3 = tables.root();
    let user = Access {
        write: false,
        user: true,
    };
    let mut args = [0u8; 48];
    let start = Instant::now();
    for _ in 0..calls {
        let physical = translate(&memory, cr3, std::hint::black_box(block), user).unwrap();
        memory
            .read_slice(&mut args, GuestAddress(physical))
            .unwrap();
        std::hint::black_box(&args);
    }
    start.elapsed() / calls
}

/// Runs a bench guest with `input` and returns its `key=value` output lines.
fn bench_guest(
    hypervisor: &Hypervisor,
    image: &GuestImage,
    input: &str,
) -> BTreeMap<String, String> {
    let outcome = hypervisor
        .run(image, RunConfig::default().input(input.as_bytes().to_vec()))
        .unwrap();
    assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "bench guest failed");
    String::from_utf8_lossy(&outcome.output)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    fn percentile(&self, p: usize) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
    }

    fn median(&self) -> f64 {
        self.percentile(50)
    }
}

/// Runs per second of `run` done `total` times over `threads` threads.
fn runs_per_second(threads: usize, total: usize, run: impl Fn() + Sync) -> f64 {
    let per_thread = total / threads;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| (0..per_thread).for_each(|_| run()));
        }
    });
    (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
}

fn resident_kib() -> f64 {
    // Give freed heap back first, so the figure counts what is held, not what was.
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4.0
}

/// Host memory per live, idle raw-floor VM (stopped at its first `out`), `count` held.
fn floor_idle_rss_kib(kvm: &Kvm, count: usize) -> f64 {
    let before = resident_kib();
    let held: Vec<FloorVm> = (0..count)
        .map(|_| {
            let mut vm = FloorVm::new(kvm, true);
            vm.run_to_out();
            vm
        })
        .collect();
    let per_vm = (resident_kib() - before) / count as f64;
    drop(held);
    per_vm
}

/// Host memory per live, idle mote guest, `count` held: each `hostcall` guest waits inside its
/// host call, so its VM and its thread stay alive and idle.
fn mote_idle_rss_kib(hypervisor: &Hypervisor, guest_dir: &std::path::Path, count: usize) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let image = GuestImage::from_file(guest_dir.join("hostcall")).expect("hostcall guest");
    let entered = Arc::new(AtomicUsize::new(0));
    let release = Arc::new((Mutex::new(false), Condvar::new()));
    let before = resident_kib();
    let mut per_guest = 0.0;
    std::thread::scope(|scope| {
        for _ in 0..count {
            let (entered, release, image) = (Arc::clone(&entered), Arc::clone(&release), &image);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    let wait = Arc::new(move |_: &[u8]| {
                        entered.fetch_add(1, Ordering::SeqCst);
                        let (lock, wake) = &*release;
                        let mut released = lock.lock().unwrap();
                        while !*released {
                            released = wake.wait(released).unwrap();
                        }
                        Ok(Vec::new())
                    });
                    let config = RunConfig::default().host_function("upper", wait);
                    hypervisor.run(image, config).unwrap();
                })
                .unwrap();
        }
        while entered.load(Ordering::SeqCst) < count {
            std::thread::sleep(Duration::from_millis(10));
        }
        per_guest = (resident_kib() - before) / count as f64;
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
    });
    per_guest
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let guest = env_path("MOTE_GUEST_DIR").join("hello");
    let mote_bin = env_path("MOTE_BIN");
    let json_path = env_path("MOTE_BENCH_JSON");

    let kvm = Kvm::new().expect("/dev/kvm");
    let hypervisor = Hypervisor::open().expect("KVM");
    let image = GuestImage::from_file(&guest).expect("hello guest");
    let mote_once = || {
        let start = Instant::now();
        let outcome = hypervisor.run(&image, RunConfig::default()).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
        (elapsed, outcome.stats)
    };
    // Warm up page caches and KVM's own allocations.
    for _ in 0..5 {
        kvm_floor(&kvm, false);
        kvm_floor(&kvm, true);
        mote_once();
    }

    let mut figures: BTreeMap<&str, Samples> = BTreeMap::new();
    for _ in 0..ROUNDS {
        figures
            .entry("kvm_floor_cold_cpl0")
            .or_default()
            .push(kvm_floor(&kvm, false));
        figures
            .entry("kvm_floor_cold_cpl3")
            .or_default()
            .push(kvm_floor(&kvm, true));
        let (elapsed, stats) = mote_once();
        figures
            .entry("mote_cold_in_process")
            .or_default()
            .push(elapsed);
        let phases = stats.phases;
        for (name, d) in [
            ("mote_phase_memory", phases.memory),
            ("mote_phase_vm", phases.vm),
            ("mote_phase_vcpu", phases.vcpu),
            ("mote_phase_run", phases.run),
        ] {
            figures.entry(name).or_default().push(d);
        }
    }
    for _ in 0..PROCESS_ROUNDS {
        let start = Instant::now();
        let status = Command::new(&mote_bin)
            .arg("run")
            .arg(&guest)
            .stdout(Stdio::null())
            .status()
            .expect("mote runs");
        figures
            .entry("mote_run_process")
            .or_default()
            .push(start.elapsed());
        assert!(status.success(), "mote run hello failed: {status}");
    }

    // Exit round trips: the raw floor and mote's hypercall, interleaved.
    let hypercall_guest =
        GuestImage::from_file(guest.with_file_name("bench-hypercall")).expect("bench-hypercall");
    let mut floor_vm = FloorVm::new(&kvm, true);
    floor_vm.run_to_out();
    for _ in 0..EXIT_ROUNDS {
        let floor = kvm_floor_exit(&mut floor_vm, EXITS_PER_ROUND);
        figures.entry("kvm_floor_exit").or_default().push(floor);
        let seen = bench_guest(&hypervisor, &hypercall_guest, &EXITS_PER_ROUND.to_string());
        let ns: u64 = seen["ns_per_call"].parse().unwrap();
        figures
            .entry("mote_hypercall")
            .or_default()
            .push(Duration::from_nanos(ns));
    }
    drop(floor_vm);
    for _ in 0..EXIT_ROUNDS {
        figures
            .entry("args_block_read")
            .or_default()
            .push(argument_block_read(10_000));
    }

    // The same compute function in the guest and on the host.
    let compute_guest =
        GuestImage::from_file(guest.with_file_name("bench-compute")).expect("bench-compute");
    for _ in 0..COMPUTE_SAMPLES {
        let seen = bench_guest(&hypervisor, &compute_guest, &COMPUTE_ROUNDS.to_string());
        let ns: u64 = seen["ns"].parse().unwrap();
        figures
            .entry("guest_compute")
            .or_default()
            .push(Duration::from_nanos(ns));
        let start = Instant::now();
        let native = compute::workload(std::hint::black_box(COMPUTE_ROUNDS));
        figures
            .entry("native_compute")
            .or_default()
            .push(start.elapsed());
        assert_eq!(
            seen["result"],
            native.to_string(),
            "guest and host disagree"
        );
    }

    // How late a deadline lands: a spinning guest against a 20 ms timeout.
    let spin = GuestImage::from_file(guest.with_file_name("spin")).expect("spin guest");
    for _ in 0..TIMEOUT_SAMPLES {
        let config = RunConfig::default().timeout(TIMEOUT).unwrap();
        let outcome = hypervisor.run(&spin, config).unwrap();
        assert!(matches!(outcome.exit, Exit::Timeout { .. }));
        let overshoot = outcome.stats.phases.run.saturating_sub(TIMEOUT);
        figures
            .entry("timeout_overshoot")
            .or_default()
            .push(overshoot);
    }

    // Throughput and density, beside the raw floor doing the same.
    let mut values: BTreeMap<&str, f64> = BTreeMap::new();
    let floor_run = || {
        kvm_floor(&kvm, true);
    };
    let mote_run = || {
        let outcome = hypervisor.run(&image, RunConfig::default()).unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    };
    values.insert(
        "kvm_floor_seq_runs_per_s",
        runs_per_second(1, SEQ_RUNS, floor_run),
    );
    values.insert(
        "mote_seq_runs_per_s",
        runs_per_second(1, SEQ_RUNS, mote_run),
    );
    values.insert(
        "kvm_floor_concurrent_runs_per_s",
        runs_per_second(CONCURRENT_THREADS, SEQ_RUNS, floor_run),
    );
    values.insert(
        "mote_concurrent_runs_per_s",
        runs_per_second(CONCURRENT_THREADS, SEQ_RUNS, mote_run),
    );
    values.insert(
        "kvm_floor_idle_rss_kib",
        floor_idle_rss_kib(&kvm, HELD_GUESTS),
    );
    values.insert(
        "idle_guest_rss_kib",
        mote_idle_rss_kib(&hypervisor, guest.parent().unwrap(), HELD_GUESTS),
    );

    // `hello` runs in user mode (CPL3), so its floor is the CPL3 one.
    let ratio = |a: &str, b: &str| figures[a].median() / figures[b].median();
    let ratios = [
        (
            "cold_vs_floor",
            ratio("mote_cold_in_process", "kvm_floor_cold_cpl3"),
            Some(1.5),
        ),
        (
            "hypercall_vs_exit",
            ratio("mote_hypercall", "kvm_floor_exit"),
            Some(1.1),
        ),
        (
            "guest_compute_vs_native",
            ratio("guest_compute", "native_compute"),
            Some(1.2),
        ),
        (
            "seq_runs_floor_vs_mote",
            values["kvm_floor_seq_runs_per_s"] / values["mote_seq_runs_per_s"],
            None,
        ),
        (
            "concurrent_runs_floor_vs_mote",
            values["kvm_floor_concurrent_runs_per_s"] / values["mote_concurrent_runs_per_s"],
            None,
        ),
        (
            "idle_rss_vs_floor",
            values["idle_guest_rss_kib"] / values["kvm_floor_idle_rss_kib"],
            None,
        ),
    ];

    println!("{:<24} {:>12} {:>12}", "figure", "median µs", "p90 µs");
    for (name, samples) in &figures {
        println!(
            "{name:<24} {:>12.3} {:>12.3}",
            samples.median(),
            samples.percentile(90)
        );
    }
    println!();
    for (name, value) in &values {
        println!("{name:<32} {value:>12.1}");
    }
    println!();
    for (name, value, goal) in ratios {
        match goal {
            Some(goal) => println!("{name:<32} {value:>12.2}   (goal ≤ {goal})"),
            None => println!("{name:<32} {value:>12.2}"),
        }
    }

    let json = serde_json::json!({
        "figures": figures.iter().map(|(name, s)| {
            (name.to_string(), serde_json::json!({"median_us": s.median(), "p90_us": s.percentile(90)}))
        }).chain(values.iter().map(|(name, value)| {
            (name.to_string(), serde_json::json!({"value": value}))
        })).collect::<serde_json::Map<_, _>>(),
        "ratios": ratios
            .iter()
            .map(|(name, value, _)| (name.to_string(), serde_json::json!(value)))
            .collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json).unwrap())
        .expect("writing the benchmark JSON");
    println!("wrote {}", json_path.display());
}
