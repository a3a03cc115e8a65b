//! Snapshots under real KVM: taken at `ready_for_input`, restored into fresh VMs.

use mote_host::{Error, Exit, GuestImage, RunConfig};
use mote_tests::{guest_path, hypervisor};

fn image(name: &str) -> GuestImage {
    GuestImage::from_file(guest_path(name)).expect("the guest image is valid")
}

#[test]
fn a_snapshot_serves_many_runs_each_with_its_own_input() {
    let snapshot = hypervisor()
        .snapshot(&image("echo"), RunConfig::default())
        .unwrap();
    for input in [
        &b"first"[..],
        b"",
        b"a much longer input than the first one",
    ] {
        let outcome = hypervisor()
            .run_snapshot(&snapshot, RunConfig::default().input(input.to_vec()))
            .unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "{outcome:?}");
        assert_eq!(outcome.output, input);
    }
}

#[test]
fn a_guest_that_ends_before_it_is_ready_has_no_snapshot() {
    let error = hypervisor()
        .snapshot(&image("stock"), RunConfig::default())
        .unwrap_err();
    let Error::NotReady(outcome) = &error else {
        panic!("{error}");
    };
    assert!(outcome.exit.guest_code().is_some(), "{error}");
}
