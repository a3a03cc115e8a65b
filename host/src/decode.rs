//! Decoding a vCPU exit into a typed event: a pure function of the exit data and the guest's
//! argument registers, so it is tested (and can be fuzzed) without KVM.

use mote_abi::{COM1_PORT, DEBUG_EXIT_PORT, HYPERCALL_PORT, Hypercall, HypercallError};

/// A port access, as KVM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortAccess {
    /// The port.
    pub port: u16,
    /// Access width in bytes (1, 2 or 4).
    pub size: usize,
}

/// A hypercall request, with its arguments still unchecked against guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// End the run.
    Exit { code: u32 },
    /// Write console text from a guest-virtual range.
    ConsoleWrite { address: u64, len: u64 },
}

/// What one port-I/O exit asks of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PortEvent {
    /// A hypercall, or the error to answer it with.
    Hypercall(Result<Request, HypercallError>),
    /// A write to a COM1 register.
    SerialWrite { offset: u8, value: u8 },
    /// A read of a COM1 register.
    SerialRead { offset: u8 },
    /// A write to isa-debug-exit.
    DebugExit { value: u32 },
    /// An access nobody serves.
    Unserved,
}

/// The value of an `out`, from KVM's little-endian data bytes.
pub(crate) fn out_value(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

/// Decodes an `out`. `args` are the guest's `rdi` and `rsi`.
pub(crate) fn decode_out(access: PortAccess, value: u32, args: [u64; 2]) -> PortEvent {
    match access.port {
        HYPERCALL_PORT => PortEvent::Hypercall(decode_hypercall(access.size, value, args)),
        port if is_com1(port) => PortEvent::SerialWrite {
            offset: (port - COM1_PORT) as u8,
            value: value as u8,
        },
        DEBUG_EXIT_PORT => PortEvent::DebugExit { value },
        _ => PortEvent::Unserved,
    }
}

/// Decodes an `in`.
pub(crate) fn decode_in(access: PortAccess) -> PortEvent {
    match access.port {
        port if is_com1(port) => PortEvent::SerialRead {
            offset: (port - COM1_PORT) as u8,
        },
        _ => PortEvent::Unserved,
    }
}

fn is_com1(port: u16) -> bool {
    (COM1_PORT..COM1_PORT + 8).contains(&port)
}

fn decode_hypercall(size: usize, number: u32, args: [u64; 2]) -> Result<Request, HypercallError> {
    if size != 4 {
        return Err(HypercallError::BadAccessWidth);
    }
    match Hypercall::from_number(number).ok_or(HypercallError::UnknownCall)? {
        Hypercall::Exit => {
            let code = u32::try_from(args[0]).map_err(|_| HypercallError::InvalidArgument)?;
            Ok(Request::Exit { code })
        }
        Hypercall::ConsoleWrite => Ok(Request::ConsoleWrite {
            address: args[0],
            len: args[1],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, size: usize, value: u32, args: [u64; 2]) -> PortEvent {
        decode_out(PortAccess { port, size }, value, args)
    }

    #[test]
    fn hypercalls_decode_with_their_arguments() {
        assert_eq!(
            out(HYPERCALL_PORT, 4, Hypercall::Exit as u32, [7, 0]),
            PortEvent::Hypercall(Ok(Request::Exit { code: 7 }))
        );
        assert_eq!(
            out(
                HYPERCALL_PORT,
                4,
                Hypercall::ConsoleWrite as u32,
                [0x1000, 5]
            ),
            PortEvent::Hypercall(Ok(Request::ConsoleWrite {
                address: 0x1000,
                len: 5
            }))
        );
    }

    #[test]
    fn bad_hypercalls_decode_to_their_errors() {
        assert_eq!(
            out(HYPERCALL_PORT, 4, 0xDEAD, [0, 0]),
            PortEvent::Hypercall(Err(HypercallError::UnknownCall))
        );
        assert_eq!(
            out(HYPERCALL_PORT, 1, Hypercall::Exit as u32, [0, 0]),
            PortEvent::Hypercall(Err(HypercallError::BadAccessWidth))
        );
        assert_eq!(
            out(HYPERCALL_PORT, 4, Hypercall::Exit as u32, [1 << 32, 0]),
            PortEvent::Hypercall(Err(HypercallError::InvalidArgument))
        );
    }

    #[test]
    fn legacy_devices_and_unserved_ports() {
        assert_eq!(
            out(0x3F8, 1, u32::from(b'A'), [0, 0]),
            PortEvent::SerialWrite {
                offset: 0,
                value: b'A'
            }
        );
        assert_eq!(
            decode_in(PortAccess {
                port: 0x3FD,
                size: 1
            }),
            PortEvent::SerialRead { offset: 5 }
        );
        assert_eq!(
            out(0xF4, 4, 0x10, [0, 0]),
            PortEvent::DebugExit { value: 0x10 }
        );
        assert_eq!(out(0x1234, 1, 0, [0, 0]), PortEvent::Unserved);
        assert_eq!(out(0x3F7, 1, 0, [0, 0]), PortEvent::Unserved);
        assert_eq!(out(0x400, 1, 0, [0, 0]), PortEvent::Unserved);
        assert_eq!(
            decode_in(PortAccess {
                port: HYPERCALL_PORT,
                size: 4
            }),
            PortEvent::Unserved
        );
    }

    #[test]
    fn out_values_are_little_endian_of_any_width() {
        assert_eq!(out_value(&[0x11]), 0x11);
        assert_eq!(out_value(&[0x34, 0x12]), 0x1234);
        assert_eq!(out_value(&[1, 2, 3, 4]), 0x0403_0201);
        assert_eq!(out_value(&[]), 0);
        assert_eq!(out_value(&[1, 2, 3, 4, 5, 6]), 0x0403_0201);
    }
}
