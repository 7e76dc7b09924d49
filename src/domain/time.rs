//! Time: unix milliseconds, the timestamp and date forms the API reads and the ones it writes.

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Milliseconds since the Unix epoch, UTC. The unit of every stored time.
pub type UnixMillis = i64;

/// Latest instant a visit may carry: visit ids are `millis << 20`, which must fit an `i64`.
pub const MAX_MILLIS: UnixMillis = (1 << 43) - 1;

/// Largest unix seconds accepted where a time is given in seconds: the last whole second whose
/// milliseconds fit [`MAX_MILLIS`] (the documents' `maximum`).
pub const MAX_SECONDS: i64 = MAX_MILLIS / 1000;
const _: () = assert!(MAX_SECONDS * 1000 <= MAX_MILLIS);

/// The cutoff of a cleanup of everything older than `days`, as of `now`.
pub fn cleanup_cutoff(now: UnixMillis, days: i64) -> Result<UnixMillis, &'static str> {
    if days < 1 {
        return Err("Days must be at least 1");
    }
    Ok(now.saturating_sub(days.saturating_mul(DAY_MS)).max(0))
}

/// Milliseconds in a minute, an hour and a day.
pub const MINUTE_MS: UnixMillis = 60_000;
pub const HOUR_MS: UnixMillis = 60 * MINUTE_MS;
pub const DAY_MS: UnixMillis = 24 * HOUR_MS;

pub fn now_millis() -> UnixMillis {
    Utc::now().timestamp_millis()
}

/// Parses a timestamp in any accepted form (docs/API.md, "Timestamps"): a calendar date and
/// time as exports of real systems write them — `-` or `/` between year, month and day (in that
/// order), `T` or a space before the time, one or two digits for month, day, hour, minute and
/// second, seconds optional, fractional seconds of up to 9 digits, then nothing (UTC), `Z`, or an
/// offset `±HH:MM`, `±HHMM` or `±HH` (optionally after a space) — a bare date (midnight), or
/// unix seconds. `None` when malformed, impossible (`2025-02-30`, `24:00`) or outside
/// 1970..=2248 (the range visit ids can represent).
pub fn parse_timestamp(raw: &str) -> Option<UnixMillis> {
    let raw = raw.trim();
    let millis = if let Some(millis) = parse_calendar(raw) {
        millis
    } else if !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && raw.bytes().any(|b| b.is_ascii_digit())
    {
        let seconds: f64 = raw.parse().ok()?;
        (seconds * 1000.0).round() as i64
    } else {
        return None;
    };
    (0..=MAX_MILLIS).contains(&millis).then_some(millis)
}

/// A cursor over the bytes of a timestamp, for the small grammar [`parse_timestamp`] accepts.
/// Hand-written because chrono's format strings need one pattern per combination of separators,
/// widths and offset forms (dozens), and still accept some that are not wanted.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// Consumes `min..=max` digits and returns their value and count.
    fn digits(&mut self, min: usize, max: usize) -> Option<(u32, usize)> {
        let start = self.at;
        let mut value: u32 = 0;
        while self.at - start < max {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    value = value * 10 + u32::from(b - b'0');
                    self.at += 1;
                }
                _ => break,
            }
        }
        let count = self.at - start;
        (count >= min).then_some((value, count))
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// The calendar forms of [`parse_timestamp`], as unix milliseconds (not range-checked).
fn parse_calendar(raw: &str) -> Option<UnixMillis> {
    let mut c = Cursor {
        bytes: raw.as_bytes(),
        at: 0,
    };
    let (year, _) = c.digits(4, 4)?;
    let sep = c.peek().filter(|b| matches!(b, b'-' | b'/'))?;
    c.at += 1;
    let (month, _) = c.digits(1, 2)?;
    if !c.eat(sep) {
        return None;
    }
    let (day, _) = c.digits(1, 2)?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    if c.done() {
        return Some(date_start_millis(date));
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return None;
    }
    let (hour, _) = c.digits(1, 2)?;
    if !c.eat(b':') {
        return None;
    }
    let (minute, _) = c.digits(1, 2)?;
    let (mut second, mut nanos) = (0, 0);
    if c.eat(b':') {
        second = c.digits(1, 2)?.0;
        if c.eat(b'.') {
            let (fraction, width) = c.digits(1, 9)?;
            nanos = fraction * 10u32.pow(9 - u32::try_from(width).ok()?);
        }
    }
    // Leap seconds (`:60`) are refused: `from_hms_nano_opt` takes them only as nanos ≥ 1e9.
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = NaiveDateTime::new(date, time).and_utc().timestamp_millis();
    let offset_seconds = parse_offset(&mut c)?;
    c.done().then(|| local - i64::from(offset_seconds) * 1000)
}

/// The offset after a time, in seconds east of UTC: nothing (UTC), `Z`, or `±HH[[:]MM]`,
/// optionally after one space. `None` when malformed.
fn parse_offset(c: &mut Cursor<'_>) -> Option<i32> {
    if c.done() {
        return Some(0);
    }
    c.eat(b' ');
    if c.eat(b'Z') || c.eat(b'z') {
        return Some(0);
    }
    let sign = match c.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    c.at += 1;
    let (hours, _) = c.digits(2, 2)?;
    let minutes = if c.eat(b':') {
        c.digits(2, 2)?.0
    } else {
        c.digits(2, 2).map_or(0, |(m, _)| m)
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * i32::try_from(hours * 3600 + minutes * 60).ok()?)
}

/// Unix seconds (integer or fractional) as a timestamp; `None` out of `0..=MAX_SECONDS`.
///
/// The range is checked on the seconds as given, as the API documents it: a negative fraction
/// of a millisecond (`-1e-300`) rounds to 0 milliseconds, but is still a time before 1970.
pub fn timestamp_from_unix_seconds(seconds: f64) -> Option<UnixMillis> {
    (0.0..=MAX_SECONDS as f64)
        .contains(&seconds)
        .then(|| (seconds * 1000.0).round() as UnixMillis)
}

/// Parses a `YYYY-MM-DD` date; `None` for anything else, impossible dates included.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    (raw.len() == 10)
        .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
        .flatten()
}

/// Midnight UTC of `date` in unix milliseconds.
pub fn date_start_millis(date: NaiveDate) -> UnixMillis {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |dt| dt.and_utc().timestamp_millis())
}

/// `2025-07-28T10:30:00`: the ISO form the API writes.
pub fn format_iso(millis: UnixMillis) -> String {
    IsoTime(millis).to_string()
}

/// A time that serializes (and displays) as [`format_iso`] does, without a `String`: answers
/// built on every `POST /visit` carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoTime(pub UnixMillis);

impl IsoTime {
    /// The 19 ASCII bytes, on the stack.
    pub fn text(self) -> [u8; 19] {
        let mut text = space_text(self.0.div_euclid(1000));
        text[10] = b'T';
        text
    }
}

impl fmt::Display for IsoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii(&self.text()))
    }
}

impl serde::Serialize for IsoTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(ascii(&self.text()))
    }
}

/// `2025-07-28 10:30:00`: the SPACE form the API writes in exports and `by_hour` keys.
pub fn format_space(millis: UnixMillis) -> String {
    let mut out = String::with_capacity(19);
    write_space(&mut out, millis.div_euclid(1000));
    out
}

/// Appends `YYYY-MM-DD HH:MM:SS` for unix `seconds` to `out`, without allocating. Used on the
/// export hot path, where chrono's formatter would dominate.
pub fn write_space(out: &mut String, seconds: i64) {
    out.push_str(ascii(&space_text(seconds)));
}

/// `YYYY-MM-DD HH:MM:SS` for unix `seconds`, on the stack.
pub fn space_text(seconds: i64) -> [u8; 19] {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = *b"0000-00-00 00:00:00";
    // Fixed-width digits written in place: this runs once per exported row.
    for (at, value, width) in [
        (0, y, 4),
        (5, m, 2),
        (8, d, 2),
        (11, hh, 2),
        (14, mm, 2),
        (17, ss, 2),
    ] {
        let mut v = value.max(0);
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    text
}

/// `bytes` as text: only for the ASCII this module writes.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("digits and punctuation are ASCII")
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_are_taken_within_the_documented_range_only() {
        assert_eq!(
            timestamp_from_unix_seconds(1_644_407_344.25),
            Some(1_644_407_344_250)
        );
        assert_eq!(timestamp_from_unix_seconds(0.0), Some(0));
        let max = MAX_SECONDS as f64;
        assert_eq!(timestamp_from_unix_seconds(max), Some(MAX_SECONDS * 1000));
        // Below 0 or above the maximum by less than the rounding to milliseconds hides.
        for bad in [
            -2.2250738585e-313,
            -0.0004,
            -1.0,
            max + 0.2,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(timestamp_from_unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_accept_every_documented_form() {
        let want = 1_753_698_600_000; // 2025-07-28T10:30:00Z
        for raw in [
            "2025-07-28T10:30:00",
            "2025-07-28 10:30:00",
            "2025-07-28T10:30:00Z",
            "2025-07-28T12:30:00+02:00",
            "1753698600",
        ] {
            assert_eq!(parse_timestamp(raw), Some(want), "{raw}");
        }
        assert_eq!(parse_timestamp("2025-07-28 10:30:00.250"), Some(want + 250));
        for bad in [
            "2025-02-30 10:00:00",
            "yesterday",
            "2025-13-01",
            "",
            "9999-01-01",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_accept_the_layouts_of_real_exports() {
        let want = 1_753_698_600_000; // 2025-07-28T10:30:00Z
        for raw in [
            "2025/07/28 10:30:00",
            "2025/7/28 10:30:00",
            "2025-7-28T10:30:00",
            "2025-07-28 10:30",
            "2025-07-28t10:30:00z",
            "2025-07-28 10:30:00 +00:00",
            "2025-07-28 12:30:00+0200",
            "2025-07-28 12:30:00+02",
            "2025-07-28T05:00:00-05:30",
            "2025/07/28T10:30:00.000Z",
            "  2025-07-28 10:30:00  ",
        ] {
            assert_eq!(parse_timestamp(raw), Some(want), "{raw}");
        }
        let nine = 1_753_693_503_000; // 2025-07-28T09:05:03Z
        for raw in [
            "2025-07-28 9:5:3",
            "2025/07/28 9:05:03",
            "2025-07-28T09:05:3Z",
        ] {
            assert_eq!(parse_timestamp(raw), Some(nine), "{raw}");
        }
        for (raw, millis) in [
            ("2025-07-28T10:30:00.5", 500),
            ("2025-07-28T10:30:00.25Z", 250),
            ("2025-07-28 10:30:00.123456", 123),
            ("2025-07-28 10:30:00.999999999+00:00", 999),
        ] {
            assert_eq!(parse_timestamp(raw), Some(want + millis), "{raw}");
        }
        assert_eq!(parse_timestamp("2025/07/28"), Some(1_753_660_800_000));
        assert_eq!(
            parse_timestamp("2024-02-29 00:00:00"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn impossible_or_ambiguous_timestamps_are_refused() {
        for bad in [
            "2025-02-29 10:00:00",
            "2025/04/31",
            "2025-07-28 24:00:00",
            "2025-07-28 10:60:00",
            "2025-07-28 10:30:60",
            "2025-07-28 10:30:00+24:00",
            "2025-07-28 10:30:00+02:60",
            "2025-07-28 10:30:00+2",
            "2025-07-28/10:30:00",
            "2025-07/28 10:30:00",
            "28/07/2025 10:30:00",
            "07/28/2025",
            "2025-07-28 10",
            "2025-07-28 10:30:00.",
            "2025-07-28 10:30:00.1234567890",
            "2025-07-28 10:30:00 UTC",
            "2025-07-28 10:30:00Z junk",
            "2025-007-28",
            "1969-12-31 23:59:59",
            ".",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn formatting_matches_chrono() {
        for millis in [0, 951_782_400_000, 1_753_698_600_999, 4_102_444_799_000] {
            let dt = chrono::DateTime::from_timestamp_millis(millis).unwrap();
            assert_eq!(
                format_space(millis),
                dt.format("%Y-%m-%d %H:%M:%S").to_string()
            );
            assert_eq!(
                format_iso(millis),
                dt.format("%Y-%m-%dT%H:%M:%S").to_string()
            );
        }
    }
}
