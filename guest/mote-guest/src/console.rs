//! The console: `print!`/`println!`, buffered per line so that a line costs one exit.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::{hypercall, platform};

const LINE_BUFFER: usize = 512;

struct Console {
    buffer: [u8; LINE_BUFFER],
    len: usize,
    /// COM1, opened on first use when not under mote.
    serial: Option<uart_16550::Uart16550<uart_16550::backend::PioBackend>>,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    buffer: [0; LINE_BUFFER],
    len: 0,
    serial: None,
});

impl Console {
    fn flush(&mut self) {
        let mut pending = &self.buffer[..self.len];
        if platform::under_mote() {
            while !pending.is_empty() {
                match hypercall::console_write(pending) {
                    Ok(0) | Err(_) => break,
                    Ok(taken) => pending = &pending[taken.min(pending.len())..],
                }
            }
        } else {
            self.write_serial();
        }
        self.len = 0;
    }

    fn write_serial(&mut self) {
        if self.serial.is_none() {
            // SAFETY: COM1 is the standard port of the first serial line and this console is
            // its only user in the guest.
            let opened = unsafe { uart_16550::Uart16550::new_port(mote_abi::COM1_PORT) };
            self.serial = opened
                .ok()
                .and_then(|mut uart| uart.init(uart_16550::Config::default()).ok().map(|()| uart));
        }
        if let Some(serial) = &mut self.serial {
            serial.send_bytes_exact(&self.buffer[..self.len]);
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            self.buffer[self.len] = byte;
            self.len += 1;
            if byte == b'\n' || self.len == LINE_BUFFER {
                self.flush();
            }
        }
        Ok(())
    }
}

/// Writes formatted text to the console. Used by [`print!`](crate::print).
#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    // Writing to the console cannot fail.
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Sends whatever is buffered to the host now.
pub fn flush() {
    CONSOLE.lock().flush();
}

/// Prints to the console. Text reaches the host at each newline or [`flush`].
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Used by the panic handler: the console lock may be held by the code that panicked.
pub(crate) fn force_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: the guest has one CPU and the panic handler never returns: the holder of the
        // lock will not run again, so breaking it cannot let two writers in at once.
        unsafe { CONSOLE.force_unlock() };
    }
}
