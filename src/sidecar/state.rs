//! What the supervisor records about itself and its services (a JSON state file and pid
//! files under the runtime dir), and the process facts used to tell our processes from
//! anyone else's: a pid only counts as ours while its start time matches the recorded one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

/// One service as the supervisor last saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceState {
    pub name: String,
    pub state: Phase,
    pub pid: Option<u32>,
    /// Kernel start time of `pid` (clock ticks since boot), to survive pid reuse.
    pub pid_start: Option<u64>,
    pub port: Option<u16>,
    /// Unix seconds when the current process started.
    pub started_at: Option<u64>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The last lines of its log when it was marked failed.
    pub log_tail: Vec<String>,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    /// Waiting to be restarted after a crash.
    Backoff,
    /// Crashed too often; not restarted until the next `proxies up` or `restart`.
    Failed,
    Stopped,
}

/// The supervisor's state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SupervisorState {
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub started_at: u64,
    pub services: Vec<ServiceState>,
}

pub fn state_file(paths: &Paths) -> PathBuf {
    paths.runtime_dir.join("supervisor.json")
}

pub fn lock_file(paths: &Paths) -> PathBuf {
    paths.runtime_dir.join("supervisor.lock")
}

pub fn pid_file(paths: &Paths, service: &str) -> PathBuf {
    paths.runtime_dir.join(format!("{service}.pid"))
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write `value` as JSON atomically (temp file, then rename), readable by this user only.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write_private(
        path,
        &serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?,
    )
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Read the state file; a missing one is no state, a corrupt one is moved aside with a
/// warning, and one that is not safely ours (see [`trusted`]) is ignored.
pub fn read_state(paths: &Paths) -> Option<SupervisorState> {
    let path = state_file(paths);
    if !trusted(&path) {
        return None;
    }
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(state) => Some(state),
        Err(err) => {
            set_aside(&path, &err.to_string());
            None
        }
    }
}

/// Move a corrupt file out of the way, keeping it for a look, and say so on stderr.
pub fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension(format!("corrupt-{}", now()));
    if std::fs::rename(path, &aside).is_ok() {
        eprintln!(
            "warning: {} was unreadable ({why}); moved it to {} and started afresh",
            path.display(),
            aside.display()
        );
    }
}

/// Whether a pid or state file may be acted on: a plain file owned by this user, in a
/// directory that only this user can write to. Anything else may have been planted.
pub fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid().as_raw();
    let private = |meta: &std::fs::Metadata| meta.uid() == me && meta.mode() & 0o022 == 0;
    let file_ok = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && private(&m));
    let dir_ok = path
        .parent()
        .and_then(|dir| std::fs::symlink_metadata(dir).ok())
        .is_some_and(|m| m.is_dir() && private(&m));
    file_ok && dir_ok
}

/// A recorded pid, as written to `<service>.pid`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PidRecord {
    pub pid: u32,
    pub pid_start: Option<u64>,
}

/// Read a pid file; a corrupt one, or one not safely ours ([`trusted`]), is `None`.
pub fn read_pid(path: &Path) -> Option<PidRecord> {
    if !trusted(path) {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The kernel start time of `pid` (field 22 of /proc/<pid>/stat), if it is alive.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that was recorded (not a reused pid), and this user's.
pub fn is_same_process(pid: u32, recorded_start: Option<u64>) -> bool {
    match (start_time(pid), recorded_start) {
        (Some(now), Some(then)) => {
            now == then && owner(pid) == Some(nix::unistd::getuid().as_raw())
        }
        (Some(_), None) => false,
        (None, _) => false,
    }
}

/// The real uid `pid` runs as.
fn owner(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command line of `pid`, for messages.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The pid of the process listening on TCP `port` on this machine, found through
/// /proc/net/tcp{,6} and the processes' socket fds.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                continue;
            }
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Resident memory (KiB) and CPU time (seconds) of `pid`.
pub fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((rss, ticks as f64 / hz))
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
