//! One client request as the ledger keeps it, and the [`Trace`] that fills it in as the
//! request goes: the cascade adds its attempts, the answer its tokens and timings. The record
//! is handed to the ledger when the last holder of the trace lets go of it, which is when
//! the answer ends or the client hangs up, whichever comes first; so every request gets
//! exactly one row, a stream the client abandons included.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::gateway::ir::Usage;

/// One try of one candidate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub provider: String,
    pub model: String,
    /// `ok`, `skipped`, `rate_limited`, `failed`, `client_error`.
    pub outcome: String,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Since the request started.
    pub start_ms: u64,
    pub ms: u64,
    /// Why it failed or was skipped, without secrets.
    pub detail: Option<String>,
}

/// One client request. No prompt text, no key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    /// Unix ms when the request arrived.
    pub ts_ms: u64,
    pub agent: Option<String>,
    pub profile: Option<String>,
    /// The agent's own session id, when it sends one.
    pub session: Option<String>,
    pub protocol: String,
    pub tier: Option<String>,
    pub scene: Option<String>,
    pub requested_model: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// The counts are the gateway's estimate, not the upstream's (a stream cut before its
    /// usage event, an abandoned one).
    pub estimated: bool,
    /// None: the price is not known.
    pub cost_usd: Option<f64>,
    /// What the request would have cost on the premium baseline model.
    pub premium_cost_usd: Option<f64>,
    pub saved_usd: Option<f64>,
    pub ttfb_ms: Option<u64>,
    pub total_ms: u64,
    pub status: u16,
    pub error_kind: Option<String>,
    /// `ok`, `error`, `client_closed`, `upstream_cut`.
    pub outcome: String,
    pub attempts: Vec<Attempt>,
    /// Tokens tool-output compression took out of the request (about four bytes a token).
    #[serde(default)]
    pub compressed_tokens: u64,
    /// The client's request, when bodies are captured (`usage.capture_bodies`), redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// What the client was sent, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl Record {
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }
}

/// What completes a record (prices, the premium baseline, redaction): run by the ledger's
/// writer, off the request's path.
pub type Finish = Box<dyn FnOnce(&mut Record) + Send + Sync>;

/// A request's record as it is handed over, still to be completed by `finish`.
pub struct Finished {
    pub record: Record,
    pub finish: Finish,
}

impl Finished {
    pub fn complete(self) -> Record {
        let Finished { mut record, finish } = self;
        finish(&mut record);
        record
    }
}

/// Where a finished record goes.
pub trait Sink: Send + Sync {
    fn submit(&self, finished: Box<Finished>);
}

struct Live {
    record: Mutex<Record>,
    /// Bytes kept of each body when capturing (None: not capturing).
    capture: Option<usize>,
    started: Instant,
    sink: Arc<dyn Sink>,
    finish: Option<Finish>,
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut record =
            std::mem::take(&mut *self.record.lock().unwrap_or_else(|e| e.into_inner()));
        if record.total_ms == 0 {
            record.total_ms = self.started.elapsed().as_millis() as u64;
        }
        if let Some(finish) = self.finish.take() {
            self.sink.submit(Box::new(Finished { record, finish }));
        }
    }
}

/// The record of a request in progress; clones share it.
#[derive(Clone)]
pub struct Trace(Arc<Live>);

impl Trace {
    pub fn new(
        record: Record,
        sink: Arc<dyn Sink>,
        finish: Finish,
        capture: Option<usize>,
    ) -> Trace {
        Trace(Arc::new(Live {
            record: Mutex::new(record),
            capture,
            started: Instant::now(),
            sink,
            finish: Some(finish),
        }))
    }

    pub fn id(&self) -> String {
        self.with(|r| r.id.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        f(&mut self.0.record.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.0.started.elapsed().as_millis() as u64
    }

    pub fn attempt(&self, attempt: Attempt) {
        self.with(|r| r.attempts.push(attempt));
    }

    /// The candidate that answered.
    pub fn served_by(&self, provider: &str, model: &str) {
        let ms = self.elapsed_ms();
        self.with(|r| {
            r.provider = Some(provider.to_string());
            r.model = Some(model.to_string());
            r.ttfb_ms.get_or_insert(ms);
        });
    }

    /// The upstream's own counts (or, with `estimated`, the gateway's).
    pub fn usage(&self, usage: &Usage, estimated: bool) {
        self.with(|r| {
            r.input_tokens = usage.input_tokens;
            r.output_tokens = usage.output_tokens;
            r.cache_read_tokens = usage.cache_read_tokens;
            r.cache_write_tokens = usage.cache_write_tokens;
            r.reasoning_tokens = usage.reasoning_tokens;
            r.estimated = estimated;
        });
    }

    /// The status the client got and, for an error, its kind.
    pub fn answered(&self, status: u16, error_kind: Option<&str>) {
        self.with(|r| {
            r.status = status;
            r.error_kind = error_kind.map(str::to_string);
            if r.outcome.is_empty() {
                r.outcome = if status < 400 { "ok" } else { "error" }.into();
            }
        });
    }

    /// How a streamed answer ended: `ok`, `client_closed`, `upstream_cut`.
    pub fn ended(&self, outcome: &str) {
        let ms = self.elapsed_ms();
        self.with(|r| {
            r.outcome = outcome.to_string();
            r.total_ms = ms;
        });
    }

    /// What the client asked for; the prompt's estimated size stands until the upstream
    /// reports its own counts.
    pub fn requested(&self, model: &str, stream: bool, estimated_input: u64) {
        self.with(|r| {
            r.requested_model = Some(model.to_string());
            r.stream = stream;
            r.input_tokens = estimated_input;
            r.estimated = true;
        });
    }

    /// Whether bodies are kept for this request.
    pub fn captures(&self) -> bool {
        self.0.capture.is_some()
    }

    /// Keep (the start of) the client's request body.
    pub fn capture_request(&self, bytes: &[u8]) {
        if let Some(limit) = self.0.capture {
            self.with(|r| keep(&mut r.request_body, bytes, limit));
        }
    }

    /// Keep (the start of) what the client is sent; called per piece of a stream.
    pub fn capture_response(&self, bytes: &[u8]) {
        if let Some(limit) = self.0.capture {
            self.with(|r| keep(&mut r.response_body, bytes, limit));
        }
    }

    /// Tokens tool-output compression took out of this request.
    pub fn compressed(&self, tokens: u64) {
        self.with(|r| r.compressed_tokens = tokens);
    }

    pub fn set_route(&self, tier: Option<&str>, scene: Option<&str>) {
        self.with(|r| {
            r.tier = tier.map(str::to_string);
            r.scene = scene.map(str::to_string);
        });
    }
}

/// Append `bytes` to `kept`, up to `limit` bytes in all, marking a cut.
fn keep(kept: &mut Option<String>, bytes: &[u8], limit: usize) {
    const CUT: &str = "\n[cut: capture_max_bytes reached]";
    let text = kept.get_or_insert_with(String::new);
    if text.ends_with(CUT) {
        return;
    }
    let room = limit.saturating_sub(text.len());
    if bytes.len() <= room {
        text.push_str(&String::from_utf8_lossy(bytes));
    } else {
        let piece = String::from_utf8_lossy(&bytes[..room]);
        // A multi-byte character cut in half becomes U+FFFD; drop it.
        text.push_str(piece.trim_end_matches('\u{fffd}'));
        text.push_str(CUT);
    }
}
