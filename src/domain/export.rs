//! What an export selects and how it is written: the filter of `/all-visits` and
//! `footfall export`, and the output formats.

use super::{UnixMillis, date_start_millis, parse_date, parse_timestamp};

/// The formats of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `{"visits": [...], "total_count": "N"}`.
    #[default]
    Json,
    /// One visit per line.
    Jsonl,
    /// A header `url,ip,user_agent,timestamp`, then one visit per line.
    Csv,
}

/// Which visits to export: those at `[from, to)`, newest first, after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFilter {
    pub from: UnixMillis,
    /// `None`: up to the newest.
    pub to: Option<UnixMillis>,
    pub limit: Option<i64>,
    pub offset: i64,
}

/// The raw filter parameters of `/all-visits` and `footfall export`.
#[derive(Debug, Clone, Default)]
pub struct FilterParams {
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub since: Option<String>,
    pub range: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

impl FilterParams {
    /// Validates the parameters. Every malformed value is an error naming it: a filter is never
    /// silently ignored (the original service returned everything on a bad `range`).
    pub fn parse(&self) -> Result<ExportFilter, String> {
        // Every parameter is checked, also those `range` takes precedence over: a malformed
        // value is never silently ignored.
        let start_date = self
            .start_date
            .as_deref()
            .map(|s| parse_date(s).ok_or("start_date must be a valid YYYY-MM-DD date"))
            .transpose()?;
        let end_date = self
            .end_date
            .as_deref()
            .map(|s| parse_date(s).ok_or("end_date must be a valid YYYY-MM-DD date"))
            .transpose()?;
        let since = self
            .since
            .as_deref()
            .map(|s| parse_timestamp(s).ok_or("since must be a valid timestamp"))
            .transpose()?;
        let mut from: UnixMillis = 0;
        let mut to: Option<UnixMillis> = None;
        if let Some(range) = self.range.as_deref() {
            let (start, end) = range
                .split_once(',')
                .ok_or("range must be START,END (dates or timestamps)")?;
            from = parse_timestamp(start).ok_or("range START is not a valid date or timestamp")?;
            to = Some(parse_timestamp(end).ok_or("range END is not a valid date or timestamp")?);
        } else {
            if let Some(date) = start_date {
                from = from.max(date_start_millis(date));
            }
            if let Some(date) = end_date {
                let next = date.succ_opt().ok_or("end_date is out of range")?;
                to = Some(date_start_millis(next));
            }
            if let Some(since) = since {
                from = from.max(since + 1);
            }
        }
        if self.limit.is_some_and(|l| l < 0) {
            return Err("limit must be 0 or more".into());
        }
        if self.offset.is_some_and(|o| o < 0) {
            return Err("offset must be 0 or more".into());
        }
        Ok(ExportFilter {
            from: from.max(0),
            to: to.map(|to| to.max(0)),
            limit: self.limit,
            offset: self.offset.unwrap_or(0),
        })
    }
}
