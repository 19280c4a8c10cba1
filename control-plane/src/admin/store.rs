//! Admin changes and the audit log, in the same store (SQLite or PostgreSQL) as
//! the usage records.

use serde_json::Value;
use sqlx::Row;

use super::{Change, Kind, Op, Overlays};
use crate::usage::{Store, StoreError};

/// One admin action: who (an admin token's id, never the token), when, what,
/// and the object before and after it (keys masked).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    pub id: String,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Which audit entries to list: newest first, older than `before_id`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Every stored change, to lay over the file.
    pub async fn admin_objects(&self) -> Result<Overlays, StoreError> {
        let rows = sqlx::query("SELECT kind, name, op, doc FROM admin_objects").fetch_all(&self.pool).await?;
        let mut out = Overlays::new();
        for row in rows {
            let (kind, name, op, doc): (String, String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let (Some(kind), Some(op)) = (Kind::parse(&kind), Op::parse(&op)) else {
                tracing::warn!("admin change {kind}/{name} ({op}) is not understood by this version; left out");
                continue;
            };
            let doc = serde_json::from_str(&doc).unwrap_or(Value::Null);
            out.insert((kind, name), Change { op, doc });
        }
        Ok(out)
    }

    /// Store one object's change (None: forget it) with its audit entry, in one
    /// transaction.
    pub async fn admin_change(
        &self,
        kind: Kind,
        name: &str,
        change: Option<&Change>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        match change {
            Some(c) => {
                let sql = format!(
                    "INSERT INTO admin_objects (kind, name, op, doc, updated_ms) VALUES ({}, {}, {}, {}, {}) \
                     ON CONFLICT (kind, name) DO UPDATE SET op = excluded.op, doc = excluded.doc, \
                     updated_ms = excluded.updated_ms",
                    self.ph(1),
                    self.ph(2),
                    self.ph(3),
                    self.ph(4),
                    self.ph(5)
                );
                sqlx::query(&sql)
                    .bind(kind.as_str().to_string())
                    .bind(name.to_string())
                    .bind(c.op.as_str().to_string())
                    .bind(c.doc.to_string())
                    .bind(i(audit.at_ms))
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                let sql = format!("DELETE FROM admin_objects WHERE kind = {} AND name = {}", self.ph(1), self.ph(2));
                sqlx::query(&sql).bind(kind.as_str().to_string()).bind(name.to_string()).execute(&mut *tx).await?;
            }
        }
        let sql = format!(
            "INSERT INTO audit (id, at_ms, actor, action, kind, name, before_doc, after_doc) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            self.ph(1),
            self.ph(2),
            self.ph(3),
            self.ph(4),
            self.ph(5),
            self.ph(6),
            self.ph(7),
            self.ph(8)
        );
        sqlx::query(&sql)
            .bind(audit.id.clone())
            .bind(i(audit.at_ms))
            .bind(audit.actor.clone())
            .bind(audit.action.clone())
            .bind(audit.kind.clone())
            .bind(audit.name.clone())
            .bind(audit.before.as_ref().map(Value::to_string))
            .bind(audit.after.as_ref().map(Value::to_string))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries, newest first, and the cursor of the next page.
    pub async fn audit(&self, f: &AuditFilter) -> Result<(Vec<AuditEntry>, Option<String>), StoreError> {
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        let mut clauses = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut text = |column: &str, value: &Option<String>, clauses: &mut Vec<String>| {
            if let Some(v) = value {
                n += 1;
                clauses.push(format!("{column} = {}", self.ph(n)));
                binds.push(v.clone());
            }
        };
        text("kind", &f.kind, &mut clauses);
        text("name", &f.name, &mut clauses);
        text("actor", &f.actor, &mut clauses);
        text("action", &f.action, &mut clauses);
        // Ids start with the time, zero-padded: they sort as the entries were made.
        if let Some(c) = &f.cursor {
            n += 1;
            clauses.push(format!("id < {}", self.ph(n)));
            binds.push(c.clone());
        }
        let since = f.since_ms.unwrap_or(0);
        let until = f.until_ms.unwrap_or(u64::MAX / 2);
        // SQLite numbers `?` by position: the clauses come in the order bound.
        clauses.push(format!("at_ms >= {}", self.ph(n + 1)));
        clauses.push(format!("at_ms < {}", self.ph(n + 2)));
        let where_ = format!("WHERE {}", clauses.join(" AND "));
        let sql = format!(
            "SELECT id, at_ms, actor, action, kind, name, before_doc, after_doc FROM audit {where_} \
             ORDER BY id DESC LIMIT {}",
            self.ph(n + 3)
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.clone());
        }
        let rows = q
            .bind(i(since))
            .bind(i(until))
            .bind(i64::try_from(limit + 1).unwrap_or(1001))
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let doc = |v: Option<String>| v.and_then(|s| serde_json::from_str(&s).ok());
            out.push(AuditEntry {
                id: row.try_get(0)?,
                at_ms: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                kind: row.try_get(4)?,
                name: row.try_get(5)?,
                before: doc(row.try_get(6)?),
                after: doc(row.try_get(7)?),
            });
        }
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((out, next))
    }
}

/// An audit entry's id: the time (zero-padded, so ids sort by time), this
/// process's count (entries of one millisecond keep their order) and a random
/// part (control planes sharing a database never clash).
pub fn audit_id(at_ms: u64) -> String {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("{at_ms:015}-{n:08x}-{:08x}", u32::from_be_bytes(r))
}
