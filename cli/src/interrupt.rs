//! Ctrl-C and SIGTERM during a run: the guest is stopped through the run's cancel token, mote
//! says so and exits with 128 + the signal's number. A second signal ends mote at once.
//!
//! The signals are blocked in every thread and taken by one thread of mote's, with `sigwait`:
//! a handler could do nothing but set a flag, while this thread can cancel the run (which
//! locks and kicks the vCPU's thread) like any other canceller.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use mote_host::CancelToken;

/// The signal that stopped the run, if one did.
#[derive(Clone, Default)]
pub struct Interrupted(Arc<AtomicI32>);

impl Interrupted {
    /// The signal's number, if one arrived.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(signal),
        }
    }
}

/// The name of the signals mote takes.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Cancels `token` at the first SIGINT or SIGTERM. Call it before any other thread starts:
/// threads inherit the blocked signals, so only the watching thread ever takes them.
pub fn cancel_on_signal(token: CancelToken) -> std::io::Result<Interrupted> {
    let set = stop_signals();
    // SAFETY: `set` is a valid signal set; this changes only the calling thread's mask (and
    // the masks of the threads it starts from now on).
    let error = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if error != 0 {
        return Err(std::io::Error::from_raw_os_error(error));
    }
    let interrupted = Interrupted::default();
    let seen = interrupted.clone();
    std::thread::Builder::new()
        .name("mote-signals".into())
        .spawn(move || {
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` and `signal` are valid for the call.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                if seen.0.swap(signal, Ordering::SeqCst) != 0 {
                    // A second signal: the user does not want to wait for the guest to stop.
                    std::process::exit(128 + signal);
                }
                token.cancel();
            }
        })?;
    Ok(interrupted)
}
