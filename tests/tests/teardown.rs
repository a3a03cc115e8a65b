//! VMs are torn down off the caller's path, and none outlives its `Hypervisor`.
//! (A test binary of its own: it counts the process's file descriptors.)

use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
use mote_tests::{guest_path, open_descriptors};

#[test]
fn every_vm_is_gone_once_its_hypervisor_is_dropped() {
    let image = GuestImage::from_file(guest_path("hello")).unwrap();
    let before = open_descriptors();
    let hypervisor = Hypervisor::open().unwrap();
    for _ in 0..20 {
        let outcome = hypervisor.run(&image, RunConfig::default()).unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 });
    }
    drop(hypervisor);
    assert_eq!(open_descriptors(), before, "a VM or vCPU descriptor leaked");
}
