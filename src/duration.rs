//! The settings files' duration grammar (`250ms`, `30s`, `5m`, `2h`).
//!
//! A leaf module: the settings file (`config`) and the links' own settings checks both
//! read durations, and a link must not import `config`, which sits above it and builds
//! the links' settings.

use std::time::Duration;

/// Parses durations such as `250ms`, `30s`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 5m, 2h)"))?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown duration unit (use ms, s, m or h)")),
    })
}
