//! Fuzzes mote-host's exit decoder: every port-I/O exit a guest can cause, with every value in
//! its argument registers, must decode to a typed event or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mote_host::decode::{self, PortAccess, PortEvent, Request};

fuzz_target!(|bytes: &[u8]| {
    // port (2) | size selector (1) | out value (4) | six argument registers (48)
    let mut field = bytes.chunks(8).chain(std::iter::repeat(&[][..]));
    let mut word = || {
        let chunk = field.next().unwrap_or(&[]);
        let mut raw = [0u8; 8];
        raw[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(raw)
    };
    let head = word();
    let port = head as u16;
    let size = [1, 2, 4][((head >> 16) % 3) as usize];
    let value = (head >> 24) as u32;
    let args = [word(), word(), word(), word(), word(), word()];
    let access = PortAccess { port, size };
    let event = decode::decode_out(access, value, args);
    if let PortEvent::Hypercall(Ok(request)) = event {
        // Whatever decoded must be safe to serve: buffers never wrap (an abort's texts are read
        // best-effort and may: the run ends whatever they are).
        let buffers = match request {
            Request::ConsoleWrite(b) | Request::OutputWrite(b) | Request::Random(b) => vec![b],
            Request::HostCall {
                name,
                request,
                response,
            } => vec![name, request, response],
            Request::Samples { name, cycles } => {
                assert!((1..=mote_abi::SAMPLE_NAME_MAX).contains(&name.len));
                assert!(cycles.len <= mote_abi::SAMPLES_PER_CALL_MAX * 8);
                vec![name, cycles]
            }
            _ => vec![],
        };
        for buffer in buffers {
            assert!(buffer.address.checked_add(buffer.len).is_some());
        }
    }
    let _ = decode::decode_in(access);
    let _ = decode::out_value(&bytes[..bytes.len().min(8)]);
});
