//! Raises the CPU exception its input names, to show how mote reports each:
//! `page-fault` (the default), `divide-by-zero`, `invalid-opcode`, `stack-overflow`,
//! `general-protection`, `breakpoint`.
#![no_std]
#![no_main]

mote_guest::entry!(main);

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = [depth; 64];
    // black_box keeps the frame (and the recursion) from being optimised away.
    core::hint::black_box(&frame);
    recurse(depth + 1) + core::hint::black_box(frame[7])
}

fn main() -> u32 {
    let which = core::str::from_utf8(mote_guest::input())
        .unwrap_or("")
        .trim();
    let which = if which.is_empty() {
        "page-fault"
    } else {
        which
    };
    mote_guest::println!("raising: {which}");
    // SAFETY (each asm block): deliberately faulting instructions; the fault ends the run.
    match which {
        "page-fault" => unsafe {
            core::ptr::read_volatile(0xdead_0000 as *const u64);
        },
        "divide-by-zero" => unsafe {
            core::arch::asm!("xor ecx, ecx", "div ecx", out("eax") _, out("edx") _, out("ecx") _);
        },
        "invalid-opcode" => unsafe { core::arch::asm!("ud2") },
        "stack-overflow" => {
            core::hint::black_box(recurse(0));
        }
        // A privileged instruction in user mode.
        "general-protection" => unsafe { core::arch::asm!("cli; hlt") },
        "breakpoint" => unsafe { core::arch::asm!("int3") },
        other => {
            mote_guest::println!("unknown fault `{other}`");
            return 2;
        }
    }
    mote_guest::println!("{which} did not fault");
    1
}
