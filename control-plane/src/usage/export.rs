//! Records as JSON lines, one record a line as `GET /admin/v1/usage` shows it:
//! what `smart-router usage export --day` writes, and what retention archives
//! (a file a day) before it deletes old records.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::stats::{self, Span};
use super::{Cursor, Store, StoreError};

/// Records per page read from the store.
const PAGE: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Write the records of `span`, oldest first; how many.
pub async fn write_span(store: &Store, span: &Span, out: &mut impl Write, shown: &Path) -> Result<u64, ExportError> {
    let mut cursor: Option<Cursor> = None;
    let mut written = 0u64;
    loop {
        let (page, next) = store.list(span.since_ms, span.until_ms, PAGE, cursor.as_ref()).await?;
        for r in &page {
            serde_json::to_writer(&mut *out, r)?;
            out.write_all(b"\n").map_err(|source| ExportError::Write { path: shown.to_path_buf(), source })?;
            written += 1;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(written),
        }
    }
}

/// The archive file of `day` in `dir`.
pub fn archive_path(dir: &Path, day: Date) -> PathBuf {
    dir.join(format!("usage-{day}.jsonl"))
}

/// What one retention pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retained {
    pub archived: Vec<PathBuf>,
    pub deleted: u64,
}

/// Delete records older than `days` days. With an archive directory, whole
/// days go (those before the day `days` days ago, in `tz`), each written to
/// `usage-YYYY-MM-DD.jsonl` first; a day whose file cannot be written is kept.
pub async fn retain(
    store: &Store,
    days: u32,
    archive_dir: Option<&Path>,
    tz: &TimeZone,
    now_ms: u64,
) -> Result<Retained, ExportError> {
    let age_ms = u64::from(days) * 86_400_000;
    let Some(dir) = archive_dir else {
        let deleted = store.delete_before(now_ms.saturating_sub(age_ms)).await?;
        return Ok(Retained { archived: Vec::new(), deleted });
    };
    let cutoff_day = stats::date_at(now_ms.saturating_sub(age_ms), tz);
    let cutoff = stats::day(cutoff_day, tz).since_ms;
    let Some(oldest) = store.oldest_ms().await? else {
        return Ok(Retained::default());
    };
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Write { path: dir.to_path_buf(), source })?;
    let mut out = Retained::default();
    let mut day = stats::date_at(oldest, tz);
    while day < cutoff_day {
        let span = stats::day(day, tz);
        let path = archive_path(dir, day);
        let part = path.with_extension("jsonl.part");
        let file = std::fs::File::create(&part).map_err(|source| ExportError::Write { path: part.clone(), source })?;
        let mut w = std::io::BufWriter::new(file);
        write_span(store, &span, &mut w, &part).await?;
        let done =
            w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).and_then(|()| settle(&part, &path));
        done.map_err(|source| ExportError::Write { path: path.clone(), source })?;
        out.archived.push(path);
        out.deleted += store.delete_before(span.until_ms.min(cutoff)).await?;
        // On to the next day with records (days without any have no file).
        match store.oldest_ms().await? {
            Some(next) if stats::date_at(next, tz) > day => day = stats::date_at(next, tz),
            _ => break,
        }
    }
    Ok(out)
}

/// The finished `part` becomes `path`, or is added to it: records that reach
/// the store after their day was archived (an Envoy delivering late) join that
/// day's file. (Should the process die between this and the delete, the next
/// pass writes those records again; ids tell the copies apart.)
fn settle(part: &Path, path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        return std::fs::rename(part, path);
    }
    let mut to = std::fs::OpenOptions::new().append(true).open(path)?;
    std::io::copy(&mut std::fs::File::open(part)?, &mut to)?;
    to.sync_all()?;
    std::fs::remove_file(part)
}

#[cfg(test)]
mod tests {
    use router_core::record::Record;

    use super::*;

    fn record(id: &str, ts_ms: u64) -> Record {
        Record {
            id: id.into(),
            ts_ms,
            client: None,
            model_requested: Some("m".into()),
            model_used: Some("m".into()),
            channel: Some("a".into()),
            provider: Some("openai".into()),
            stream: false,
            status: 200,
            attempts: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_pico: Some(7),
            latency_ms: 3,
            ttft_ms: Some(1),
            usage_estimated: false,
            error: None,
        }
    }

    fn at(s: &str) -> u64 {
        u64::try_from(s.parse::<jiff::Timestamp>().unwrap().as_millisecond()).unwrap()
    }

    #[tokio::test]
    async fn old_days_are_archived_whole_then_deleted() {
        let dir = std::env::temp_dir().join(format!("sar-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open("", &dir.join("data")).await.unwrap();
        let records = [
            record("r1", at("2026-11-01T08:00:00Z")),
            record("r2", at("2026-11-01T23:59:59Z")),
            record("r3", at("2026-11-03T00:00:00Z")),
            record("r4", at("2026-11-20T12:00:00Z")),
        ];
        store.insert(&records).await.unwrap();
        let archive = dir.join("archive");
        // 10 days before 2026-11-15 is 2026-11-05: the days before it go.
        let now = at("2026-11-15T06:00:00Z");
        let done = retain(&store, 10, Some(&archive), &TimeZone::UTC, now).await.unwrap();
        assert_eq!(done.deleted, 3);
        assert_eq!(done.archived, vec![archive.join("usage-2026-11-01.jsonl"), archive.join("usage-2026-11-03.jsonl")]);
        let first = std::fs::read_to_string(&done.archived[0]).unwrap();
        let ids: Vec<String> = first
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert!(!archive.join("usage-2026-11-02.jsonl").exists(), "no file for a day without records");
        assert!(!archive.join("usage-2026-11-03.jsonl.part").exists());
        let (left, _) = store.list(0, u64::MAX, 10, None).await.unwrap();
        assert_eq!(left.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(), ["r4"]);
        // Again: nothing more to do.
        assert_eq!(retain(&store, 10, Some(&archive), &TimeZone::UTC, now).await.unwrap(), Retained::default());
        // A record for an archived day arrives late: it joins that day's file.
        store.insert(&[record("r0", at("2026-11-01T12:00:00Z"))]).await.unwrap();
        let late = retain(&store, 10, Some(&archive), &TimeZone::UTC, now).await.unwrap();
        assert_eq!(late.deleted, 1);
        assert_eq!(std::fs::read_to_string(&done.archived[0]).unwrap().lines().count(), 3);
        // Without an archive, by age alone.
        assert_eq!(retain(&store, 1, None, &TimeZone::UTC, at("2026-11-22T00:00:00Z")).await.unwrap().deleted, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
