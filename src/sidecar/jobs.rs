//! Refresh jobs the supervisor runs on an interval: today the model-scan refresh. Each job
//! runs as a child process (this program re-executed as `__scan_refresh`), one at a time,
//! with its output appended to its log; its last run, result and next run are kept in a
//! state file that `proxies status` shows. A refresh made by hand or by a systemd timer moves
//! the next run on, because the schedule follows the snapshot's own age.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state;
use crate::config::Config;
use crate::paths::Paths;

pub const SCAN_JOB: &str = "scan-refresh";
/// The longest one refresh may run before it is stopped.
const MAX_RUN: Duration = Duration::from_secs(30 * 60);
/// With no snapshot yet, the first run waits this long after the supervisor starts (or the
/// interval, if shorter), so a start-up is not slowed by probes.
const FIRST_RUN_DELAY: u64 = 600;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    pub name: String,
    /// Off when `scan.jobs = false`.
    pub enabled: bool,
    pub interval_secs: u64,
    pub running: bool,
    pub runs: u64,
    pub failures: u64,
    /// Unix seconds.
    pub last_started: Option<u64>,
    pub last_finished: Option<u64>,
    /// `ok` or `failed`.
    pub last_result: Option<String>,
    /// The run's summary line, or why it failed.
    pub last_message: Option<String>,
    pub next_run: Option<u64>,
    pub log: PathBuf,
}

pub fn state_file(paths: &Paths, name: &str) -> PathBuf {
    paths.runtime_dir.join("jobs").join(format!("{name}.json"))
}

/// The jobs' states, for `proxies status`.
pub fn read_states(paths: &Paths) -> Vec<JobState> {
    [SCAN_JOB]
        .iter()
        .filter_map(|name| {
            let file = state_file(paths, name);
            if !state::trusted(&file) {
                return None;
            }
            serde_json::from_slice(&std::fs::read(file).ok()?).ok()
        })
        .collect()
}

/// The pid of a job's child while it runs, so the supervisor can stop it on the way out.
pub type Running = Arc<Mutex<Option<u32>>>;

/// Start the model-scan job's thread.
pub fn spawn(paths: Paths, exe: PathBuf) -> Running {
    let running: Running = Arc::new(Mutex::new(None));
    let child = running.clone();
    std::thread::spawn(move || scan_loop(&paths, &exe, &child));
    running
}

fn scan_loop(paths: &Paths, exe: &Path, running: &Running) {
    let started = state::now();
    let log = paths.log_dir().join(format!("{SCAN_JOB}.log"));
    let mut job = read_states(paths)
        .into_iter()
        .find(|j| j.name == SCAN_JOB)
        .unwrap_or_default();
    job.name = SCAN_JOB.into();
    job.running = false;
    job.log = log.clone();
    loop {
        // The config is read on every turn, so a reload's new interval applies.
        let config = match Config::load(&paths.config_file()) {
            Ok(config) => config,
            Err(error) => {
                job.last_message = Some(format!("not scheduled: {error}"));
                job.next_run = None;
                save(paths, &job);
                std::thread::sleep(Duration::from_secs(30));
                continue;
            }
        };
        job.enabled = config.scan.jobs;
        job.interval_secs = ((config.scan.interval_hours * 3600.0) as u64).max(1);
        if !job.enabled {
            job.next_run = None;
            save(paths, &job);
            std::thread::sleep(Duration::from_secs(30));
            continue;
        }
        let due = due(paths, &config, &job, started);
        job.next_run = Some(due);
        save(paths, &job);
        let now = state::now();
        if now < due {
            // Short naps: a new interval, a manual refresh or a removed snapshot moves `due`.
            std::thread::sleep(Duration::from_secs((due - now).min(5)));
            continue;
        }
        job.running = true;
        job.last_started = Some(state::now());
        save(paths, &job);
        let (ok, message) = run_once(exe, &log, running);
        job.running = false;
        job.runs += 1;
        job.failures += u64::from(!ok);
        job.last_finished = Some(state::now());
        job.last_result = Some(if ok { "ok" } else { "failed" }.into());
        job.last_message = Some(message);
        if !ok {
            // A failed run is tried again after a tenth of the interval, not at once.
            job.next_run = Some(state::now() + (job.interval_secs / 10).max(1));
            save(paths, &job);
            std::thread::sleep(Duration::from_secs((job.interval_secs / 10).max(1)));
        }
    }
}

/// When the next refresh is due: the snapshot's age plus the interval plus a jitter of up to
/// a tenth of it; with no snapshot, shortly after the supervisor started.
fn due(paths: &Paths, config: &Config, job: &JobState, started: u64) -> u64 {
    let file = crate::gateway::scan::snapshot::path(paths, &config.scan);
    let generated = crate::gateway::scan::snapshot::load(&file, f64::MAX)
        .ok()
        .and_then(|s| humantime::parse_rfc3339(&s.generated_at).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let last = generated.max(job.last_finished);
    match last {
        Some(last) => last + job.interval_secs + jitter(job.interval_secs / 10, last),
        None => started + job.interval_secs.min(FIRST_RUN_DELAY),
    }
}

/// A delay in 0..=max that is the same for the same run (so the schedule shown does not
/// move) and differs between machines.
fn jitter(max: u64, seed: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let host = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{host}{seed}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(bytes) % (max + 1)
}

/// Run one refresh as a child; returns whether it succeeded and its last line of output.
fn run_once(exe: &Path, log: &Path, running: &Running) -> (bool, String) {
    use std::os::unix::process::CommandExt as _;
    let output = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        Ok(file) => file,
        Err(e) => return (false, format!("cannot open {}: {e}", log.display())),
    };
    let errors = match output.try_clone() {
        Ok(file) => file,
        Err(e) => return (false, format!("cannot open {}: {e}", log.display())),
    };
    let before = std::fs::metadata(log).map_or(0, |m| m.len());
    let mut command = Command::new(exe);
    command
        .arg("__scan_refresh")
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot start the refresh: {e}")),
    };
    if let Ok(mut slot) = running.lock() {
        *slot = Some(child.id());
    }
    let deadline = std::time::Instant::now() + MAX_RUN;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                super::supervisor::stop_pid(child.id());
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Ok(mut slot) = running.lock() {
        *slot = None;
    }
    // The run's own lines: what it appended to the log.
    let text = std::fs::read(log)
        .ok()
        .map(|bytes| {
            String::from_utf8_lossy(&bytes[(before as usize).min(bytes.len())..]).into_owned()
        })
        .unwrap_or_default();
    let last = text
        .lines()
        .find(|l| l.starts_with("model-scan:"))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
        .to_string();
    match status {
        Some(status) if status.success() => (true, last),
        Some(status) => (
            false,
            if last.is_empty() {
                format!("exited with {status}")
            } else {
                last
            },
        ),
        None => (
            false,
            format!(
                "stopped after running for {} minutes",
                MAX_RUN.as_secs() / 60
            ),
        ),
    }
}

fn save(paths: &Paths, job: &JobState) {
    let _ = state::write_json(&state_file(paths, &job.name), job);
}
