//! Enough of a 16550 UART at COM1 for unmodified kernels: the `uart_16550` crate's init, its
//! loopback self-test, and transmit. Nothing is ever received from outside.

use std::collections::VecDeque;

/// Register offsets from the base port.
mod offset {
    pub const DATA: u8 = 0; // RBR (read), THR (write), DLL (DLAB)
    pub const IER: u8 = 1; // DLM when DLAB
    pub const IIR_FCR: u8 = 2;
    pub const LCR: u8 = 3;
    pub const MCR: u8 = 4;
    pub const LSR: u8 = 5;
    pub const MSR: u8 = 6;
    pub const SCRATCH: u8 = 7;
}

const LCR_DLAB: u8 = 0x80;
const MCR_LOOPBACK: u8 = 0x10;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;
const LSR_TRANSMITTER_EMPTY: u8 = 0x40;
const IIR_NO_INTERRUPT: u8 = 0x01;
const IIR_FIFO_ENABLED: u8 = 0xC0;
/// CTS, DSR and DCD: a remote end that is there and ready.
const MSR_CONNECTED: u8 = 0x10 | 0x20 | 0x80;
const FIFO_SIZE: usize = 16;

/// The UART's registers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scratch: u8,
    divisor_low: u8,
    divisor_high: u8,
    fifo_enabled: bool,
    /// Bytes looped back in loopback mode, waiting to be read.
    received: VecDeque<u8>,
}

/// The most bytes [`Serial::to_bytes`] makes: seven registers, a count, a full FIFO.
pub(crate) const SERIAL_STATE_MAX: usize = 8 + FIFO_SIZE;

impl Serial {
    /// The registers, for a snapshot file: IER, LCR, MCR, scratch, divisor low and high, FIFO
    /// enabled, then the count and bytes of the receive FIFO.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![
            self.ier,
            self.lcr,
            self.mcr,
            self.scratch,
            self.divisor_low,
            self.divisor_high,
            u8::from(self.fifo_enabled),
            self.received.len() as u8,
        ];
        bytes.extend(&self.received);
        bytes
    }

    /// The registers from [`Serial::to_bytes`]'s bytes; `None` if they cannot be the UART's.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (
            &[
                ier,
                lcr,
                mcr,
                scratch,
                divisor_low,
                divisor_high,
                fifo,
                count,
            ],
            received,
        ) = bytes.split_first_chunk::<8>()?;
        if usize::from(count) != received.len() || received.len() > FIFO_SIZE || fifo > 1 {
            return None;
        }
        Some(Self {
            ier: ier & 0x0F,
            lcr,
            mcr: mcr & 0x1F,
            scratch,
            divisor_low,
            divisor_high,
            fifo_enabled: fifo == 1,
            received: received.iter().copied().collect(),
        })
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// In loopback mode a transmitted byte comes back to the receiver, not out of the port;
    /// it is dropped when the receive FIFO is full, as on the chip.
    fn loop_back(&mut self, value: u8) {
        if self.received.len() < FIFO_SIZE {
            self.received.push_back(value);
        }
    }

    /// A write to register `offset`; returns the byte to transmit, if the write sends one.
    pub(crate) fn write(&mut self, offset: u8, value: u8) -> Option<u8> {
        match offset {
            offset::DATA if self.dlab() => self.divisor_low = value,
            offset::DATA if self.mcr & MCR_LOOPBACK != 0 => self.loop_back(value),
            offset::DATA => return Some(value),
            offset::IER if self.dlab() => self.divisor_high = value,
            offset::IER => self.ier = value & 0x0F,
            offset::IIR_FCR => {
                self.fifo_enabled = value & 0x01 != 0;
                if value & 0x02 != 0 {
                    self.received.clear();
                }
            }
            offset::LCR => self.lcr = value,
            offset::MCR => self.mcr = value & 0x1F,
            offset::SCRATCH => self.scratch = value,
            // LSR and MSR are read-only: writes are ignored, as on the chip.
            _ => {}
        }
        None
    }

    /// A read of register `offset`.
    pub(crate) fn read(&mut self, offset: u8) -> u8 {
        match offset {
            offset::DATA if self.dlab() => self.divisor_low,
            offset::DATA => self.received.pop_front().unwrap_or(0),
            offset::IER if self.dlab() => self.divisor_high,
            offset::IER => self.ier,
            offset::IIR_FCR => {
                IIR_NO_INTERRUPT
                    | if self.fifo_enabled {
                        IIR_FIFO_ENABLED
                    } else {
                        0
                    }
            }
            offset::LCR => self.lcr,
            offset::MCR => self.mcr,
            offset::LSR => {
                let ready = if self.received.is_empty() {
                    0
                } else {
                    LSR_DATA_READY
                };
                LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY | ready
            }
            offset::MSR if self.mcr & MCR_LOOPBACK != 0 => {
                // In loopback the modem inputs mirror the outputs: RTS->CTS, DTR->DSR,
                // OUT1->RI, OUT2->DCD.
                let m = self.mcr;
                ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            }
            offset::MSR => MSR_CONNECTED,
            offset::SCRATCH => self.scratch,
            _ => 0xFF,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registers_round_trip_through_bytes_and_bad_bytes_are_refused() {
        let mut serial = Serial::default();
        serial.write(offset::SCRATCH, 0x42);
        serial.write(offset::LCR, 0x03);
        serial.write(offset::IIR_FCR, 0x01);
        serial.write(offset::MCR, MCR_LOOPBACK);
        serial.write(offset::DATA, b'z');
        let bytes = serial.to_bytes();
        assert!(bytes.len() <= SERIAL_STATE_MAX);
        let mut back = Serial::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.read(offset::DATA), b'z');
        assert_eq!(back.read(offset::SCRATCH), 0x42);
        for bad in [
            &[][..],
            &[0; 7],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 0, 0, 0, 2, 0],
        ] {
            assert!(Serial::from_bytes(bad).is_none(), "{bad:?}");
        }
        let mut overfull = vec![0u8, 0, 0, 0, 0, 0, 0, 17];
        overfull.extend([0u8; 17]);
        assert!(Serial::from_bytes(&overfull).is_none());
    }

    #[test]
    fn transmits_data_writes_unless_in_loopback() {
        let mut serial = Serial::default();
        assert_eq!(serial.write(offset::DATA, b'x'), Some(b'x'));
        serial.write(offset::MCR, MCR_LOOPBACK);
        assert_eq!(serial.write(offset::DATA, b'y'), None);
        assert_eq!(serial.read(offset::LSR) & LSR_DATA_READY, LSR_DATA_READY);
        assert_eq!(serial.read(offset::DATA), b'y');
        assert_eq!(serial.read(offset::LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn scratch_and_divisor_read_back() {
        let mut serial = Serial::default();
        serial.write(offset::SCRATCH, 0x42);
        assert_eq!(serial.read(offset::SCRATCH), 0x42);
        serial.write(offset::LCR, LCR_DLAB);
        serial.write(offset::DATA, 0x01);
        serial.write(offset::IER, 0x00);
        assert_eq!(serial.read(offset::DATA), 0x01);
        serial.write(offset::LCR, 0x03);
        assert_eq!(serial.write(offset::DATA, b'a'), Some(b'a'));
    }

    #[test]
    fn reports_fifo_and_an_idle_transmitter() {
        let mut serial = Serial::default();
        assert_eq!(serial.read(offset::IIR_FCR), IIR_NO_INTERRUPT);
        serial.write(offset::IIR_FCR, 0x07);
        assert_eq!(
            serial.read(offset::IIR_FCR) & IIR_FIFO_ENABLED,
            IIR_FIFO_ENABLED
        );
        let lsr = serial.read(offset::LSR);
        assert_eq!(
            lsr & (LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY),
            LSR_THR_EMPTY | LSR_TRANSMITTER_EMPTY
        );
    }

    #[test]
    fn loopback_mirrors_modem_lines_and_holds_a_fifo() {
        let mut serial = Serial::default();
        serial.write(offset::MCR, MCR_LOOPBACK | 0x0F);
        assert_eq!(serial.read(offset::MSR), 0xF0);
        serial.write(offset::MCR, MCR_LOOPBACK);
        assert_eq!(serial.read(offset::MSR), 0);
        for byte in 0..20u8 {
            serial.write(offset::DATA, byte);
        }
        let received: Vec<u8> = (0..16).map(|_| serial.read(offset::DATA)).collect();
        assert_eq!(received, (0..16).collect::<Vec<u8>>());
        serial.write(offset::MCR, 0x0B);
        assert_eq!(serial.read(offset::MSR), MSR_CONNECTED);
    }
}
