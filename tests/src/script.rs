//! Scripts for the `script` test guest (`guest/test-guests/src/bin/script.rs`), which does what
//! its input says, one operation after another: hypercalls, port accesses, memory reads and
//! writes, privileged instructions. The hostile-guest suite and the soak build them here.

use mote_abi::Hypercall;

/// Script arguments that stand for the guest's own places (plus an offset in the low 32 bits).
pub const PLACE: u64 = 0xFFFF_FF00_0000_0000;
/// The guest's writable buffer (64 KiB).
pub const BUFFER: u64 = PLACE;
/// A read-only array of the guest's (64 bytes).
pub const READ_ONLY: u64 = PLACE | 1 << 32;
/// The guest's input.
pub const INPUT: u64 = PLACE | 2 << 32;
/// A page of mote's that user mode may not touch.
pub const KERNEL_PAGE: u64 = PLACE | 3 << 32;

/// A script for the `script` guest.
#[derive(Clone, Default)]
pub struct Script(Vec<u8>);

impl Script {
    /// A hypercall `out` of `width` bytes (1, 2 or 4), call number and arguments as given.
    pub fn call_width(mut self, call: u32, width: u8, args: [u64; 6]) -> Self {
        self.0.push(1);
        self.0.extend(call.to_le_bytes());
        self.0.push(width);
        for arg in args {
            self.0.extend(arg.to_le_bytes());
        }
        self
    }
    /// A hypercall, a 4-byte `out`.
    pub fn call(self, call: Hypercall, args: [u64; 6]) -> Self {
        self.call_width(call as u32, 4, args)
    }
    /// A call, then its result into the output.
    pub fn ask(self, call: Hypercall, args: [u64; 6]) -> Self {
        self.call(call, args).result()
    }
    /// Appends the last hypercall's (or `in`'s, or read's) result to the output, 8 bytes.
    pub fn result(mut self) -> Self {
        self.0.push(8);
        self
    }
    /// An `out` of `width` bytes to `port`.
    pub fn out(mut self, port: u16, width: u8, value: u32) -> Self {
        self.0.push(2);
        self.0.extend(port.to_le_bytes());
        self.0.push(width);
        self.0.extend(value.to_le_bytes());
        self
    }
    /// An `in` of `width` bytes from `port`.
    pub fn inp(mut self, port: u16, width: u8) -> Self {
        self.0.push(3);
        self.0.extend(port.to_le_bytes());
        self.0.push(width);
        self
    }
    /// Reads a byte at `address`.
    pub fn read(mut self, address: u64) -> Self {
        self.0.push(4);
        self.0.extend(address.to_le_bytes());
        self
    }
    /// Writes a byte at `address`.
    pub fn write(mut self, address: u64, value: u8) -> Self {
        self.0.push(5);
        self.0.extend(address.to_le_bytes());
        self.0.push(value);
        self
    }
    /// A privileged or trapping instruction: 0 hlt, 1 cli, 2 wrmsr, 3 mov to CR3, 4 int3,
    /// 5 ud2, 6 rdmsr, 7 mov from CR0, 8 lidt, 9 int 0x80, 10 int 0x21, others divide by zero.
    pub fn instruction(mut self, which: u8) -> Self {
        self.0.push(6);
        self.0.push(which);
        self
    }
    /// Spins forever.
    pub fn spin(mut self) -> Self {
        self.0.push(7);
        self
    }
    /// Writes `bytes` into the guest's memory from `address` on, one byte at a time.
    pub fn write_bytes(mut self, address: u64, bytes: &[u8]) -> Self {
        for (offset, &byte) in (0u64..).zip(bytes) {
            self = self.write(address + offset, byte);
        }
        self
    }
    /// The script's bytes: the guest's input.
    pub fn into_input(self) -> Vec<u8> {
        self.0
    }
}

/// An empty script.
pub fn script() -> Script {
    Script::default()
}

/// Six hypercall arguments, the first two given.
pub fn args(a: u64, b: u64) -> [u64; 6] {
    [a, b, 0, 0, 0, 0]
}
