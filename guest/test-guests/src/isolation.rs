//! What the two isolation guests share (`isolation`, at CPL3 on mote-guest, and
//! `isolation-kernel`, a plain kernel at CPL0): the input protocol, the patterns a snapshot
//! holds, and the assembly that takes the snapshot with known registers and ends a run with
//! secret ones.
//!
//! Input: `check`, or `pollute <secret byte> <end>` where end is `exit`, `fault`, `spin` or
//! `flood`. Every run first checks that every place it can see holds the snapshot's value and
//! writes `ok` or `bad: <places>` to its output; `pollute` then writes the secret everywhere
//! and ends as told, with the secret in its registers.

#![allow(dead_code)]

use core::arch::naked_asm;

/// What the snapshot holds in every memory area the guests check.
pub const PATTERN: u8 = 0xA5;

/// The general registers (rbx, rcx, rbp, r11, r12, r13, r14, r15) at the snapshot point.
pub const GPR_PATTERNS: [u64; 8] = [
    0x1111_2222_3333_4401,
    0x1111_2222_3333_4402,
    0x1111_2222_3333_4403,
    0x1111_2222_3333_4411,
    0x1111_2222_3333_4412,
    0x1111_2222_3333_4413,
    0x1111_2222_3333_4414,
    0x1111_2222_3333_4415,
];

/// RFLAGS at the snapshot point: CF, PF, AF, ZF, SF, OF (and the fixed bit 1).
pub const FLAGS_PATTERN: u64 = 0x8D7;
/// RFLAGS a polluting run ends with: CF, PF, AF, SF, DF, OF.
pub const FLAGS_SECRET: u64 = 0xC97;
/// The arithmetic flags and DF: what a guest sets freely.
pub const FLAGS_MASK: u64 = 0xCD5;

/// XMM register `i` at the snapshot point: both halves `XMM_BASE + i`.
pub const XMM_BASE: u64 = 0x5151_6161_7171_8100;

#[repr(C, align(16))]
struct XmmPatterns([[u64; 2]; 16]);

static XMM_PATTERNS: XmmPatterns = {
    let mut table = [[0u64; 2]; 16];
    let mut i = 0;
    while i < 16 {
        table[i] = [XMM_BASE + i as u64, XMM_BASE + i as u64];
        i += 1;
    }
    XmmPatterns(table)
};

/// The registers as they were right after `ready_for_input` returned.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rflags: u64,
    pub xmm: [[u64; 2]; 16],
}

impl Registers {
    pub const ZERO: Self = Self {
        rax: 0,
        rbx: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        rbp: 0,
        r8: 0,
        r9: 0,
        r10: 0,
        r11: 0,
        r12: 0,
        r13: 0,
        r14: 0,
        r15: 0,
        rflags: 0,
        xmm: [[0; 2]; 16],
    };

    /// Whether the registers the snapshot fixed hold their patterns (the XMM registers too, if
    /// `sse`), and `ready_for_input` returned a restored run's generation.
    pub fn hold_the_snapshot(&self, sse: bool) -> bool {
        let gprs = [
            self.rbx, self.rcx, self.rbp, self.r11, self.r12, self.r13, self.r14, self.r15,
        ];
        let xmm_ok = !sse
            || self
                .xmm
                .iter()
                .enumerate()
                .all(|(i, x)| *x == [XMM_BASE + i as u64, XMM_BASE + i as u64]);
        gprs == GPR_PATTERNS
            && self.rdx == u64::from(mote_abi::HYPERCALL_PORT)
            && self.rflags & FLAGS_MASK == FLAGS_PATTERN & FLAGS_MASK
            && self.rax >= 1
            && xmm_ok
    }
}

/// How a polluting run ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exit = 0,
    Fault = 1,
    Spin = 2,
    Flood = 3,
}

/// What the input asks for: `None` for a check alone, or the secret and how to end.
pub fn parse(input: &[u8]) -> Option<(u8, End)> {
    let rest = input.strip_prefix(b"pollute ")?;
    let secret = *rest.first()?;
    let end = match rest
        .get(2..)
        .map(|r| r.split(|&b| b == b' ').next().unwrap_or(r))?
    {
        b"exit" => End::Exit,
        b"fault" => End::Fault,
        b"spin" => End::Spin,
        b"flood" => End::Flood,
        _ => return None,
    };
    Some((secret, end))
}

/// Whether `len` bytes at `address` all hold `value` (read volatile: the point is to see what
/// memory really holds).
///
/// # Safety
/// The range must be mapped and readable.
pub unsafe fn holds(address: *const u8, len: usize, value: u8) -> bool {
    let word = u64::from_ne_bytes([value; 8]);
    let words = address.cast::<u64>();
    // SAFETY: the caller vouches for the range; the guests pass 8-aligned ranges.
    (0..len / 8).all(|i| unsafe { words.add(i).read_volatile() } == word)
}

/// Fills `len` bytes at `address` with `value`.
///
/// # Safety
/// The range must be mapped, writable and owned by the caller.
pub unsafe fn fill(address: *mut u8, len: usize, value: u8) {
    let word = u64::from_ne_bytes([value; 8]);
    let words = address.cast::<u64>();
    for i in 0..len / 8 {
        // SAFETY: as the caller vouches.
        unsafe { words.add(i).write_volatile(word) };
    }
}

/// Sets every general register (but rsp), the flags and, with `sse`, the XMM registers to the
/// snapshot's patterns, makes `ready_for_input`, and stores the registers as they are right
/// after it returns into `out`.
macro_rules! ready_with_known_registers {
    ($name:ident, $($load_xmm:literal,)* ; $($store_xmm:literal,)*) => {
        /// # Safety
        /// `out` must point at a writable `Registers`.
        #[unsafe(naked)]
        pub unsafe extern "sysv64" fn $name(out: *mut Registers) {
            naked_asm!(
                "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
                "push rdi",
                "/* XMM patterns at {xmm} */",
                $($load_xmm,)*
                "mov rbx, {rbx}", "mov rcx, {rcx}", "mov rbp, {rbp}", "mov r11, {r11}",
                "mov r12, {r12}", "mov r13, {r13}", "mov r14, {r14}", "mov r15, {r15}",
                "xor esi, esi", "xor edi, edi", "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d",
                "mov edx, {port}",
                "mov eax, {call}",
                "push {flags}",
                "popfq",
                "out dx, eax",
                "pushfq",
                "push r15", "push r14", "push r13", "push r12", "push r11", "push r10",
                "push r9", "push r8", "push rbp", "push rdi", "push rsi", "push rdx", "push rcx",
                "push rbx", "push rax",
                "cld",
                "mov rdi, [rsp + 128]",
                "mov rsi, rsp",
                "mov ecx, 16",
                "rep movsq",
                $($store_xmm,)*
                "add rsp, 128",
                "pop rdi",
                "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
                "ret",
                xmm = sym XMM_PATTERNS,
                rbx = const GPR_PATTERNS[0], rcx = const GPR_PATTERNS[1],
                rbp = const GPR_PATTERNS[2], r11 = const GPR_PATTERNS[3],
                r12 = const GPR_PATTERNS[4], r13 = const GPR_PATTERNS[5],
                r14 = const GPR_PATTERNS[6], r15 = const GPR_PATTERNS[7],
                port = const mote_abi::HYPERCALL_PORT,
                call = const mote_abi::Hypercall::ReadyForInput as u32,
                flags = const FLAGS_PATTERN,
            );
        }
    };
}

ready_with_known_registers!(ready_with_known_registers_sse,
    "movdqa xmm0, [rip + {xmm}]", "movdqa xmm1, [rip + {xmm} + 16]",
    "movdqa xmm2, [rip + {xmm} + 32]", "movdqa xmm3, [rip + {xmm} + 48]",
    "movdqa xmm4, [rip + {xmm} + 64]", "movdqa xmm5, [rip + {xmm} + 80]",
    "movdqa xmm6, [rip + {xmm} + 96]", "movdqa xmm7, [rip + {xmm} + 112]",
    "movdqa xmm8, [rip + {xmm} + 128]", "movdqa xmm9, [rip + {xmm} + 144]",
    "movdqa xmm10, [rip + {xmm} + 160]", "movdqa xmm11, [rip + {xmm} + 176]",
    "movdqa xmm12, [rip + {xmm} + 192]", "movdqa xmm13, [rip + {xmm} + 208]",
    "movdqa xmm14, [rip + {xmm} + 224]", "movdqa xmm15, [rip + {xmm} + 240]",
    ;
    "movdqu [rdi], xmm0", "movdqu [rdi + 16], xmm1", "movdqu [rdi + 32], xmm2",
    "movdqu [rdi + 48], xmm3", "movdqu [rdi + 64], xmm4", "movdqu [rdi + 80], xmm5",
    "movdqu [rdi + 96], xmm6", "movdqu [rdi + 112], xmm7", "movdqu [rdi + 128], xmm8",
    "movdqu [rdi + 144], xmm9", "movdqu [rdi + 160], xmm10", "movdqu [rdi + 176], xmm11",
    "movdqu [rdi + 192], xmm12", "movdqu [rdi + 208], xmm13", "movdqu [rdi + 224], xmm14",
    "movdqu [rdi + 240], xmm15",
);

// Without SSE: some hosts cannot run SSE instructions in kernel mode (kvm_pvm emulates CPL0
// code and fails them).
ready_with_known_registers!(ready_with_known_registers, ;);

/// Puts `secret` in every general register it can (and, with `sse`, every XMM register), sets
/// the flags (DF included) and ends as `end` says, never to return.
macro_rules! end_with_secret_registers {
    ($name:ident, $($fill_xmm:literal,)*) => {
        /// # Safety
        /// Ends the run (or spins until the host stops it).
        #[unsafe(naked)]
        pub unsafe extern "sysv64" fn $name(end: u64, secret: u64) -> ! {
            naked_asm!(
                $($fill_xmm,)*
                "mov rbx, rsi", "mov rcx, rsi", "mov rbp, rsi", "mov r8, rsi", "mov r9, rsi",
                "mov r10, rsi", "mov r11, rsi", "mov r12, rsi", "mov r13, rsi", "mov r14, rsi",
                "mov r15, rsi",
                "mov edx, {port}",
                "cmp rdi, 1", "je 21f",
                "cmp rdi, 2", "je 22f",
                "cmp rdi, 3", "je 23f",
                // exit 0
                "xor edi, edi",
                "mov eax, {exit}",
                "push {flags}", "popfq",
                "out dx, eax",
                "20: jmp 20b",
                // fault
                "21: push {flags}", "popfq",
                "ud2",
                // spin until the deadline
                "22: mov rdi, rsi",
                "push {flags}", "popfq",
                "24: jmp 24b",
                // hypercalls until the limit
                "23: mov rdi, rsi",
                "push {flags}", "popfq",
                "25: mov eax, {nop}",
                "out dx, eax",
                "jmp 25b",
                port = const mote_abi::HYPERCALL_PORT,
                exit = const mote_abi::Hypercall::Exit as u32,
                nop = const mote_abi::Hypercall::Nop as u32,
                flags = const FLAGS_SECRET,
            );
        }
    };
}

end_with_secret_registers!(
    end_with_secret_registers_sse,
    "movq xmm0, rsi",
    "punpcklqdq xmm0, xmm0",
    "movdqa xmm1, xmm0",
    "movdqa xmm2, xmm0",
    "movdqa xmm3, xmm0",
    "movdqa xmm4, xmm0",
    "movdqa xmm5, xmm0",
    "movdqa xmm6, xmm0",
    "movdqa xmm7, xmm0",
    "movdqa xmm8, xmm0",
    "movdqa xmm9, xmm0",
    "movdqa xmm10, xmm0",
    "movdqa xmm11, xmm0",
    "movdqa xmm12, xmm0",
    "movdqa xmm13, xmm0",
    "movdqa xmm14, xmm0",
    "movdqa xmm15, xmm0",
);

end_with_secret_registers!(end_with_secret_registers,);

/// A fixed-size text buffer for the report (no heap in the kernel-mode guest).
pub struct Report {
    bytes: [u8; 512],
    len: usize,
    bad: bool,
}

impl Report {
    pub const fn new() -> Self {
        Self {
            bytes: [0; 512],
            len: 0,
            bad: false,
        }
    }

    fn push(&mut self, text: &[u8]) {
        let take = text.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&text[..take]);
        self.len += take;
    }

    /// Notes `place` as holding something other than the snapshot's value unless `ok`.
    pub fn expect(&mut self, ok: bool, place: &str) {
        if ok {
            return;
        }
        self.push(if self.bad { b", " } else { b"bad: " });
        self.bad = true;
        self.push(place.as_bytes());
    }

    /// `ok`, or `bad: ` and the places.
    pub fn text(&mut self) -> &[u8] {
        if !self.bad {
            return b"ok\n";
        }
        self.push(b"\n");
        &self.bytes[..self.len]
    }
}
