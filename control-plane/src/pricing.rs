//! Pricing policies: a channel's prices change at some times (off-peak
//! discounts) or past some use (a surcharge after a day's allowance). The
//! control plane works out which policies are in force and publishes prices
//! with them applied, so routing scores and records price every request with
//! the prices in force when it was made.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::config::{PricingPolicy, TimeWindow};

/// What is in force for one channel now: the product of the multipliers, and
/// the policies' names.
#[derive(Debug, Clone, PartialEq)]
pub struct InForce {
    pub multiplier: f64,
    pub names: Vec<String>,
}

impl Default for InForce {
    fn default() -> Self {
        Self { multiplier: 1.0, names: Vec::new() }
    }
}

/// `HH:MM` as minutes after midnight.
pub fn minutes(hhmm: &str) -> Option<u16> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Whether `now_ms` falls in the window (an unreadable window never holds:
/// the config check refuses those).
pub fn window_holds(w: &TimeWindow, now_ms: u64) -> bool {
    let (Some(from), Some(to), Ok(tz)) = (minutes(&w.from), minutes(&w.to), TimeZone::get(&w.timezone)) else {
        return false;
    };
    let Ok(ts) = Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(0)) else {
        return false;
    };
    let local = ts.to_zoned(tz);
    let now = local.hour() as u16 * 60 + local.minute() as u16;
    let day = DAYS.get(local.weekday().to_monday_zero_offset() as usize).copied().unwrap_or("mon");
    // A window past midnight belongs to the day it started on.
    let (inside, started_yesterday) =
        if from <= to { (from <= now && now < to, false) } else { (now >= from || now < to, now < to) };
    if !inside {
        return false;
    }
    if w.days.is_empty() {
        return true;
    }
    let day = if started_yesterday {
        let i = local.weekday().to_monday_zero_offset() as usize;
        DAYS.get((i + 6) % 7).copied().unwrap_or(day)
    } else {
        day
    };
    w.days.iter().any(|d| d.eq_ignore_ascii_case(day))
}

/// The policies in force at `now_ms`, given the channel's tokens today.
pub fn in_force(policies: &[PricingPolicy], now_ms: u64, tokens_today: u64) -> InForce {
    let mut out = InForce::default();
    for p in policies {
        let by_time = p.time_window.as_ref().is_none_or(|w| window_holds(w, now_ms));
        let by_use = p.after_tokens_per_day.is_none_or(|limit| tokens_today > limit);
        if by_time && by_use && (p.time_window.is_some() || p.after_tokens_per_day.is_some()) {
            out.multiplier *= p.multiplier;
            out.names.push(p.name.clone());
        }
    }
    out
}

/// A policy's problem, for the config check.
pub fn check(p: &PricingPolicy) -> Result<(), String> {
    if !(p.multiplier >= 0.0 && p.multiplier.is_finite()) {
        return Err("multiplier must be zero or positive".into());
    }
    if p.time_window.is_none() && p.after_tokens_per_day.is_none() {
        return Err("needs a time_window, after_tokens_per_day, or both".into());
    }
    if let Some(w) = &p.time_window {
        for t in [&w.from, &w.to] {
            if minutes(t).is_none() {
                return Err(format!("\"{t}\" is not a time like 16:30"));
            }
        }
        if TimeZone::get(&w.timezone).is_err() {
            return Err(format!("unknown time zone \"{}\"", w.timezone));
        }
        if let Some(d) = w.days.iter().find(|d| !DAYS.contains(&d.to_ascii_lowercase().as_str())) {
            return Err(format!("unknown day \"{d}\" (mon, tue, wed, thu, fri, sat, sun)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        u64::try_from(s.parse::<Timestamp>().unwrap().as_millisecond()).unwrap()
    }

    fn window(from: &str, to: &str, days: &[&str]) -> TimeWindow {
        TimeWindow {
            from: from.into(),
            to: to.into(),
            timezone: "Asia/Shanghai".into(),
            days: days.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn windows_in_local_time_including_past_midnight() {
        // DeepSeek's off-peak hours: 00:30 to 08:30 Beijing time.
        let w = window("00:30", "08:30", &[]);
        assert!(window_holds(&w, at("2026-12-01T17:00:00Z"))); // 01:00 in Beijing
        assert!(!window_holds(&w, at("2026-12-01T01:00:00Z"))); // 09:00 in Beijing
        let night = window("22:00", "06:00", &["fri"]);
        // Friday 23:00 and Saturday 02:00 (the window that began on Friday).
        assert!(window_holds(&night, at("2026-12-04T15:00:00Z")));
        assert!(window_holds(&night, at("2026-12-04T18:00:00Z")));
        assert!(!window_holds(&night, at("2026-12-05T15:00:00Z"))); // Saturday night
    }

    #[test]
    fn multipliers_of_the_policies_in_force_multiply() {
        let policies = vec![
            PricingPolicy {
                name: "night".into(),
                multiplier: 0.5,
                time_window: Some(window("00:30", "08:30", &[])),
                after_tokens_per_day: None,
            },
            PricingPolicy {
                name: "heavy".into(),
                multiplier: 1.2,
                time_window: None,
                after_tokens_per_day: Some(1000),
            },
        ];
        let night = at("2026-12-01T17:00:00Z");
        assert_eq!(in_force(&policies, night, 10), InForce { multiplier: 0.5, names: vec!["night".into()] });
        let both = in_force(&policies, night, 5000);
        assert!((both.multiplier - 0.6).abs() < 1e-12 && both.names.len() == 2);
        assert_eq!(in_force(&policies, at("2026-12-01T01:00:00Z"), 0), InForce::default());
        assert!(check(&policies[0]).is_ok());
        let bad = PricingPolicy { name: "x".into(), multiplier: 1.0, time_window: None, after_tokens_per_day: None };
        assert!(check(&bad).is_err());
    }
}
