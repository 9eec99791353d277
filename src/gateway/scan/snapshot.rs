//! The routing snapshot: what a refresh found, ranked per kind, in the `routing_snapshot.json`
//! shape model-scan consumers already read (schema version, generated at, provider health,
//! blocklist, ranked candidates per kind). Written atomically; read back with its schema
//! major and age checked, so a refused file never replaces the last good one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::code::ScanKind;

/// The version written. Readers take any `1.x`; a newer major is refused.
pub const SCHEMA_VERSION: &str = "1.0.0";

pub const KINDS: [ScanKind; 6] = [
    ScanKind::Best,
    ScanKind::Free,
    ScanKind::Tool,
    ScanKind::Reasoning,
    ScanKind::Verifier,
    ScanKind::Fast,
];

pub fn kind_named(name: &str) -> Option<ScanKind> {
    KINDS.into_iter().find(|k| k.name() == name)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub schema_version: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
    #[serde(default)]
    pub scan_id: u64,
    #[serde(default)]
    pub generator: String,
    /// Provider -> `ok`, `degraded` or `down`.
    #[serde(default)]
    pub provider_health: BTreeMap<String, String>,
    /// Provider -> why it is down or degraded.
    #[serde(default)]
    pub provider_notes: BTreeMap<String, String>,
    /// `*` globs on `provider|model` or the model id, never used.
    #[serde(default)]
    pub blocklist: Vec<String>,
    /// Model servers found on this machine: name -> API root.
    #[serde(default)]
    pub local_servers: BTreeMap<String, String>,
    /// Kind name -> its ranking.
    #[serde(default)]
    pub slots: BTreeMap<String, Slot>,
    /// What the refresh cost: models listed, probed, requests sent, seconds taken.
    #[serde(default)]
    pub stats: Stats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub models_listed: usize,
    pub models_probed: usize,
    pub requests_sent: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Slot {
    pub label: String,
    /// `free` for kinds ranked among free models only, else `cost_basis`.
    pub eval_mode: String,
    pub best: Option<Candidate>,
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    pub model_id: String,
    pub provider: String,
    /// `provider|model`, as profiles and `-m` name a model.
    pub api_model: String,
    #[serde(default)]
    pub base_url: String,
    /// 0-100, from the documented formula (docs/model-scan.md).
    pub fitness: f64,
    /// US dollars per million tokens, (3 × input + output) / 4; null when unknown.
    pub price_blended: Option<f64>,
    #[serde(default = "unknown")]
    pub tier: String,
    #[serde(default)]
    pub has_tools: bool,
    #[serde(default)]
    pub has_vision: bool,
    #[serde(default)]
    pub context_length: Option<u64>,
    /// Measured by the speed probe.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    /// `pass`, `fail` or `not_run`.
    #[serde(default = "not_run")]
    pub tool_probe: String,
    #[serde(default = "not_run")]
    pub json_probe: String,
    /// The gateway's own record of it over the last week, when the ledger has one.
    #[serde(default)]
    pub live_requests: u64,
    #[serde(default)]
    pub live_error_rate: Option<f64>,
}

fn unknown() -> String {
    "unknown".into()
}

fn not_run() -> String {
    "not_run".into()
}

impl Snapshot {
    /// Ranked candidates of `kind`, blocklist applied.
    pub fn ranked(&self, kind: ScanKind) -> impl Iterator<Item = &Candidate> {
        self.slots
            .get(kind.name())
            .map(|slot| slot.candidates.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|c| !self.blocked(&c.provider, &c.model_id))
    }

    pub fn best(&self, kind: ScanKind) -> Option<&Candidate> {
        self.ranked(kind).next()
    }

    pub fn blocked(&self, provider: &str, model: &str) -> bool {
        blocked(&self.blocklist, provider, model)
    }

    /// Seconds since it was generated (None: its time cannot be read).
    pub fn age_secs(&self, now: std::time::SystemTime) -> Option<f64> {
        let generated = humantime::parse_rfc3339(&self.generated_at).ok()?;
        Some(
            now.duration_since(generated)
                .map_or(0.0, |d| d.as_secs_f64()),
        )
    }
}

/// Whether `provider|model` matches one of `patterns` (`*` globs, case-insensitive, on the
/// whole reference or on the model id).
pub fn blocked(patterns: &[String], provider: &str, model: &str) -> bool {
    if patterns.is_empty() {
        return false;
    }
    let reference = format!("{provider}|{model}");
    patterns.iter().any(|pattern| {
        crate::gateway::route::glob_match(pattern, &reference)
            || crate::gateway::route::glob_match(pattern, model)
    })
}

/// Where the snapshot lives: `[scan] snapshot`, else `<state>/scan/routing_snapshot.json`.
pub fn path(paths: &crate::paths::Paths, config: &crate::config::ScanConfig) -> PathBuf {
    match &config.snapshot {
        Some(file) => PathBuf::from(file.as_str()),
        None => paths.state_dir.join("scan").join("routing_snapshot.json"),
    }
}

/// Write `snapshot` to `file` atomically (fsynced temporary file, renamed), mode 0600.
pub fn write(file: &Path, snapshot: &Snapshot) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    crate::paths::ensure_private_dir(dir)?;
    let mut text = serde_json::to_vec_pretty(snapshot).map_err(|e| e.to_string())?;
    text.push(b'\n');
    crate::sidecar::state::write_private(file, &text)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Why a snapshot file is not used.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// There is no file yet.
    Missing,
    /// It cannot be read as a snapshot, has a newer schema, or is too old.
    Invalid(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Missing => write!(f, "no model-scan snapshot yet; run `xx scan refresh`"),
            Refused::Invalid(why) => f.write_str(why),
        }
    }
}

/// Read and check the snapshot at `file`: a `1.x` schema, no older than `max_age_hours`.
pub fn load(file: &Path, max_age_hours: f64) -> Result<Snapshot, Refused> {
    let text = match std::fs::read(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refused::Missing),
        Err(e) => {
            return Err(Refused::Invalid(format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    };
    let snapshot: Snapshot = serde_json::from_slice(&text).map_err(|e| {
        Refused::Invalid(format!(
            "{} is not a routing snapshot ({e}); run `xx scan refresh` to write a new one",
            file.display()
        ))
    })?;
    let major = snapshot.schema_version.split('.').next().unwrap_or("");
    if major != "1" {
        return Err(Refused::Invalid(format!(
            "{} has schema_version {}, and this clutch reads 1.x; update clutch or run `xx scan refresh`",
            file.display(),
            snapshot.schema_version
        )));
    }
    let age = snapshot
        .age_secs(std::time::SystemTime::now())
        .ok_or_else(|| {
            Refused::Invalid(format!(
                "{}: generated_at `{}` is not an RFC 3339 time",
                file.display(),
                snapshot.generated_at
            ))
        })?;
    if age > max_age_hours * 3600.0 {
        return Err(Refused::Invalid(format!(
            "{} is stale: generated {:.1} hours ago, and scan.max_age_hours is {}; run `xx scan refresh`",
            file.display(),
            age / 3600.0,
            max_age_hours
        )));
    }
    Ok(snapshot)
}

/// The snapshot in force in a running gateway, and why a newer file was refused. Both are
/// read on every routed request, so both are lock-free loads.
#[derive(Default)]
pub struct Live {
    current: arc_swap::ArcSwapOption<Snapshot>,
    refused: arc_swap::ArcSwapOption<String>,
}

impl Live {
    pub fn get(&self) -> Option<std::sync::Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Read `file` again: a good one replaces the one in force; a refused one leaves it
    /// and is remembered (and logged once) with its reason. Returns whether the snapshot
    /// changed.
    pub fn reload(&self, file: &Path, max_age_hours: f64) -> bool {
        match load(file, max_age_hours) {
            Ok(snapshot) => {
                self.refused.store(None);
                let changed = self.current.load().as_deref() != Some(&snapshot);
                if changed {
                    tracing::info!(generated_at = %snapshot.generated_at, "model-scan snapshot loaded");
                    self.current.store(Some(std::sync::Arc::new(snapshot)));
                }
                changed
            }
            Err(Refused::Missing) => {
                self.refused.store(None);
                false
            }
            Err(Refused::Invalid(why)) => {
                if self.refused.load().as_deref() != Some(&why) {
                    let kept = if self.current.load().is_some() {
                        "the last good snapshot stays in force"
                    } else {
                        "no snapshot is in force"
                    };
                    tracing::warn!(error = %why, "model-scan snapshot refused; {kept}");
                    self.refused.store(Some(std::sync::Arc::new(why)));
                }
                false
            }
        }
    }

    /// Why the file on disk is not the one in force, if it was refused.
    pub fn refused(&self) -> Option<std::sync::Arc<String>> {
        self.refused.load_full()
    }
}
