//! Times the creation of a VM with KVM's in-kernel irqchip and PIT in the two orders KVM
//! accepts (before the memory slot, or after it; always before the vCPU), and without them,
//! and the tear-down of each: the figures behind the order `RunConfig::irqchip` uses
//! (docs/decisions.md).
//!
//! `cargo run --release -p mote-host --example irqchip_order [ROUNDS]`

use std::time::{Duration, Instant};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

const MEMORY: usize = 8 << 20;

#[derive(Clone, Copy, Debug)]
enum Order {
    /// No irqchip: the VM, its vCPU, then the memory slot (mote's default path).
    None,
    /// No irqchip, the memory slot before the vCPU (for comparison).
    NoneMemoryFirst,
    /// The irqchip and PIT before the memory slot.
    Before,
    /// The irqchip and PIT after the memory slot.
    After,
}

struct Made {
    _vcpu: VcpuFd,
    _vm: VmFd,
    memory: *mut libc::c_void,
}

fn memory_slot(vm: &VmFd, memory: *mut libc::c_void) {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEMORY as u64,
        userspace_addr: memory as u64,
    };
    // SAFETY: `memory` is a live anonymous mapping of MEMORY bytes, unmapped only after the VM
    // is closed.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");
}

fn irqchip(vm: &VmFd) {
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).expect("KVM_CREATE_PIT2");
}

fn make(kvm: &Kvm, order: Order) -> Made {
    // SAFETY: a fresh private anonymous mapping; checked below.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEMORY,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(memory, libc::MAP_FAILED);
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    vm.set_tss_address(0xFFFB_D000).expect("KVM_SET_TSS_ADDR");
    let vcpu = match order {
        Order::None => {
            let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
            memory_slot(&vm, memory);
            vcpu
        }
        Order::NoneMemoryFirst => {
            memory_slot(&vm, memory);
            vm.create_vcpu(0).expect("KVM_CREATE_VCPU")
        }
        Order::Before => {
            irqchip(&vm);
            memory_slot(&vm, memory);
            vm.create_vcpu(0).expect("KVM_CREATE_VCPU")
        }
        Order::After => {
            memory_slot(&vm, memory);
            irqchip(&vm);
            vm.create_vcpu(0).expect("KVM_CREATE_VCPU")
        }
    };
    Made {
        _vcpu: vcpu,
        _vm: vm,
        memory,
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(31, |n| n.parse().expect("ROUNDS is a number"));
    let kvm = Kvm::new().expect("/dev/kvm");
    let orders = [
        Order::None,
        Order::NoneMemoryFirst,
        Order::Before,
        Order::After,
    ];
    let mut create = vec![Vec::new(); orders.len()];
    let mut destroy = vec![Vec::new(); orders.len()];
    // One warm-up round, then the orders interleaved, rotating which goes first.
    for round in 0..=rounds {
        for k in 0..orders.len() {
            let i = (round + k) % orders.len();
            let start = Instant::now();
            let made = make(&kvm, orders[i]);
            let created = start.elapsed();
            let start = Instant::now();
            let memory = made.memory;
            drop(made);
            // SAFETY: the mapping from `make`; the VM that used it is closed.
            unsafe { libc::munmap(memory, MEMORY) };
            let destroyed = start.elapsed();
            if round > 0 {
                create[i].push(created);
                destroy[i].push(destroyed);
            }
        }
    }
    println!("{rounds} rounds, medians:");
    for (i, order) in orders.iter().enumerate() {
        println!(
            "  {:<15} create {:>9.3?}  tear down {:>9.3?}",
            format!("{order:?}"),
            median(create[i].clone()),
            median(destroy[i].clone())
        );
    }
}
