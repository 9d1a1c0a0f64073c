//! RFC 3339 timestamps (`ce_time`) from and to milliseconds since the Unix epoch.
//!
//! The conversion between a day number and a proleptic Gregorian date uses the 400-year
//! era decomposition (146 097 days per era): shift the epoch to 0000-03-01 so that the
//! leap day falls at the end of the year, then the month follows from a linear formula
//! over the day of the year. It is exact for every `i64` day this crate can produce; no
//! date crate is needed for two functions.

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const EPOCH_SHIFT_DAYS: i64 = 719_468;

/// Days in a 400-year era: 400 * 365 + 97 leap days.
const ERA_DAYS: i64 = 146_097;

/// The earliest instant with a four-digit year, 0000-01-01T00:00:00.000Z.
pub(crate) const TIME_MS_MIN: i64 = days_from_civil(0, 1, 1) * DAY_MS;

/// The latest instant with a four-digit year, 9999-12-31T23:59:59.999Z.
pub(crate) const TIME_MS_MAX: i64 = days_from_civil(9999, 12, 31) * DAY_MS + DAY_MS - 1;

/// Days since 1970-01-01 of the date `year-month-day` (month 1..=12, day 1..=31).
pub(crate) const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    // Months counted from March, so February (and its leap day) comes last.
    let month_from_march = if month > 2 { month - 3 } else { month + 9 } as i64;
    let day_of_year = (153 * month_from_march + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * ERA_DAYS + day_of_era - EPOCH_SHIFT_DAYS
}

/// The date `(year, month, day)` of `days` since 1970-01-01.
pub(crate) const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + EPOCH_SHIFT_DAYS;
    let era = shifted.div_euclid(ERA_DAYS);
    let day_of_era = shifted - era * ERA_DAYS;
    // Remove the leap days (every 4 years, not every 100, again every 400) to count years.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

/// `time_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// RFC 3339 has four-digit years only, so instants outside years 0000..=9999 are written
/// as the nearest representable one; no producer clock is that far off.
pub(crate) fn format_ms(time_ms: i64) -> String {
    let time_ms = time_ms.clamp(TIME_MS_MIN, TIME_MS_MAX);
    let days = time_ms.div_euclid(DAY_MS);
    let ms_of_day = time_ms.rem_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let hour = ms_of_day / 3_600_000;
    let minute = ms_of_day / 60_000 % 60;
    let second = ms_of_day / 1000 % 60;
    let milli = ms_of_day % 1000;
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// Parses an RFC 3339 date-time (`2023-11-14T22:13:20Z`, `...20.5+01:00`) into
/// milliseconds since the epoch. Fractions beyond milliseconds are truncated; a leap
/// second (`:60`) is accepted and counts as the second after `:59`. `None` for anything
/// malformed.
pub(crate) fn parse_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    let separators_ok = bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month as u32) {
        return None;
    }
    let (milli, rest) = fraction(&bytes[19..])?;
    let offset_ms = zone_offset_ms(rest)?;
    let days = days_from_civil(year, month as u32, day as u32);
    let local_ms = days * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + milli;
    Some(local_ms - offset_ms)
}

/// The decimal number in `bytes[start..start + len]`, all digits.
fn digits(bytes: &[u8], start: usize, len: usize) -> Option<i64> {
    let slice = bytes.get(start..start + len)?;
    slice.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// An optional `.fff...` fraction: its milliseconds and what follows it.
fn fraction(bytes: &[u8]) -> Option<(i64, &[u8])> {
    let Some(rest) = bytes.strip_prefix(b".") else {
        return Some((0, bytes));
    };
    let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let mut milli = 0;
    for i in 0..3 {
        let digit = rest
            .get(i)
            .filter(|_| i < len)
            .map_or(0, |b| i64::from(b - b'0'));
        milli = milli * 10 + digit;
    }
    Some((milli, &rest[len..]))
}

/// The zone: `Z`, `z` or `±HH:MM`, as an offset east of UTC in milliseconds.
fn zone_offset_ms(bytes: &[u8]) -> Option<i64> {
    match bytes {
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), ..] if bytes.len() == 6 && bytes[3] == b':' => {
            let hours = digits(bytes, 1, 2)?;
            let minutes = digits(bytes, 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = (hours * 60 + minutes) * 60_000;
            Some(if *sign == b'-' { -offset } else { offset })
        }
        _ => None,
    }
}

/// Days in `month` of `year` in the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: u32) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn known_instants() {
        assert_eq!(format_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(format_ms(1_000_000_000_123), "2001-09-09T01:46:40.123Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(1_709_164_799_999), "2024-02-28T23:59:59.999Z");
        assert_eq!(format_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(format_ms(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
    }

    #[test]
    fn century_years_are_not_leap_unless_divisible_by_400() {
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
    }

    #[test]
    fn before_the_epoch() {
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms(-86_400_000), "1969-12-31T00:00:00.000Z");
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn out_of_range_instants_are_written_at_the_nearest_four_digit_year() {
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_writes_and_common_variants() {
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.000Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_ms("2023-11-14t22:13:20.5z"), Some(1_700_000_000_500));
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_ms("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_ms("2023-11-14T17:43:20-04:30"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
    }

    #[test]
    fn rejects_malformed_times() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-13-14T22:13:20Z",
            "2023-02-29T00:00:00Z",
            "2023-11-00T22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:20+1:00",
            "2023-11-14T22:13:20+24:00",
            "2023/11/14T22:13:20Z",
            "２023-11-14T22:13:20Z",
            "2023-11-14T22:13:20ZZ",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn days_round_trip(days in -3_000_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m));
            prop_assert!(d >= 1 && i64::from(d) <= days_in_month(y, m));
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn format_then_parse_round_trips(ms in TIME_MS_MIN..=TIME_MS_MAX) {
            prop_assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        }
    }
}
