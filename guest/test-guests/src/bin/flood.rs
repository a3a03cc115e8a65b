//! Tries to make the host spend without bound, as its input says: `console` (text forever),
//! `output` (output forever), `hypercalls` (no-op calls forever), `serial` (COM1 bytes forever).
//! Only mote's limits stop it. `burst` writes 128 KiB of console text, then exits 0.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() -> u32 {
    let chunk = [b'x'; 4096];
    let which = core::str::from_utf8(mote_guest::input())
        .unwrap_or("")
        .trim();
    if which == "burst" {
        for _ in 0..32 {
            let _ = mote_guest::hypercall::console_write(&chunk);
        }
        return 0;
    }
    loop {
        match which {
            "console" => {
                let _ = mote_guest::hypercall::console_write(&chunk);
            }
            "output" => {
                let _ = mote_guest::hypercall::output_write(&chunk);
            }
            "hypercalls" => mote_guest::hypercall::nop(),
            "serial" => {
                // SAFETY: a byte to COM1's transmit register; under mote it is console text.
                unsafe {
                    core::arch::asm!("out dx, al", in("dx") 0x3F8u16, in("al") b'y',
                        options(nomem, nostack));
                }
            }
            _ => return 2,
        }
    }
}
