// The compute-bound workload of `guest_compute_vs_native`. This one file is compiled into the
// `bench-compute` guest and, through `include!`, into the host benchmark, so both time the same
// code. Integer only: guests are soft-float.

/// Mixes `rounds` rounds of xorshift and multiply-add over a small table; returns a checksum so
/// the work cannot be optimised away.
pub fn workload(rounds: u64) -> u64 {
    let mut table = [0u64; 64];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x % 64) as usize;
        table[slot] = table[slot].wrapping_mul(6_364_136_223_846_793_005).wrapping_add(x ^ round);
    }
    table.iter().fold(0, |acc, v| acc.rotate_left(5) ^ v)
}
