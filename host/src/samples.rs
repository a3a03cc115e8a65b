//! Timing samples a guest reports (the `samples` hypercall): checked, counted against the run's
//! limits and kept in report order, one shared name per distinct name. Pure: the machine reads
//! the guest's memory, this decides what to keep.

use std::collections::HashSet;
use std::sync::Arc;

use mote_abi::{HypercallError, SAMPLE_NAME_MAX, SAMPLE_NAMES_MAX};

use crate::Limit;

/// One timing sample a guest reported: a name and a TSC tick count.
///
/// A `mote-guest` guest takes them with `mote_guest::bench::measure` (or hands its own to
/// `mote_guest::bench::sample`); they arrive in [`Outcome::samples`](crate::Outcome::samples).
/// Ticks are the guest's TSC, which runs at [`Hypervisor::tsc_khz`](crate::Hypervisor::tsc_khz)
/// kHz: `cycles * 1_000_000 / khz` nanoseconds.
///
/// ```
/// use mote_host::{GuestImage, Hypervisor, RunConfig};
///
/// let hypervisor = Hypervisor::open()?;
/// let guest = GuestImage::from_file("../guest/target/x86_64-unknown-none/release/hashbench")?;
/// let outcome = hypervisor.run(&guest, RunConfig::default())?;
/// let hash: Vec<u64> = outcome
///     .samples
///     .iter()
///     .filter(|sample| &*sample.name == "hash")
///     .map(|sample| sample.cycles)
///     .collect();
/// assert_eq!(hash.len(), 1000);
/// if let (Some(khz), Some(fastest)) = (hypervisor.tsc_khz(), hash.iter().min()) {
///     println!("fastest round: {} ns", fastest * 1_000_000 / khz);
/// }
/// # Ok::<(), mote_host::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Sample {
    /// What was measured: 1 to 64 bytes of UTF-8, as the guest named it. Every sample of one
    /// name in a run shares this allocation.
    pub name: Arc<str>,
    /// How long it took, in TSC ticks (for `measure`, less the cost of measuring nothing).
    pub cycles: u64,
}

impl Sample {
    /// A sample of `name` that took `cycles` TSC ticks (for code that handles samples, such as
    /// a benchmark's statistics and its tests).
    pub fn new(name: Arc<str>, cycles: u64) -> Self {
        Self { name, cycles }
    }
}

/// The samples of one run so far, and what the run may still report.
#[derive(Debug)]
pub(crate) struct SampleLog {
    /// Each distinct name once; the samples share these.
    names: HashSet<Arc<str>>,
    samples: Vec<Sample>,
    /// The most samples the run may report ([`crate::RunConfig::sample_limit`]).
    limit: u64,
}

/// A sample name's bytes as the guest sent them, if they make a name: 1 to
/// [`SAMPLE_NAME_MAX`] bytes of UTF-8.
pub(crate) fn parse_name(bytes: &[u8]) -> Result<&str, HypercallError> {
    if bytes.is_empty() || bytes.len() as u64 > SAMPLE_NAME_MAX {
        return Err(HypercallError::InvalidArgument);
    }
    std::str::from_utf8(bytes).map_err(|_| HypercallError::InvalidArgument)
}

impl SampleLog {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            names: HashSet::new(),
            samples: Vec::new(),
            limit,
        }
    }

    /// Records the samples in `cycles` (little-endian `u64`s; a partial last one is ignored,
    /// which the decoder never lets happen) under `name`: how many it took, or the limit the
    /// run passes by reporting them, in which case none is kept. A call with no samples
    /// records nothing, not even its name.
    pub(crate) fn record(&mut self, name: &str, cycles: &[u8]) -> Result<u64, Limit> {
        let count = (cycles.len() / 8) as u64;
        if count == 0 {
            return Ok(0);
        }
        let total = self.samples.len() as u64;
        if total.saturating_add(count) > self.limit {
            return Err(Limit::Samples(self.limit));
        }
        let name = match self.names.get(name) {
            Some(known) => Arc::clone(known),
            None if self.names.len() as u64 >= SAMPLE_NAMES_MAX => {
                return Err(Limit::SampleNames(SAMPLE_NAMES_MAX));
            }
            None => {
                let new: Arc<str> = Arc::from(name);
                self.names.insert(Arc::clone(&new));
                new
            }
        };
        // Grow as a vector does, but never past the limit: what the run holds stays within
        // what its memory budget was charged.
        let needed = self.samples.len() + count as usize;
        if needed > self.samples.capacity() {
            let wanted = needed
                .max(self.samples.capacity().saturating_mul(2))
                .min(usize::try_from(self.limit).unwrap_or(usize::MAX));
            self.samples.reserve_exact(wanted - self.samples.len());
        }
        self.samples.extend(cycles.chunks_exact(8).map(|word| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            Sample {
                name: Arc::clone(&name),
                cycles: u64::from_le_bytes(bytes),
            }
        }));
        Ok(count)
    }

    /// The samples, in the order they were reported.
    pub(crate) fn into_samples(self) -> Vec<Sample> {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn names_are_one_to_sixty_four_bytes_of_utf8() {
        assert_eq!(parse_name(b"hash"), Ok("hash"));
        let longest = "é".repeat(32);
        assert_eq!(parse_name(longest.as_bytes()), Ok(longest.as_str()));
        let refused = [&b""[..], &[b'x'; 65], b"bad \xff name", b"cut \xc3"];
        for bytes in refused {
            assert_eq!(
                parse_name(bytes),
                Err(HypercallError::InvalidArgument),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn samples_keep_their_order_and_share_one_name_each() {
        let mut log = SampleLog::new(100);
        assert_eq!(log.record("hash", &words(&[3, 1])), Ok(2));
        assert_eq!(log.record("sort", &words(&[7])), Ok(1));
        assert_eq!(log.record("hash", &words(&[u64::MAX])), Ok(1));
        assert_eq!(log.record("empty", &[]), Ok(0));
        let samples = log.into_samples();
        let seen: Vec<(&str, u64)> = samples.iter().map(|s| (&*s.name, s.cycles)).collect();
        assert_eq!(
            seen,
            [("hash", 3), ("hash", 1), ("sort", 7), ("hash", u64::MAX)]
        );
        assert!(Arc::ptr_eq(&samples[0].name, &samples[3].name));
        // Three samples of "hash", one allocation (the log's own reference went with it).
        assert_eq!(Arc::strong_count(&samples[0].name), 3);
    }

    #[test]
    fn the_total_limit_holds_at_n_and_ends_the_run_past_it() {
        let mut log = SampleLog::new(10);
        assert_eq!(log.record("a", &words(&[1; 9])), Ok(9));
        assert_eq!(log.record("a", &words(&[1; 2])), Err(Limit::Samples(10)));
        assert_eq!(log.record("a", &words(&[1])), Ok(1));
        assert_eq!(log.record("b", &words(&[1])), Err(Limit::Samples(10)));
        let samples = log.into_samples();
        assert_eq!(samples.len(), 10);
        assert!(samples.capacity() <= 10, "{}", samples.capacity());
        let mut none = SampleLog::new(0);
        assert_eq!(none.record("a", &words(&[1])), Err(Limit::Samples(0)));
        assert_eq!(none.record("a", &[]), Ok(0));
    }

    #[test]
    fn the_name_limit_counts_distinct_names() {
        let mut log = SampleLog::new(1 << 20);
        for i in 0..SAMPLE_NAMES_MAX {
            assert_eq!(log.record(&format!("n{i}"), &words(&[i])), Ok(1));
        }
        // A known name still goes in; a new one ends the run.
        assert_eq!(log.record("n7", &words(&[1])), Ok(1));
        assert_eq!(
            log.record("one more", &words(&[1])),
            Err(Limit::SampleNames(SAMPLE_NAMES_MAX))
        );
        assert_eq!(log.into_samples().len() as u64, SAMPLE_NAMES_MAX + 1);
    }
}
