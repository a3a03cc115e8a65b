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
//! - `mote_run_process`: `mote run hello` as a whole process, spawn to exit;
//!   `snapshot_file_run`: `mote run hello.snap` (a snapshot file `mote snapshot` wrote) the same
//!   way; `true_process`: `/bin/true`, the floor of any process.
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
//! Warm starts (snapshots and pools, `docs/snapshots.md`):
//! - `snapshot_cold`: `Hypervisor::run_snapshot` of `hello`'s snapshot, a new VM each time;
//!   `snapshot_cold_phase_vm`: of that, mapping the snapshot and making the VM.
//! - `warm_call_fault`: a pooled run of `fault` that ends in a CPU exception, after which the
//!   pool resets its VM (`warm_fault_phase_reset`) rather than replace it (what a new VM costs:
//!   `snapshot_cold_phase_vm`).
//! - `kvm_floor_restore_cycle_<n>`: the raw floor of a pooled run that writes `n` pages: a floor
//!   VM whose memory maps a sealed memfd copy-on-write runs a CPL3 loop that writes one byte to
//!   each of `n` pages and does `out`; the host then drops those pages (`MADV_DONTNEED`).
//!   `page_restore_floor` (µs per page, a value) is the cost of one more page:
//!   `(cycle(256) - cycle(0)) / 256`.
//! - `warm_call_null`, `warm_call_dirty_<n>`: `Pool::run` (one VM, one caller) of `echo` with 16
//!   bytes, and of `bench-dirty` writing `n` pages; `*_exits` and `*_dirtied_pages` are the
//!   medians of what those runs reported. `warm_vs_model_*` compares each with its floor model:
//!   exits × `kvm_floor_exit` + dirtied pages × `page_restore_floor`. `warm_null_phase_*`:
//!   where `warm_call_null`'s time goes (starting the vCPU from the snapshot's state, the run,
//!   the reset).
//! - `filtered_warm_call_null`: `warm_call_null` with `Hypervisor::set_filtered_runs` on: each
//!   run on a thread of its own under a seccomp filter; `filtered_vs_warm` is its price.
//! - `pool_runs_per_s_1`, `pool_runs_per_s_64`: runs per second of `echo` through one pool of 64
//!   VMs (made before timing), from 1 thread and from 64.
//! - `pool_idle_kib_per_vm` (`_used`: after each VM served one run), `kvm_floor_idle_kib_per_vm`:
//!   host memory per idle pooled VM and per held raw floor VM (run to its first exit), 500 of
//!   each, counted by the memory cgroup (which sees KVM's own allocations, unlike RSS);
//!   `pool_idle_extra_kib` and `pool_idle_used_extra_kib` are the pool's figures less the floor's.
//!
//! `mote serve` under load (`docs/serve.md`): the release `mote` serving `echo` (warm) on
//! loopback, driven by a small HTTP/1.1 client in this process, each call posting the same 16
//! bytes as `warm_call_null` and checked for a 200 with them back:
//! - `serve_runs_per_s_1`, `serve_runs_per_s_16`, `serve_runs_per_s_64`: answers per second,
//!   closed loop: 1, 16 or 64 keep-alive connections, all driven by one thread with poll(2),
//!   each sending its next call as soon as the last is answered. `serve_closed_<n>_client_cores` and
//!   `_server_cores`: the CPU time this process and the server used over the same seconds,
//!   in cores (client and server share the machine). `serve_vs_library`:
//!   `serve_runs_per_s_64` / `pool_runs_per_s_64`, what HTTP and the server's queue cost
//!   against calling the pool directly.
//! - `serve_open_<pct>_*`: open loop, calls sent on a fixed schedule at `<pct>` % of
//!   `serve_runs_per_s_64` (`_rate_per_s`) from 256 connections, each taking the next send due
//!   whenever it is free, so a slow answer delays no other send. `_p50_us`, `_p99_us`,
//!   `_p999_us`: latency from each call's scheduled send to its answer, so time spent waiting
//!   for a free connection or in the server's queue counts; `_achieved_per_s`: answers per
//!   second over the phase; `_client_cores`, `_server_cores` as above.
//!
//! The benchmark rig, `mote_guest::bench` (`docs/abi.md`, Timing samples):
//! - `bench_measure_overhead_cycles`: what an empty `bench::measure` costs inside a guest, in
//!   TSC ticks: the calibrated overhead that `measure` takes off every sample (`bench-spread`'s
//!   `overhead` sample; the median over its runs). `bench_empty_measure_cycles`: the median of
//!   its `empty` samples, empty measurements with that overhead taken off, in ticks (about 0).
//! - `bench_spread_cv_mote`, `bench_spread_cv_native`: the run-to-run spread of a fixed
//!   workload timed with `bench::measure`'s harness, in percent: the coefficient of variation
//!   (standard deviation over mean) of the runs' centres. Under mote, `bench-spread` runs 60
//!   times, each timing the compute workload (200,000 rounds, about 355 µs) 100 times; natively,
//!   this program does the same with a copy of the harness (`TscHarness`: the same fences and
//!   calibration), the runs of the three kinds (cold, warm, native) taken in turns, in an order
//!   drawn afresh each turn, all on one thread pinned to the last CPU it may use (the process's
//!   other threads, mote's and KVM's, are not pinned).
//!   `_unpreempted`: over the runs whose thread
//!   had no involuntary context switch while it measured (`getrusage`; under mote, counted by
//!   `RunConfig::count_preemptions` while the guest runs; left out with fewer than two such runs),
//!   and `bench_spread_preempted_runs_mote` / `_native` count the others. The host's own
//!   preemption by the machine under it, if any, is not counted; a run it slowed as a whole
//!   shows as outlying: `bench_spread_outlying_runs_*` count the runs whose centres lie outside
//!   Tukey's fences of their side's run centres, and `_clean` is the spread over the runs
//!   neither preempted nor outlying. `bench_spread_robust_*`: the robust counterpart of the
//!   coefficient of variation over the unpreempted runs, 1.4826 × the median absolute deviation
//!   of their centres over the median of their centres, in percent: it holds however the slowed
//!   runs fall, up to half of them (with more than a quarter slowed, Tukey's fences widen and
//!   keep some). `bench_spread_vs_native`: `bench_spread_robust_mote` /
//!   `bench_spread_robust_native` (goal: mote adds no spread); `_clean_vs_native` and
//!   `_all_runs_vs_native` the ratios of `_clean` and of all-run coefficients of variation (no
//!   goal: slowed runs decide the latter, on either side). `bench_spread_*_mote_warm`: the same
//!   under mote with every run restored from one snapshot on a pool of one VM, as `mote bench
//!   --warm` runs, and `bench_spread_warm_vs_native` (and `_warm_clean_vs_native`,
//!   `_warm_all_runs_vs_native`) its ratios to the native spreads. The text output adds 95 %
//!   bootstrap intervals of the goal's ratio and of the all-runs one (runs resampled). While
//!   more than a quarter of the native runs are slowed as a whole (centres 0.2 % above the
//!   tenth percentile: the machine under this one is busy), the set of runs is taken again, up to three
//!   sets in all; `bench_spread_sets` says how many were taken, and the spread figures are those
//!   of the set whose native runs were slowed least (`bench_measure_overhead_cycles` and
//!   `bench_empty_measure_cycles` take every set's runs). Each run's centre is the mean of the
//!   middle half of its 100 timings, finer than a median, which moves in the TSC's steps.
//!
//! Samples of a floor and of mote are interleaved so that a change in machine load hits both
//! alike; ratios are of medians (`bench_spread_vs_native`: of spreads) measured in this same run.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use mote_host::{Exit, GuestImage, Hypervisor, Pool, PoolConfig, RunConfig, Snapshot};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

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
/// Runs of `bench-spread` under mote (cold and warm), and as many native runs of the same
/// timings: about 7 s in all. With 30 the ratio of two spreads swung from 0.7 to 1.8 between
/// quiet runs of the benchmark, decided by whichever side a slowed run fell on.
const SPREAD_RUNS: usize = 60;
/// The most sets of `SPREAD_RUNS` taken while the machine is busy (see `slowed_runs`).
const SPREAD_SETS: usize = 3;
/// Resamples of the bootstrap interval of a ratio of spreads.
const SPREAD_RESAMPLES: usize = 2000;
/// Rounds of the compute workload per `bench-spread` timing: about 355 µs on this project's
/// machines (1.8 ns a round), so that a run of 100 (36 ms) outlasts most of the slow stretches
/// of the machine under this one, and the TSC's steps (26 ticks here) are 0.003 % of a sample.
/// With 40,000 rounds (71 µs) a whole 7 ms run was often slowed by one such stretch, and
/// otherwise the spreads of both sides were a step or two of the TSC.
const SPREAD_ROUNDS: u64 = 200_000;
/// Empty measurements per run (`bench-spread`'s, and the calibration's on both sides).
const SPREAD_EMPTY: usize = 1000;
/// Timings of the workload per run, as `bench-spread` takes.
const SPREAD_COMPUTE: usize = 100;
/// Restore-floor cycles and warm calls of each kind per round of the exit loop.
const WARM_SAMPLES_PER_ROUND: usize = 25;
/// The restore floors: (figure, pages written per cycle). The first must write none.
const RESTORE_FLOORS: [(&str, u32); 3] = [
    ("kvm_floor_restore_cycle_0", 0),
    ("kvm_floor_restore_cycle_64", 64),
    ("kvm_floor_restore_cycle_256", 256),
];
/// The warm calls timed, each through a pool of one VM: (figure, guest, input).
const WARM_CALLS: [(&str, &str, &str); 4] = [
    ("warm_call_null", "echo", "0123456789abcdef"),
    ("warm_call_dirty_1", "bench-dirty", "1"),
    ("warm_call_dirty_64", "bench-dirty", "64"),
    ("warm_call_dirty_1024", "bench-dirty", "1024"),
];
/// `bench-dirty` writes up to 1040 pages of its `.bss`: more than the default 8 MiB holds.
const DIRTY_MEMORY: u64 = 16 << 20;
/// VMs of the pool whose throughput is measured.
const POOL_VMS: usize = 64;
/// Runs through that pool per throughput figure.
const POOL_RUNS: usize = 5000;
/// VMs held for the memory-per-VM figures.
const MEMORY_VMS: usize = 500;
/// `mote serve`'s worker threads per core: two (four on this project's 2-core machines), the
/// server's default. An `echo` run is all CPU, so one worker per core might seem enough, but
/// the cores are shared with the HTTP threads and this client: measured at 64 connections,
/// 2 workers answered about 9,600 calls/s and 4 about 11,400 (8 no more than 4, within the
/// noise). With one worker per core, each answer handed back wakes an HTTP thread that
/// preempts a worker mid-run (0.9 involuntary switches per call against 0.5), and the HTTP
/// threads sleep and wake more (48 µs of their CPU per call against 33). More workers than
/// two per core would only hold more VMs.
const SERVE_WORKERS_PER_CORE: usize = 2;
/// Connections of the closed-loop figures, `serve_runs_per_s_<n>`.
const SERVE_CONNECTIONS: [usize; 3] = [1, 16, 64];
/// Calls made before each closed-loop count starts (the pool makes its VMs on demand).
const SERVE_WARM_UP: Duration = Duration::from_millis(500);
/// How long each closed-loop figure counts answers.
const SERVE_CLOSED_TIME: Duration = Duration::from_secs(3);
/// The open-loop rates, in percent of `serve_runs_per_s_64`: a fixed rate in calls per second
/// would idle a faster machine and overload a slower one (or this one on a busy day), while a
/// share of the capacity measured just before puts each phase at a known load: light, half,
/// and near the knee.
const SERVE_OPEN_LOADS: [u32; 3] = [25, 50, 80];
/// How long each open-loop rate sends: at 80 % of several thousand calls per second, enough
/// calls that the 99.9th percentile is not one sample.
const SERVE_OPEN_TIME: Duration = Duration::from_secs(4);
/// Connections of the open-loop figures: each carries one call at a time, so this bounds the
/// calls in flight. 256 is several times rate × median latency at 80 % load, so a call due
/// finds a free connection and waits, if it must, in the server's queue, where the server sees
/// it. Only when the server stalls for many milliseconds do calls wait for a connection here;
/// their latency counts from when they were due all the same, and each phase prints how many
/// did. Well under `max_requests` (1,024), past which the server would refuse calls.
const SERVE_OPEN_CONNECTIONS: usize = 256;
/// The longest an answer may take before the load figures give up on it.
const SERVE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run this benchmark with `cargo xtask bench`"))
}

/// The guest code of the raw floor: `out 0x80, al`, then back to the `out` forever.
const FLOOR_CODE: [u8; 4] = [0xE6, 0x80, 0xEB, 0xFC];

/// A floor VM's memory: 2 MiB, identity-mapped by one 2 MiB page.
const FLOOR_MEMORY: usize = 2 << 20;
const FLOOR_PML4: u64 = 0x1000;
const FLOOR_PDPT: u64 = 0x2000;
const FLOOR_PD: u64 = 0x3000;
const FLOOR_CODE_AT: u64 = 0x4000;
const FLOOR_TSS: u64 = 0x5000;
/// Where the restore floor's guest writes its pages: the upper MiB, clear of the tables, the
/// code and the TSS (which ends below 0x8000). Nothing uses the stack.
const FLOOR_DATA: u64 = 0x10_0000;
const FLOOR_DATA_PAGES: u32 = 256;
const PAGE_SIZE: usize = 4096;

/// The restore floor's guest: writes one byte to each of `pages` pages from `FLOOR_DATA` up,
/// does `out 0x80, al`, and starts again:
///
/// ```text
/// start: mov ecx, PAGES        ; b9 imm32
///        mov edi, FLOOR_DATA   ; bf imm32
///        test ecx, ecx         ; 85 c9
///        jz done               ; 74 0d
/// write: mov byte [rdi], 0x55  ; c6 07 55
///        add edi, 0x1000       ; 81 c7 00 10 00 00
///        dec ecx               ; ff c9
///        jnz write             ; 75 f3
/// done:  out 0x80, al          ; e6 80
///        jmp start             ; eb e1
/// ```
fn page_writer_code(pages: u32) -> Vec<u8> {
    assert!(
        pages <= FLOOR_DATA_PAGES,
        "the floor VM has {FLOOR_DATA_PAGES} data pages"
    );
    let mut code = vec![0xB9];
    code.extend_from_slice(&pages.to_le_bytes());
    code.push(0xBF);
    code.extend_from_slice(&(FLOOR_DATA as u32).to_le_bytes());
    code.extend_from_slice(&[
        0x85, 0xC9, 0x74, 0x0D, 0xC6, 0x07, 0x55, 0x81, 0xC7, 0x00, 0x10, 0x00, 0x00, 0xFF, 0xC9,
        0x75, 0xF3, 0xE6, 0x80, 0xEB, 0xE1,
    ]);
    code
}

/// Lays out a floor VM's memory: page tables identity-mapping the first 2 MiB, `code` at
/// `FLOOR_CODE_AT` and the TSS. With `accessed_dirty`, the table entries carry their Accessed
/// (and the 2 MiB leaf its Dirty) bit already, as mote's do, so page walks write nothing.
fn write_floor_image(memory: &GuestMemoryMmap<()>, user: bool, code: &[u8], accessed_dirty: bool) {
    let user_bit = if user { 4 } else { 0 };
    let (accessed, dirty) = if accessed_dirty {
        (1 << 5, 1 << 6)
    } else {
        (0, 0)
    };
    for (at, entry) in [
        (FLOOR_PML4, FLOOR_PDPT | 3 | user_bit | accessed),
        (FLOOR_PDPT, FLOOR_PD | 3 | user_bit | accessed),
        (FLOOR_PD, 0x83 | user_bit | accessed | dirty),
    ] {
        memory.write_obj::<u64>(entry, GuestAddress(at)).unwrap();
    }
    memory
        .write_slice(code, GuestAddress(FLOOR_CODE_AT))
        .unwrap();
    // A TSS whose I/O bitmap allows every port, as mote gives its user-mode guests: some
    // hypervisors (kvm_pvm) keep IOPL from the guest, so IOPL 3 alone is not enough.
    memory
        .write_obj::<u16>(0x68, GuestAddress(FLOOR_TSS + 0x66))
        .unwrap();
    memory
        .write_obj::<u8>(0xFF, GuestAddress(FLOOR_TSS + 0x68 + 0x2000))
        .unwrap();
}

/// The host address of a floor VM's guest-physical address 0.
fn floor_host_base(memory: &GuestMemoryMmap<()>) -> *mut u8 {
    memory
        .iter()
        .next()
        .unwrap()
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .unwrap()
}

/// A VM set up with the least any VMM must do: 2 MiB, one identity-mapped 2 MiB page, long
/// mode at CPL0 or CPL3, about to run `FLOOR_CODE` (or the code its memory holds).
struct FloorVm {
    // Field order is drop order: the vCPU and the VM go before their memory.
    vcpu: kvm_ioctls::VcpuFd,
    _vm: kvm_ioctls::VmFd,
    memory: GuestMemoryMmap<()>,
}

impl FloorVm {
    fn new(kvm: &Kvm, user: bool) -> Self {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let memory =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), FLOOR_MEMORY)]).unwrap();
        write_floor_image(&memory, user, &FLOOR_CODE, false);
        Self::start(vm, memory, user)
    }

    /// A floor VM on `memory`, which holds a floor image (`write_floor_image`) already.
    fn on_memory(kvm: &Kvm, memory: GuestMemoryMmap<()>, user: bool) -> Self {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        Self::start(vm, memory, user)
    }

    /// Gives `vm` `memory` and a vCPU about to run the code at `FLOOR_CODE_AT`.
    fn start(vm: kvm_ioctls::VmFd, memory: GuestMemoryMmap<()>, user: bool) -> Self {
        assert_eq!(memory.iter().next().unwrap().len(), FLOOR_MEMORY as u64);
        // SAFETY: `memory` is a live mapping of FLOOR_MEMORY bytes that outlives the VM:
        // FloorVm drops the vCPU and the VM before the memory.
        unsafe {
            vm.set_user_memory_region(kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: FLOOR_MEMORY as u64,
                userspace_addr: floor_host_base(&memory) as u64,
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
            base: FLOOR_TSS,
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
        sregs.cr3 = FLOOR_PML4;
        sregs.cr4 = 0x20;
        sregs.efer = 0xD00;
        vcpu.set_sregs(&sregs).unwrap();
        vcpu.set_regs(&kvm_regs {
            rip: FLOOR_CODE_AT,
            rsp: 0x10_0000,
            // IOPL 3 lets CPL3 code use `out`.
            rflags: if user { 0x3002 } else { 0x2 },
            ..Default::default()
        })
        .unwrap();
        Self {
            vcpu,
            _vm: vm,
            memory,
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

/// A sealed memfd holding a floor image whose guest writes `pages` pages per cycle, as mote
/// holds a snapshot's memory: written through a shared mapping, which is gone before sealing
/// (a writable shared mapping would block `F_SEAL_WRITE`).
fn sealed_floor_image(pages: u32) -> File {
    // SAFETY: memfd_create only reads the NUL-terminated name; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"mote-bench-floor".as_ptr(),
            libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
        )
    };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new, open descriptor that nothing else owns or closes.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(FLOOR_MEMORY as u64).unwrap();
    {
        let shared = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            FLOOR_MEMORY,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        write_floor_image(&shared, true, &page_writer_code(pages), true);
        // Give every data page content, so that each is a page of the file: a guest write
        // copies it, as a write to a snapshot's page does.
        let fill = vec![0xAA; FLOOR_DATA_PAGES as usize * PAGE_SIZE];
        shared.write_slice(&fill, GuestAddress(FLOOR_DATA)).unwrap();
    }
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an int and touches no memory of ours.
    let sealed = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(
        sealed,
        0,
        "F_ADD_SEALS: {}",
        std::io::Error::last_os_error()
    );
    file
}

/// The raw floor of a pooled run that writes `pages` pages: a CPL3 floor VM whose memory maps a
/// sealed memfd copy-on-write; its guest writes the pages and does `out`, and the host then
/// drops its copies of them, so that the next cycle writes the file's pages again.
struct RestoreFloorVm {
    vm: FloorVm,
    pages: u32,
}

impl RestoreFloorVm {
    fn new(kvm: &Kvm, pages: u32) -> Self {
        let file = sealed_floor_image(pages);
        let private = MmapRegion::<()>::build(
            Some(FileOffset::new(file, 0)),
            FLOOR_MEMORY,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .expect("a private mapping of the sealed memfd");
        let memory = GuestMemoryMmap::from_regions(vec![
            GuestRegionMmap::new(private, GuestAddress(0)).unwrap(),
        ])
        .unwrap();
        let mut floor = Self {
            vm: FloorVm::on_memory(kvm, memory, true),
            pages,
        };
        floor.check();
        floor
    }

    /// Runs one cycle checking that the guest wrote exactly its pages and that dropping them
    /// brought the file's content back.
    fn check(&mut self) {
        let byte = |vm: &FloorVm, page: u32| -> u8 {
            let at = FLOOR_DATA + u64::from(page) * PAGE_SIZE as u64;
            vm.memory.read_obj(GuestAddress(at)).unwrap()
        };
        self.vm.run_to_out();
        for page in 0..FLOOR_DATA_PAGES {
            let want = if page < self.pages { 0x55 } else { 0xAA };
            assert_eq!(
                byte(&self.vm, page),
                want,
                "data page {page} after the guest ran"
            );
        }
        // A cycle runs the guest again (it writes the same pages) and drops the pages.
        self.cycle();
        for page in 0..FLOOR_DATA_PAGES {
            assert_eq!(
                byte(&self.vm, page),
                0xAA,
                "data page {page} after the reset"
            );
        }
    }

    /// One cycle: `KVM_RUN` (the guest writes its pages and does `out`), then one
    /// `MADV_DONTNEED` over the pages it wrote (with none written, over none).
    fn cycle(&mut self) -> Duration {
        let start = Instant::now();
        self.vm.run_to_out();
        let data = floor_host_base(&self.vm.memory).wrapping_add(FLOOR_DATA as usize);
        // SAFETY: the range is the guest's data pages, inside the VM's private mapping, which
        // lives as long as `self.vm`. MADV_DONTNEED only drops this mapping's copies of those
        // pages, so the file's content shows through again: no Rust reference into guest memory
        // exists to see the bytes change, and the guest is stopped at its `out`.
        let dropped = unsafe {
            libc::madvise(
                data.cast(),
                self.pages as usize * PAGE_SIZE,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(dropped, 0, "madvise: {}", std::io::Error::last_os_error());
        start.elapsed()
    }
}

mod compute {
    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../guest/bench/src/compute.rs"
    ));
}

/// `mote_guest::bench::measure`'s timing harness, for native timings. This mirrors
/// `guest/mote-guest/src/bench.rs` (a `no_std` guest crate, which cannot be linked into the
/// host): the same fences, the same fallback without RDTSCP, the same calibration. Keep the two
/// alike.
struct TscHarness {
    rdtscp: bool,
    /// The fewest ticks of `SPREAD_EMPTY` empty measurements, taken off every measurement.
    overhead: u64,
}

impl TscHarness {
    /// Decides on RDTSCP and measures the overhead, as the guest's first `measure` does.
    fn calibrate() -> Self {
        // CPUID leaf 0x8000_0001, EDX bit 27: RDTSCP.
        let rdtscp = std::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 27) != 0;
        let mut harness = Self {
            rdtscp,
            overhead: 0,
        };
        harness.overhead = (0..SPREAD_EMPTY)
            .map(|_| harness.measure(|| ()).0)
            .min()
            .unwrap_or(0);
        harness
    }

    /// Times `f`: (TSC ticks less the overhead, what `f` returned).
    #[inline]
    fn measure<R>(&self, f: impl FnOnce() -> R) -> (u64, R) {
        let start = tsc_start();
        let result = std::hint::black_box(f());
        let end = self.tsc_end();
        (
            end.saturating_sub(start).saturating_sub(self.overhead),
            result,
        )
    }

    /// `rdtscp; lfence`, or without RDTSCP what `tsc_start` does.
    #[inline(always)]
    fn tsc_end(&self) -> u64 {
        if !self.rdtscp {
            return tsc_start();
        }
        let mut processor = 0u32;
        // SAFETY: RDTSCP only reads the TSC and IA32_TSC_AUX into `processor`, a local; CPUID
        // said the CPU has it.
        let ticks = unsafe { std::arch::x86_64::__rdtscp(&mut processor) };
        lfence();
        ticks
    }
}

/// `lfence; rdtsc; lfence`.
#[inline(always)]
fn tsc_start() -> u64 {
    lfence();
    // SAFETY: RDTSC only reads the TSC, which Linux lets user space read.
    let ticks = unsafe { std::arch::x86_64::_rdtsc() };
    lfence();
    ticks
}

/// LFENCE: later instructions start only once every earlier one has finished.
#[inline(always)]
fn lfence() {
    // SAFETY: LFENCE only orders instructions; it touches no memory or register.
    unsafe { std::arch::asm!("lfence", options(nostack, preserves_flags)) };
}

/// The host's TSC rate in kHz, counted against the monotonic clock over 20 ms.
fn host_tsc_khz() -> f64 {
    let (clock, ticks) = (Instant::now(), tsc_start());
    while clock.elapsed() < Duration::from_millis(20) {
        std::hint::spin_loop();
    }
    let (ticks, elapsed) = (tsc_start() - ticks, clock.elapsed());
    ticks as f64 / elapsed.as_secs_f64() / 1000.0
}

/// Pins the calling thread to the last of the CPUs it may use.
fn pin_to_last_cpu() {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: both sets are plain bit sets of `size` bytes, zeroed before use; sched_getaffinity
    // writes at most `size` bytes; CPU_ISSET and CPU_SET take indices below CPU_SETSIZE (and
    // check them); pid 0 is this thread.
    unsafe {
        let mut own: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size, &mut own), 0);
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&cpu| libc::CPU_ISSET(cpu, &own))
            .expect("a thread may run on some CPU");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size, &one),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

/// How many times the calling thread has been preempted (involuntary context switches).
fn involuntary_switches() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` where it is pointed, which has room for it;
    // RUSAGE_THREAD reads the calling thread's own counters.
    let done = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(done, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage succeeded, so it wrote the struct (which was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_nivcsw).unwrap_or(0)
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

    /// The `q` quantile (0.999: the 99.9th percentile).
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
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
                    hypervisor.run(image, held_guest(wait)).unwrap();
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

/// Where this process's memory use is read: its memory cgroup's usage, which counts what the
/// kernel allocates for it (KVM's VM and vCPU structures, its page tables) as well as its pages;
/// or, without a cgroup to read, the whole machine's used memory.
enum MemoryGauge {
    /// cgroup v2 `memory.current` or v1 `memory.usage_in_bytes`.
    Cgroup(PathBuf),
    /// `MemTotal - MemAvailable` from `/proc/meminfo`.
    Machine,
}

impl MemoryGauge {
    fn find() -> Self {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let root = Path::new("/sys/fs/cgroup");
        let mut candidates = Vec::new();
        for line in cgroups.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if id == "0" && controllers.is_empty() {
                candidates.push(root.join(path).join("memory.current"));
                candidates.push(root.join("unified").join(path).join("memory.current"));
            } else if controllers.split(',').any(|c| c == "memory") {
                candidates.push(root.join("memory").join(path).join("memory.usage_in_bytes"));
            }
        }
        candidates
            .into_iter()
            .find(|file| std::fs::read_to_string(file).is_ok())
            .map_or(Self::Machine, Self::Cgroup)
    }

    fn describe(&self) -> String {
        match self {
            Self::Cgroup(file) => file.display().to_string(),
            Self::Machine => "MemTotal - MemAvailable (no memory cgroup found)".into(),
        }
    }

    /// Memory in use now, in KiB, after a moment for tear-downs elsewhere (the reaper thread,
    /// the kernel's deferred frees) to settle.
    fn used_kib(&self) -> f64 {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe { libc::malloc_trim(0) };
        match self {
            Self::Cgroup(file) => {
                let bytes: f64 = std::fs::read_to_string(file)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                bytes / 1024.0
            }
            Self::Machine => {
                let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
                let field = |name: &str| -> f64 {
                    meminfo
                        .lines()
                        .find_map(|line| line.strip_prefix(name))
                        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or_else(|| panic!("no {name} in /proc/meminfo"))
                };
                field("MemTotal:") - field("MemAvailable:")
            }
        }
    }
}

/// Host memory per raw floor VM stopped at its first `out`, `count` held: all of it.
fn floor_idle_kib(kvm: &Kvm, gauge: &MemoryGauge, count: usize) -> f64 {
    let before = gauge.used_kib();
    let held: Vec<FloorVm> = (0..count)
        .map(|_| {
            let mut vm = FloorVm::new(kvm, true);
            vm.run_to_out();
            vm
        })
        .collect();
    let per_vm = (gauge.used_kib() - before) / count as f64;
    drop(held);
    per_vm
}

/// Waits until `pool` holds `count` idle VMs.
fn wait_until_idle(pool: &Pool, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pool.size().0 < count {
        assert!(
            Instant::now() < deadline,
            "the pool made {} of {count} VMs in 120 s",
            pool.size().0
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Host memory per idle VM of a pool of `count` made from `hostcall`'s snapshot, all of it:
/// (freshly made, after each VM has served one run). For the second, `count` runs wait in their
/// host call together, so each has a VM of its own.
fn pool_idle_kib(
    hypervisor: &Hypervisor,
    snapshot: &Snapshot,
    gauge: &MemoryGauge,
    count: usize,
) -> (f64, f64) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let before = gauge.used_kib();
    let config = PoolConfig::default().max_vms(count).min_idle(count);
    let pool = Pool::new(hypervisor, snapshot, config).unwrap();
    wait_until_idle(&pool, count);
    let fresh = (gauge.used_kib() - before) / count as f64;

    let entered = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new((Mutex::new(()), Condvar::new()));
    std::thread::scope(|scope| {
        for _ in 0..count {
            let (entered, all_in, pool) = (Arc::clone(&entered), Arc::clone(&all_in), &pool);
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn_scoped(scope, move || {
                    let wait = Arc::new(move |_: &[u8]| {
                        let (lock, wake) = &*all_in;
                        let mut guard = lock.lock().unwrap();
                        if entered.fetch_add(1, Ordering::SeqCst) + 1 == count {
                            wake.notify_all();
                        }
                        while entered.load(Ordering::SeqCst) < count {
                            guard = wake.wait(guard).unwrap();
                        }
                        Ok(Vec::new())
                    });
                    let outcome = pool.run(held_guest(wait)).unwrap();
                    assert_eq!(outcome.exit, Exit::Guest { code: 0 });
                })
                .unwrap();
        }
    });
    assert_eq!(pool.size(), (count, 0), "every VM back in the pool");
    let used = (gauge.used_kib() - before) / count as f64;
    drop(pool);
    (fresh, used)
}

/// The configuration of a `hostcall` guest held in its host call `upper` by `wait`, for the
/// memory-per-guest figures. It prints and outputs little: each run is charged its worst case
/// against the memory budget, limits included, and a thousand held at the default limits would
/// not fit the default budget.
fn held_guest(wait: mote_host::HostFunction) -> RunConfig {
    RunConfig::default()
        .output_limit(64 << 10)
        .console_limit(64 << 10)
        .host_function("upper", wait)
}

/// A `mote serve` process serving `echo`, killed when dropped, on a panic too (its last log
/// lines are shown then). It logs to a file rather than a pipe, so that no thread of this
/// process spends CPU reading a log line per call.
struct ServeProcess {
    child: Child,
    address: String,
    config: PathBuf,
    log: PathBuf,
}

impl ServeProcess {
    fn start(mote_bin: &Path, echo: &Path) -> Self {
        let name = |ext: &str| {
            std::env::temp_dir().join(format!("mote-bench-serve-{}.{ext}", std::process::id()))
        };
        let (config, log) = (name("toml"), name("log"));
        let workers =
            SERVE_WORKERS_PER_CORE * std::thread::available_parallelism().map_or(2, |n| n.get());
        // Absolute, since the server reads it relative to the configuration file; a JSON
        // string is a TOML basic string.
        let echo = std::path::absolute(echo).expect("the guest's absolute path");
        let guest = serde_json::Value::from(echo.to_str().expect("a UTF-8 guest path"));
        std::fs::write(
            &config,
            format!("workers = {workers}\n[functions.echo]\nguest = {guest}\n"),
        )
        .expect("writing the server's configuration");
        let child = Command::new(mote_bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("creating the server's log"))
            .spawn()
            .expect("mote serve starts");
        let mut server = Self {
            child,
            address: String::new(),
            config,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let marker = "listening on http://";
        server.address = loop {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(at) = text.find(marker) {
                let rest = &text[at + marker.len()..];
                break rest[..rest.find(['"', ' ', '\n']).unwrap_or(rest.len())].to_owned();
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("mote serve ended ({status}) before it listened:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "mote serve did not listen within 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        println!("mote serve with {workers} workers on {}", server.address);
        server
    }

    fn connect(&self) -> HttpConnection {
        HttpConnection::open(&self.address, "/functions/echo", SERVE_INPUT)
    }

    /// CPU time the server has used, user and system.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("the server's /proc/PID/stat");
        // The fields after the command's closing parenthesis, from the third (the state) on:
        // utime and stime are the 14th and 15th, in clock ticks.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a system constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "mote serve's last log lines:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What every load call posts, and gets back from `echo`: the input of `warm_call_null`.
const SERVE_INPUT: &[u8] = WARM_CALLS[0].2.as_bytes();

/// A keep-alive HTTP/1.1 connection that makes one request, again and again: just enough of
/// a client for `mote serve`, whose answers all carry a `Content-Length`.
struct HttpConnection {
    stream: std::net::TcpStream,
    request: Vec<u8>,
    /// Bytes read and not yet taken.
    read: Vec<u8>,
}

impl HttpConnection {
    fn open(address: &str, path: &str, body: &[u8]) -> Self {
        let stream = std::net::TcpStream::connect(address).expect("connecting to mote serve");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(SERVE_ANSWER_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(SERVE_ANSWER_TIMEOUT))
            .unwrap();
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Self {
            stream,
            request,
            read: Vec::with_capacity(4096),
        }
    }

    /// Sends the request and reads its answer: (status, body).
    fn call(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        self.send()?;
        loop {
            if let Some(answer) = self.take_answer()? {
                return Ok(answer);
            }
            self.fill()?;
        }
    }

    /// Sends the request.
    fn send(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.write_all(&self.request)
    }

    /// The answer, if all of it has been read: (status, body).
    fn take_answer(&mut self) -> std::io::Result<Option<(u16, Vec<u8>)>> {
        use std::io::{Error, ErrorKind};
        let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
        let Some(head_end) = self
            .read
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
        else {
            if self.read.len() > 64 << 10 {
                return Err(bad("an answer's head over 64 KiB".into()));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&self.read[..head_end])
            .map_err(|_| bad("an answer's head that is not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| bad(format!("the status line {status_line:?}")))?;
        let mut length = None;
        for (name, value) in lines.filter_map(|line| line.split_once(':')) {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad(format!("an answer in transfer encoding {value:?}")));
            }
        }
        let length = length.ok_or_else(|| bad("an answer without a Content-Length".into()))?;
        if self.read.len() < head_end + length {
            return Ok(None);
        }
        let body = self.read[head_end..head_end + length].to_vec();
        self.read.drain(..head_end + length);
        Ok(Some((status, body)))
    }

    /// Reads what has arrived (at least one byte) onto `read`.
    fn fill(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let mut chunk = [0; 4096];
        let count = self.stream.read(&mut chunk)?;
        if count == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.read.extend_from_slice(&chunk[..count]);
        Ok(())
    }

    /// One call to `echo`, checked: a 200 with the input back.
    fn echo(&mut self) -> Result<(), String> {
        check_echo(self.call())
    }
}

/// An answer of `echo`, checked: a 200 with the input back.
fn check_echo(answer: std::io::Result<(u16, Vec<u8>)>) -> Result<(), String> {
    match answer {
        Ok((200, body)) if body == SERVE_INPUT => Ok(()),
        Ok((200, body)) => Err(format!(
            "200 with {:?} for {:?}",
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(SERVE_INPUT)
        )),
        Ok((status, body)) => Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        )),
        Err(error) => Err(format!("the connection failed: {error}")),
    }
}

/// The failed calls of a load phase: counted, the first kept, the phase refused if any. A
/// connection whose call failed stops.
#[derive(Default)]
struct LoadErrors {
    count: std::sync::atomic::AtomicUsize,
    first: std::sync::Mutex<Option<String>>,
}

impl LoadErrors {
    fn record(&self, error: String) {
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.first.lock().unwrap().get_or_insert(error);
    }

    fn check(&self, phase: &str) {
        let count = self.count.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            count == 0,
            "mote serve, {phase}: {count} calls failed; the first: {}",
            self.first.lock().unwrap().as_deref().unwrap_or_default()
        );
    }
}

/// CPU time this process has used, user and system.
fn own_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` where it is pointed, which has room for it.
    let done = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(done, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage succeeded, so it wrote the struct (which was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Wall, client and server CPU time from a start, to say what each used in cores.
struct CpuClock {
    wall: Instant,
    client: Duration,
    server: Duration,
}

impl CpuClock {
    fn start(server: &ServeProcess) -> Self {
        Self {
            wall: Instant::now(),
            client: own_cpu_time(),
            server: server.cpu_time(),
        }
    }

    /// (client, server) CPU since the start, in cores.
    fn cores(&self, server: &ServeProcess) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        (
            (own_cpu_time() - self.client).as_secs_f64() / wall,
            (server.cpu_time() - self.server).as_secs_f64() / wall,
        )
    }
}

fn sleep_until(at: Instant) {
    let wait = at.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

/// Closed loop: answers per second from `connections` connections, each sending its next call
/// as soon as the last is answered, over `SERVE_CLOSED_TIME` after `SERVE_WARM_UP`; with the
/// client's and the server's CPU over those seconds, in cores.
fn serve_closed_loop(server: &ServeProcess, connections: usize) -> (f64, f64, f64) {
    // One thread drives every connection with poll(2), as wrk does: a thread per connection
    // would spend the two cores the server needs on switching between 64 client threads.
    let mut open: Vec<HttpConnection> = (0..connections).map(|_| server.connect()).collect();
    for connection in &mut open {
        connection.stream.set_nonblocking(true).unwrap();
    }
    let errors = LoadErrors::default();
    let start = Instant::now() + SERVE_WARM_UP;
    let end = start + SERVE_CLOSED_TIME;
    let mut polls: Vec<libc::pollfd> = open
        .iter()
        .map(|connection| libc::pollfd {
            fd: connection.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    for connection in &mut open {
        if let Err(error) = connection.send() {
            errors.record(format!("the connection failed: {error}"));
        }
    }
    let mut answered = 0_usize;
    let mut clock = None;
    let mut live = open.len();
    while live > 0 {
        let now = Instant::now();
        if clock.is_none() && now >= start {
            clock = Some(CpuClock::start(server));
        }
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structures for the call.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 1000) };
        if ready < 0 {
            errors.record(format!("poll: {}", std::io::Error::last_os_error()));
            break;
        }
        for (connection, poll) in open.iter_mut().zip(polls.iter_mut()) {
            if poll.fd < 0 || poll.revents == 0 {
                continue;
            }
            let answer = loop {
                match connection.take_answer() {
                    Ok(Some(answer)) => break Some(Ok(answer)),
                    Err(error) => break Some(Err(error)),
                    Ok(None) => {}
                }
                match connection.fill() {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break None,
                    Err(error) => break Some(Err(error)),
                }
            };
            let Some(answer) = answer else { continue };
            let done = Instant::now();
            let failed = check_echo(answer).err();
            if let Some(error) = &failed {
                errors.record(error.clone());
            }
            if done >= start && done < end {
                answered += 1;
            }
            if failed.is_some() || done >= end || connection.send().is_err() {
                // This connection is done: poll no longer looks at it.
                poll.fd = -1;
                live -= 1;
            }
        }
    }
    let cores = clock.map_or((0.0, 0.0), |clock| clock.cores(server));
    errors.check(&format!("closed loop over {connections} connections"));
    (
        answered as f64 / SERVE_CLOSED_TIME.as_secs_f64(),
        cores.0,
        cores.1,
    )
}

/// One open-loop phase, `serve_open_<pct>_*`.
struct OpenLoop {
    latencies: Samples,
    achieved_per_s: f64,
    client_cores: f64,
    server_cores: f64,
}

/// Open loop: `rate` calls per second for `SERVE_OPEN_TIME`, each due at a fixed time, sent by
/// whichever of `SERVE_OPEN_CONNECTIONS` connections is free; each latency counted from when
/// its call was due.
fn serve_open_loop(server: &ServeProcess, rate: f64) -> OpenLoop {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = (rate * SERVE_OPEN_TIME.as_secs_f64()).round() as usize;
    let mut open: Vec<HttpConnection> = (0..SERVE_OPEN_CONNECTIONS)
        .map(|_| server.connect())
        .collect();
    let errors = LoadErrors::default();
    let (next, in_flight, most_in_flight, late) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let first = Instant::now() + Duration::from_millis(50);
    let (latencies, last_answer, cores) = std::thread::scope(|scope| {
        let (errors, next, in_flight, most_in_flight, late) =
            (&errors, &next, &in_flight, &most_in_flight, &late);
        let threads: Vec<_> = open
            .iter_mut()
            .map(|connection| {
                scope.spawn(move || {
                    // Wake on time, not up to 50 µs late (the default timer slack).
                    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and sets this thread's
                    // slack; it touches no memory.
                    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
                    let mut latencies = Vec::new();
                    let mut last = first;
                    loop {
                        let call = next.fetch_add(1, Ordering::Relaxed);
                        if call >= calls {
                            break;
                        }
                        let due = first + Duration::from_secs_f64(call as f64 / rate);
                        // A free connection takes the next call well before it is due: one
                        // that takes it late found every connection busy (or no CPU to run on).
                        if Instant::now() > due {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                        sleep_until(due);
                        let now_in_flight = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                        most_in_flight.fetch_max(now_in_flight, Ordering::Relaxed);
                        let result = connection.echo();
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        if let Err(error) = result {
                            errors.record(error);
                            break;
                        }
                        last = Instant::now();
                        latencies.push(last - due);
                    }
                    (latencies, last)
                })
            })
            .collect();
        sleep_until(first);
        let clock = CpuClock::start(server);
        let mut latencies = Samples::default();
        let mut last_answer = first;
        for thread in threads {
            let (seen, last) = thread.join().unwrap();
            seen.into_iter().for_each(|d| latencies.push(d));
            last_answer = last_answer.max(last);
        }
        (latencies, last_answer, clock.cores(server))
    });
    errors.check(&format!("open loop at {rate:.0} calls/s"));
    assert_eq!(latencies.0.len(), calls, "every call answered");
    println!(
        "mote serve, open loop at {rate:.0} calls/s: {calls} calls, at most {} of {} connections \
         busy at once, {} calls taken by a connection after they were due",
        most_in_flight.load(Ordering::Relaxed),
        SERVE_OPEN_CONNECTIONS,
        late.load(Ordering::Relaxed)
    );
    OpenLoop {
        latencies,
        achieved_per_s: calls as f64 / (last_answer - first).as_secs_f64(),
        client_cores: cores.0,
        server_cores: cores.1,
    }
}

/// `mote serve`'s load figures (`serve_*`), into `values`: the closed-loop throughputs, then
/// the open-loop latencies at shares of the 64-connection one.
fn serve_figures(values: &mut BTreeMap<String, f64>, mote_bin: &Path, echo: &Path) {
    let server = ServeProcess::start(mote_bin, echo);
    for connections in SERVE_CONNECTIONS {
        let (per_s, client, server_cores) = serve_closed_loop(&server, connections);
        values.insert(format!("serve_runs_per_s_{connections}"), per_s);
        values.insert(format!("serve_closed_{connections}_client_cores"), client);
        values.insert(
            format!("serve_closed_{connections}_server_cores"),
            server_cores,
        );
    }
    let capacity = values["serve_runs_per_s_64"];
    for load in SERVE_OPEN_LOADS {
        let rate = capacity * f64::from(load) / 100.0;
        let phase = serve_open_loop(&server, rate);
        let name = |figure: &str| format!("serve_open_{load}_{figure}");
        values.insert(name("rate_per_s"), rate);
        values.insert(name("achieved_per_s"), phase.achieved_per_s);
        values.insert(name("p50_us"), phase.latencies.quantile(0.5));
        values.insert(name("p99_us"), phase.latencies.quantile(0.99));
        values.insert(name("p999_us"), phase.latencies.quantile(0.999));
        values.insert(name("client_cores"), phase.client_cores);
        values.insert(name("server_cores"), phase.server_cores);
    }
}

/// One run of the spread figures: the centre of its `compute` timings, in TSC ticks, and how
/// often its thread was preempted while it ran.
struct SpreadRun {
    /// The mean of the middle half of the run's timings (`middle_mean`).
    centre: f64,
    /// Involuntary context switches of the thread during the run.
    switches: u64,
    /// The centre lies outside Tukey's fences of its kind's run centres (`mark_outlying`).
    outlying: bool,
}

impl SpreadRun {
    fn preempted(&self) -> bool {
        self.switches > 0
    }

    /// Neither preempted nor outlying: what `_clean` spreads are taken over.
    fn clean(&self) -> bool {
        !self.preempted() && !self.outlying
    }
}

/// The mean of the middle half of `samples` (the 26th to the 75th of 100, sorted): as robust as
/// a median to the few timings a tick or an exit cut into, and finer than one. A median is one
/// timing, and timings move in the TSC's steps (26 ticks on this project's machines), so run
/// medians differed by whole steps and their spread under mote was one step or none.
fn middle_mean(samples: &[u64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let quarter = sorted.len() / 4;
    let middle = &sorted[quarter..sorted.len() - quarter];
    middle.iter().sum::<u64>() as f64 / middle.len().max(1) as f64
}

/// How many of `runs` have centres more than 0.2 % above the tenth percentile of all: slowed
/// as a whole by the machine under this one, for a workload whose unslowed runs keep within
/// about 0.05 %. (From a low percentile rather than the fastest run, which one unusually fast
/// run would move.)
fn slowed_runs(runs: &[SpreadRun]) -> usize {
    let centres = sorted_centres(runs);
    let Some(&low) = centres.get(centres.len() / 10) else {
        return 0;
    };
    centres
        .iter()
        .filter(|&&centre| centre > low * 1.002)
        .count()
}

/// Flags the runs whose centres lie outside Tukey's fences (more than 1.5 interquartile
/// ranges beyond the quartiles of all the runs' centres), as `mote bench` flags outlying
/// samples: runs slowed as a whole by something outside both mote and the workload. On this
/// project's machines (nested, under another hypervisor) stretches of a few to tens of
/// milliseconds run up to 9 % slow now and then, whichever side is running; over 1000 runs of
/// each side, one in five to ten runs was slowed by more than 0.3 %, on both sides alike, and
/// those runs decide a spread taken over every run.
fn mark_outlying(runs: &mut [SpreadRun]) {
    let centres = sorted_centres(runs.iter());
    let (q1, q3) = (quantile(&centres, 0.25), quantile(&centres, 0.75));
    let (low, high) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
    for run in runs {
        run.outlying = !(low..=high).contains(&run.centre);
    }
}

/// The robust counterpart of the coefficient of variation of the runs' centres, in percent:
/// 1.4826 times their median absolute deviation (the standard deviation, for normal data) over
/// their median. It reads the middle of the runs, so up to half of them may be slowed without
/// moving it: runs slowed as a whole by the machine under this one fall wherever they fall.
/// `None` for fewer than two runs.
fn spread_robust_percent<'a>(runs: impl IntoIterator<Item = &'a SpreadRun>) -> Option<f64> {
    let centres = sorted_centres(runs);
    if centres.len() < 2 {
        return None;
    }
    let median = quantile(&centres, 0.5);
    let mut deviations: Vec<f64> = centres.iter().map(|c| (c - median).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    Some(100.0 * 1.4826 * quantile(&deviations, 0.5) / median)
}

/// The centres of `runs`, smallest first.
fn sorted_centres<'a>(runs: impl IntoIterator<Item = &'a SpreadRun>) -> Vec<f64> {
    let mut centres: Vec<f64> = runs.into_iter().map(|run| run.centre).collect();
    centres.sort_by(f64::total_cmp);
    centres
}

/// The `q` quantile of `sorted` (not empty), interpolated linearly between its neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = (sorted.len() - 1) as f64 * q;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

/// The coefficient of variation of the runs' centres, in percent: the sample standard
/// deviation over the mean. `None` for fewer than two runs.
fn spread_cv_percent<'a>(runs: impl Iterator<Item = &'a SpreadRun>) -> Option<f64> {
    let medians: Vec<f64> = runs.map(|run| run.centre).collect();
    if medians.len() < 2 {
        return None;
    }
    let count = medians.len() as f64;
    let mean = medians.iter().sum::<f64>() / count;
    let variance = medians.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (count - 1.0);
    Some(100.0 * variance.sqrt() / mean)
}

/// The cost of `mote_guest::bench::measure` and the run-to-run spread of a fixed workload timed
/// with it, under mote (`bench-spread`) and natively (`TscHarness`), into `values`: the
/// `bench_*` figures. Runs of the three kinds (cold, warm, native) take turns, all on one
/// thread of their own.
fn spread_figures(values: &mut BTreeMap<String, f64>, hypervisor: &Hypervisor, guest_dir: &Path) {
    // Both sides run on one CPU, as `mote bench --pin` would: a run that moved between CPUs
    // part-way would measure the move, not the workload. Only that thread is pinned, as `mote
    // bench --pin` pins its runner: the process's other threads (mote's, KVM's for each VM)
    // keep the process's CPUs.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            pin_to_last_cpu();
            spread_figures_pinned(values, hypervisor, guest_dir)
        });
    });
}

fn spread_figures_pinned(
    values: &mut BTreeMap<String, f64>,
    hypervisor: &Hypervisor,
    guest_dir: &Path,
) {
    // The guest and the host compute the same checksum (`bench-spread` itself reports none).
    let expected = compute::workload(SPREAD_ROUNDS);
    let compute_guest =
        GuestImage::from_file(guest_dir.join("bench-compute")).expect("bench-compute");
    let seen = bench_guest(hypervisor, &compute_guest, &SPREAD_ROUNDS.to_string());
    assert_eq!(
        seen["result"],
        expected.to_string(),
        "guest and host disagree"
    );

    let image = GuestImage::from_file(guest_dir.join("bench-spread")).expect("bench-spread");
    let input = SPREAD_ROUNDS.to_string().into_bytes();
    let mut overheads = Vec::new();
    let mut empties = Vec::new();
    // Counted while the guest runs, as `mote bench` counts them: making and tearing down the VM
    // wakes mote's and KVM's own threads, which says nothing of the timings.
    let config = || {
        RunConfig::default()
            .input(input.clone())
            .count_preemptions()
    };
    let spread_run =
        |outcome: mote_host::Outcome, overheads: &mut Vec<u64>, empties: &mut Vec<u64>| {
            let switches = outcome.stats.preemptions.unwrap_or(0);
            assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "bench-spread failed");
            let of = |name: &str| -> Vec<u64> {
                outcome
                    .samples
                    .iter()
                    .filter(|sample| &*sample.name == name)
                    .map(|sample| sample.cycles)
                    .collect()
            };
            let (overhead, empty, compute) = (of("overhead"), of("empty"), of("compute"));
            assert_eq!(overhead.len(), 1, "bench-spread's overhead samples");
            assert_eq!(empty.len(), SPREAD_EMPTY, "bench-spread's empty samples");
            assert_eq!(
                compute.len(),
                SPREAD_COMPUTE,
                "bench-spread's compute samples"
            );
            overheads.extend(overhead);
            empties.extend(empty);
            SpreadRun {
                centre: middle_mean(&compute),
                switches,
                outlying: false,
            }
        };
    let mote_run = |overheads: &mut Vec<u64>, empties: &mut Vec<u64>| {
        spread_run(
            hypervisor.run(&image, config()).unwrap(),
            overheads,
            empties,
        )
    };
    // `mote bench --warm`: every run restored from one snapshot, on a pool of one VM.
    let snapshot = hypervisor
        .snapshot(&image, RunConfig::default())
        .expect("a snapshot of bench-spread");
    let pool = Pool::new(
        hypervisor,
        &snapshot,
        PoolConfig::default().min_idle(1).max_vms(1),
    )
    .expect("a pool of bench-spread");
    let warm_run = || {
        spread_run(
            pool.run(config()).unwrap(),
            &mut Vec::new(),
            &mut Vec::new(),
        )
    };
    let mut native_overheads = Vec::new();
    let mut native_empties = Vec::new();
    // What `bench-spread` does, natively: calibrate, measure nothing, time the workload.
    let native_run = |overheads: &mut Vec<u64>, empties: &mut Vec<u64>| {
        let before = involuntary_switches();
        let harness = TscHarness::calibrate();
        for _ in 0..SPREAD_EMPTY {
            empties.push(harness.measure(|| ()).0);
        }
        let mut compute = Vec::with_capacity(SPREAD_COMPUTE);
        for _ in 0..SPREAD_COMPUTE {
            let (ticks, checksum) =
                harness.measure(|| compute::workload(std::hint::black_box(SPREAD_ROUNDS)));
            assert_eq!(checksum, expected, "the native workload's checksum");
            compute.push(ticks);
        }
        let switches = involuntary_switches() - before;
        overheads.push(harness.overhead);
        SpreadRun {
            centre: middle_mean(&compute),
            switches,
            outlying: false,
        }
    };
    // One uncounted run of each: page in the image and the code.
    mote_run(&mut Vec::new(), &mut Vec::new());
    warm_run();
    native_run(&mut Vec::new(), &mut Vec::new());
    // A set of runs is taken again (at most `SPREAD_SETS` times in all) while the machine
    // under this one is busy, as the native runs alone tell: the choice does not look at
    // mote's runs.
    let mut best: Option<(usize, [Vec<SpreadRun>; 3])> = None;
    let mut random = Xorshift::seeded();
    let mut sets = 0;
    while sets < SPREAD_SETS {
        sets += 1;
        let (mut mote, mut warm, mut native) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..SPREAD_RUNS {
            // In an order drawn afresh each time: a disturbance that comes back at the pace of
            // one round would otherwise fall on the same kind of run every time.
            let mut order = [0, 1, 2];
            for i in (1..order.len()).rev() {
                order.swap(i, random.below(i + 1));
            }
            for kind in order {
                match kind {
                    0 => mote.push(mote_run(&mut overheads, &mut empties)),
                    1 => warm.push(warm_run()),
                    _ => native.push(native_run(&mut native_overheads, &mut native_empties)),
                }
            }
        }
        let slowed = slowed_runs(&native);
        let quiet = slowed * 4 <= native.len();
        if best.as_ref().is_none_or(|(fewest, _)| slowed < *fewest) {
            best = Some((slowed, [mote, warm, native]));
        }
        if quiet {
            break;
        }
        println!(
            "bench-spread: set {sets}: {slowed} of {SPREAD_RUNS} native runs slowed by more \
             than 0.2 % (the machine is busy){}",
            if sets < SPREAD_SETS {
                ", taking another set"
            } else {
                "; the spreads below, from the quietest set, are the machine's as much as mote's"
            }
        );
    }
    values.insert("bench_spread_sets".into(), sets as f64);
    let [mut mote, mut warm, mut native] = best.expect("at least one set").1;
    for runs in [&mut mote, &mut warm, &mut native] {
        mark_outlying(runs);
    }

    values.insert(
        "bench_measure_overhead_cycles".into(),
        median_count(&overheads) as f64,
    );
    values.insert(
        "bench_empty_measure_cycles".into(),
        median_count(&empties) as f64,
    );
    for (kind, runs) in [("mote", &mote), ("mote_warm", &warm), ("native", &native)] {
        let preempted = runs.iter().filter(|run| run.preempted()).count();
        values.insert(
            format!("bench_spread_preempted_runs_{kind}"),
            preempted as f64,
        );
        if let Some(cv) = spread_cv_percent(runs.iter()) {
            values.insert(format!("bench_spread_cv_{kind}"), cv);
        }
        if let Some(cv) = spread_cv_percent(runs.iter().filter(|run| !run.preempted())) {
            values.insert(format!("bench_spread_cv_{kind}_unpreempted"), cv);
        }
        let outlying = runs.iter().filter(|run| run.outlying).count();
        values.insert(
            format!("bench_spread_outlying_runs_{kind}"),
            outlying as f64,
        );
        if let Some(cv) = spread_cv_percent(runs.iter().filter(|run| run.clean())) {
            values.insert(format!("bench_spread_cv_{kind}_clean"), cv);
        }
        if let Some(robust) = spread_robust_percent(runs.iter().filter(|run| !run.preempted())) {
            values.insert(format!("bench_spread_robust_{kind}"), robust);
        }
    }

    // What one sample took, in time: the guest's ticks at the rate mote tells it, the host's
    // at the rate counted here.
    let median_centre = |runs: &[SpreadRun]| sorted_centres(runs)[runs.len() / 2];
    let host_khz = host_tsc_khz();
    let guest_khz = hypervisor.tsc_khz().map_or(host_khz, |khz| khz as f64);
    println!(
        "bench-spread: {SPREAD_ROUNDS} rounds a sample took {:.1} µs under mote (TSC {guest_khz:.0} \
         kHz), {:.1} µs natively (TSC {host_khz:.0} kHz); an empty measurement costs {} ticks \
         under mote, {} natively (median {} after that is taken off)",
        median_centre(&mote) * 1e3 / guest_khz,
        median_centre(&native) * 1e3 / host_khz,
        median_count(&overheads),
        median_count(&native_overheads),
        median_count(&native_empties),
    );
    for (kind, runs) in [("mote", &mote), ("mote_warm", &warm), ("native", &native)] {
        let centres = sorted_centres(runs.iter());
        let at = |q: f64| centres[((centres.len() - 1) as f64 * q).round() as usize];
        let flagged: Vec<String> = runs
            .iter()
            .filter(|run| !run.clean())
            .map(|run| match run.switches {
                0 => format!("{:.0}", run.centre),
                switches => format!("{:.0}*{switches}", run.centre),
            })
            .collect();
        println!(
            "bench-spread, {kind}: run centres in ticks: min {:.0} p25 {:.0} median {:.0} p75 \
             {:.0} max {:.0}; {} of {} runs preempted, {} outlying{}{}",
            at(0.0),
            at(0.25),
            at(0.5),
            at(0.75),
            at(1.0),
            runs.iter().filter(|run| run.preempted()).count(),
            runs.len(),
            runs.iter().filter(|run| run.outlying).count(),
            if flagged.is_empty() {
                ""
            } else {
                "; left out (*n: preempted n times): "
            },
            flagged.join(" ")
        );
    }
    let robust = |runs: &[&SpreadRun]| spread_robust_percent(runs.iter().copied());
    let cv = |runs: &[&SpreadRun]| spread_cv_percent(runs.iter().copied());
    let native_unpreempted: Vec<&SpreadRun> =
        native.iter().filter(|run| !run.preempted()).collect();
    for (kind, runs) in [("mote", &mote), ("mote_warm", &warm)] {
        let unpreempted: Vec<&SpreadRun> = runs.iter().filter(|run| !run.preempted()).collect();
        let (low, high) = spread_ratio_interval(&unpreempted, &native_unpreempted, robust);
        let all: Vec<&SpreadRun> = runs.iter().collect();
        let native_all: Vec<&SpreadRun> = native.iter().collect();
        let (all_low, all_high) = spread_ratio_interval(&all, &native_all, cv);
        println!(
            "bench-spread: {kind}'s spread over native's, 95 % bootstrap intervals (runs \
             resampled): {low:.2} to {high:.2} robust (MAD, unpreempted runs), {all_low:.2} to \
             {all_high:.2} as coefficients of variation over all runs"
        );
    }
}

/// A 95 % percentile-bootstrap interval of the ratio of `spread` of `runs` to that of `native`,
/// each resampled on its own, run by run.
fn spread_ratio_interval(
    runs: &[&SpreadRun],
    native: &[&SpreadRun],
    spread: impl Fn(&[&SpreadRun]) -> Option<f64>,
) -> (f64, f64) {
    // The interval only says how far the ratio could move: a clock-seeded draw does.
    let mut random = Xorshift::seeded();
    let mut ratios: Vec<f64> = (0..SPREAD_RESAMPLES)
        .filter_map(|_| {
            let mut resample = |runs: &[&SpreadRun]| {
                if runs.is_empty() {
                    return None;
                }
                let picked: Vec<&SpreadRun> = (0..runs.len())
                    .map(|_| runs[random.below(runs.len())])
                    .collect();
                spread(&picked)
            };
            let (a, b) = (resample(runs)?, resample(native)?);
            (b > 0.0).then(|| a / b)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    if ratios.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// xorshift64*, seeded from the clock: the spread figures' draws need no more.
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Self {
        Self(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64 | 1),
        )
    }

    /// A number below `bound` (above 0).
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
    }
}

/// A ratio's goal.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Self::AtMost(goal) => value <= goal,
            Self::AtLeast(goal) => value >= goal,
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtMost(goal) => write!(f, "goal ≤ {goal}"),
            Self::AtLeast(goal) => write!(f, "goal ≥ {goal}"),
        }
    }
}

/// The median of counts.
fn median_count(counts: &[u64]) -> u64 {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
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
    let hello_snapshot = hypervisor
        .snapshot(&image, RunConfig::default())
        .expect("a snapshot of hello");
    let snapshot_once = || {
        let start = Instant::now();
        let outcome = hypervisor
            .run_snapshot(&hello_snapshot, RunConfig::default())
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
        (
            elapsed,
            outcome.stats.phases.memory + outcome.stats.phases.vm,
        )
    };
    // Warm up page caches and KVM's own allocations.
    for _ in 0..5 {
        kvm_floor(&kvm, false);
        kvm_floor(&kvm, true);
        mote_once();
        snapshot_once();
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
        // `mote_once` hands its VM to the reaper thread: give it time to tear that down, so that
        // the snapshot run does not compete with it for a CPU.
        std::thread::sleep(Duration::from_millis(2));
        let (elapsed, making_the_vm) = snapshot_once();
        figures.entry("snapshot_cold").or_default().push(elapsed);
        figures
            .entry("snapshot_cold_phase_vm")
            .or_default()
            .push(making_the_vm);
    }
    // Whole processes: a cold `mote run`, `mote run` of a snapshot file, and `/bin/true`.
    let snapshot_file =
        std::env::temp_dir().join(format!("mote-bench-{}.snap", std::process::id()));
    let status = Command::new(&mote_bin)
        .args(["snapshot", "-q", "-o"])
        .arg(&snapshot_file)
        .arg(&guest)
        .status()
        .expect("mote snapshot runs");
    assert!(status.success(), "mote snapshot hello failed: {status}");
    let process = |program: &Path, args: &[&std::ffi::OsStr]| {
        let start = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("the program starts");
        assert!(status.success(), "{} failed: {status}", program.display());
        start.elapsed()
    };
    for _ in 0..PROCESS_ROUNDS {
        let cold = process(&mote_bin, &["run".as_ref(), guest.as_os_str()]);
        figures.entry("mote_run_process").or_default().push(cold);
        let warm = process(&mote_bin, &["run".as_ref(), snapshot_file.as_os_str()]);
        figures.entry("snapshot_file_run").or_default().push(warm);
        let nothing = process(Path::new("/bin/true"), &[]);
        figures.entry("true_process").or_default().push(nothing);
    }
    let _ = std::fs::remove_file(&snapshot_file);

    // Exit round trips: the raw floor and mote's hypercall, interleaved; with them, the raw
    // restore floor and warm calls through pools, which the exit floor models.
    let hypercall_guest =
        GuestImage::from_file(guest.with_file_name("bench-hypercall")).expect("bench-hypercall");
    let mut floor_vm = FloorVm::new(&kvm, true);
    floor_vm.run_to_out();
    let mut restore_floors: Vec<(&str, RestoreFloorVm)> = RESTORE_FLOORS
        .iter()
        .map(|&(name, pages)| (name, RestoreFloorVm::new(&kvm, pages)))
        .collect();
    let dirty_snapshot = hypervisor
        .snapshot(
            &GuestImage::from_file(guest.with_file_name("bench-dirty")).expect("bench-dirty"),
            RunConfig::default().memory_size(DIRTY_MEMORY).unwrap(),
        )
        .expect("a snapshot of bench-dirty");
    let echo_snapshot = hypervisor
        .snapshot(
            &GuestImage::from_file(guest.with_file_name("echo")).expect("echo"),
            RunConfig::default(),
        )
        .expect("a snapshot of echo");
    let warm_pools: Vec<(&str, &str, &str, Pool)> = WARM_CALLS
        .iter()
        .map(|&(name, guest, input)| {
            let snapshot = if guest == "echo" {
                &echo_snapshot
            } else {
                &dirty_snapshot
            };
            let config = PoolConfig::default().max_vms(1).min_idle(1);
            let pool = Pool::new(&hypervisor, snapshot, config).unwrap();
            (name, guest, input, pool)
        })
        .collect();
    // The same null call with the run on a filtered thread of its own.
    let filtered = Hypervisor::open().expect("KVM");
    filtered.set_filtered_runs(true);
    let filtered_pool = Pool::new(
        &filtered,
        &filtered
            .snapshot(
                &GuestImage::from_file(guest.with_file_name("echo")).expect("echo"),
                RunConfig::default(),
            )
            .expect("a filtered snapshot of echo"),
        PoolConfig::default().max_vms(1).min_idle(1),
    )
    .unwrap();
    // (exits, dirtied pages) of each warm call.
    let mut warm_counts: BTreeMap<&str, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let warm_call = |pool: &Pool, guest: &str, input: &str| {
        let start = Instant::now();
        let outcome = pool
            .run(RunConfig::default().input(input.as_bytes().to_vec()))
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "warm call failed");
        if guest == "echo" {
            assert_eq!(outcome.output, input.as_bytes(), "echo's output");
        } else {
            assert!(outcome.output.is_empty(), "bench-dirty wrote output");
        }
        (elapsed, outcome.stats)
    };
    for _ in 0..WARM_SAMPLES_PER_ROUND {
        restore_floors.iter_mut().for_each(|(_, floor)| {
            floor.cycle();
        });
        warm_pools.iter().for_each(|(_, guest, input, pool)| {
            warm_call(pool, guest, input);
        });
        warm_call(&filtered_pool, "echo", WARM_CALLS[0].2);
    }
    for _ in 0..EXIT_ROUNDS {
        let floor = kvm_floor_exit(&mut floor_vm, EXITS_PER_ROUND);
        figures.entry("kvm_floor_exit").or_default().push(floor);
        let seen = bench_guest(&hypervisor, &hypercall_guest, &EXITS_PER_ROUND.to_string());
        let ns: u64 = seen["ns_per_call"].parse().unwrap();
        figures
            .entry("mote_hypercall")
            .or_default()
            .push(Duration::from_nanos(ns));
        for (name, floor) in &mut restore_floors {
            for _ in 0..WARM_SAMPLES_PER_ROUND {
                figures.entry(name).or_default().push(floor.cycle());
            }
        }
        for (name, guest, input, pool) in &warm_pools {
            let counts = warm_counts.entry(name).or_default();
            for _ in 0..WARM_SAMPLES_PER_ROUND {
                let (elapsed, stats) = warm_call(pool, guest, input);
                figures.entry(name).or_default().push(elapsed);
                if *guest == "echo" {
                    let phases = stats.phases;
                    for (phase, d) in [
                        ("warm_null_phase_start", phases.vcpu),
                        ("warm_null_phase_run", phases.run),
                        ("warm_null_phase_reset", phases.reset),
                    ] {
                        figures.entry(phase).or_default().push(d);
                    }
                }
                counts.0.push(stats.exits.total);
                counts
                    .1
                    .push(stats.dirtied_pages.expect("a pooled run counts its pages"));
            }
        }
        for _ in 0..WARM_SAMPLES_PER_ROUND {
            let (elapsed, _) = warm_call(&filtered_pool, "echo", WARM_CALLS[0].2);
            figures
                .entry("filtered_warm_call_null")
                .or_default()
                .push(elapsed);
        }
    }
    drop((
        floor_vm,
        restore_floors,
        warm_pools,
        filtered_pool,
        filtered,
    ));

    // A pooled run that ends in a CPU exception: its VM is reset like any other. Against it,
    // what replacing the VM instead would cost: making one (`snapshot_cold_phase_vm`).
    let fault_snapshot = hypervisor
        .snapshot(
            &GuestImage::from_file(guest.with_file_name("fault")).expect("fault"),
            RunConfig::default(),
        )
        .expect("a snapshot of fault");
    let fault_pool = Pool::new(
        &hypervisor,
        &fault_snapshot,
        PoolConfig::default().max_vms(1).min_idle(1),
    )
    .unwrap();
    for _ in 0..EXIT_ROUNDS * WARM_SAMPLES_PER_ROUND {
        let start = Instant::now();
        let outcome = fault_pool
            .run(RunConfig::default().input(b"invalid-opcode".to_vec()))
            .unwrap();
        let elapsed = start.elapsed();
        assert!(
            matches!(outcome.exit, Exit::Exception { vector: 6, .. }),
            "the fault guest: {outcome:?}"
        );
        assert!(outcome.stats.dirtied_pages.is_some(), "the VM was kept");
        figures.entry("warm_call_fault").or_default().push(elapsed);
        figures
            .entry("warm_fault_phase_reset")
            .or_default()
            .push(outcome.stats.phases.reset);
    }
    drop(fault_pool);
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
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    // The benchmark rig's own figures first, while the machine is otherwise quiet.
    spread_figures(&mut values, &hypervisor, guest.parent().unwrap());
    let floor_run = || {
        kvm_floor(&kvm, true);
    };
    let mote_run = || {
        let outcome = hypervisor.run(&image, RunConfig::default()).unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    };
    values.insert(
        "kvm_floor_seq_runs_per_s".into(),
        runs_per_second(1, SEQ_RUNS, floor_run),
    );
    values.insert(
        "mote_seq_runs_per_s".into(),
        runs_per_second(1, SEQ_RUNS, mote_run),
    );
    values.insert(
        "kvm_floor_concurrent_runs_per_s".into(),
        runs_per_second(CONCURRENT_THREADS, SEQ_RUNS, floor_run),
    );
    values.insert(
        "mote_concurrent_runs_per_s".into(),
        runs_per_second(CONCURRENT_THREADS, SEQ_RUNS, mote_run),
    );
    {
        let config = PoolConfig::default().max_vms(POOL_VMS).min_idle(POOL_VMS);
        let pool = Pool::new(&hypervisor, &echo_snapshot, config).unwrap();
        wait_until_idle(&pool, POOL_VMS);
        let input = WARM_CALLS[0].2.as_bytes();
        let pool_run = || {
            let outcome = pool
                .run(RunConfig::default().input(input.to_vec()))
                .unwrap();
            assert_eq!(outcome.exit, Exit::Guest { code: 0 });
        };
        values.insert(
            "pool_runs_per_s_1".into(),
            runs_per_second(1, POOL_RUNS, pool_run),
        );
        values.insert(
            "pool_runs_per_s_64".into(),
            runs_per_second(CONCURRENT_THREADS, POOL_RUNS, pool_run),
        );
    }
    // The same calls through `mote serve`, right after the pool alone, so that both see the
    // machine alike.
    serve_figures(&mut values, &mote_bin, &guest.with_file_name("echo"));
    values.insert(
        "kvm_floor_idle_rss_kib".into(),
        floor_idle_rss_kib(&kvm, HELD_GUESTS),
    );
    values.insert(
        "idle_guest_rss_kib".into(),
        mote_idle_rss_kib(&hypervisor, guest.parent().unwrap(), HELD_GUESTS),
    );
    let gauge = MemoryGauge::find();
    println!("memory per VM from {}", gauge.describe());
    values.insert(
        "kvm_floor_idle_kib_per_vm".into(),
        floor_idle_kib(&kvm, &gauge, MEMORY_VMS),
    );
    let hostcall_snapshot = hypervisor
        .snapshot(
            &GuestImage::from_file(guest.with_file_name("hostcall")).expect("hostcall"),
            RunConfig::default(),
        )
        .expect("a snapshot of hostcall");
    let (fresh, used) = pool_idle_kib(&hypervisor, &hostcall_snapshot, &gauge, MEMORY_VMS);
    values.insert("pool_idle_kib_per_vm".into(), fresh);
    values.insert("pool_idle_kib_per_vm_used".into(), used);

    // The restore floor's cost of one more page, and each warm call's floor model.
    let median = |name: &str| figures[name].median();
    let (first, _) = RESTORE_FLOORS[0];
    let (last, last_pages) = RESTORE_FLOORS[RESTORE_FLOORS.len() - 1];
    let page_restore_floor = (median(last) - median(first)) / f64::from(last_pages);
    values.insert("page_restore_floor".into(), page_restore_floor);
    let mut model_ratios = Vec::new();
    for (name, (exits, dirtied)) in &warm_counts {
        let (exits, dirtied) = (median_count(exits), median_count(dirtied));
        values.insert(format!("{name}_exits"), exits as f64);
        values.insert(format!("{name}_dirtied_pages"), dirtied as f64);
        let model = exits as f64 * median("kvm_floor_exit") + dirtied as f64 * page_restore_floor;
        let call = name.strip_prefix("warm_call_").unwrap();
        model_ratios.push((
            format!("warm_vs_model_{call}"),
            median(name) / model,
            Some(Goal::AtMost(1.3)),
        ));
    }

    // `hello` runs in user mode (CPL3), so its floor is the CPL3 one.
    let ratio = |a: &str, b: &str| median(a) / median(b);
    let floor_idle_kib = values["kvm_floor_idle_kib_per_vm"];
    let pool_idle_extra_kib = values["pool_idle_kib_per_vm"] - floor_idle_kib;
    let pool_idle_used_extra_kib = values["pool_idle_kib_per_vm_used"] - floor_idle_kib;
    let mut ratios: Vec<(String, f64, Option<Goal>)> = vec![
        (
            "cold_vs_floor".into(),
            ratio("mote_cold_in_process", "kvm_floor_cold_cpl3"),
            Some(Goal::AtMost(1.5)),
        ),
        (
            "hypercall_vs_exit".into(),
            ratio("mote_hypercall", "kvm_floor_exit"),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "guest_compute_vs_native".into(),
            ratio("guest_compute", "native_compute"),
            Some(Goal::AtMost(1.2)),
        ),
        (
            "seq_runs_floor_vs_mote".into(),
            values["kvm_floor_seq_runs_per_s"] / values["mote_seq_runs_per_s"],
            None,
        ),
        (
            "concurrent_runs_floor_vs_mote".into(),
            values["kvm_floor_concurrent_runs_per_s"] / values["mote_concurrent_runs_per_s"],
            None,
        ),
        (
            "idle_rss_vs_floor".into(),
            values["idle_guest_rss_kib"] / values["kvm_floor_idle_rss_kib"],
            None,
        ),
        (
            "warm_vs_exit".into(),
            ratio("warm_call_null", "kvm_floor_exit"),
            Some(Goal::AtMost(4.0)),
        ),
    ];
    ratios.extend(model_ratios);
    // A spread is missing when fewer than two runs were left to take it over (every run
    // preempted, say): then so is its ratio.
    for (name, mote, native, goal) in [
        (
            "bench_spread_vs_native",
            "robust_mote",
            "robust_native",
            Some(Goal::AtMost(1.0)),
        ),
        (
            "bench_spread_warm_vs_native",
            "robust_mote_warm",
            "robust_native",
            Some(Goal::AtMost(1.0)),
        ),
        (
            "bench_spread_clean_vs_native",
            "cv_mote_clean",
            "cv_native_clean",
            None,
        ),
        (
            "bench_spread_warm_clean_vs_native",
            "cv_mote_warm_clean",
            "cv_native_clean",
            None,
        ),
        (
            "bench_spread_all_runs_vs_native",
            "cv_mote",
            "cv_native",
            None,
        ),
        (
            "bench_spread_warm_all_runs_vs_native",
            "cv_mote_warm",
            "cv_native",
            None,
        ),
    ] {
        let spread = |kind: &str| values.get(&format!("bench_spread_{kind}")).copied();
        match spread(mote).zip(spread(native)) {
            Some((mote, native)) if mote > 0.0 && native > 0.0 => {
                ratios.push((name.into(), mote / native, goal))
            }
            Some(_) => println!("{name}: left out, a spread of 0 (below what the TSC resolves)"),
            None => println!("{name}: left out, a spread is missing"),
        }
    }
    ratios.push((
        "filtered_vs_warm".into(),
        ratio("filtered_warm_call_null", "warm_call_null"),
        None,
    ));
    ratios.extend([
        (
            "snapshot_file_run_vs_true".into(),
            ratio("snapshot_file_run", "true_process"),
            None,
        ),
        (
            "snapshot_cold_vs_floor".into(),
            ratio("snapshot_cold", "kvm_floor_cold_cpl3"),
            Some(Goal::AtMost(1.1)),
        ),
        (
            "pool64_vs_floor_concurrent".into(),
            values["pool_runs_per_s_64"] / values["kvm_floor_concurrent_runs_per_s"],
            Some(Goal::AtLeast(5.0)),
        ),
        (
            "serve_vs_library".into(),
            values["serve_runs_per_s_64"] / values["pool_runs_per_s_64"],
            Some(Goal::AtLeast(0.8)),
        ),
        // Differences in KiB, not ratios: here for their goal. A fresh pooled VM has never
        // run, unlike the floor VMs; one that has served a run has, as they have.
        (
            "pool_idle_extra_kib".into(),
            pool_idle_extra_kib,
            Some(Goal::AtMost(64.0)),
        ),
        (
            "pool_idle_used_extra_kib".into(),
            pool_idle_used_extra_kib,
            Some(Goal::AtMost(64.0)),
        ),
    ]);

    println!("{:<28} {:>12} {:>12}", "figure", "median µs", "p90 µs");
    for (name, samples) in &figures {
        println!(
            "{name:<28} {:>12.3} {:>12.3}",
            samples.median(),
            samples.percentile(90)
        );
    }
    println!();
    for (name, value) in &values {
        // Small values (the spread figures, in percent) keep more digits.
        let digits = match value.abs() {
            v if v >= 100.0 => 1,
            v if v >= 0.1 || v == 0.0 => 3,
            _ => 5,
        };
        println!("{name:<36} {value:>12.digits$}");
    }
    println!();
    for (name, value, goal) in &ratios {
        match goal {
            Some(goal) if goal.met(*value) => println!("{name:<36} {value:>12.2}   ({goal})"),
            Some(goal) => println!("{name:<36} {value:>12.2}   ({goal}: MISSED)"),
            None => println!("{name:<36} {value:>12.2}"),
        }
    }

    let json = serde_json::json!({
        "figures": figures.iter().map(|(name, s)| {
            (name.to_string(), serde_json::json!({"median_us": s.median(), "p90_us": s.percentile(90)}))
        }).chain(values.iter().map(|(name, value)| {
            (name.clone(), serde_json::json!({"value": value}))
        })).collect::<serde_json::Map<_, _>>(),
        "ratios": ratios
            .iter()
            .map(|(name, value, _)| (name.clone(), serde_json::json!(value)))
            .collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json).unwrap())
        .expect("writing the benchmark JSON");
    println!("wrote {}", json_path.display());
}
