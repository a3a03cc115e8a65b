//! Start-up benchmark: mote against the raw KVM floor, measured in one process.
//!
//! Run through `cargo xtask bench`, which builds the guests and the release `mote` binary and
//! tells this program where they are (`MOTE_GUEST_DIR`, `MOTE_BIN`, `MOTE_BENCH_JSON`).
//!
//! Figures (median and p90, microseconds):
//! - `kvm_floor_cold_cpl0` / `kvm_floor_cold_cpl3`: create a VM, a vCPU and 2 MiB of memory
//!   straight on kvm-ioctls, enter long mode at that ring, run to the first `out`.
//! - `mote_cold_in_process`: `Hypervisor::run` of `hello`, from the call to its return.
//! - `mote_run_process`: `mote run hello` as a whole process, spawn to exit.
//!
//! Samples of the floor and of mote are interleaved so that a change in machine load hits both
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

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run this benchmark with `cargo xtask bench`"))
}

/// The raw floor: the least any VMM must do to run guest code in long mode on this KVM.
fn kvm_floor(kvm: &Kvm, user: bool) -> Duration {
    const MEMORY: usize = 2 << 20;
    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const CODE: u64 = 0x4000;
    const TSS: u64 = 0x5000;
    let start = Instant::now();

    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEMORY)]).unwrap();
    let user_bit = if user { 4 } else { 0 };
    // One 2 MiB identity-mapped page; the code is `out 0x80, al; hlt`.
    for (at, entry) in [
        (PML4, PDPT | 3 | user_bit),
        (PDPT, PD | 3 | user_bit),
        (PD, 0x83 | user_bit),
    ] {
        memory.write_obj::<u64>(entry, GuestAddress(at)).unwrap();
    }
    memory
        .write_slice(&[0xE6, 0x80, 0xF4], GuestAddress(CODE))
        .unwrap();
    let region = memory.iter().next().unwrap();
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .unwrap();
    // SAFETY: `memory` is a live mapping of MEMORY bytes that outlives the VM (dropped after
    // it at the end of this function).
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

    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let mut sregs = vcpu.get_sregs().unwrap();
    let dpl = if user { 3 } else { 0 };
    let code = kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector: if user { 0x2B } else { 0x08 },
        type_: 0xB,
        present: 1,
        dpl,
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
        limit: 0x67,
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
    match vcpu.run().expect("KVM_RUN") {
        VcpuExit::IoOut(0x80, _) => {}
        other => panic!("the floor VM stopped with {other:?}"),
    }
    let elapsed = start.elapsed();
    drop(vcpu);
    drop(vm);
    elapsed
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
            ("mote_phase_teardown", phases.teardown),
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

    // `hello` runs at CPL0 today, so its floor is the CPL0 one.
    let cold_vs_floor =
        figures["mote_cold_in_process"].median() / figures["kvm_floor_cold_cpl0"].median();

    println!("{:<24} {:>12} {:>12}", "figure", "median µs", "p90 µs");
    for (name, samples) in &figures {
        println!(
            "{name:<24} {:>12.1} {:>12.1}",
            samples.median(),
            samples.percentile(90)
        );
    }
    println!(
        "\n{:<24} {:>12.2}   (goal ≤ 1.5)",
        "cold_vs_floor", cold_vs_floor
    );

    let json = serde_json::json!({
        "figures": figures.iter().map(|(name, s)| {
            (name.to_string(), serde_json::json!({"median_us": s.median(), "p90_us": s.percentile(90)}))
        }).collect::<serde_json::Map<_, _>>(),
        "ratios": { "cold_vs_floor": cold_vs_floor },
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&json).unwrap())
        .expect("writing the benchmark JSON");
    println!("wrote {}", json_path.display());
}
