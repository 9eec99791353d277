//! Sessions that survive the terminal: each interactive launch runs in a PTY owned by a small
//! holder process of its own ([`holder`]), reached through a Unix socket; `xx` attaches to it
//! ([`client`]). The holder keeps a terminal model of the screen, so a reattach redraws it.
//! Everything about a session lives under the runtime dir's `sessions/`.

pub mod client;
pub mod holder;
pub mod ledger;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::paths::Paths;

pub fn dir(paths: &Paths) -> PathBuf {
    paths.runtime_dir.join("sessions")
}

pub fn socket(paths: &Paths, name: &str) -> PathBuf {
    dir(paths).join(format!("{name}.sock"))
}

pub fn meta_file(paths: &Paths, name: &str) -> PathBuf {
    dir(paths).join(format!("{name}.json"))
}

/// What `xx ls` shows, written by the holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub agent: String,
    pub cwd: PathBuf,
    pub holder_pid: u32,
    pub holder_start: Option<u64>,
    pub child_pid: Option<u32>,
    pub started_at: u64,
    pub attached: bool,
    pub exit_code: Option<i32>,
    /// How many times the agent was started again after dying from a signal.
    #[serde(default)]
    pub restarts: u32,
    /// Ended by `xx kill`.
    #[serde(default)]
    pub killed: bool,
}

impl Meta {
    /// A session's metadata, when the file is safely ours (see
    /// [`crate::sidecar::state::trusted`]): its pids are acted on.
    pub fn read(path: &Path) -> Option<Meta> {
        if !crate::sidecar::state::trusted(path) {
            return None;
        }
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// attached, detached, exited, killed, or lost (a holder that is gone without an exit
    /// code crashed).
    pub fn state(&self) -> &'static str {
        if self.killed {
            "killed"
        } else if self.exit_code.is_some() {
            "exited"
        } else if !crate::sidecar::state::is_same_process(self.holder_pid, self.holder_start) {
            "lost"
        } else if self.attached {
            "attached"
        } else {
            "detached"
        }
    }
}

/// Every session's metadata, newest first.
pub fn list(paths: &Paths) -> Vec<Meta> {
    let mut all: Vec<Meta> = std::fs::read_dir(dir(paths))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.path().extension().is_some_and(|x| x == "json")
                        && !e.path().to_string_lossy().ends_with(".plan.json")
                })
                .filter_map(|e| Meta::read(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    all.sort_by_key(|m| std::cmp::Reverse(m.started_at));
    all
}

/// A free name: the agent's name and the first unused number.
pub fn new_name(paths: &Paths, agent: &str) -> String {
    (1..)
        .map(|n| format!("{agent}-{n}"))
        .find(|name| !meta_file(paths, name).exists() && !socket(paths, name).exists())
        .expect("an unused number exists")
}

/// Frames on the socket: one type byte, a big-endian u32 length, the payload.
pub mod frame {
    use super::*;

    /// Client -> holder: attach with a size (rows, cols as u16 BE).
    pub const ATTACH: u8 = b'a';
    /// Client -> holder: keystrokes.
    pub const INPUT: u8 = b'i';
    /// Client -> holder: the terminal was resized (rows, cols).
    pub const RESIZE: u8 = b'r';
    /// Client -> holder: send the screen as text and close.
    pub const PEEK: u8 = b'p';
    /// Holder -> client: program output.
    pub const OUTPUT: u8 = b'o';
    /// Holder -> client: the program exited (i32 BE).
    pub const EXIT: u8 = b'x';
    /// Holder -> client: the screen as text.
    pub const TEXT: u8 = b't';

    pub fn write(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.push(kind);
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(payload);
        w.write_all(&buf)?;
        w.flush()
    }

    pub fn read(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        r.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 16 * 1024 * 1024 {
            return Err(std::io::Error::other("frame too large"));
        }
        let mut payload = vec![0; len];
        r.read_exact(&mut payload)?;
        Ok((head[0], payload))
    }

    pub fn size(rows: u16, cols: u16) -> [u8; 4] {
        let r = rows.to_be_bytes();
        let c = cols.to_be_bytes();
        [r[0], r[1], c[0], c[1]]
    }

    pub fn parse_size(p: &[u8]) -> Option<(u16, u16)> {
        (p.len() == 4).then(|| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        })
    }
}
