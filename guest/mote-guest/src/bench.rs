//! Timing samples for benchmarks: measure code with the TSC and hand the host named samples.
//!
//! [`measure`] times a closure in TSC ticks, less what measuring nothing costs
//! ([`overhead_cycles`]), and records the result as one sample of its name; [`sample`] records
//! a tick count the guest measured itself. Samples are buffered per name and reach the host in
//! batches (the `samples` hypercall, see `docs/abi.md`), where an embedder finds them in
//! `Outcome::samples` and a benchmark rig turns them into statistics. Ticks become time at the
//! TSC frequency, [`time::tsc_khz`](crate::time::tsc_khz) here and `Hypervisor::tsc_khz` on the
//! host.
//!
//! ```ignore
//! use core::hint::black_box;
//! use mote_guest::bench;
//!
//! fn main() {
//!     let data = [7u8; 4096];
//!     for _ in 0..1000 {
//!         // black_box keeps the compiler from computing the hash once, outside the loop.
//!         bench::measure("hash", || fnv1a(black_box(&data)));
//!     }
//!     // Optional: the runtime flushes when main returns or the guest calls `exit`.
//!     bench::flush();
//! }
//! ```
//!
//! # Buffering
//!
//! The runtime buffers up to [`NAMES_BUFFERED`] names at once, [`SAMPLES_BUFFERED`] samples
//! each: a full buffer goes to the host in one call, a name beyond the sixteenth first sends
//! the buffer of the name sampled least recently, and [`flush`] sends everything. An exit costs
//! about 26 µs on the nested hosts mote is measured on; 512 samples a call make that about
//! 50 ns a sample, and a name's buffer is one 4 KiB page. The buffers are in `.bss`, so a
//! guest pays for the pages of the names it uses and nothing else. A hand-over happens
//! between measurements, never inside one.
//!
//! The runtime flushes before the guest exits normally (`main` returning, [`exit`](crate::exit))
//! and, when mote boots the guest to snapshot it, just before the snapshot point: samples
//! taken during `init` go to that boot, not to every run restored from the snapshot. Samples
//! still buffered when the guest panics or takes a CPU exception are lost.
//!
//! Samples are dropped quietly when the guest does not run under mote, when the host is older
//! than the call (it answers `UnknownCall`; the runtime then stops calling), and when a name
//! is not 1 to 64 bytes long (the host would refuse it). A run may report at most 256
//! distinct names and as many samples as its host allows (1 Mi by default): a guest that
//! reports more is stopped, as for any other limit.

use core::arch::x86_64::{__cpuid, __rdtscp, _rdtsc};
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, Ordering};

use mote_abi::{HypercallError, SAMPLE_NAME_MAX};
use spin::{Mutex, Once};

use crate::{hypercall, platform};

/// How many names the runtime buffers samples for at once.
pub const NAMES_BUFFERED: usize = 16;

/// How many samples one name's buffer holds; a full buffer goes to the host in one call.
pub const SAMPLES_BUFFERED: usize = 512;

/// How many empty measurements the calibration takes the fastest of.
const CALIBRATION_ROUNDS: usize = 1000;

/// CPUID leaf `0x8000_0001`, EDX: RDTSCP.
const CPUID_EDX_RDTSCP: u32 = 1 << 27;

/// One name's samples not yet handed over.
struct Buffer {
    /// `None` for a buffer no name has claimed. (An `Option` keeps the static all zeros, so it
    /// lives in `.bss` and costs nothing until touched.)
    name: Option<&'static str>,
    len: usize,
    /// When the name was last sampled, on [`Buffers::clock`].
    last_used: u64,
    cycles: [u64; SAMPLES_BUFFERED],
}

struct Buffers {
    slots: [Buffer; NAMES_BUFFERED],
    /// Counts samples: orders the buffers by last use.
    clock: u64,
}

static BUFFERS: Mutex<Buffers> = Mutex::new(Buffers {
    slots: [const {
        Buffer {
            name: None,
            len: 0,
            last_used: 0,
            cycles: [0; SAMPLES_BUFFERED],
        }
    }; NAMES_BUFFERED],
    clock: 0,
});

/// Set once the host answered that it does not know the call: nothing more is sent.
static HOST_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether any sample waits in the buffers. [`flush`] runs at every exit, and the buffers span
/// 16 pages: looking through them would touch each page, which costs a run restored from a
/// snapshot a page fault apiece (tens of microseconds in all) when it took no sample.
static PENDING: AtomicBool = AtomicBool::new(false);

/// The fastest empty measurement, in ticks; measured on first use.
static OVERHEAD: Once<u64> = Once::new();

/// Whether the CPU has RDTSCP; decided with the calibration, before the first measurement.
static HAS_RDTSCP: AtomicBool = AtomicBool::new(false);

/// Times `f` in TSC ticks and records the result as a sample of `name`; returns what `f`
/// returns.
///
/// The TSC is read with the fences Intel's manual gives for timing a stretch of code: `lfence;
/// rdtsc; lfence` before (everything earlier has finished, nothing of `f` has started), and
/// `rdtscp; lfence` after (`f` has finished, nothing later has started). CPUID, the older
/// recipe's serialising instruction, is avoided: under hardware virtualization it exits to
/// the host on every call. The cost of measuring nothing ([`overhead_cycles`]) is taken off,
/// so a sample is the ticks `f` itself took (0 for code faster than the fences' own jitter).
///
/// `f`'s result passes through [`black_box`] before the second reading, so its work is done
/// by then. Give `f`'s inputs the same treatment (`black_box(&data)`), or the compiler may
/// compute the result once, outside the measurement.
#[inline]
pub fn measure<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    let overhead = overhead_cycles();
    let start = start_timestamp();
    let result = black_box(f());
    let end = end_timestamp();
    sample(name, end.saturating_sub(start).saturating_sub(overhead));
    result
}

/// Records one sample of `name`: `cycles` TSC ticks, measured by the caller. Buffered; see the
/// [module docs](self) for when samples reach the host and when they are dropped. `name` must
/// be 1 to 64 bytes; samples of other names are dropped.
pub fn sample(name: &'static str, cycles: u64) {
    if !accepting() || name.is_empty() || name.len() as u64 > SAMPLE_NAME_MAX {
        return;
    }
    BUFFERS.lock().push(name, cycles);
}

/// Hands every buffered sample to the host now.
pub fn flush() {
    if !PENDING.swap(false, Ordering::Relaxed) {
        return;
    }
    let mut buffers = BUFFERS.lock();
    for buffer in &mut buffers.slots {
        buffer.hand_over();
    }
}

/// What [`measure`] takes off every sample: the fewest ticks of 1000 empty measurements, taken
/// on the first call (about a thousand TSC readings, some tens of microseconds).
pub fn overhead_cycles() -> u64 {
    *OVERHEAD.call_once(calibrate)
}

fn calibrate() -> u64 {
    // Leaf 0x8000_0001 exists on every x86_64 CPU. (In user mode on some hypervisors CPUID
    // answers for the real CPU, not mote's table; that is the CPU that runs RDTSCP there.)
    let leaf = __cpuid(0x8000_0001);
    HAS_RDTSCP.store(leaf.edx & CPUID_EDX_RDTSCP != 0, Ordering::Relaxed);
    (0..CALIBRATION_ROUNDS)
        .map(|_| {
            let start = start_timestamp();
            black_box(());
            end_timestamp().saturating_sub(start)
        })
        .min()
        .unwrap_or(0)
}

/// Reads the TSC once everything before has finished and before anything after starts.
#[inline(always)]
fn start_timestamp() -> u64 {
    lfence();
    // SAFETY: RDTSC only reads the TSC; mote leaves CR4.TSD clear, so user mode may.
    let ticks = unsafe { _rdtsc() };
    lfence();
    ticks
}

/// Reads the TSC once everything before has finished, and holds back what comes after.
#[inline(always)]
fn end_timestamp() -> u64 {
    if !HAS_RDTSCP.load(Ordering::Relaxed) {
        return start_timestamp();
    }
    let mut processor = 0u32;
    // SAFETY: RDTSCP only reads the TSC and IA32_TSC_AUX into `processor`, a local; the CPU
    // has it (CPUID said so) and CR4.TSD is clear.
    let ticks = unsafe { __rdtscp(&mut processor) };
    lfence();
    ticks
}

/// LFENCE: later instructions start only once every earlier one has finished. Written as
/// `asm!` rather than `_mm_lfence`: that intrinsic is an SSE2 function, and this target turns
/// SSE off, so it would be a call, not an instruction, inside the measured stretch.
#[inline(always)]
fn lfence() {
    // SAFETY: LFENCE only orders instructions; it touches no memory or register.
    unsafe { core::arch::asm!("lfence", options(nostack, preserves_flags)) };
}

/// Whether samples can reach a host.
fn accepting() -> bool {
    platform::under_mote() && !HOST_REFUSED.load(Ordering::Relaxed)
}

impl Buffers {
    fn push(&mut self, name: &'static str, cycles: u64) {
        PENDING.store(true, Ordering::Relaxed);
        self.clock += 1;
        let index = match self.slots.iter().position(|b| b.holds(name)) {
            Some(index) => index,
            None => self.claim(name),
        };
        let buffer = &mut self.slots[index];
        buffer.cycles[buffer.len] = cycles;
        buffer.len += 1;
        buffer.last_used = self.clock;
        if buffer.len == SAMPLES_BUFFERED {
            buffer.hand_over();
        }
    }

    /// A buffer for `name`: a free one, or the one sampled least recently, handed over first.
    fn claim(&mut self, name: &'static str) -> usize {
        let index = match self.slots.iter().position(|b| b.name.is_none()) {
            Some(free) => free,
            None => {
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.last_used)
                    .map_or(0, |(index, _)| index);
                self.slots[oldest].hand_over();
                oldest
            }
        };
        self.slots[index].name = Some(name);
        index
    }
}

impl Buffer {
    fn holds(&self, name: &str) -> bool {
        // The same literal is usually the same pointer: compare bytes only when it is not.
        self.name
            .is_some_and(|own| core::ptr::eq(own, name) || own == name)
    }

    /// Sends the buffered samples to the host and empties the buffer; it keeps its name.
    fn hand_over(&mut self) {
        if let Some(name) = self.name
            && self.len > 0
            && accepting()
            && hypercall::samples(name, &self.cycles[..self.len])
                == Err(HypercallError::UnknownCall)
        {
            // A host older than the call: drop samples from now on rather than ask again.
            HOST_REFUSED.store(true, Ordering::Relaxed);
        }
        self.len = 0;
    }
}
