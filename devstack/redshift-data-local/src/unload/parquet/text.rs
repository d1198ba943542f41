//! PostgreSQL's text output of dates, timestamps and decimals as the integers Parquet stores.

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` (PostgreSQL's ISO output; BC dates and infinities are refused).
pub(super) fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    ((1..=12).contains(&month) && (1..=31).contains(&day))
        .then(|| days_from_civil(year, month, day))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]]` → microseconds since the epoch (UTC when
/// the value carries an offset, which only `timestamptz` output does).
pub(super) fn parse_timestamp(text: &str, utc: bool) -> Option<i64> {
    let (date, time) = text.split_once(' ')?;
    let days = parse_date(date)?;
    let (clock, offset) = match time.find(['+', '-']) {
        Some(at) if utc => (&time[..at], Some(&time[at..])),
        Some(_) => return None,
        None => (time, None),
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = whole.splitn(3, ':');
    let h = number(hms.next()?, 2)?;
    let m = number(hms.next()?, 2)?;
    let s = number(hms.next()?, 2)?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().ok()? * 10i64.pow(6 - fraction.len() as u32)
    };
    let mut seconds = days * 86_400 + h * 3600 + m * 60 + s;
    if let Some(offset) = offset {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let mut parts = offset[1..].splitn(3, ':');
        let oh = number(parts.next()?, 2)?;
        let om = parts.next().map_or(Some(0), |p| number(p, 2))?;
        let os = parts.next().map_or(Some(0), |p| number(p, 2))?;
        seconds -= sign * (oh * 3600 + om * 60 + os);
    }
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

/// A decimal's text as an integer scaled by `scale` digits: `-12.5` at scale 2 → -1250.
pub(super) fn unscaled(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::from(scale);
    if whole.is_empty() || fraction.len() > scale {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', scale - fraction.len()))
    {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_count_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-01-01"), Some(19_723));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        for bad in ["infinity", "0044-03-15 BC", "2024-1-01", "2024-13-01", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:37", false),
            Some(1_704_067_237_000_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00.5", false),
            Some(500_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01 01:00:00.000001+01", true),
            Some(1)
        );
        assert_eq!(parse_timestamp("1969-12-31 19:30:00-04:30", true), Some(0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:00+01", false), None);
        assert_eq!(parse_timestamp("1970-01-01 00:00:00.1234567", false), None);
    }

    #[test]
    fn decimals_are_scaled_exactly() {
        assert_eq!(unscaled("12.30", 2), Some(1230));
        assert_eq!(unscaled("-0.05", 2), Some(-5));
        assert_eq!(unscaled("7", 3), Some(7000));
        assert_eq!(unscaled("1.234", 2), None, "more digits than the scale");
        for bad in ["NaN", "", "-", ".5", "1e3", "1.2.3"] {
            assert_eq!(unscaled(bad, 2), None, "{bad}");
        }
        assert_eq!(
            unscaled("99999999999999999999999999999999999999", 0),
            Some(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }
}
