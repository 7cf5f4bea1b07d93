//! gse-control's audit trail: every changing call's record ([`crate::api::audit`]) kept in
//! the `audit` table as long as events, and read back by the `DescribeAuditRecords`
//! extension action (and `gse-control audit`).

use deadpool_postgres::Pool;
use serde_json::{Map, Value, json};

use super::{ControlApi, db_error};
use crate::api::CapiError;
use crate::api::audit::Record;
use crate::api::params::Params;

/// Records being stored at most at once; past it a record is logged only.
const STORING: usize = 64;

static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Stores one record (off the request's path; a failure is logged, the call's answer stands).
pub(super) fn store(pool: Pool, replica: String, r: Record) {
    use std::sync::atomic::Ordering;
    if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= STORING {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(request.id = %r.request_id, "audit records arrive faster than the database takes them; this one is in the log only");
        return;
    }
    tokio::spawn(async move {
        let stored = async {
            let db = pool.get().await.map_err(|e| e.to_string())?;
            db.execute(
                "INSERT INTO audit (time_ms, secret_id, action, resources, source, outcome, request_id, replica)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &r.time_ms,
                    &r.secret_id,
                    &r.action,
                    &r.resources,
                    &r.source,
                    &r.outcome,
                    &r.request_id,
                    &replica,
                ],
            )
            .await
            .map_err(|e| crate::control::db::detail(&e))
        };
        if let Err(e) = stored.await {
            tracing::warn!(request.id = %r.request_id, error = %e, "cannot store an audit record (the log line stands)");
        }
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Audit records as the API shows them, newest first.
pub async fn read(
    db: &deadpool_postgres::Object,
    secret_id: Option<&str>,
    action: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Value>, i64), tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT time_ms, secret_id, action, resources, source, outcome, request_id, replica,
                    count(*) OVER ()
             FROM audit
             WHERE ($1::text IS NULL OR secret_id = $1) AND ($2::text IS NULL OR action = $2)
             ORDER BY time_ms DESC, id DESC OFFSET $3 LIMIT $4",
            &[&secret_id, &action, &offset, &limit],
        )
        .await?;
    let total = rows.first().map(|r| r.get(8)).unwrap_or(0);
    let records = rows
        .iter()
        .map(|r| {
            let ms: i64 = r.get(0);
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
            json!({
                "Time": crate::api::time::format_time_millis(time),
                "SecretId": r.get::<_, String>(1),
                "Action": r.get::<_, String>(2),
                "Resources": r.get::<_, Vec<String>>(3),
                "Source": r.get::<_, String>(4),
                "Outcome": r.get::<_, String>(5),
                "RequestId": r.get::<_, String>(6),
                "Replica": r.get::<_, String>(7),
            })
        })
        .collect();
    Ok((records, total))
}

impl ControlApi {
    /// `DescribeAuditRecords` (an extension): `SecretId`, `AuditedAction`, `Offset`, `Limit`
    /// (≤ 100).
    pub(super) async fn describe_audit(&self, map: Map<String, Value>) -> Result<Value, CapiError> {
        let p = Params::new(map, &["SecretId", "AuditedAction", "Offset", "Limit"])?;
        let secret_id = p.opt_str("SecretId", 128)?;
        let action = p.opt_str("AuditedAction", 128)?;
        let offset = p.opt_int("Offset", 0, i64::MAX)?.unwrap_or(0);
        let limit = p.opt_int("Limit", 1, 100)?.unwrap_or(100);
        let db = self.db().await?;
        let (records, total) = read(&db, secret_id.as_deref(), action.as_deref(), offset, limit)
            .await
            .map_err(db_error("reading audit records"))?;
        Ok(json!({"AuditRecords": records, "TotalCount": total}))
    }
}
