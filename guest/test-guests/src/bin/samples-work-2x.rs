//! Measures two units of a fixed integer loop 200 times (timing samples named `work`); see
//! `../samples_work.rs`.
#![no_std]
#![no_main]

#[path = "../samples_work.rs"]
mod samples_work;

mote_guest::entry!(main, init = samples_work::init);

fn main(_: ()) {
    samples_work::run(2);
}
