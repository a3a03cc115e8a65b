//! The guest as a function: input in, output out, randomness and host functions on the side.

use alloc::vec;
use alloc::vec::Vec;

use mote_abi::{HypercallError, RunStart};
use spin::Once;

use crate::{bench, console, hypercall, platform};

/// Where the loader mapped the ramdisk, and its length: the input of a cold run, or the empty
/// input window of a snapshot's guest.
static RAMDISK: Once<(u64, u64)> = Once::new();
/// The run's input, once the run has started.
static INPUT: Once<&'static [u8]> = Once::new();
static RUN_START: Once<RunStart> = Once::new();

pub(crate) fn init(boot_info: &'static bootloader_api::BootInfo) {
    RAMDISK.call_once(|| {
        let address = boot_info.ramdisk_addr.into_option().unwrap_or(0);
        (address, boot_info.ramdisk_len)
    });
}

/// The first `len` bytes of the ramdisk.
fn ramdisk(len: u64) -> &'static [u8] {
    match RAMDISK.get() {
        // SAFETY: the loader mapped the ramdisk at `address`, read-only for the life of the
        // guest; under mote it holds the run's input from `ready_for_input` on, `len` bytes
        // long (mote checks that the input fits the window it mapped).
        Some(&(address, _)) if address != 0 && len != 0 => unsafe {
            core::slice::from_raw_parts(address as *const u8, len as usize)
        },
        _ => &[],
    }
}

/// Ends initialisation. When mote boots the guest to snapshot it, tells mote the guest is
/// ready for its input: mote snapshots it there, and every run restored from the snapshot
/// continues from there with its own input in the ramdisk. In a cold run the input is in the
/// ramdisk already, and the call (an exit) is saved.
pub(crate) fn start_run() {
    if !platform::under_mote() || !platform::snapshot_boot() {
        let len = RAMDISK.get().map_or(0, |&(_, len)| len);
        INPUT.call_once(|| ramdisk(len));
        return;
    }
    // Text and samples buffered during initialisation belong to the boot, not to every
    // restored run.
    bench::flush();
    console::flush();
    let start = hypercall::ready_for_input();
    RUN_START.call_once(|| start);
    INPUT.call_once(|| ramdisk(start.input_len));
}

/// The guest's input: the bytes the host handed this run (`mote run --input`). It is there from
/// `main` on; during an `init` (see [`entry!`](crate::entry)) it is empty, because a snapshot
/// taken after `init` serves many runs with different inputs.
pub fn input() -> &'static [u8] {
    INPUT.get().copied().unwrap_or(&[])
}

/// What this run started with: its generation (0 in a cold run, 1 and up in runs restored from
/// a snapshot) and fresh random bytes to seed anything random from. Every run restored from one
/// snapshot shares the snapshot's memory, so an RNG seeded during `init` would repeat itself in
/// every run: reseed it from [`RunStart::seed`]. `None` before `main`, and when not under mote.
/// (In a cold run the first call costs one `random` hypercall.)
pub fn run_start() -> Option<RunStart> {
    let input_len = INPUT.get()?.len() as u64;
    if !platform::under_mote() {
        return None;
    }
    let start = RUN_START.call_once(|| {
        let mut seed = [0u8; mote_abi::SEED_BYTES];
        // The host's random source does not fail; should it, the seed stays zero.
        let _ = random_bytes(&mut seed);
        RunStart {
            generation: 0,
            seed,
            input_len,
        }
    });
    Some(*start)
}

/// Appends `bytes` to the guest's output (the function's result).
pub fn output(mut bytes: &[u8]) -> Result<(), HypercallError> {
    while !bytes.is_empty() {
        let taken = hypercall::output_write(bytes)?;
        bytes = &bytes[taken.min(bytes.len())..];
    }
    Ok(())
}

/// Fills `buffer` with random bytes from the host.
pub fn random_bytes(buffer: &mut [u8]) -> Result<(), HypercallError> {
    let mut done = 0;
    while done < buffer.len() {
        done += hypercall::random(&mut buffer[done..])?;
    }
    Ok(())
}

/// Why a host call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostCallError {
    /// The host refused the call (no such function, or it failed).
    Host(HypercallError),
    /// The response is longer than [`HOST_CALL_RESPONSE_MAX`]; use [`host_call_into`] with a
    /// buffer of at least this many bytes.
    ResponseTooLarge(usize),
}

/// The largest response [`host_call`] accepts.
pub const HOST_CALL_RESPONSE_MAX: usize = 16 * 1024;

/// Calls the host function `name` with `request` and returns its response.
pub fn host_call(name: &str, request: &[u8]) -> Result<Vec<u8>, HostCallError> {
    let mut response = vec![0u8; HOST_CALL_RESPONSE_MAX];
    let len = host_call_into(name, request, &mut response)?;
    response.truncate(len);
    Ok(response)
}

/// Calls the host function `name` with `request`, writing its response into `response`;
/// returns the response's length.
pub fn host_call_into(
    name: &str,
    request: &[u8],
    response: &mut [u8],
) -> Result<usize, HostCallError> {
    let len = hypercall::host_call(name, request, response).map_err(HostCallError::Host)?;
    if len > response.len() {
        return Err(HostCallError::ResponseTooLarge(len));
    }
    Ok(len)
}
