//! Test harness: a [`Clutch`] sandbox (its own `CLUTCH_HOME`, `HOME` and working directory,
//! and a cleared environment) in which `xx` runs as a real process with a time bound.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fake_upstream;
pub mod gateway;
pub mod network;
pub mod tmux;

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// An isolated place to run `xx`: nothing it does can reach the real home.
pub struct Clutch {
    pub clutch_home: tempfile::TempDir,
    pub user_home: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Clutch {
    pub fn new() -> Clutch {
        Clutch {
            clutch_home: tempfile::tempdir().unwrap(),
            user_home: tempfile::tempdir().unwrap(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// Write the config file.
    pub fn config(self, toml: &str) -> Clutch {
        let dir = self.clutch_home.path().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), toml).unwrap();
        self
    }

    /// A config that points agents at `url` and never starts a gateway of its own.
    pub fn gateway_at(self, url: &str) -> Clutch {
        self.config(&format!("[gateway]\nurl = \"{url}\"\nauto_start = false\n"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.clutch_home.path().join("state")
    }

    /// `xx <args>` in this sandbox.
    pub fn xx(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xx"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.user_home.path())
            .env("CLUTCH_HOME", self.clutch_home.path())
            .env("TERM", "dumb")
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            // The agents' own telemetry and update checks stay off: tests talk to loopback only.
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .env("PI_OFFLINE", "1")
            .current_dir(self.workdir.path());
        Run {
            command,
            stdin: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A process about to run, with a deadline.
pub struct Run {
    command: Command,
    stdin: Option<String>,
    timeout: Duration,
}

impl Run {
    pub fn env(mut self, name: &str, value: impl AsRef<std::ffi::OsStr>) -> Run {
        self.command.env(name, value);
        self
    }

    pub fn stdin(mut self, text: &str) -> Run {
        self.stdin = Some(text.to_string());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Run {
        self.timeout = timeout;
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Run {
        self.command.current_dir(dir);
        self
    }

    /// Run to completion; past the deadline the whole process group is killed and the test
    /// fails with whatever was printed.
    pub fn output(mut self) -> Output {
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = self.command.spawn().expect("spawn xx");
        if let Some(text) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
        }
        let pid = child.id() as i32;
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(self.timeout);
        // On a timeout this stops the run; after a normal exit it stops helpers the agent
        // left behind in its group, which must not outlive the test.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let output = Output {
            code: status
                .as_ref()
                .ok()
                .and_then(|s| s.as_ref().ok())
                .and_then(|s| s.code()),
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        };
        assert!(
            status.is_ok(),
            "timed out after {:?}\n{output}",
            self.timeout
        );
        output
    }
}

/// Whether the agent CLI `binary` is on PATH. CI sets `CLUTCH_REQUIRE_AGENTS=1` so a missing
/// agent fails there; elsewhere the test says it was skipped.
pub fn agent_available(binary: &str) -> bool {
    if which::which(binary).is_ok() {
        return true;
    }
    if std::env::var("CLUTCH_REQUIRE_AGENTS").is_ok_and(|v| v == "1") {
        panic!("{binary} is not on PATH; .ci/install-agents installs the pinned agent CLIs");
    }
    eprintln!(
        "skipped: {binary} is not on PATH (run .ci/install-agents and put its bin dir on PATH)"
    );
    false
}
