//! Many guests at once and many in a row, each with its own outcome, and nothing leaked.
//! (A test binary of its own: it counts the process's descriptors and memory.)

use std::time::Duration;

use mote_host::{Exit, GuestImage, Hypervisor, RunConfig};
use mote_tests::{guest_path, open_descriptors, resident_kib};

#[test]
fn sixty_four_at_once_then_a_thousand_in_a_row_without_leaks() {
    let hello = GuestImage::from_file(guest_path("hello")).unwrap();
    let fault = GuestImage::from_file(guest_path("fault")).unwrap();
    let spin = GuestImage::from_file(guest_path("spin")).unwrap();
    let descriptors = open_descriptors();
    let hypervisor = Hypervisor::open().unwrap();

    // 64 guests on their own threads: every fourth faults, every fourth spins into its
    // deadline; the others must not notice.
    let outcomes: Vec<Exit> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let (hypervisor, hello, fault, spin) = (&hypervisor, &hello, &fault, &spin);
                scope.spawn(move || {
                    let (image, config) = match i % 4 {
                        1 => (fault, RunConfig::default()),
                        2 => (
                            spin,
                            RunConfig::default()
                                .timeout(Duration::from_millis(50))
                                .unwrap(),
                        ),
                        _ => (hello, RunConfig::default().input(vec![i as u8])),
                    };
                    hypervisor.run(image, config).unwrap().exit
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, exit) in outcomes.iter().enumerate() {
        match i % 4 {
            1 => assert!(
                matches!(exit, Exit::Exception { vector: 14, .. }),
                "{i}: {exit:?}"
            ),
            2 => assert!(matches!(exit, Exit::Timeout { .. }), "{i}: {exit:?}"),
            _ => assert_eq!(exit, &Exit::Guest { code: 0 }, "{i}"),
        }
    }

    // A thousand in a row, in one process: memory must not grow with the count.
    for _ in 0..50 {
        hypervisor.run(&hello, RunConfig::default()).unwrap();
    }
    let resident_before = resident_kib();
    for i in 0..1000 {
        let outcome = hypervisor.run(&hello, RunConfig::default()).unwrap();
        assert_eq!(outcome.exit, Exit::Guest { code: 0 }, "run {i}");
    }
    let growth = resident_kib().saturating_sub(resident_before);
    assert!(
        growth < 16 * 1024,
        "resident memory grew by {growth} KiB over 1000 runs"
    );

    drop(hypervisor);
    assert_eq!(open_descriptors(), descriptors, "a descriptor leaked");
}
