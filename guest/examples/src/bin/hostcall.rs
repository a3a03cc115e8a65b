//! Calls a function of its host: sends its input to the host function `upper` and writes the
//! answer as its output. The embedder registers `upper` (see `RunConfig::host_function`).
#![no_std]
#![no_main]

mote_guest::entry!(main);

fn main() -> u32 {
    match mote_guest::host_call("upper", mote_guest::input()) {
        Ok(answer) => match mote_guest::output(&answer) {
            Ok(()) => 0,
            Err(error) => {
                mote_guest::println!("writing the output failed: {error:?}");
                1
            }
        },
        Err(error) => {
            mote_guest::println!(
                "host call `upper` failed: {error:?} (an embedder registers `upper`; `mote run` \
                 registers no host functions)"
            );
            2
        }
    }
}
