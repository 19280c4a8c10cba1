//! Statistics over the usage records: periods in the configured time zone,
//! time series with latency percentiles, a month-end forecast, and what the
//! recorded traffic would have cost under each strategy. Sums are made on the
//! records' integer picodollars, so they agree with the records exactly.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Serialize;

use super::{Point, Totals};

/// A stretch of time the statistics cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// `[start, end)` in ms since the epoch, and the zone's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub since_ms: u64,
    pub until_ms: u64,
}

fn ms(z: &Zoned) -> u64 {
    u64::try_from(z.timestamp().as_millisecond()).unwrap_or(0)
}

fn zoned(now_ms: u64, tz: &TimeZone) -> Zoned {
    let ts = Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH);
    ts.to_zoned(tz.clone())
}

fn start_of(date: Date, tz: &TimeZone) -> Option<Zoned> {
    date.to_zoned(tz.clone()).ok()
}

/// The day `date` in `tz` (`[midnight, next midnight)`).
pub fn day(date: Date, tz: &TimeZone) -> Span {
    let since = start_of(date, tz).map_or(0, |z| ms(&z));
    let until = date.tomorrow().ok().and_then(|d| start_of(d, tz)).map_or(u64::MAX, |z| ms(&z));
    Span { since_ms: since, until_ms: until }
}

/// The date in `tz` at `at_ms`.
pub fn date_at(at_ms: u64, tz: &TimeZone) -> Date {
    zoned(at_ms, tz).date()
}

/// The current day, week (from Monday) or month around `now_ms` in `tz`.
pub fn current(period: Period, now_ms: u64, tz: &TimeZone) -> Span {
    let now = zoned(now_ms, tz);
    let today = now.date();
    let (first, next) = match period {
        Period::Day => (today, today.tomorrow().ok()),
        Period::Week => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today.checked_sub(back.days()).unwrap_or(today);
            (monday, monday.checked_add(7.days()).ok())
        }
        Period::Month => {
            let first = today.first_of_month();
            (first, first.checked_add(1.month()).ok())
        }
    };
    let since = start_of(first, tz).map_or(0, |z| ms(&z));
    let until = next.and_then(|d| start_of(d, tz)).map_or(u64::MAX, |z| ms(&z));
    Span { since_ms: since, until_ms: until }
}

/// One bucket of a time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    pub start_ms: u64,
    pub requests: u64,
    pub succeeded: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_pico: u64,
    pub cost_usd: f64,
    pub p50_latency_ms: Option<u64>,
    pub p95_latency_ms: Option<u64>,
    pub p50_ttft_ms: Option<u64>,
    pub p95_ttft_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketSize {
    Hour,
    Day,
}

/// The start of the bucket holding `ts_ms`: whole hours, or local days in `tz`.
fn bucket_start(ts_ms: u64, size: BucketSize, tz: &TimeZone) -> u64 {
    match size {
        BucketSize::Hour => ts_ms - ts_ms % 3_600_000,
        BucketSize::Day => start_of(zoned(ts_ms, tz).date(), tz).map_or(ts_ms, |z| ms(&z)),
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

/// Points (sorted by time) gathered into buckets.
pub fn series(points: &[Point], size: BucketSize, tz: &TimeZone) -> Vec<Bucket> {
    let mut out: Vec<(Bucket, Vec<u64>, Vec<u64>)> = Vec::new();
    for p in points {
        let start = bucket_start(p.ts_ms, size, tz);
        if out.last().is_none_or(|(b, _, _)| b.start_ms != start) {
            out.push((Bucket { start_ms: start, ..Bucket::default() }, Vec::new(), Vec::new()));
        }
        if let Some((b, lat, ttft)) = out.last_mut() {
            b.requests += 1;
            b.succeeded += u64::from(p.succeeded);
            b.prompt_tokens += p.prompt_tokens;
            b.completion_tokens += p.completion_tokens;
            b.cost_pico += p.cost_pico;
            lat.push(p.latency_ms);
            ttft.extend(p.ttft_ms);
        }
    }
    out.into_iter()
        .map(|(mut b, mut lat, mut ttft)| {
            lat.sort_unstable();
            ttft.sort_unstable();
            b.cost_usd = router_core::cost::usd(b.cost_pico);
            b.p50_latency_ms = percentile(&lat, 0.5);
            b.p95_latency_ms = percentile(&lat, 0.95);
            b.p50_ttft_ms = percentile(&ttft, 0.5);
            b.p95_ttft_ms = percentile(&ttft, 0.95);
            b
        })
        .collect()
}

/// Month-end cost: what this month has cost so far, plus the rest of the month
/// at the last seven days' daily rate (the month so far when younger).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub month_since_ms: u64,
    pub month_until_ms: u64,
    pub cost_so_far_usd: f64,
    pub daily_rate_usd: f64,
    pub month_end_usd: f64,
}

pub fn forecast(month: &Span, so_far: &Totals, last_week: &Totals, now_ms: u64) -> Forecast {
    let day = 86_400_000.0;
    let elapsed_days = (now_ms.saturating_sub(month.since_ms) as f64 / day).max(1.0 / 24.0);
    let window_days = elapsed_days.min(7.0);
    let recent = if elapsed_days < 7.0 { so_far.cost_pico } else { last_week.cost_pico };
    let rate = router_core::cost::usd(recent) / window_days;
    let remaining_days = month.until_ms.saturating_sub(now_ms) as f64 / day;
    let so_far_usd = router_core::cost::usd(so_far.cost_pico);
    Forecast {
        month_since_ms: month.since_ms,
        month_until_ms: month.until_ms,
        cost_so_far_usd: so_far_usd,
        daily_rate_usd: rate,
        month_end_usd: so_far_usd + rate * remaining_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        u64::try_from(s.parse::<Timestamp>().unwrap().as_millisecond()).unwrap()
    }

    #[test]
    fn periods_follow_the_time_zone() {
        let utc = TimeZone::UTC;
        let now = at("2026-12-02T03:30:00Z");
        assert_eq!(
            current(Period::Day, now, &utc),
            Span { since_ms: at("2026-12-02T00:00:00Z"), until_ms: at("2026-12-03T00:00:00Z") }
        );
        // Wednesday: the week began on Monday.
        assert_eq!(current(Period::Week, now, &utc).since_ms, at("2026-11-30T00:00:00Z"));
        assert_eq!(
            current(Period::Month, now, &utc),
            Span { since_ms: at("2026-12-01T00:00:00Z"), until_ms: at("2027-01-01T00:00:00Z") }
        );
        // In Shanghai (UTC+8) it is already 11:30 on the 2nd; in Los Angeles still the 1st.
        let sh = TimeZone::get("Asia/Shanghai").unwrap();
        assert_eq!(current(Period::Day, now, &sh).since_ms, at("2026-12-01T16:00:00Z"));
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        assert_eq!(current(Period::Day, now, &la).since_ms, at("2026-12-01T08:00:00Z"));
    }

    #[test]
    fn series_sum_buckets_and_take_percentiles() {
        let p = |ts: &str, lat: u64, cost: u64| Point {
            ts_ms: at(ts),
            latency_ms: lat,
            ttft_ms: Some(lat / 2),
            prompt_tokens: 10,
            completion_tokens: 5,
            cost_pico: cost,
            succeeded: true,
        };
        let points =
            [p("2026-12-02T01:10:00Z", 100, 1), p("2026-12-02T01:50:00Z", 300, 2), p("2026-12-02T02:05:00Z", 50, 4)];
        let hours = series(&points, BucketSize::Hour, &TimeZone::UTC);
        assert_eq!(hours.len(), 2);
        assert_eq!((hours[0].requests, hours[0].cost_pico, hours[0].p50_latency_ms), (2, 3, Some(300)));
        let days = series(&points, BucketSize::Day, &TimeZone::UTC);
        assert_eq!((days.len(), days[0].requests, days[0].prompt_tokens), (1, 3, 30));
    }

    #[test]
    fn forecast_extends_the_recent_rate_to_the_month_end() {
        let month = Span { since_ms: 0, until_ms: 30 * 86_400_000 };
        let so_far = Totals { cost_pico: 10 * router_core::cost::PICO_PER_USD, ..Totals::default() };
        let week = Totals { cost_pico: 7 * router_core::cost::PICO_PER_USD, ..Totals::default() };
        let f = forecast(&month, &so_far, &week, 10 * 86_400_000);
        assert!((f.daily_rate_usd - 1.0).abs() < 1e-9);
        assert!((f.month_end_usd - 30.0).abs() < 1e-9);
    }
}
