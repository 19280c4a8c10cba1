//! Spending limits. The control plane sums what the usage records say each
//! budget has spent in its current period and hands that to Envoy in the
//! table; Envoy adds what it spent and holds in reserve since, and leaves out
//! (or refuses) what a spent budget covers before routing. So the overshoot is
//! at most what requests in flight on other Envoys may cost, plus what was spent
//! in one report interval (records on their way to the store when it summed).

use jiff::tz::TimeZone;
use router_core::table::BudgetDoc;

use crate::config::{BudgetConfig, Config, WhenExceeded};
use crate::pricing::minutes;
use crate::usage::stats::{current, Span};
use crate::usage::{Dimension, Store, StoreError};

/// Why a budget cannot be kept.
pub fn check(b: &BudgetConfig, c: &Config) -> Result<(), String> {
    if !router_core::table::valid_channel_id(&b.id) {
        return Err(format!("id \"{}\" must be 1-64 characters of A-Z a-z 0-9 _ -", b.id));
    }
    if !(b.limit_usd.is_finite() && b.limit_usd >= 0.0 && b.limit_usd < 1e6) {
        return Err(format!("limit_usd {} must be at least 0 and under a million", b.limit_usd));
    }
    if !(b.alert_at > 0.0 && b.alert_at <= 1.0) {
        return Err(format!("alert_at {} must be a share of the limit, more than 0 and at most 1", b.alert_at));
    }
    TimeZone::get(&b.timezone).map_err(|_| format!("unknown time zone \"{}\"", b.timezone))?;
    minutes(&b.reset).ok_or_else(|| format!("reset \"{}\" is not a time HH:MM", b.reset))?;
    if [&b.channel, &b.group, &b.token].iter().filter(|s| s.is_some()).count() > 1 {
        return Err("a budget covers everything, or one channel, group or token".into());
    }
    if let Some(ch) = &b.channel {
        if !c.channels.iter().any(|x| &x.id == ch) {
            return Err(format!("channel \"{ch}\" is not in channels"));
        }
    }
    if !c.usage.enabled {
        return Err("budgets are kept from the usage records: usage.enabled must be true".into());
    }
    Ok(())
}

/// The budget's current period at `now_ms`: it starts at `reset` in its zone.
pub fn period(b: &BudgetConfig, now_ms: u64) -> Span {
    let tz = TimeZone::get(&b.timezone).unwrap_or(TimeZone::UTC);
    let shift = u64::from(minutes(&b.reset).unwrap_or(0)) * 60_000;
    let span = current(b.period, now_ms.saturating_sub(shift), &tz);
    Span { since_ms: span.since_ms.saturating_add(shift), until_ms: span.until_ms.saturating_add(shift) }
}

pub fn limit_pico(b: &BudgetConfig) -> u64 {
    (b.limit_usd * router_core::cost::PICO_PER_USD as f64).round() as u64
}

/// What the records say `b` spent in `span`.
pub async fn spent(store: &Store, b: &BudgetConfig, span: &Span) -> Result<u64, StoreError> {
    let (by, key) = match (&b.channel, &b.group, &b.token) {
        (Some(c), _, _) => (Some(Dimension::Channel), Some(c.as_str())),
        (_, Some(g), _) => (Some(Dimension::Model), Some(g.as_str())),
        (_, _, Some(t)) => (Some(Dimension::Client), Some(t.as_str())),
        _ => (None, None),
    };
    let rows = store.totals(span.since_ms, span.until_ms, by).await?;
    Ok(rows
        .iter()
        .filter(|r| match key {
            None => true,
            Some(k) => r.key.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(k)),
        })
        .map(|r| r.cost_pico)
        .sum())
}

/// The budget as the table carries it.
pub fn doc(b: &BudgetConfig, spent_pico: u64, as_of_ms: u64, span: &Span) -> BudgetDoc {
    BudgetDoc {
        id: b.id.clone(),
        channel: b.channel.clone(),
        group: b.group.clone(),
        token: b.token.clone(),
        limit_pico: limit_pico(b),
        spent_pico,
        as_of_ms,
        resets_ms: span.until_ms,
        refuse: b.when_exceeded == WhenExceeded::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(yaml: &str) -> BudgetConfig {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn periods_start_at_the_reset_time_in_the_zone() {
        // 2026-12-02 13:00 UTC.
        let now = 1_796_216_400_000;
        let day = period(&budget("{id: d, limit_usd: 1, period: day, reset: '06:00'}"), now);
        assert_eq!(day.until_ms - day.since_ms, 86_400_000);
        assert!(day.since_ms <= now && now < day.until_ms);
        assert_eq!(day.since_ms % 86_400_000, 6 * 3_600_000);
        let pacific = period(&budget("{id: p, limit_usd: 1, period: day, timezone: America/Los_Angeles}"), now);
        // Midnight Pacific (standard time in December) is 08:00 UTC.
        assert_eq!(pacific.since_ms % 86_400_000, 8 * 3_600_000);
        let month = period(&budget("{id: m, limit_usd: 1}"), now);
        assert!(month.since_ms <= now && now < month.until_ms && month.until_ms - month.since_ms == 31 * 86_400_000);
        assert_eq!(limit_pico(&budget("{id: c, limit_usd: 0.05}")), 50_000_000_000);
    }
}
