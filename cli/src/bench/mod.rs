//! `mote bench`: run a guest many times and report its timings.

// Until the command uses all of it.
#![allow(dead_code)]

pub mod stats;
