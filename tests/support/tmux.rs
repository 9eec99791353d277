//! tmux as the outer terminal of a test: a server of its own per test, windows that exec a
//! command with a given environment, and screens read back with capture-pane.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
    env: String,
}

impl Tmux {
    /// A tmux server of its own: a `home` window keeps it alive, dead panes stay visible.
    pub fn start(label: &str, env: String, cols: u16, rows: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("clutch-{label}-{}", std::process::id()),
            env,
        };
        let (cols, rows) = (cols.to_string(), rows.to_string());
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &cols,
            "-y",
            &rows,
            "-n",
            "home",
            "sleep 600",
        ]);
        tmux.run(&["set-option", "-g", "remain-on-exit", "on"]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A window running `command` (exec'd, so the pane's pid is xx's).
    pub fn window(&self, name: &str, command: &str) {
        self.run(&[
            "new-window",
            "-d",
            "-n",
            name,
            &format!("exec env {} {command}", self.env),
        ]);
    }

    pub fn screen(&self, window: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!(":{window}")])
    }

    pub fn wait_for(&self, window: &str, text: &str) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen(window);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "window {window} never showed {text:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pane_pid(&self, window: &str) -> i32 {
        self.run(&[
            "display-message",
            "-p",
            "-t",
            &format!(":{window}"),
            "#{pane_pid}",
        ])
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// Whether tmux (the outer terminal of these tests) is here; CI must have it.
pub fn tmux_available() -> bool {
    if which::which("tmux").is_ok() {
        return true;
    }
    assert!(
        std::env::var("CLUTCH_REQUIRE_AGENTS").is_err(),
        "tmux is needed; .ci/run installs it"
    );
    eprintln!("skipped: tmux is not installed");
    false
}
