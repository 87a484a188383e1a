//! ISO 9660 time stamps: the 7-byte binary form of directory records (and short `TF`
//! stamps) and the 17-byte digit form of descriptors (and long `TF` stamps). Both are a
//! local time with its offset from UTC in quarter hours. All zeros means "not recorded".

use std::time::{Duration, SystemTime};

/// The 7-byte form: years since 1900, month, day, hour, minute, second, offset.
pub fn short_form(b: &[u8]) -> Option<SystemTime> {
    let [year, month, day, hour, minute, second, offset, ..] = *b else {
        return None;
    };
    if b.iter().take(7).all(|&x| x == 0) {
        return None;
    }
    let parts = Parts {
        year: 1900 + i64::from(year),
        month: i64::from(month),
        day: i64::from(day),
        hour: i64::from(hour),
        minute: i64::from(minute),
        second: i64::from(second),
        nanos: 0,
        offset_quarters: i64::from(offset as i8),
    };
    parts.to_system_time()
}

/// The 17-byte form: `YYYYMMDDHHMMSSCC` in ASCII digits (CC: hundredths), then the offset.
pub fn long_form(b: &[u8]) -> Option<SystemTime> {
    let digits = b.get(..16)?;
    let &offset = b.get(16)?;
    let num = |from: usize, to: usize| -> Option<i64> {
        digits.get(from..to)?.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let parts = Parts {
        year: num(0, 4)?,
        month: num(4, 6)?,
        day: num(6, 8)?,
        hour: num(8, 10)?,
        minute: num(10, 12)?,
        second: num(12, 14)?,
        nanos: u32::try_from(num(14, 16)?).ok()? * 10_000_000,
        offset_quarters: i64::from(offset as i8),
    };
    if parts.year == 0 {
        return None; // "0000000000000000": not recorded.
    }
    parts.to_system_time()
}

/// A broken-down local time and its offset.
struct Parts {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    nanos: u32,
    offset_quarters: i64,
}

impl Parts {
    /// The instant, or `None` for fields out of range (a corrupt stamp is "not recorded").
    fn to_system_time(&self) -> Option<SystemTime> {
        let valid = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 61
            && (-48..=52).contains(&self.offset_quarters);
        if !valid {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let local = days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second;
        let utc = local - self.offset_quarters * 15 * 60;
        let since = Duration::new(utc.unsigned_abs(), self.nanos);
        if utc >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(since)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(since)
        }
    }
}

/// Days from 1970-01-01 to `y-m-d` in the proleptic Gregorian calendar (Howard Hinnant's
/// algorithm; the inputs are small: years below 10000).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn both_forms_agree() {
        // 2026-12-03 13:56:07 at UTC+1 (4 quarters) is 12:56:07 UTC.
        let short = short_form(&[126, 12, 3, 13, 56, 7, 4]).unwrap();
        let long = long_form(b"2026120313560700\x04").unwrap();
        assert_eq!(secs(short), 1_796_302_567);
        assert_eq!(short, long);
    }

    #[test]
    fn zeros_and_nonsense_are_unrecorded() {
        assert_eq!(short_form(&[0; 7]), None);
        assert_eq!(short_form(&[126, 13, 3, 13, 56, 7, 4]), None);
        assert_eq!(long_form(b"0000000000000000\x00"), None);
        assert_eq!(long_form(b"20261203x3560700\x00"), None);
    }
}
