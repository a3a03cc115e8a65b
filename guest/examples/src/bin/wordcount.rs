//! A function with real logic: counts the lines, words and bytes of its input (like `wc`) and
//! lists the five most frequent words, as its output.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

mote_guest::entry!(main);

fn main() -> Result<(), mote_guest::HypercallError> {
    let input = mote_guest::input();
    let text = String::from_utf8_lossy(input);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for word in text.split_whitespace() {
        let word: String = word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !word.is_empty() {
            *counts.entry(word).or_default() += 1;
        }
    }
    let mut top: Vec<(&String, &u32)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut report = format!(
        "lines {} words {} bytes {}\n",
        text.lines().count(),
        text.split_whitespace().count(),
        input.len()
    );
    for (word, count) in top.iter().take(5) {
        report.push_str(&format!("{count} {word}\n"));
    }
    mote_guest::output(report.as_bytes())
}
