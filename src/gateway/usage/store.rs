//! The ledger's storage: SQLite (WAL) in the state dir, written by one thread that takes
//! records from a bounded queue and inserts them in batches, so a request never waits on the
//! disk. A full queue or a failing database drops the record and counts it; the counts are
//! shown in `/api/stats`, `/metrics` and the dashboard. Rows older than the retention are
//! deleted as the writer goes. Readers (reports, the admin API) open their own connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params};

use super::Observer;
use super::record::{Finished, Record, Sink};

/// Records waiting for the writer at most; past this they are dropped and counted.
const QUEUE: usize = 20_000;
/// Rows per transaction at most.
const BATCH: usize = 4096;
/// How long the writer lets records gather after the first of a batch arrives.
const GATHER: Duration = Duration::from_millis(50);

/// What happened to the records handed to the ledger.
#[derive(Default)]
pub struct Counters {
    pub written: AtomicU64,
    /// The queue was full (the writer could not keep up).
    pub dropped: AtomicU64,
    /// The database refused them.
    pub failed: AtomicU64,
}

/// The ledger as the gateway holds it: a queue to the writer, and the counters.
pub struct SqliteLedger {
    tx: SyncSender<Box<Finished>>,
    pub counters: Arc<Counters>,
    pub file: PathBuf,
}

impl Sink for SqliteLedger {
    fn submit(&self, finished: Box<Finished>) {
        match self.tx.try_send(finished) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    agent TEXT,
    profile TEXT,
    session TEXT,
    protocol TEXT NOT NULL,
    tier TEXT,
    scene TEXT,
    requested_model TEXT,
    provider TEXT,
    model TEXT,
    stream INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    cost_usd REAL,
    premium_cost_usd REAL,
    saved_usd REAL,
    ttfb_ms INTEGER,
    total_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_kind TEXT,
    outcome TEXT NOT NULL,
    attempts TEXT NOT NULL,
    compressed_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts_ms);
CREATE TABLE IF NOT EXISTS bodies (
    id TEXT PRIMARY KEY,
    request TEXT,
    response TEXT
);
";

fn open_writer(file: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(file)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.execute_batch(SCHEMA)?;
    // Ledgers written before compression existed gain its column.
    let has_compressed: bool = connection
        .prepare("SELECT 1 FROM pragma_table_info('requests') WHERE name = 'compressed_tokens'")?
        .exists([])?;
    if !has_compressed {
        connection.execute_batch(
            "ALTER TABLE requests ADD COLUMN compressed_tokens INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(connection)
}

/// A read-only connection for reports; None when no ledger has been written yet.
pub fn open_reader(file: &Path) -> Result<Option<Connection>, String> {
    if !file.exists() {
        return Ok(None);
    }
    let connection = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open the usage ledger {}: {e}", file.display()))?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(Some(connection))
}

impl SqliteLedger {
    /// Open (or create) the ledger at `file` and start its writer. `retention_days` 0 keeps
    /// everything.
    pub fn start(
        file: PathBuf,
        retention_days: u64,
        observe: Observer,
    ) -> Result<SqliteLedger, String> {
        let connection = open_writer(&file)
            .map_err(|e| format!("cannot open the usage ledger {}: {e}", file.display()))?;
        // The database holds no secrets, but it is the user's history: theirs alone.
        use std::os::unix::fs::PermissionsExt as _;
        for path in [
            file.clone(),
            file.with_extension("db-wal"),
            file.with_extension("db-shm"),
        ] {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer_counters = counters.clone();
        std::thread::Builder::new()
            .name("usage-ledger".into())
            .spawn(move || {
                write_loop(connection, rx, &writer_counters, retention_days, &observe);
            })
            .map_err(|e| format!("cannot start the ledger writer: {e}"))?;
        Ok(SqliteLedger { tx, counters, file })
    }
}

/// The writer: each record is completed (priced, redacted), shown to the metrics, and
/// inserted with whatever else is waiting, in one transaction.
fn write_loop(
    mut connection: Connection,
    rx: Receiver<Box<Finished>>,
    counters: &Counters,
    retention_days: u64,
    observe: &Observer,
) {
    let mut last_prune: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    let complete = |finished: Box<Finished>| {
        let record = finished.complete();
        observe(&record);
        record
    };
    while let Ok(first) = rx.recv() {
        // Let the rest of this moment's records arrive before writing: a wake-up and a
        // transaction per batch rather than per request, which is what keeps the ledger's
        // cost to a few microseconds a request under load.
        std::thread::sleep(GATHER);
        let mut batch = vec![complete(first)];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(complete(next)),
                Err(_) => break,
            }
        }
        match insert(&mut connection, &batch) {
            Ok(()) => {
                counters
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                counters
                    .failed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(%error, rows = batch.len(), "usage ledger write failed; rows counted as failed");
                    last_warning = Some(Instant::now());
                }
            }
        }
        if retention_days > 0 && last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600))
        {
            let cutoff = super::now_ms().saturating_sub(retention_days * 86_400_000) as i64;
            let _ = connection.execute(
                "DELETE FROM bodies WHERE id IN (SELECT id FROM requests WHERE ts_ms < ?1)",
                params![cutoff],
            );
            let _ = connection.execute("DELETE FROM requests WHERE ts_ms < ?1", params![cutoff]);
            last_prune = Some(Instant::now());
        }
    }
}

fn insert(connection: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut statement = tx.prepare_cached(
            "INSERT INTO requests (id, ts_ms, agent, profile, session, protocol, tier, scene,
                requested_model, provider, model, stream, input_tokens, output_tokens,
                cache_read_tokens, cache_write_tokens, reasoning_tokens, estimated, cost_usd,
                premium_cost_usd, saved_usd, ttfb_ms, total_ms, status, error_kind, outcome, attempts,
                compressed_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
        )?;
        let mut bodies = tx.prepare_cached(
            "INSERT OR REPLACE INTO bodies (id, request, response) VALUES (?1, ?2, ?3)",
        )?;
        for r in batch {
            if r.request_body.is_some() || r.response_body.is_some() {
                bodies.execute(params![r.id, r.request_body, r.response_body])?;
            }
            let attempts = serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into());
            statement.execute(params![
                r.id,
                r.ts_ms as i64,
                r.agent,
                r.profile,
                r.session,
                r.protocol,
                r.tier,
                r.scene,
                r.requested_model,
                r.provider,
                r.model,
                r.stream,
                r.input_tokens as i64,
                r.output_tokens as i64,
                r.cache_read_tokens as i64,
                r.cache_write_tokens as i64,
                r.reasoning_tokens as i64,
                r.estimated,
                r.cost_usd,
                r.premium_cost_usd,
                r.saved_usd,
                r.ttfb_ms.map(|v| v as i64),
                r.total_ms as i64,
                r.status,
                r.error_kind,
                r.outcome,
                attempts,
                r.compressed_tokens as i64,
            ])?;
        }
    }
    tx.commit()
}

/// The columns of a full row, in [`row_to_record`]'s order.
pub const COLUMNS: &str =
    "id, ts_ms, agent, profile, session, protocol, tier, scene, requested_model,
    provider, model, stream, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
    reasoning_tokens, estimated, cost_usd, premium_cost_usd, saved_usd, ttfb_ms, total_ms, status,
    error_kind, outcome, attempts, compressed_tokens";

pub fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let attempts: String = row.get(26)?;
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
    Ok(Record {
        id: row.get(0)?,
        ts_ms: u(1)?,
        agent: row.get(2)?,
        profile: row.get(3)?,
        session: row.get(4)?,
        protocol: row.get(5)?,
        tier: row.get(6)?,
        scene: row.get(7)?,
        requested_model: row.get(8)?,
        provider: row.get(9)?,
        model: row.get(10)?,
        stream: row.get(11)?,
        input_tokens: u(12)?,
        output_tokens: u(13)?,
        cache_read_tokens: u(14)?,
        cache_write_tokens: u(15)?,
        reasoning_tokens: u(16)?,
        estimated: row.get(17)?,
        cost_usd: row.get(18)?,
        premium_cost_usd: row.get(19)?,
        saved_usd: row.get(20)?,
        ttfb_ms: row.get::<_, Option<i64>>(21)?.map(|v| v.max(0) as u64),
        total_ms: u(22)?,
        status: row.get(23)?,
        error_kind: row.get(24)?,
        outcome: row.get(25)?,
        attempts: serde_json::from_str(&attempts).unwrap_or_default(),
        compressed_tokens: u(27)?,
        request_body: None,
        response_body: None,
    })
}
