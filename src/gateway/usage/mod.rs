//! The usage ledger: one row per client request (what was asked, which candidates were
//! tried, who answered, every token bucket, cost, the premium-equivalent cost and the
//! saving, timings, the outcome), kept in SQLite off the hot path. It is the one source for
//! spend: `xx usage`, the admin API, `/metrics`, the dashboard and today's budgets (read back
//! at start) all come from it. This type is the seam a shared store (Postgres) would sit
//! behind: the gateway only hands it records and asks it for sums.

pub mod prices;
pub mod query;
pub mod record;
pub mod report;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use record::{Finish, Finished, Record, Sink, Trace};
use store::Counters;

pub fn now_ms() -> u64 {
    crate::gateway::breaker::now_ms()
}

/// The ledger's file in the state dir.
pub fn ledger_file(paths: &crate::paths::Paths) -> PathBuf {
    paths.state_dir.join("usage.db")
}

/// Something that wants to see every completed record (the metrics).
pub type Observer = Arc<dyn Fn(&Record) + Send + Sync>;

/// Completes and shows records when no database could be opened, and counts them as lost.
struct Unwritable {
    counters: Arc<Counters>,
    observe: Observer,
}

impl Sink for Unwritable {
    fn submit(&self, finished: Box<Finished>) {
        (self.observe)(&finished.complete());
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Ledger {
    sink: Arc<dyn Sink>,
    counters: Arc<Counters>,
    pub file: PathBuf,
    /// Why the database could not be opened, if it could not.
    pub error: Option<String>,
    /// Traces started (each becomes one row, or one counted loss).
    started: AtomicU64,
    id_prefix: String,
    next_id: AtomicU64,
}

impl Ledger {
    /// Open the ledger at `file` (`retention_days` 0 keeps every row); a database that cannot
    /// be opened leaves the gateway serving, with every record counted as failed. Every
    /// completed record is shown to `observe` (the metrics) before it is stored.
    pub fn open(file: PathBuf, retention_days: u64, observe: Observer) -> Ledger {
        let (sink, counters, error): (Arc<dyn Sink>, _, _) = match store::SqliteLedger::start(
            file.clone(),
            retention_days,
            observe.clone(),
        ) {
            Ok(ledger) => {
                let counters = ledger.counters.clone();
                (Arc::new(ledger), counters, None)
            }
            Err(error) => {
                tracing::error!(%error, "usage ledger unavailable; requests are served and counted as unrecorded");
                let counters = Arc::new(Counters::default());
                let sink = Unwritable {
                    counters: counters.clone(),
                    observe,
                };
                (Arc::new(sink), counters, Some(error))
            }
        };
        Ledger {
            sink,
            counters,
            file,
            error,
            started: AtomicU64::new(0),
            id_prefix: id_prefix(),
            next_id: AtomicU64::new(0),
        }
    }

    /// A new request id: unique across restarts, cheap to make.
    pub fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("req_{}{n:x}", self.id_prefix)
    }

    /// Start the record of a request; `finish` prices it when it is handed over; `capture`
    /// is how much of each body to keep with it (None: none).
    pub fn trace(&self, record: Record, finish: Finish, capture: Option<usize>) -> Trace {
        self.started.fetch_add(1, Ordering::Relaxed);
        Trace::new(record, self.sink.clone(), finish, capture)
    }

    /// Tokens and cost per provider since `from_ms`, read from the database.
    pub fn spend_since(&self, from_ms: u64) -> Vec<(String, u64, f64)> {
        match store::open_reader(&self.file) {
            Ok(Some(connection)) => query::spend_since(&connection, from_ms).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// What became of the records: for `/api/stats`, `/metrics` and the dashboard.
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.counters.written.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
            self.counters.failed.load(Ordering::Relaxed),
        )
    }

    pub fn counters_json(&self) -> Value {
        let (started, written, dropped, failed) = self.counters();
        json!({"file": self.file, "error": self.error, "requests": started, "written": written,
            "dropped": dropped, "failed": failed,
            "pending": started.saturating_sub(written + dropped + failed)})
    }
}

fn id_prefix() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        bytes[..6].copy_from_slice(&now_ms().to_be_bytes()[2..]);
    }
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('_');
    text
}
