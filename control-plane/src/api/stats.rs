//! `GET /admin/v1/stats/...`: totals for the current day, week or month (in
//! `statistics.timezone`), breakdowns, time series, a month-end forecast, and
//! what the recorded traffic would have cost under each strategy.

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::usage::store;
use super::{ApiError, State as ApiState};
use crate::usage::stats::{self, BucketSize, Period};
use crate::usage::{Dimension, Totals};

fn now_ms() -> u64 {
    crate::commands::serve::epoch_ms()
}

#[derive(serde::Deserialize)]
pub struct PeriodQuery {
    #[serde(default = "day")]
    period: Period,
}

fn day() -> Period {
    Period::Day
}

#[derive(Serialize)]
struct Sums {
    requests: u64,
    succeeded: u64,
    failed: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    cost_pico: u64,
}

fn sums(t: &Totals) -> Sums {
    Sums {
        requests: t.requests,
        succeeded: t.succeeded,
        failed: t.requests - t.succeeded,
        prompt_tokens: t.prompt_tokens,
        completion_tokens: t.completion_tokens,
        cost_usd: router_core::cost::usd(t.cost_pico),
        cost_pico: t.cost_pico,
    }
}

pub async fn summary(State(state): State<ApiState>, Query(q): Query<PeriodQuery>) -> Result<Json<Value>, ApiError> {
    let span = stats::current(q.period, now_ms(), &state.timezone);
    let t = state.store.totals(span.since_ms, span.until_ms, None).await.map_err(store)?;
    let t = t.into_iter().next().unwrap_or_default();
    let mut v = serde_json::to_value(sums(&t)).unwrap_or_default();
    v["period"] = json!(q.period);
    v["since_ms"] = json!(span.since_ms);
    v["until_ms"] = json!(span.until_ms);
    v["timezone"] = json!(state.timezone.iana_name().unwrap_or("UTC"));
    Ok(Json(v))
}

#[derive(serde::Deserialize)]
pub struct BreakdownQuery {
    by: Dimension,
    #[serde(default = "day")]
    period: Period,
    /// `cost` (the default: most expensive first) or `requests` (top by traffic).
    #[serde(default)]
    sort: Sort,
}

#[derive(serde::Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    #[default]
    Cost,
    Requests,
}

pub async fn breakdown(
    State(state): State<ApiState>,
    Query(q): Query<BreakdownQuery>,
) -> Result<Json<Value>, ApiError> {
    let span = stats::current(q.period, now_ms(), &state.timezone);
    let mut rows = state.store.totals(span.since_ms, span.until_ms, Some(q.by)).await.map_err(store)?;
    match q.sort {
        Sort::Cost => rows.sort_by(|a, b| b.cost_pico.cmp(&a.cost_pico).then(b.requests.cmp(&a.requests))),
        Sort::Requests => rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(b.cost_pico.cmp(&a.cost_pico))),
    }
    let data: Vec<Value> = rows
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(sums(t)).unwrap_or_default();
            v["key"] = json!(t.key);
            v
        })
        .collect();
    Ok(Json(json!({"period": q.period, "since_ms": span.since_ms, "until_ms": span.until_ms, "data": data})))
}

#[derive(serde::Deserialize)]
pub struct SeriesQuery {
    #[serde(default = "hour")]
    bucket: BucketSize,
    #[serde(default)]
    since_ms: Option<u64>,
    #[serde(default)]
    until_ms: Option<u64>,
}

fn hour() -> BucketSize {
    BucketSize::Hour
}

pub async fn timeseries(State(state): State<ApiState>, Query(q): Query<SeriesQuery>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let default_span = match q.bucket {
        BucketSize::Hour => 86_400_000,
        BucketSize::Day => 30 * 86_400_000,
    };
    let since = q.since_ms.unwrap_or(now.saturating_sub(default_span));
    let until = q.until_ms.unwrap_or(now + 1);
    let points = state.store.points(since, until).await.map_err(store)?;
    Ok(Json(json!({"bucket": q.bucket_name(), "since_ms": since, "until_ms": until,
                   "data": stats::series(&points, q.bucket, &state.timezone)})))
}

impl SeriesQuery {
    fn bucket_name(&self) -> &'static str {
        match self.bucket {
            BucketSize::Hour => "hour",
            BucketSize::Day => "day",
        }
    }
}

pub async fn forecast(State(state): State<ApiState>) -> Result<Json<stats::Forecast>, ApiError> {
    let now = now_ms();
    let month = stats::current(Period::Month, now, &state.timezone);
    let so_far = state.store.totals(month.since_ms, now + 1, None).await.map_err(store)?;
    let week = state.store.totals(now.saturating_sub(7 * 86_400_000), now + 1, None).await.map_err(store)?;
    let (so_far, week) = (so_far.into_iter().next().unwrap_or_default(), week.into_iter().next().unwrap_or_default());
    Ok(Json(stats::forecast(&month, &so_far, &week, now)))
}

/// What this month's recorded tokens would have cost with today's table
/// under each built-in strategy, against what they did cost.
pub async fn savings(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let month = stats::current(Period::Month, now, &state.timezone);
    let actual = state.store.totals(month.since_ms, now + 1, None).await.map_err(store)?;
    let actual = actual.into_iter().next().unwrap_or_default();
    let by_model = state.store.tokens_by_requested_model(month.since_ms, now + 1).await.map_err(store)?;
    let published = state.table.borrow().clone().ok_or_else(ApiError::no_table)?;
    let table = &published.table;
    let mut strategies = serde_json::Map::new();
    let mut best: Option<(&str, u64)> = None;
    for name in router_core::score::BUILTIN {
        let Some(strategy) = router_core::score::builtin_ref(name) else { continue };
        let mut total: u64 = 0;
        let mut unpriced = 0u64;
        for (model, prompt, completion, cached) in &by_model {
            let usage = router_core::usage::Usage {
                prompt_tokens: *prompt,
                completion_tokens: *completion,
                cached_tokens: *cached,
                ..Default::default()
            };
            let price = router_core::plan::first_choice(table, model, strategy).and_then(|c| {
                table
                    .entries_for_model(&c.upstream_model)
                    .iter()
                    .filter_map(|&n| table.entry(n))
                    .find(|e| e.channel == c.channel)?
                    .price
            });
            match price {
                Some(p) => total = total.saturating_add(p.cost(&usage)),
                None => unpriced += prompt + completion,
            }
        }
        if best.is_none_or(|(_, b)| total < b) {
            best = Some((name, total));
        }
        strategies.insert(
            (*name).to_string(),
            json!({"cost_usd": router_core::cost::usd(total), "cost_pico": total, "unpriced_tokens": unpriced}),
        );
    }
    let advice = match best {
        Some((name, cost)) if cost < actual.cost_pico => format!(
            "{name} would have cost ${:.6} this month instead of ${:.6}",
            router_core::cost::usd(cost),
            router_core::cost::usd(actual.cost_pico)
        ),
        _ => "the strategy in force is already the cheapest for this traffic".into(),
    };
    Ok(Json(json!({
        "since_ms": month.since_ms,
        "actual": {"cost_usd": router_core::cost::usd(actual.cost_pico), "cost_pico": actual.cost_pico},
        "strategies": strategies,
        "advice": advice,
    })))
}
