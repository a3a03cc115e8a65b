//! Option values as people write them: sizes, durations, resolutions.

use std::time::Duration;

/// Parses `4096`, `64K`, `16M`, `1G` (binary units, optional trailing `iB` or `B`).
pub fn size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let number = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match number.chars().last() {
        Some('K') => (&number[..number.len() - 1], 10),
        Some('M') => (&number[..number.len() - 1], 20),
        Some('G') => (&number[..number.len() - 1], 30),
        _ => (number, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 64M, 1G or 4194304"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A run's deadline, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    After(Duration),
    Never,
}

/// Parses `none`, or a duration as [`duration`] does.
pub fn timeout(text: &str) -> Result<Deadline, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Deadline::Never);
    }
    duration(text).map(Deadline::After)
}

/// Parses `500ms`, `2s`, `1m 30s`; zero is refused (it would stop every guest at once).
pub fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 500ms, 2s or 1m"))?;
    if duration.is_zero() {
        return Err("a timeout of zero would stop every guest at once".into());
    }
    Ok(duration)
}

/// Parses `640x480`.
pub fn resolution(text: &str) -> Result<(u32, u32), String> {
    let invalid = || format!("`{text}` is not a resolution; write WIDTHxHEIGHT, e.g. 640x480");
    let (width, height) = text.split_once(['x', 'X']).ok_or_else(invalid)?;
    let side = |s: &str| s.trim().parse::<u32>().map_err(|_| invalid());
    Ok((side(width)?, side(height)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("16M"), Ok(16 << 20));
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert!(size("lots").is_err());
        assert!(size("").is_err());
        assert!(size("99999999999999G").is_err());
    }

    #[test]
    fn a_timeout_is_a_duration_or_none() {
        assert_eq!(
            timeout("250ms"),
            Ok(Deadline::After(Duration::from_millis(250)))
        );
        assert_eq!(timeout("none"), Ok(Deadline::Never));
        assert_eq!(timeout("NONE"), Ok(Deadline::Never));
        assert!(timeout("0s").is_err());
        assert!(timeout("never").is_err());
    }

    #[test]
    fn durations_parse_and_zero_is_refused() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
        assert!(duration("0s").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn resolutions_parse() {
        assert_eq!(resolution("640x480"), Ok((640, 480)));
        assert_eq!(resolution("1920X1080"), Ok((1920, 1080)));
        assert!(resolution("640").is_err());
        assert!(resolution("ax4").is_err());
    }
}
