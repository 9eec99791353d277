//! Sessions, with tmux as the outer terminal and a stand-in agent that reports its terminal
//! size and echoes what it reads: the agent survives its attach client being SIGKILLed,
//! a reattach redraws the screen, resizes reach the agent, the detach key detaches, `xx ls`
//! and `xx peek` tell the truth, and `xx` exits with the agent's exit code.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::Clutch;

const STANDIN: &str = r#"#!/bin/sh
trap 'echo "SIZE $(stty size)"' WINCH
echo "READY $(stty size)"
while true; do
  if read line; then
    echo "got: $line"
    [ "$line" = quit ] && exit 7
  fi
done
"#;

struct Tmux {
    socket: String,
    env: String,
}

impl Tmux {
    /// A tmux server of its own: a `home` window keeps it alive, dead panes stay visible.
    fn start(label: &str, env: String, cols: u16, rows: u16) -> Tmux {
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

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A window running `command` (exec'd, so the pane's pid is xx's).
    fn window(&self, name: &str, command: &str) {
        self.run(&[
            "new-window",
            "-d",
            "-n",
            name,
            &format!("exec env {} {command}", self.env),
        ]);
    }

    fn screen(&self, window: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", &format!(":{window}")])
    }

    fn wait_for(&self, window: &str, text: &str) -> String {
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

    fn pane_pid(&self, window: &str) -> i32 {
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

/// Installs `script` as the program Claude Code's spec runs in this sandbox; returns the
/// directory to put first on PATH.
fn stand_in_claude(clutch: &Clutch, script: &str) -> std::path::PathBuf {
    let bin = clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("standin"), script).unwrap();
    std::fs::set_permissions(
        bin.join("standin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agents = clutch.clutch_home.path().join("config/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("claude.toml"),
        include_str!("../agents/claude.toml")
            .replace("binary = \"claude\"", "binary = \"standin\""),
    )
    .unwrap();
    bin
}

/// Ends every session of a sandbox when dropped, so a failing test leaves no holder behind.
struct EndSessions<'a>(&'a Clutch);

impl Drop for EndSessions<'_> {
    fn drop(&mut self) {
        let paths = clutch::paths::Paths::under(self.0.clutch_home.path());
        for meta in clutch::session::list(&paths) {
            if meta.exit_code.is_none() {
                let _ = clutch::session::client::kill(&paths, &meta.name);
            }
        }
    }
}

fn state_of(clutch: &Clutch, name: &str) -> String {
    let out = clutch.xx(&["ls"]).output();
    out.stdout
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_string())
        .unwrap_or_default()
}

fn wait_state(clutch: &Clutch, name: &str, state: &str) {
    let started = Instant::now();
    while state_of(clutch, name) != state {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} never became {state}: {}",
            clutch.xx(&["ls"]).output().stdout
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_session_outlives_its_terminal_and_comes_back_as_it_was() {
    if which::which("tmux").is_err() {
        assert!(
            std::env::var("CLUTCH_REQUIRE_AGENTS").is_err(),
            "tmux is needed; .ci/run installs it"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let clutch = Clutch::new();
    let _end = EndSessions(&clutch);
    let bin = stand_in_claude(&clutch, STANDIN);
    let xx = env!("CARGO_BIN_EXE_xx");
    let env = format!(
        "PATH={}:/usr/bin:/bin HOME={} CLUTCH_HOME={} IS_SANDBOX=1 TERM=xterm",
        bin.display(),
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display()
    );
    let tmux = Tmux::start("test", env, 80, 24);

    // A launch on a terminal runs in a session, attached.
    tmux.window("one", &format!("{xx} cid"));
    tmux.wait_for("one", "READY 24 80");
    wait_state(&clutch, "claude-1", "attached");
    tmux.run(&["send-keys", "-t", ":one", "first line", "Enter"]);
    let before = tmux.wait_for("one", "got: first line");

    // The attach client dies hard: the agent goes on, detached.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tmux.pane_pid("one")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_state(&clutch, "claude-1", "detached");
    let peek = clutch.xx(&["peek", "claude-1"]).output();
    assert!(
        peek.stdout.contains("got: first line"),
        "peek shows the screen\n{peek}"
    );

    // Reattach: the screen comes back as it was.
    tmux.window("two", &format!("{xx} attach"));
    let after = tmux.wait_for("two", "got: first line");
    let lines = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("READY") || l.starts_with("got:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines(&after),
        lines(&before),
        "redrawn screen\nbefore:\n{before}\nafter:\n{after}"
    );
    wait_state(&clutch, "claude-1", "attached");

    // A resize reaches the agent.
    tmux.run(&["resize-window", "-t", ":two", "-x", "100", "-y", "30"]);
    tmux.wait_for("two", "SIZE 30 100");

    // The detach key detaches; the agent keeps running.
    tmux.run(&["send-keys", "-t", ":two", "C-]"]);
    tmux.wait_for("two", "[detached from claude-1");
    wait_state(&clutch, "claude-1", "detached");

    // Back again, and the agent's exit code is xx's.
    tmux.window(
        "three",
        &format!("sh -c '{xx} attach claude-1; echo XX-EXIT-$?; sleep 60'"),
    );
    tmux.wait_for("three", "got: first line");
    tmux.run(&["send-keys", "-t", ":three", "quit", "Enter"]);
    tmux.wait_for("three", "XX-EXIT-7");
    wait_state(&clutch, "claude-1", "exited");

    // kill removes a session.
    tmux.window("four", &format!("{xx} cid"));
    tmux.wait_for("four", "READY");
    let killed = clutch.xx(&["kill", "claude-2"]).output();
    assert_eq!(killed.code, Some(0), "{killed}");
    assert!(!clutch.xx(&["ls"]).output().stdout.contains("claude-2"));
}

#[test]
fn after_a_crash_restore_relaunches_each_lost_session_with_its_continue_form() {
    if which::which("tmux").is_err() {
        assert!(
            std::env::var("CLUTCH_REQUIRE_AGENTS").is_err(),
            "tmux is needed; .ci/run installs it"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let clutch = Clutch::new();
    let _end = EndSessions(&clutch);
    let log = clutch.workdir.path().join("argv.log");
    let recorder = STANDIN.replacen(
        "#!/bin/sh\n",
        &format!("#!/bin/sh\necho \"$PWD|$*\" >> '{}'\n", log.display()),
        1,
    );
    let bin = stand_in_claude(&clutch, &recorder);
    let project = clutch.workdir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let xx = env!("CARGO_BIN_EXE_xx");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let env = format!(
        "PATH={path} HOME={} CLUTCH_HOME={} IS_SANDBOX=1 TERM=xterm CLUTCH_BOOT_ID=boot-before",
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display()
    );
    let tmux = Tmux::start("restore", env, 80, 24);
    tmux.window(
        "one",
        &format!("sh -c 'cd {} && exec {xx} cid'", project.display()),
    );
    tmux.wait_for("one", "READY");

    let record_path = clutch.state_dir().join("sessions/claude-1.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    assert_eq!(record["boot_id"], "boot-before");
    assert_eq!(record["code"], "cid");
    assert_eq!(record["cwd"], project.display().to_string());

    // The machine "crashes": holder and agent die at once, the record stays.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clutch.clutch_home.path().join("run/sessions/claude-1.json"))
            .unwrap(),
    )
    .unwrap();
    for pid in [&meta["holder_pid"], &meta["child_pid"]] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.as_i64().unwrap() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(record_path.exists(), "a crash leaves the record");

    let after = |args: &[&str]| {
        clutch
            .xx(args)
            .env("PATH", &path)
            .env("IS_SANDBOX", "1")
            .env("CLUTCH_BOOT_ID", "boot-after")
            .output()
    };
    let first = after(&["ls"]);
    assert!(
        first
            .stderr
            .contains("1 session (claude-1) ended in a crash; `xx restore` brings it back"),
        "{first}"
    );
    assert!(
        !after(&["ls"]).stderr.contains("crash"),
        "the notice is printed once per boot"
    );
    let restored = after(&["restore"]);
    assert_eq!(restored.code, Some(0), "{restored}");
    assert!(
        restored.stdout.contains(&format!(
            "restored claude-1 as claude-2 in {}",
            project.display()
        )),
        "{restored}"
    );
    let started = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the restored agent never started: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let second = lines.lines().nth(1).unwrap();
    assert_eq!(
        second,
        format!(
            "{}|--dangerously-skip-permissions --continue",
            project.display()
        ),
        "continue form, recorded cwd"
    );
    assert!(!record_path.exists(), "the old record is gone");
    let new_record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(clutch.state_dir().join("sessions/claude-2.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(new_record["boot_id"], "boot-after");
    let ls = after(&["ls"]);
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.starts_with("claude-2") && l.contains("detached")),
        "{ls}"
    );
    assert_eq!(after(&["kill", "claude-2"]).code, Some(0));
}

#[test]
fn the_ledger_keeps_no_secrets() {
    assert!(clutch::session::ledger::is_secret(
        "ANTHROPIC_AUTH_TOKEN",
        "x",
        &[]
    ));
    assert!(clutch::session::ledger::is_secret(
        "CLUTCH_GATEWAY_KEY",
        "x",
        &[]
    ));
    assert!(clutch::session::ledger::is_secret(
        "OPENCODE_CONFIG_CONTENT",
        "{\"apiKey\":\"tok-123\"}",
        &["tok-123".to_string()]
    ));
    assert!(!clutch::session::ledger::is_secret(
        "ANTHROPIC_BASE_URL",
        "http://127.0.0.1:8082/p/claude",
        &["tok-123".to_string()]
    ));
}

#[test]
fn a_real_agent_held_in_a_session_detaches_and_reattaches() {
    if which::which("tmux").is_err() || !support::agent_available("hermes") {
        assert!(
            std::env::var("CLUTCH_REQUIRE_AGENTS").is_err(),
            "tmux and hermes are needed; .ci/run installs them"
        );
        return;
    }
    let fake = support::fake_upstream::FakeUpstream::start("PONG-FROM-A-HELD-SESSION");
    let clutch = Clutch::new().gateway_at(&fake.url());
    let _end = EndSessions(&clutch);
    let xx = env!("CARGO_BIN_EXE_xx");
    let env = format!(
        "PATH={} HOME={} CLUTCH_HOME={} TERM=xterm",
        std::env::var("PATH").unwrap_or_default(),
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display()
    );
    let tmux = Tmux::start("real", env, 100, 30);
    tmux.window("one", &format!("{xx} hip"));
    tmux.wait_for("one", "YOLO");
    wait_state(&clutch, "hermes-1", "attached");
    tmux.run(&["send-keys", "-t", ":one", "say pong", "Enter"]);
    tmux.wait_for("one", "PONG-FROM-A-HELD-SESSION");
    tmux.run(&["send-keys", "-t", ":one", "C-]"]);
    tmux.wait_for("one", "[detached from hermes-1");
    wait_state(&clutch, "hermes-1", "detached");
    tmux.window("two", &format!("{xx} attach hermes-1"));
    tmux.wait_for("two", "PONG-FROM-A-HELD-SESSION");
    wait_state(&clutch, "hermes-1", "attached");
}
