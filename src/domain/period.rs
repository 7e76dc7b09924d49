//! Calendar periods: a breakdown's year, month, day or hour, and the trailing periods of the
//! top-sites ranking.

use chrono::{Datelike, NaiveDate};

use super::UnixMillis;

/// The period of a breakdown: a year, a month, a day or an hour (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub year: i32,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub hour: Option<u32>,
}

impl Period {
    /// Validates the parts; `None` for an impossible date (Feb 30, month 13, hour 24, ...).
    pub fn new(year: i32, month: Option<u32>, day: Option<u32>, hour: Option<u32>) -> Option<Self> {
        if !(1970..=2200).contains(&year) {
            return None;
        }
        if let Some(m) = month {
            NaiveDate::from_ymd_opt(year, m, day.unwrap_or(1))?;
        }
        if hour.is_some_and(|h| h > 23) {
            return None;
        }
        Some(Self {
            year,
            month,
            day,
            hour,
        })
    }

    /// The first day of the period.
    pub fn start_date(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))
            .expect("validated in Period::new")
    }

    /// The first instant of the period.
    pub fn start_millis(&self) -> UnixMillis {
        super::date_start_millis(self.start_date())
            + i64::from(self.hour.unwrap_or(0)) * super::HOUR_MS
    }
}

/// The first instant of a month (UTC); `month` is 1–12 of a year `Period::new` accepts.
pub fn month_start(year: i32, month: u32) -> UnixMillis {
    super::date_start_millis(NaiveDate::from_ymd_opt(year, month, 1).expect("valid month"))
}

/// The number of days of a month (28–31).
pub fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    next.and_then(|d| d.pred_opt()).map_or(31, |d| d.day())
}

/// The trailing periods of `/domains/{period}`, in minutes.
pub fn period_minutes(period: &str) -> Option<i64> {
    match period {
        "min" => Some(1),
        "hour" => Some(60),
        "day" => Some(1440),
        _ => None,
    }
}
