//! Fuzzes mote-host's snapshot file reader: `mote run` hands it any file that starts with the
//! snapshot magic, so every input must be refused with a `SnapshotFileError` (or read whole),
//! never panic, and never make the reader allocate what the file merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = mote_host::snapshot_file::parse_for_fuzzing(bytes);
});
