//! The guest as a function: input in, output out, randomness and host functions on the side.

use alloc::vec;
use alloc::vec::Vec;

use mote_abi::HypercallError;
use spin::Once;

use crate::hypercall;

static INPUT: Once<&'static [u8]> = Once::new();

pub(crate) fn init(boot_info: &'static bootloader_api::BootInfo) {
    INPUT.call_once(|| match boot_info.ramdisk_addr.into_option() {
        // SAFETY: the loader mapped `ramdisk_len` bytes of ramdisk at `ramdisk_addr`, read-only
        // for the life of the guest.
        Some(address) => unsafe {
            core::slice::from_raw_parts(address as *const u8, boot_info.ramdisk_len as usize)
        },
        None => &[],
    });
}

/// The guest's input: the bytes the host handed it (`mote run --input`). Reading it costs no
/// exit: it is mapped into the guest.
pub fn input() -> &'static [u8] {
    INPUT.get().copied().unwrap_or(&[])
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

/// Tells the host the guest finished initialising; snapshots will start from here.
pub fn ready() {
    hypercall::ready();
}
