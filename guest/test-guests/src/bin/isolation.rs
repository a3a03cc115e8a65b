//! Isolation between runs restored from one snapshot, in user mode (CPL3): every run checks that
//! its heap, stack, statics, registers (general, flags, SSE), the host's writes (random bytes,
//! a host-call reply) and its input window hold the snapshot's values; a polluting run then
//! writes a secret into all of them. See `../isolation.rs` for the input.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../isolation.rs"]
mod isolation;

use core::alloc::Layout;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicUsize, Ordering};

use isolation::{PATTERN, Registers, Report, fill, holds, parse};

mote_guest::entry!(main, init = init);

const AREA: usize = 8192;
const HOST_AREA: usize = 256;
/// How far below the snapshot point's stack frame the checked stack area starts.
const STACK_DEPTH: usize = 40 * 1024;
/// How much of the input window past the input a run checks.
const WINDOW_CHECKED: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Area([u8; AREA]);

static mut STATICS: Area = Area([0; AREA]);
static mut RANDOM: Area = Area([0; AREA]);
static mut HOST_REPLY: Area = Area([0; AREA]);
static mut REGISTERS: Registers = Registers::ZERO;
static HEAP_BLOCK: AtomicUsize = AtomicUsize::new(0);
static STACK_AREA: AtomicUsize = AtomicUsize::new(0);

fn heap_layout() -> Layout {
    Layout::from_size_align(AREA, 8).unwrap_or(Layout::new::<u64>())
}

fn init() {
    // SAFETY: the statics are this guest's own, used by one thread; the heap block is freed
    // after it is filled and only its address is kept; the stack area lies far below every
    // frame this guest uses (its stack is 64 KiB), and the snapshot point's assembly is given
    // a valid `Registers`.
    unsafe {
        fill(addr_of_mut!(STATICS).cast(), AREA, PATTERN);
        fill(addr_of_mut!(RANDOM).cast(), AREA, PATTERN);
        fill(addr_of_mut!(HOST_REPLY).cast(), AREA, PATTERN);
        let block = alloc::alloc::alloc(heap_layout());
        fill(block, AREA, PATTERN);
        HEAP_BLOCK.store(block as usize, Ordering::Relaxed);
        alloc::alloc::dealloc(block, heap_layout());
        let area = (stack_pointer() - STACK_DEPTH) & !7;
        fill(area as *mut u8, AREA, PATTERN);
        STACK_AREA.store(area, Ordering::Relaxed);
        isolation::ready_with_known_registers_sse(addr_of_mut!(REGISTERS));
    }
}

fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads RSP.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack)) };
    sp
}

fn main(_: ()) -> Result<(), mote_guest::HypercallError> {
    let input = mote_guest::input();
    let mut report = Report::new();
    // SAFETY: every range read is this guest's own memory, mapped and readable: its statics,
    // the freed heap block, the stack area below every frame, and the input window, which mote
    // maps for the whole input capacity (1 MiB, more than the input and the part checked).
    unsafe {
        let registers = addr_of_mut!(REGISTERS).read();
        report.expect(registers.hold_the_snapshot(true), "registers");
        report.expect(
            holds(addr_of_mut!(STATICS).cast(), AREA, PATTERN),
            "statics",
        );
        // The allocator keeps its free-list node in the first bytes of a freed block.
        let heap = HEAP_BLOCK.load(Ordering::Relaxed) as *const u8;
        report.expect(holds(heap.add(64), AREA - 64, PATTERN), "heap");
        let stack = STACK_AREA.load(Ordering::Relaxed) as *const u8;
        report.expect(holds(stack, AREA, PATTERN), "stack");
        report.expect(
            holds(addr_of_mut!(RANDOM).cast(), HOST_AREA, PATTERN),
            "random bytes",
        );
        report.expect(
            holds(addr_of_mut!(HOST_REPLY).cast(), HOST_AREA, PATTERN),
            "host-call reply",
        );
        let window = input.as_ptr();
        let clean = (input.len()..WINDOW_CHECKED).all(|i| window.add(i).read_volatile() == 0);
        report.expect(!input.is_empty() && clean, "input window");
    }
    mote_guest::output(report.text())?;
    let Some((secret, end)) = parse(input) else {
        return Ok(());
    };
    // SAFETY: as above, and the block allocated here is this guest's until the run ends.
    unsafe {
        fill(addr_of_mut!(STATICS).cast(), AREA, secret);
        let block = alloc::alloc::alloc(heap_layout());
        if block as usize != HEAP_BLOCK.load(Ordering::Relaxed) {
            mote_guest::output(b"the heap block moved\n")?;
        }
        fill(block, AREA, secret);
        fill(STACK_AREA.load(Ordering::Relaxed) as *mut u8, AREA, secret);
        let mut local = [secret; 12 * 1024];
        core::hint::black_box(&mut local);
        let random = core::slice::from_raw_parts_mut(addr_of_mut!(RANDOM).cast::<u8>(), HOST_AREA);
        mote_guest::random_bytes(random)?;
        let reply =
            core::slice::from_raw_parts_mut(addr_of_mut!(HOST_REPLY).cast::<u8>(), HOST_AREA);
        let _ = mote_guest::host_call_into("secret", &[secret], reply);
        let secret_word = u64::from_ne_bytes([secret; 8]);
        isolation::end_with_secret_registers_sse(end as u64, secret_word)
    }
}
