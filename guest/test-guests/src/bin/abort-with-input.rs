//! Aborts with its input as the panic message and the file name: text a hostile guest controls
//! that mote prints on its behalf.
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() {
    let text = core::str::from_utf8(mote_guest::input()).unwrap_or("input that is not UTF-8");
    mote_guest::hypercall::abort(text, text, 7)
}
