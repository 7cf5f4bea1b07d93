//! The database: a connection pool, and the schema created and migrated at start.
//!
//! Migrations are numbered SQL files applied in one transaction under an advisory lock, so two
//! replicas starting at once apply each exactly once; a database newer than this binary is used
//! as it is (migrations only add).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// The migrations, in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_busy_keys_and_hot_rows.sql"),
    include_str!("migrations/0003_audit.sql"),
];

/// How often the tables every create rewrites are vacuumed (see [`vacuum`]).
pub const VACUUM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Those tables.
const HOT_TABLES: &str = "instances, placements, idempotency";

/// The advisory lock key migrations hold ("gsectl" in ASCII).
const MIGRATION_LOCK: i64 = 0x0000_6773_6563_746c;

/// Connections in the pool.
pub const POOL_SIZE: usize = 32;
/// How long a connection is waited for (from the pool, or to the server) before the step
/// fails, so a database that went away fails calls instead of hanging them.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL did not parse (check-config catches this first).
    #[error("database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("building the database pool: {0}")]
    Pool(String),
    /// No connection could be had.
    #[error("connecting to the database: {0}")]
    Connect(String),
    /// The replica's writer stopped (the replica is shutting down).
    #[error("the replica's database writer stopped")]
    Stopped,
    /// A statement could not be prepared.
    #[error("preparing the statement for {step}: {}", detail(source))]
    Prepare {
        /// What it was for.
        step: &'static str,
        /// PostgreSQL's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("{step}: {}", detail(source))]
    Query {
        /// What was being done.
        step: &'static str,
        /// PostgreSQL's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl DbError {
    /// Whether the statement failed for the data it was given (SQLSTATE class 22: a NUL in
    /// text, an invalid byte sequence, a value too long): the same write would fail forever.
    pub fn is_bad_data(&self) -> bool {
        match self {
            Self::Query { source, .. } => source
                .as_db_error()
                .is_some_and(|db| db.code().code().starts_with("22")),
            _ => false,
        }
    }
}

/// PostgreSQL's own message (e.g. "deadlock detected"), which the error's Display leaves out.
pub fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl DbError {
    /// A failed statement, named by its step.
    pub fn query(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Query { step, source }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Connect(e.to_string())
    }
}

/// A pool of `size` connections to `url`.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(WAIT);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(WAIT))
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Vacuums the tables every create rewrites, every [`VACUUM_EVERY`], until the process ends.
///
/// Under a thousand creates a second each host's row is rewritten several times a second:
/// the dead versions pile up far faster than autovacuum's one-minute round clears them, and
/// every choice of host then reads through them. These tables are small (a row per host, per
/// placement, per token), so a vacuum takes milliseconds; one that would wait on another
/// replica's is skipped.
pub async fn vacuum(pool: Pool) {
    let mut every = tokio::time::interval(VACUUM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let done = async {
            let db = pool.get().await?;
            db.batch_execute(&format!("VACUUM (SKIP_LOCKED) {HOT_TABLES}"))
                .await
                .map_err(DbError::query("vacuuming the tables creates rewrite"))
        };
        if let Err(e) = done.await {
            tracing::debug!(error = %e, "vacuum skipped");
        }
    }
}

/// Creates or migrates the schema; returns the version the database is at.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client
        .transaction()
        .await
        .map_err(DbError::query("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(DbError::query("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(DbError::query("creating schema_migrations"))?;
    let at: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(DbError::query("reading the schema version"))?
        .get(0);
    let at = at.max(0) as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(DbError::query("applying a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(DbError::query("recording a migration"))?;
        tracing::info!(db.version = version, "database migrated");
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the migration"))?;
    if at > MIGRATIONS.len() {
        tracing::warn!(
            db.version = at,
            known = MIGRATIONS.len(),
            "the database schema is newer than this gse-control; running on it (migrations only add)"
        );
    }
    Ok(at.max(MIGRATIONS.len()))
}
