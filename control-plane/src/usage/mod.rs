//! Usage records, kept in SQLite (a file under `data_dir`, the default) or
//! PostgreSQL (`storage.url: postgres://...`, so several control planes can
//! share one database), through one code path (sqlx's `Any` driver).
//!
//! Rows are lean: names (models, channels, providers, clients, error codes) are
//! stored once in `labels` and referred to by a number made from the name's
//! hash, which every control plane computes alike. A record's id is its primary
//! key: a record delivered twice is stored once.

pub mod export;
pub mod stats;

use std::collections::HashSet;
use std::sync::Mutex;

use router_core::record::Record;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

#[cfg(test)]
mod tests {
    #[test]
    fn label_ids_are_positive_and_distinct() {
        let ids: std::collections::HashSet<i64> =
            ["a", "b", "gpt-4o-mini", "model_not_found", "x"].iter().map(|t| super::label_id(t)).collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|&i| i >= 0));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the usage store {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("usage store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("cannot create {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

pub struct Store {
    pub(crate) pool: AnyPool,
    kind: Kind,
    /// Label ids known to be in `labels` already (so most inserts skip them).
    known_labels: Mutex<HashSet<i64>>,
}

/// A label's id: the first 63 bits of its SHA-256.
pub fn label_id(text: &str) -> i64 {
    let d = crate::secrets::digest(text.as_bytes());
    (u64::from_str_radix(d.get(..16).unwrap_or("0"), 16).unwrap_or(0) >> 1) as i64
}

const SCHEMA: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS labels (id BIGINT PRIMARY KEY, text TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS usage_records (
        id TEXT PRIMARY KEY,
        ts_ms BIGINT NOT NULL,
        client BIGINT,
        model_requested BIGINT,
        model_used BIGINT,
        channel BIGINT,
        provider BIGINT,
        stream SMALLINT NOT NULL,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cache_write_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_pico BIGINT,
        latency_ms BIGINT NOT NULL,
        ttft_ms BIGINT,
        usage_estimated SMALLINT NOT NULL,
        error BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts_ms)",
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    // (Added in place: a store from before alerts gets the table on open.)
    "CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL,
        raised_ms BIGINT NOT NULL,
        acked_ms BIGINT
    )",
    // Changes made through the admin API over the config file (see `admin`).
    "CREATE TABLE IF NOT EXISTS admin_objects (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        op TEXT NOT NULL,
        doc TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (kind, name)
    )",
    "CREATE TABLE IF NOT EXISTS audit (
        id TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        before_doc TEXT,
        after_doc TEXT
    )",
];
const SCHEMA_VERSION: i64 = 1;

/// Columns of `usage_records`, in insert order.
const COLUMNS: &str = "id, ts_ms, client, model_requested, model_used, channel, provider, stream, status, attempts, \
     prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_pico, latency_ms, \
     ttft_ms, usage_estimated, error";
const NCOLS: usize = 20;
/// Rows per insert statement (20 parameters each, well under both databases' limits).
const ROWS_PER_INSERT: usize = 400;

/// A record as the API shows it: with its cost in USD too.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct RecordOut {
    #[serde(flatten)]
    pub record: Record,
    pub cost_usd: Option<f64>,
}

fn u(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn back(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Open (and create, and bring up to date) the store at `url`: `sqlite://path`,
    /// `postgres://...`, or empty for `<data_dir>/router.db`.
    pub async fn open(url: &str, data_dir: &std::path::Path) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = if url.is_empty() {
            std::fs::create_dir_all(data_dir)
                .map_err(|source| StoreError::Dir { path: data_dir.display().to_string(), source })?;
            format!("sqlite://{}", data_dir.join("router.db").display())
        } else {
            url.to_string()
        };
        let kind = if url.starts_with("sqlite:") { Kind::Sqlite } else { Kind::Postgres };
        let connect = if kind == Kind::Sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.clone()
        };
        let shown = redact(&url);
        let pool = AnyPoolOptions::new()
            .max_connections(if kind == Kind::Sqlite { 1 } else { 4 })
            .connect(&connect)
            .await
            .map_err(|source| StoreError::Open { url: shown.clone(), source })?;
        let store = Self { pool, kind, known_labels: Mutex::new(HashSet::new()) };
        store.migrate().await.map_err(|source| StoreError::Open { url: shown, source })?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        if self.kind == Kind::Sqlite {
            // Readers never wait for the writer; a crash loses no committed record.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&self.pool).await?;
            sqlx::query("PRAGMA synchronous=NORMAL").execute(&self.pool).await?;
        }
        for statement in SCHEMA {
            sqlx::query(statement).execute(&self.pool).await?;
        }
        let version: Option<i64> = sqlx::query("SELECT MAX(version) FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .try_get::<Option<i64>, _>(0)?;
        if version.is_none() {
            sqlx::query("INSERT INTO schema_version (version) VALUES (1)").execute(&self.pool).await?;
        }
        if version.is_some_and(|v| v > SCHEMA_VERSION) {
            tracing::warn!(
                "the usage store was written by a newer version (schema {version:?}); reading it as {SCHEMA_VERSION}"
            );
        }
        Ok(())
    }

    /// The `n`th placeholder (from 1) in this database's syntax.
    pub(crate) fn ph(&self, n: usize) -> String {
        match self.kind {
            Kind::Sqlite => "?".into(),
            Kind::Postgres => format!("${n}"),
        }
    }

    /// Store records, in one transaction; returns how many were new (a record
    /// already stored is left as it is).
    pub async fn insert(&self, records: &[Record]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        // Labels first: the names these records use that are not stored yet.
        let mut new_labels: Vec<(i64, &str)> = Vec::new();
        {
            let known = self.known_labels.lock().map(|k| k.clone()).unwrap_or_default();
            let mut seen = HashSet::new();
            for r in records {
                for text in [&r.client, &r.model_requested, &r.model_used, &r.channel, &r.provider, &r.error]
                    .into_iter()
                    .flatten()
                {
                    let id = label_id(text);
                    if !known.contains(&id) && seen.insert(id) {
                        new_labels.push((id, text));
                    }
                }
            }
        }
        for chunk in new_labels.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("({}, {})", self.ph(2 * i + 1), self.ph(2 * i + 2))).collect();
            let sql = format!("INSERT INTO labels (id, text) VALUES {} ON CONFLICT (id) DO NOTHING", values.join(", "));
            let mut q = sqlx::query(&sql);
            for (id, text) in chunk {
                q = q.bind(*id).bind(text.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        let mut inserted = 0;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let cols: Vec<String> = (0..NCOLS).map(|c| self.ph(row * NCOLS + c + 1)).collect();
                    format!("({})", cols.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO usage_records ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            let label = |t: &Option<String>| t.as_deref().map(label_id);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(u(r.ts_ms))
                    .bind(label(&r.client))
                    .bind(label(&r.model_requested))
                    .bind(label(&r.model_used))
                    .bind(label(&r.channel))
                    .bind(label(&r.provider))
                    .bind(i16::from(r.stream))
                    .bind(i32::from(r.status))
                    .bind(i32::try_from(r.attempts).unwrap_or(i32::MAX))
                    .bind(u(r.prompt_tokens))
                    .bind(u(r.completion_tokens))
                    .bind(u(r.cached_tokens))
                    .bind(u(r.cache_write_tokens))
                    .bind(u(r.reasoning_tokens))
                    .bind(r.cost_pico.map(u))
                    .bind(u(r.latency_ms))
                    .bind(r.ttft_ms.map(u))
                    .bind(i16::from(r.usage_estimated))
                    .bind(label(&r.error));
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        if let Ok(mut known) = self.known_labels.lock() {
            known.extend(new_labels.iter().map(|(id, _)| *id));
        }
        Ok(inserted)
    }

    /// Keep `alert` unless one with its id was raised before; true when it is new.
    pub async fn raise_alert(&self, alert: &crate::alerts::Alert) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO alerts (id, kind, subject, message, raised_ms) VALUES ({}, {}, {}, {}, {}) \
             ON CONFLICT (id) DO NOTHING",
            self.ph(1),
            self.ph(2),
            self.ph(3),
            self.ph(4),
            self.ph(5)
        );
        let done = sqlx::query(&sql)
            .bind(alert.id.clone())
            .bind(alert.kind.to_string())
            .bind(alert.subject.clone())
            .bind(alert.message.clone())
            .bind(u(alert.raised_ms))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Alerts, newest first: those not acknowledged, or all of them.
    pub async fn alerts(&self, include_acked: bool, limit: u32) -> Result<Vec<crate::alerts::Alert>, StoreError> {
        let filter = if include_acked { "" } else { " WHERE acked_ms IS NULL" };
        let sql = format!(
            "SELECT id, kind, subject, message, raised_ms, acked_ms FROM alerts{filter} \
             ORDER BY raised_ms DESC, id LIMIT {}",
            self.ph(1)
        );
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(crate::alerts::Alert {
                    id: row.try_get(0)?,
                    kind: crate::alerts::Kind::parse(&row.try_get::<String, _>(1)?),
                    subject: row.try_get(2)?,
                    message: row.try_get(3)?,
                    raised_ms: back(row.try_get(4)?),
                    acked_ms: row.try_get::<Option<i64>, _>(5)?.map(back),
                })
            })
            .collect()
    }

    /// Acknowledge an alert; false when there is no such alert.
    pub async fn ack_alert(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let sql = format!("UPDATE alerts SET acked_ms = COALESCE(acked_ms, {}) WHERE id = {}", self.ph(1), self.ph(2));
        let done = sqlx::query(&sql).bind(u(now_ms)).bind(id.to_string()).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records from `since_ms` (inclusive) to `until_ms` (exclusive), oldest
    /// first, `limit` at most, after `cursor` (what the previous page returned).
    pub async fn list(
        &self,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
        cursor: Option<&Cursor>,
    ) -> Result<(Vec<RecordOut>, Option<Cursor>), StoreError> {
        let (after_ts, after_id) = cursor.map(|c| (c.ts_ms, c.id.as_str())).unwrap_or((0, ""));
        let sql = format!(
            "SELECT {} FROM usage_records r WHERE r.ts_ms >= {} AND r.ts_ms < {} \
             AND (r.ts_ms > {} OR (r.ts_ms = {} AND r.id > {})) ORDER BY r.ts_ms, r.id LIMIT {}",
            select_columns(),
            self.ph(1),
            self.ph(2),
            self.ph(3),
            self.ph(4),
            self.ph(5),
            self.ph(6)
        );
        let rows = sqlx::query(&sql)
            .bind(u(since_ms))
            .bind(u(until_ms))
            .bind(u(after_ts))
            .bind(u(after_ts))
            .bind(after_id.to_string())
            .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<RecordOut> = rows.iter().map(row_to_record).collect::<Result<_, _>>()?;
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|r| Cursor { ts_ms: r.record.ts_ms, id: r.record.id.clone() })
        } else {
            None
        };
        Ok((out, next))
    }

    /// Totals over `[from, to)`, grouped by `by` (one group for everything when `None`).
    pub async fn totals(&self, from_ms: u64, to_ms: u64, by: Option<Dimension>) -> Result<Vec<Totals>, StoreError> {
        let (key, group) = match by {
            Some(d) => (
                format!("(SELECT text FROM labels WHERE id = r.{})", d.column()),
                format!(" GROUP BY r.{}", d.column()),
            ),
            None => ("NULL".to_string(), String::new()),
        };
        let sql = format!(
            "SELECT {key}, COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN r.status < 400 AND r.error IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(r.prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(r.completion_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(r.cost_pico), 0) AS BIGINT) \
             FROM usage_records r WHERE r.ts_ms >= {} AND r.ts_ms < {}{group}",
            self.ph(1),
            self.ph(2)
        );
        let rows = sqlx::query(&sql).bind(u(from_ms)).bind(u(to_ms)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Totals {
                    key: row.try_get::<Option<String>, _>(0)?,
                    requests: back(row.try_get(1)?),
                    succeeded: back(row.try_get(2)?),
                    prompt_tokens: back(row.try_get(3)?),
                    completion_tokens: back(row.try_get(4)?),
                    cost_pico: back(row.try_get(5)?),
                })
            })
            .collect()
    }

    /// Per record in `[from, to)`: when, latency, time to first token, tokens and
    /// cost (for time series and percentiles, which the databases do not share).
    pub async fn points(&self, from_ms: u64, to_ms: u64) -> Result<Vec<Point>, StoreError> {
        let sql = format!(
            "SELECT ts_ms, latency_ms, ttft_ms, prompt_tokens, completion_tokens, COALESCE(cost_pico, 0), \
             CASE WHEN status < 400 AND error IS NULL THEN 1 ELSE 0 END \
             FROM usage_records WHERE ts_ms >= {} AND ts_ms < {} ORDER BY ts_ms",
            self.ph(1),
            self.ph(2)
        );
        let rows = sqlx::query(&sql).bind(u(from_ms)).bind(u(to_ms)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Point {
                    ts_ms: back(row.try_get(0)?),
                    latency_ms: back(row.try_get(1)?),
                    ttft_ms: row.try_get::<Option<i64>, _>(2)?.map(back),
                    prompt_tokens: back(row.try_get(3)?),
                    completion_tokens: back(row.try_get(4)?),
                    cost_pico: back(row.try_get(5)?),
                    succeeded: row
                        .try_get::<i32, _>(6)
                        .map(|v| v == 1)
                        .or_else(|_| row.try_get::<i64, _>(6).map(|v| v == 1))?,
                })
            })
            .collect()
    }

    /// Tokens per requested model over `[from, to)`: what the savings advice
    /// prices under other strategies.
    pub async fn tokens_by_requested_model(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(String, u64, u64, u64)>, StoreError> {
        let sql = format!(
            "SELECT (SELECT text FROM labels WHERE id = r.model_requested), \
             CAST(COALESCE(SUM(r.prompt_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(r.completion_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(r.cached_tokens), 0) AS BIGINT) \
             FROM usage_records r WHERE r.ts_ms >= {} AND r.ts_ms < {} AND r.model_requested IS NOT NULL \
             GROUP BY r.model_requested",
            self.ph(1),
            self.ph(2)
        );
        let rows = sqlx::query(&sql).bind(u(from_ms)).bind(u(to_ms)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                    back(row.try_get(1)?),
                    back(row.try_get(2)?),
                    back(row.try_get(3)?),
                ))
            })
            .collect()
    }

    /// When the oldest record was made (none when there are none).
    pub async fn oldest_ms(&self) -> Result<Option<u64>, StoreError> {
        let oldest: Option<i64> =
            sqlx::query("SELECT MIN(ts_ms) FROM usage_records").fetch_one(&self.pool).await?.try_get(0)?;
        Ok(oldest.map(back))
    }

    /// Delete records older than `before_ms`; how many went.
    pub async fn delete_before(&self, before_ms: u64) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM usage_records WHERE ts_ms < {}", self.ph(1));
        Ok(sqlx::query(&sql).bind(u(before_ms)).execute(&self.pool).await?.rows_affected())
    }
}

/// Where a page of records ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub ts_ms: u64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts_ms, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (ts, id) = text.split_once('_')?;
        Some(Self { ts_ms: ts.parse().ok()?, id: id.to_string() })
    }
}

/// What a breakdown groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Model,
    Channel,
    Provider,
    Client,
}

impl Dimension {
    fn column(self) -> &'static str {
        match self {
            Dimension::Model => "model_requested",
            Dimension::Channel => "channel",
            Dimension::Provider => "provider",
            Dimension::Client => "client",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub key: Option<String>,
    pub requests: u64,
    pub succeeded: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_pico: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub ts_ms: u64,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_pico: u64,
    pub succeeded: bool,
}

fn select_columns() -> String {
    let label = |c: &str| format!("(SELECT text FROM labels WHERE id = r.{c})");
    [
        "r.id".to_string(),
        "r.ts_ms".into(),
        label("client"),
        label("model_requested"),
        label("model_used"),
        label("channel"),
        label("provider"),
        "r.stream".into(),
        "r.status".into(),
        "r.attempts".into(),
        "r.prompt_tokens".into(),
        "r.completion_tokens".into(),
        "r.cached_tokens".into(),
        "r.cache_write_tokens".into(),
        "r.reasoning_tokens".into(),
        "r.cost_pico".into(),
        "r.latency_ms".into(),
        "r.ttft_ms".into(),
        "r.usage_estimated".into(),
        label("error"),
    ]
    .join(", ")
}

/// A small integer column, whichever integer type the driver decodes it as.
fn small(row: &AnyRow, i: usize) -> Result<i64, sqlx::Error> {
    row.try_get::<i64, _>(i)
        .or_else(|_| row.try_get::<i32, _>(i).map(i64::from))
        .or_else(|_| row.try_get::<i16, _>(i).map(i64::from))
}

fn row_to_record(row: &AnyRow) -> Result<RecordOut, sqlx::Error> {
    let record = Record {
        id: row.try_get(0)?,
        ts_ms: back(row.try_get(1)?),
        client: row.try_get(2)?,
        model_requested: row.try_get(3)?,
        model_used: row.try_get(4)?,
        channel: row.try_get(5)?,
        provider: row.try_get(6)?,
        stream: small(row, 7)? != 0,
        status: u16::try_from(small(row, 8)?).unwrap_or(0),
        attempts: u32::try_from(small(row, 9)?).unwrap_or(0),
        prompt_tokens: back(row.try_get(10)?),
        completion_tokens: back(row.try_get(11)?),
        cached_tokens: back(row.try_get(12)?),
        cache_write_tokens: back(row.try_get(13)?),
        reasoning_tokens: back(row.try_get(14)?),
        cost_pico: row.try_get::<Option<i64>, _>(15)?.map(back),
        latency_ms: back(row.try_get(16)?),
        ttft_ms: row.try_get::<Option<i64>, _>(17)?.map(back),
        usage_estimated: small(row, 18)? != 0,
        error: row.try_get(19)?,
    };
    let cost_usd = record.cost_pico.map(router_core::cost::usd);
    Ok(RecordOut { record, cost_usd })
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
