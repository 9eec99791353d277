//! The crash ledger: every session is recorded in the persistent state dir when it starts and
//! removed when its agent exits normally, so after a machine crash the records left over (from
//! an earlier boot) are exactly the lost sessions. `xx restore` relaunches each, detached, in
//! its recorded directory, with its agent's continue form from the same `agents/*.toml` data
//! the launcher uses. Secrets never reach a record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub boot_id: String,
    pub agent: String,
    /// The launch code as given (`cip`), from which the continue launch is rebuilt.
    pub code: String,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    /// The agent's own id for the session, when known: restore resumes exactly it.
    #[serde(default)]
    pub agent_session: Option<String>,
    /// The injected environment minus anything that looks like a credential.
    pub env: BTreeMap<String, String>,
    pub started_at: u64,
}

pub fn dir(paths: &Paths) -> PathBuf {
    paths.state_dir.join("sessions")
}

/// This boot's id; `CLUTCH_BOOT_ID` stands in for it so a crash can be simulated.
pub fn boot_id() -> String {
    std::env::var("CLUTCH_BOOT_ID")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Names and values that could carry a credential stay out of records.
pub fn is_secret(name: &str, value: &str, secrets: &[String]) -> bool {
    let upper = name.to_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH"]
        .iter()
        .any(|w| upper.contains(w))
        || secrets
            .iter()
            .any(|s| !s.is_empty() && value.contains(s.as_str()))
}

pub fn write(paths: &Paths, record: &Record) {
    let _ = crate::sidecar::state::write_json(
        &dir(paths).join(format!("{}.json", record.name)),
        record,
    );
}

pub fn remove(paths: &Paths, name: &str) {
    let _ = std::fs::remove_file(dir(paths).join(format!("{name}.json")));
}

/// Records from an earlier boot: sessions a crash took down.
pub fn lost(paths: &Paths) -> Vec<Record> {
    let current = boot_id();
    let mut records: Vec<Record> = std::fs::read_dir(dir(paths))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    serde_json::from_slice::<Record>(&std::fs::read(e.path()).ok()?).ok()
                })
                .filter(|r| r.boot_id != current)
                .collect()
        })
        .unwrap_or_default();
    records.sort_by_key(|r| r.started_at);
    records
}

/// The one-line notice the first `xx` of a boot prints when sessions were lost.
pub fn notice_once(paths: &Paths) {
    let lost = lost(paths);
    if lost.is_empty() {
        return;
    }
    let marker = paths
        .runtime_dir
        .join(format!("crash-notice-{}", boot_id()));
    if marker.exists() {
        return;
    }
    let _ = std::fs::create_dir_all(&paths.runtime_dir);
    let _ = std::fs::write(&marker, b"");
    eprintln!(
        "xx: {} session{} ({}) ended in a crash; `xx restore` brings {} back",
        lost.len(),
        if lost.len() == 1 { "" } else { "s" },
        lost.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if lost.len() == 1 { "it" } else { "them" }
    );
}
