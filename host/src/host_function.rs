//! Calling the embedder's host functions: what they may learn of the run that calls them, and
//! what becomes of one that panics.
//!
//! mote cannot preempt a host function: it runs on the thread of the run that called it, and
//! the run's deadline cannot stop it. A function that may block should bound its own work by
//! [`run_deadline`], the deadline of the run calling it; when it returns after that deadline
//! the run ends as a timeout.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::HostFunction;

thread_local! {
    /// The deadline of the run whose host function runs on this thread, if it has one.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The deadline of the run whose host function is calling this, on that function's thread
/// (`None` if that run has no deadline, or if no host function is running here). A host
/// function that may block, for I/O or a lock, should give up by then: mote cannot stop it, and
/// the run it holds ends as a timeout once it returns.
///
/// ```
/// use std::sync::Arc;
/// let config = mote_host::RunConfig::default().host_function(
///     "lookup",
///     Arc::new(|key: &[u8]| {
///         let budget = mote_host::run_deadline()
///             .map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()));
///         // ... wait for the answer for at most `budget` ...
///         Ok(key.to_vec())
///     }),
/// );
/// ```
pub fn run_deadline() -> Option<Instant> {
    DEADLINE.with(Cell::get)
}

/// A host function panicked.
pub(crate) struct Panicked;

/// Calls `function` with `request`, with `deadline` as [`run_deadline`] for it; a panic is
/// caught (when the embedder builds with unwinding) and reported as [`Panicked`].
pub(crate) fn call(
    function: &HostFunction,
    request: &[u8],
    deadline: Option<Instant>,
) -> Result<Result<Vec<u8>, String>, Panicked> {
    // A run started inside the function sets its own deadline and puts this one back.
    let outer = DEADLINE.with(|d| d.replace(deadline));
    // The function's state after a panic is its own business: mote only stops using it for
    // this run.
    let result = catch_unwind(AssertUnwindSafe(|| function(request)));
    DEADLINE.with(|d| d.set(outer));
    result.map_err(|_| Panicked)
}
