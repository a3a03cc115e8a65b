//! Does what its input says, one operation after another: hypercalls with any arguments, port
//! accesses of any width, memory reads and writes anywhere, privileged instructions, spinning.
//! The hostile-guest suite scripts it, and the `run_path` fuzz target feeds it arbitrary bytes.
//!
//! An operation is a byte, then its operands, little-endian:
//!
//! | op | operands | does |
//! |---|---|---|
//! | 1 | call: u32, width: u8, six args: u64 each | a hypercall `out` of that width (1, 2 or 4; others 4) |
//! | 2 | port: u16, width: u8, value: u32 | an `out` |
//! | 3 | port: u16, width: u8 | an `in` |
//! | 4 | address: u64 | reads a byte there |
//! | 5 | address: u64, value: u8 | writes a byte there |
//! | 6 | which: u8 | a privileged or trapping instruction (see `instruction`) |
//! | 7 | - | spins forever |
//! | 8 | - | appends the last hypercall's result to the output (8 bytes) |
//!
//! An argument or address of the form `PLACE | k << 32 | offset` stands for `offset` bytes into
//! a place of the guest's own: k = 0 a writable buffer, 1 a read-only one, 2 the input, 3 a page
//! user mode may not touch (mote's kernel stack slot). A script that ends, or that runs out of
//! bytes mid-operation, exits 0; an unknown operation exits 3.
#![no_std]
#![no_main]

use core::arch::asm;
use core::ptr::addr_of_mut;

use mote_abi::HYPERCALL_PORT;

mote_guest::entry!(main);

/// Arguments with these top 24 bits set stand for places of the guest's own.
const PLACE: u64 = 0xFFFF_FF00_0000_0000;

/// The first kernel-stack page of a user-mode guest: mote maps its kernel stacks supervisor-only
/// in the first free 512 GiB slot after the guest's own, here (no ASLR) slot 6, above a guard
/// page. The suite checks the fault's error code says "present", so a move of the slot shows.
const KERNEL_STACK_PAGE: u64 = 0x300_0000_1000;

const BUFFER_LEN: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Buffer([u8; BUFFER_LEN]);

static mut BUFFER: Buffer = Buffer([0; BUFFER_LEN]);
static READ_ONLY: [u8; 64] = [0x42; 64];

fn place(value: u64) -> u64 {
    if value & PLACE != PLACE {
        return value;
    }
    let offset = value & 0xFFFF_FFFF;
    let base = match (value >> 32) & 0xFF {
        0 => addr_of_mut!(BUFFER) as u64,
        1 => READ_ONLY.as_ptr() as u64,
        2 => mote_guest::input().as_ptr() as u64,
        3 => KERNEL_STACK_PAGE,
        _ => return value,
    };
    base.wrapping_add(offset)
}

struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

fn hypercall(call: u32, width: u8, a: [u64; 6]) -> u64 {
    let result: u64;
    // SAFETY: an `out` to mote's port with whatever the script says: the point is to see the
    // host refuse what it must. The host writes rax only.
    unsafe {
        match width {
            1 => {
                asm!("out dx, al", in("dx") HYPERCALL_PORT, inlateout("rax") u64::from(call) => result,
                in("rdi") a[0], in("rsi") a[1], in("r8") a[2], in("r9") a[3], in("r10") a[4],
                in("r12") a[5], options(nostack))
            }
            2 => {
                asm!("out dx, ax", in("dx") HYPERCALL_PORT, inlateout("rax") u64::from(call) => result,
                in("rdi") a[0], in("rsi") a[1], in("r8") a[2], in("r9") a[3], in("r10") a[4],
                in("r12") a[5], options(nostack))
            }
            _ => {
                asm!("out dx, eax", in("dx") HYPERCALL_PORT, inlateout("rax") u64::from(call) => result,
                in("rdi") a[0], in("rsi") a[1], in("r8") a[2], in("r9") a[3], in("r10") a[4],
                in("r12") a[5], options(nostack))
            }
        }
    }
    result
}

fn port_out(port: u16, width: u8, value: u32) {
    // SAFETY: a port write the script asked for; the host serves it or ends the run.
    unsafe {
        match width {
            1 => asm!("out dx, al", in("dx") port, in("al") value as u8, options(nostack)),
            2 => asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nostack)),
            _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack)),
        }
    }
}

fn port_in(port: u16, width: u8) -> u32 {
    let value: u32;
    // SAFETY: a port read the script asked for.
    unsafe {
        match width {
            1 => asm!("in al, dx", in("dx") port, out("eax") value, options(nostack)),
            2 => asm!("in ax, dx", in("dx") port, out("eax") value, options(nostack)),
            _ => asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack)),
        }
    }
    value
}

/// Instructions user mode may not run (or that trap): each ends the run as a CPU exception.
fn instruction(which: u8) {
    // SAFETY: each faults in user mode; the runtime reports the exception and the run ends.
    unsafe {
        match which {
            0 => asm!("hlt", options(nostack)),
            1 => asm!("cli", options(nostack)),
            2 => asm!("wrmsr", in("ecx") 0x10u32, in("eax") 0u32, in("edx") 0u32, options(nostack)),
            3 => asm!("mov cr3, {}", in(reg) 0u64, options(nostack)),
            4 => asm!("int3", options(nostack)),
            5 => asm!("ud2", options(nostack)),
            6 => asm!("rdmsr", in("ecx") 0x10u32, out("eax") _, out("edx") _, options(nostack)),
            7 => asm!("mov {}, cr0", out(reg) _, options(nostack)),
            8 => asm!("lidt [{}]", in(reg) &[0u8; 10], options(nostack)),
            9 => asm!("int 0x80", options(nostack)),
            10 => asm!("int 0x21", options(nostack)),
            _ => asm!("xor ecx, ecx", "div ecx", out("eax") _, out("edx") _, out("ecx") _,
                options(nostack)),
        }
    }
}

fn main() -> u32 {
    let mut script = Script(mote_guest::input());
    let mut last = 0u64;
    while let Some(op) = script.u8() {
        let done = match op {
            1 => (|| {
                let (call, width) = (script.u32()?, script.u8()?);
                let mut args = [0u64; 6];
                for arg in &mut args {
                    *arg = place(script.u64()?);
                }
                last = hypercall(call, width, args);
                Some(())
            })(),
            2 => (|| {
                let (port, width, value) = (script.u16()?, script.u8()?, script.u32()?);
                port_out(port, width, value);
                Some(())
            })(),
            3 => (|| {
                let (port, width) = (script.u16()?, script.u8()?);
                last = u64::from(port_in(port, width));
                Some(())
            })(),
            4 => (|| {
                let address = place(script.u64()?) as *const u8;
                // SAFETY: deliberately anywhere: an unmapped address faults and the run ends.
                last = u64::from(unsafe { address.read_volatile() });
                Some(())
            })(),
            5 => (|| {
                let (address, value) = (place(script.u64()?) as *mut u8, script.u8()?);
                // SAFETY: as above.
                unsafe { address.write_volatile(value) };
                Some(())
            })(),
            6 => script.u8().map(instruction),
            7 => loop {
                core::hint::spin_loop();
            },
            8 => mote_guest::output(&last.to_le_bytes()).ok(),
            _ => return 3,
        };
        if done.is_none() {
            break;
        }
    }
    0
}
