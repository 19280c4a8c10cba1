//! A channel's request limits (a provider's free tier) as the table carries
//! them. Envoy counts the requests; the control plane says when the provider's
//! day began, in the provider's zone and at its reset time, and moves that
//! moment at each reset, which starts Envoy's new day count.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use router_core::table::LimitsDoc;

use crate::config::LimitsConfig;
use crate::pricing::minutes;

/// Why a channel's `limits` cannot be kept.
pub fn check(l: &LimitsConfig) -> Result<(), String> {
    if l.requests_per_minute == 0 && l.requests_per_day == 0 && l.tokens_per_minute == 0 && l.tokens_per_day == 0 {
        return Err("set requests_per_minute, requests_per_day, tokens_per_minute or tokens_per_day".into());
    }
    if !(l.window_seconds.is_finite() && l.window_seconds > 0.0 && l.window_seconds <= 86_400.0) {
        return Err(format!("window_seconds {} must be more than 0 and at most a day", l.window_seconds));
    }
    TimeZone::get(&l.timezone).map_err(|_| format!("unknown time zone \"{}\"", l.timezone))?;
    minutes(&l.reset).ok_or_else(|| format!("reset \"{}\" is not a time HH:MM", l.reset))?;
    Ok(())
}

/// When the provider's current day began, at `now_ms` (0 when the config is
/// unreadable, which `check` refuses).
pub fn day_start_ms(l: &LimitsConfig, now_ms: u64) -> u64 {
    let (Ok(tz), Some(reset)) = (TimeZone::get(&l.timezone), minutes(&l.reset)) else {
        return 0;
    };
    let Ok(now) = Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(0)) else {
        return 0;
    };
    let local = now.to_zoned(tz.clone());
    let at = |date: jiff::civil::Date| {
        let time = Time::new((reset / 60) as i8, (reset % 60) as i8, 0, 0).ok()?;
        date.to_datetime(time).to_zoned(tz.clone()).ok()
    };
    let today = local.date();
    let start = match at(today) {
        Some(z) if z.timestamp() <= now => Some(z),
        _ => today.yesterday().ok().and_then(at),
    };
    start.map_or(0, |z| u64::try_from(z.timestamp().as_millisecond()).unwrap_or(0))
}

pub fn doc(l: &LimitsConfig, now_ms: u64) -> LimitsDoc {
    LimitsDoc {
        requests_per_window: l.requests_per_minute,
        window_ms: (l.window_seconds * 1000.0).round() as u64,
        requests_per_day: l.requests_per_day,
        tokens_per_window: l.tokens_per_minute,
        tokens_per_day: l.tokens_per_day,
        day_start_ms: day_start_ms(l, now_ms),
        provider_headers: l.provider_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn the_day_begins_at_the_reset_in_the_providers_zone() {
        let l = LimitsConfig { requests_per_day: 5, timezone: "America/Los_Angeles".into(), ..Default::default() };
        // 07:59 UTC is 23:59 the day before in Los Angeles (PST, UTC-8).
        assert_eq!(day_start_ms(&l, ms("2026-12-02T07:59:00Z")), ms("2026-12-01T08:00:00Z"));
        assert_eq!(day_start_ms(&l, ms("2026-12-02T08:00:00Z")), ms("2026-12-02T08:00:00Z"));
        let l = LimitsConfig { reset: "06:30".into(), requests_per_day: 5, ..Default::default() };
        assert_eq!(day_start_ms(&l, ms("2026-12-02T06:00:00Z")), ms("2026-12-01T06:30:00Z"));
        assert_eq!(day_start_ms(&l, ms("2026-12-02T07:00:00Z")), ms("2026-12-02T06:30:00Z"));
    }

    #[test]
    fn limits_that_cannot_be_kept_are_refused() {
        assert!(check(&LimitsConfig::default()).is_err());
        let ok = LimitsConfig { requests_per_minute: 3, ..Default::default() };
        assert!(check(&ok).is_ok());
        assert!(check(&LimitsConfig { window_seconds: 0.0, ..ok.clone() }).is_err());
        assert!(check(&LimitsConfig { timezone: "Mars/Base".into(), ..ok.clone() }).unwrap_err().contains("Mars/Base"));
        assert!(check(&LimitsConfig { reset: "25:00".into(), ..ok }).unwrap_err().contains("25:00"));
    }
}
