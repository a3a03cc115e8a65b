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
        report.expect(
            !avx_usable() || ymm_upper_halves_are_zero(),
            "AVX registers",
        );
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
        if avx_usable() {
            // The SSE writes that end the run keep these upper halves.
            fill_ymm_upper_halves(secret_word);
        }
        isolation::end_with_secret_registers_sse(end as u64, secret_word)
    }
}

/// Whether this CPU lets the guest use AVX: CPUID says AVX and OSXSAVE. (Some hosts run CPUID
/// natively in user mode, kvm_pvm among them, and let user mode use AVX although mote never
/// enables it: the isolation of its registers is checked wherever they can be used.)
fn avx_usable() -> bool {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    ecx & (1 << 27) != 0 && ecx & (1 << 28) != 0
}

/// Whether the upper halves of YMM0-YMM15 hold zero, as the snapshot's (it never used AVX).
fn ymm_upper_halves_are_zero() -> bool {
    let mut uppers = [[0u64; 2]; 16];
    // SAFETY: AVX is usable (the caller checked); the stores stay inside `uppers`.
    unsafe {
        core::arch::asm!(
            "vextractf128 [{p}], ymm0, 1", "vextractf128 [{p} + 16], ymm1, 1",
            "vextractf128 [{p} + 32], ymm2, 1", "vextractf128 [{p} + 48], ymm3, 1",
            "vextractf128 [{p} + 64], ymm4, 1", "vextractf128 [{p} + 80], ymm5, 1",
            "vextractf128 [{p} + 96], ymm6, 1", "vextractf128 [{p} + 112], ymm7, 1",
            "vextractf128 [{p} + 128], ymm8, 1", "vextractf128 [{p} + 144], ymm9, 1",
            "vextractf128 [{p} + 160], ymm10, 1", "vextractf128 [{p} + 176], ymm11, 1",
            "vextractf128 [{p} + 192], ymm12, 1", "vextractf128 [{p} + 208], ymm13, 1",
            "vextractf128 [{p} + 224], ymm14, 1", "vextractf128 [{p} + 240], ymm15, 1",
            p = in(reg) uppers.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    uppers.iter().all(|u| *u == [0, 0])
}

/// Puts `secret` in the upper halves of YMM0-YMM15.
fn fill_ymm_upper_halves(secret: u64) {
    let words = [secret; 2];
    // SAFETY: AVX is usable (the caller checked); the registers are caller-saved and the run
    // ends right after.
    unsafe {
        core::arch::asm!(
            "vbroadcastf128 ymm0, [{p}]", "vbroadcastf128 ymm1, [{p}]",
            "vbroadcastf128 ymm2, [{p}]", "vbroadcastf128 ymm3, [{p}]",
            "vbroadcastf128 ymm4, [{p}]", "vbroadcastf128 ymm5, [{p}]",
            "vbroadcastf128 ymm6, [{p}]", "vbroadcastf128 ymm7, [{p}]",
            "vbroadcastf128 ymm8, [{p}]", "vbroadcastf128 ymm9, [{p}]",
            "vbroadcastf128 ymm10, [{p}]", "vbroadcastf128 ymm11, [{p}]",
            "vbroadcastf128 ymm12, [{p}]", "vbroadcastf128 ymm13, [{p}]",
            "vbroadcastf128 ymm14, [{p}]", "vbroadcastf128 ymm15, [{p}]",
            p = in(reg) words.as_ptr(),
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            options(nostack, preserves_flags),
        );
    }
}
