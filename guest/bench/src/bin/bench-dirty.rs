//! Writes one byte into each of N distinct 4 KiB pages, then exits 0 with no output: the
//! function whose cost in a pool is the pages it dirties. Input: N, in decimal (0 to 1040).
#![no_std]
#![no_main]

mote_guest::entry!(main);

const PAGE_SIZE: usize = 4096;
/// The 1024 pages the benchmark writes at most, and a margin.
const PAGES: usize = 1024 + 16;

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE]);

/// The pages to write: zeroed, so in `.bss` (the heap holds only 256 KiB).
static mut AREA: [Page; PAGES] = [const { Page([0; PAGE_SIZE]) }; PAGES];

fn main() -> u32 {
    let Some(pages) = core::str::from_utf8(mote_guest::input())
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&pages| pages <= PAGES)
    else {
        mote_guest::println!("the input must be a number of pages from 0 to {PAGES}");
        return 1;
    };
    let area = (&raw mut AREA).cast::<u8>();
    for page in 0..pages {
        // SAFETY: `page < PAGES`, so the byte is inside AREA; nothing else in the guest refers
        // to AREA, so the write races with no access.
        unsafe { area.add(page * PAGE_SIZE).write_volatile(1) };
    }
    0
}
