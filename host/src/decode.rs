//! Decoding a vCPU exit into a typed event: a pure function of the exit data and the guest's
//! argument registers, so it is tested (and fuzzed) without KVM.
//!
//! Decoding checks everything that can be checked without guest memory: call numbers, access
//! widths, ranges that wrap around the address space, numbers out of range. What is left (are the
//! pages mapped?) is checked when the request is served.

use mote_abi::{
    COM1_PORT, DEBUG_EXIT_PORT, HOST_FUNCTION_NAME_MAX, HYPERCALL_PORT, Hypercall, HypercallError,
    SAMPLE_NAME_MAX, SAMPLES_PER_CALL_MAX, note,
};

/// A port access, as KVM reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAccess {
    /// The port.
    pub port: u16,
    /// Access width in bytes (1, 2 or 4).
    pub size: usize,
}

/// A guest-virtual byte range named in a hypercall. It does not wrap around the address space,
/// except for the texts of an `abort`, which are read best-effort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestBuffer {
    /// Guest-virtual address of the first byte.
    pub address: u64,
    /// Length in bytes.
    pub len: u64,
}

impl GuestBuffer {
    fn new(address: u64, len: u64) -> Result<Self, HypercallError> {
        address.checked_add(len).ok_or(HypercallError::BadAddress)?;
        Ok(Self { address, len })
    }

    /// A range as the guest named it, possibly wrapping: only for texts read best-effort.
    fn unchecked(address: u64, len: u64) -> Self {
        Self { address, len }
    }

    /// The first `max` bytes of the buffer.
    pub fn truncated(self, max: u64) -> Self {
        Self {
            len: self.len.min(max),
            ..self
        }
    }
}

/// A hypercall request, with its arguments checked as far as they can be without guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// End the run.
    Exit {
        /// The exit code.
        code: u32,
    },
    /// Write console text.
    ConsoleWrite(GuestBuffer),
    /// End the run reporting a panic.
    Abort {
        /// The panic message.
        message: GuestBuffer,
        /// The source file.
        file: GuestBuffer,
        /// The source line.
        line: u32,
    },
    /// Append to the run's output.
    OutputWrite(GuestBuffer),
    /// Read the wall clock.
    WallClock,
    /// Fill a buffer with random bytes.
    Random(GuestBuffer),
    /// Call a host function.
    HostCall {
        /// Its name.
        name: GuestBuffer,
        /// The request bytes.
        request: GuestBuffer,
        /// Where the response goes.
        response: GuestBuffer,
    },
    /// The guest finished initialising.
    Ready,
    /// The guest finished initialising and waits for its run's input (a snapshot point).
    ReadyForInput,
    /// Nothing.
    Nop,
    /// Record timing samples of one name.
    Samples {
        /// The name: 1 to `SAMPLE_NAME_MAX` bytes (UTF-8 is checked once it is read).
        name: GuestBuffer,
        /// The samples: an array of little-endian `u64`s, at most `SAMPLES_PER_CALL_MAX` of
        /// them (8 bytes each).
        cycles: GuestBuffer,
    },
    /// End the run reporting a CPU exception.
    Exception {
        /// The exception vector.
        vector: u8,
        /// The error code the CPU pushed (0 if none).
        error_code: u64,
        /// The faulting instruction.
        rip: u64,
        /// CR2: the faulting address of a page fault.
        cr2: u64,
    },
}

/// What one port-I/O exit asks of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortEvent {
    /// A hypercall, or the error to answer it with.
    Hypercall(Result<Request, HypercallError>),
    /// A write to a COM1 register.
    SerialWrite {
        /// Register offset from the base port.
        offset: u8,
        /// The byte written.
        value: u8,
    },
    /// A read of a COM1 register.
    SerialRead {
        /// Register offset from the base port.
        offset: u8,
    },
    /// A write to isa-debug-exit.
    DebugExit {
        /// The value written.
        value: u32,
    },
    /// An access nobody serves.
    Unserved,
}

/// The value of an `out`, from KVM's little-endian data bytes.
pub fn out_value(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

/// Decodes an `out`. `args` are the guest's argument registers (`mote_abi::ARGUMENT_REGISTERS`).
pub fn decode_out(access: PortAccess, value: u32, args: [u64; 6]) -> PortEvent {
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
pub fn decode_in(access: PortAccess) -> PortEvent {
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

fn small<T: TryFrom<u64>>(value: u64) -> Result<T, HypercallError> {
    T::try_from(value).map_err(|_| HypercallError::InvalidArgument)
}

fn decode_hypercall(size: usize, number: u32, a: [u64; 6]) -> Result<Request, HypercallError> {
    if size != 4 {
        return Err(HypercallError::BadAccessWidth);
    }
    let call = Hypercall::from_number(number).ok_or(HypercallError::UnknownCall)?;
    Ok(match call {
        Hypercall::Exit => Request::Exit { code: small(a[0])? },
        Hypercall::ConsoleWrite => Request::ConsoleWrite(GuestBuffer::new(a[0], a[1])?),
        // An abort always ends the run, whatever its arguments: a guest that asks to stop must
        // not be left running. Bad texts are reported as unreadable, a bad line as u32::MAX.
        Hypercall::Abort => Request::Abort {
            message: GuestBuffer::unchecked(a[0], a[1]),
            file: GuestBuffer::unchecked(a[2], a[3]),
            line: u32::try_from(a[4]).unwrap_or(u32::MAX),
        },
        Hypercall::OutputWrite => Request::OutputWrite(GuestBuffer::new(a[0], a[1])?),
        Hypercall::WallClock => Request::WallClock,
        Hypercall::Random => Request::Random(GuestBuffer::new(a[0], a[1])?),
        Hypercall::HostCall => {
            if a[1] > HOST_FUNCTION_NAME_MAX {
                return Err(HypercallError::InvalidArgument);
            }
            Request::HostCall {
                name: GuestBuffer::new(a[0], a[1])?,
                request: GuestBuffer::new(a[2], a[3])?,
                response: GuestBuffer::new(a[4], a[5])?,
            }
        }
        Hypercall::Ready => Request::Ready,
        Hypercall::ReadyForInput => Request::ReadyForInput,
        Hypercall::Nop => Request::Nop,
        Hypercall::Samples => {
            if !(1..=SAMPLE_NAME_MAX).contains(&a[1]) || a[3] > SAMPLES_PER_CALL_MAX {
                return Err(HypercallError::InvalidArgument);
            }
            Request::Samples {
                name: GuestBuffer::new(a[0], a[1])?,
                // At most 8192 samples: 64 KiB, far from overflowing.
                cycles: GuestBuffer::new(a[2], a[3] * 8)?,
            }
        }
        Hypercall::Exception => {
            let vector: u8 = small(a[0])?;
            if usize::from(vector) >= note::EXCEPTION_VECTORS {
                return Err(HypercallError::InvalidArgument);
            }
            Request::Exception {
                vector,
                error_code: a[1],
                rip: a[2],
                cr2: a[3],
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, size: usize, value: u32, args: [u64; 6]) -> PortEvent {
        decode_out(PortAccess { port, size }, value, args)
    }

    fn call(call: Hypercall, args: [u64; 6]) -> Result<Request, HypercallError> {
        match out(HYPERCALL_PORT, 4, call as u32, args) {
            PortEvent::Hypercall(result) => result,
            other => panic!("not a hypercall: {other:?}"),
        }
    }

    fn buffer(address: u64, len: u64) -> GuestBuffer {
        GuestBuffer { address, len }
    }

    #[test]
    fn every_call_decodes_with_its_arguments() {
        let a = [0x1000, 5, 0x2000, 6, 7, 8];
        assert_eq!(call(Hypercall::Exit, a), Ok(Request::Exit { code: 0x1000 }));
        assert_eq!(
            call(Hypercall::ConsoleWrite, a),
            Ok(Request::ConsoleWrite(buffer(0x1000, 5)))
        );
        assert_eq!(
            call(Hypercall::Abort, a),
            Ok(Request::Abort {
                message: buffer(0x1000, 5),
                file: buffer(0x2000, 6),
                line: 7
            })
        );
        assert_eq!(
            call(Hypercall::OutputWrite, a),
            Ok(Request::OutputWrite(buffer(0x1000, 5)))
        );
        assert_eq!(call(Hypercall::WallClock, a), Ok(Request::WallClock));
        assert_eq!(
            call(Hypercall::Random, a),
            Ok(Request::Random(buffer(0x1000, 5)))
        );
        assert_eq!(
            call(Hypercall::HostCall, a),
            Ok(Request::HostCall {
                name: buffer(0x1000, 5),
                request: buffer(0x2000, 6),
                response: buffer(7, 8)
            })
        );
        assert_eq!(call(Hypercall::Ready, a), Ok(Request::Ready));
        assert_eq!(
            call(Hypercall::ReadyForInput, a),
            Ok(Request::ReadyForInput)
        );

        assert_eq!(call(Hypercall::Nop, a), Ok(Request::Nop));
        assert_eq!(
            call(Hypercall::Samples, a),
            Ok(Request::Samples {
                name: buffer(0x1000, 5),
                cycles: buffer(0x2000, 6 * 8)
            })
        );
        assert_eq!(
            call(Hypercall::Exception, [14, 2, 0x1234, 0xdead, 0, 0]),
            Ok(Request::Exception {
                vector: 14,
                error_code: 2,
                rip: 0x1234,
                cr2: 0xdead
            })
        );
    }

    #[test]
    fn bad_hypercalls_decode_to_their_errors() {
        let zero = [0; 6];
        assert_eq!(
            out(HYPERCALL_PORT, 4, 0xDEAD, zero),
            PortEvent::Hypercall(Err(HypercallError::UnknownCall))
        );
        for size in [1, 2] {
            assert_eq!(
                out(HYPERCALL_PORT, size, Hypercall::Nop as u32, zero),
                PortEvent::Hypercall(Err(HypercallError::BadAccessWidth))
            );
        }
        assert_eq!(
            call(Hypercall::Exit, [1 << 32, 0, 0, 0, 0, 0]),
            Err(HypercallError::InvalidArgument)
        );
        let wrapping = [u64::MAX - 1, 4, 0, 0, 0, 0];
        for c in [
            Hypercall::ConsoleWrite,
            Hypercall::OutputWrite,
            Hypercall::Random,
        ] {
            assert_eq!(call(c, wrapping), Err(HypercallError::BadAddress), "{c:?}");
        }
        assert_eq!(
            call(Hypercall::HostCall, [0, 4, 0, 0, u64::MAX, 2]),
            Err(HypercallError::BadAddress)
        );
        assert_eq!(
            call(Hypercall::HostCall, [0, 4096, 0, 0, 0, 0]),
            Err(HypercallError::InvalidArgument)
        );
        // An abort is never refused: it ends the run whatever its arguments.
        assert_eq!(
            call(Hypercall::Abort, [u64::MAX - 1, 4, 0, 0, 1 << 33, 0]),
            Ok(Request::Abort {
                message: buffer(u64::MAX - 1, 4),
                file: buffer(0, 0),
                line: u32::MAX
            })
        );
        assert_eq!(
            call(Hypercall::Exception, [32, 0, 0, 0, 0, 0]),
            Err(HypercallError::InvalidArgument)
        );
    }

    #[test]
    fn sample_calls_are_held_to_their_limits() {
        let samples = |name_len: u64, cycles: u64, count: u64| {
            call(Hypercall::Samples, [0x1000, name_len, cycles, count, 0, 0])
        };
        // Names of 1 to 64 bytes, up to 8192 samples; no samples at all is allowed.
        assert_eq!(
            samples(64, 0x2000, 8192),
            Ok(Request::Samples {
                name: buffer(0x1000, 64),
                cycles: buffer(0x2000, 65536)
            })
        );
        assert_eq!(
            samples(1, 0x2000, 0),
            Ok(Request::Samples {
                name: buffer(0x1000, 1),
                cycles: buffer(0x2000, 0)
            })
        );
        for (name_len, count) in [(0, 1), (65, 1), (u64::MAX, 1), (4, 8193), (4, u64::MAX)] {
            assert_eq!(
                samples(name_len, 0x2000, count),
                Err(HypercallError::InvalidArgument),
                "{name_len} {count}"
            );
        }
        // An array or a name that wraps around the address space.
        assert_eq!(
            samples(4, u64::MAX - 15, 4),
            Err(HypercallError::BadAddress)
        );
        assert_eq!(
            call(Hypercall::Samples, [u64::MAX - 1, 4, 0x2000, 1, 0, 0]),
            Err(HypercallError::BadAddress)
        );
    }

    #[test]
    fn legacy_devices_and_unserved_ports() {
        let zero = [0; 6];
        assert_eq!(
            out(0x3F8, 1, u32::from(b'A'), zero),
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
            out(0xF4, 4, 0x10, zero),
            PortEvent::DebugExit { value: 0x10 }
        );
        assert_eq!(out(0x1234, 1, 0, zero), PortEvent::Unserved);
        assert_eq!(out(0x3F7, 1, 0, zero), PortEvent::Unserved);
        assert_eq!(out(0x400, 1, 0, zero), PortEvent::Unserved);
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

    #[test]
    fn truncation_never_grows_a_buffer() {
        assert_eq!(buffer(8, 100).truncated(10), buffer(8, 10));
        assert_eq!(buffer(8, 5).truncated(10), buffer(8, 5));
    }
}
