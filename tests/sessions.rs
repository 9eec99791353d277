//! Sessions, with tmux as the outer terminal and a stand-in agent that reports its terminal
//! size and echoes what it reads: the agent survives its attach client being SIGKILLed,
//! a reattach redraws the screen, resizes reach the agent, the detach key detaches, `xx ls`
//! and `xx peek` tell the truth, and `xx` exits with the agent's exit code.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::Clutch;
use support::tmux::{Tmux, tmux_available};

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

/// Installs `script` as the program an agent's own spec (`agents/<agent>.toml`) runs in this
/// sandbox; returns the directory to put first on PATH.
fn stand_in(clutch: &Clutch, agent: &str, script: &str) -> std::path::PathBuf {
    let bin = clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let program = format!("standin-{agent}");
    std::fs::write(bin.join(&program), script).unwrap();
    std::fs::set_permissions(
        bin.join(&program),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let agents = clutch.clutch_home.path().join("config/agents");
    std::fs::create_dir_all(&agents).unwrap();
    let spec = std::fs::read_to_string(format!(
        "{}/agents/{agent}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    std::fs::write(
        agents.join(format!("{agent}.toml")),
        spec.replace(
            &format!("binary = \"{agent}\""),
            &format!("binary = \"{program}\""),
        ),
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
    if !tmux_available() {
        return;
    }
    let clutch = Clutch::new();
    let _end = EndSessions(&clutch);
    let bin = stand_in(&clutch, "claude", STANDIN);
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

    // A line that wraps keeps its 80th column through the reattach's redraw nudge.
    let long: String = (0..90).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    tmux.run(&["send-keys", "-t", ":two", &long, "Enter"]);
    tmux.wait_for("two", &long[80..]);
    tmux.run(&["send-keys", "-t", ":two", "C-]"]);
    tmux.wait_for("two", "[detached from claude-1");
    tmux.window("wrap", &format!("{xx} attach claude-1"));
    tmux.wait_for("wrap", &long[80..]);
    let peek = clutch.xx(&["peek", "claude-1"]).output();
    assert!(
        peek.stdout.contains(&format!("got: {long}")),
        "column 80 of a wrapped line survives a reattach\n{peek}"
    );
    // The reattached window carries on as `two`.
    tmux.run(&["kill-window", "-t", ":two"]);
    tmux.run(&["rename-window", "-t", ":wrap", "two"]);
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

    // kill ends a session, which then shows as killed; a second kill takes it off the list.
    tmux.window("four", &format!("{xx} cid"));
    tmux.wait_for("four", "READY");
    let killed = clutch.xx(&["kill", "claude-2"]).output();
    assert_eq!(killed.code, Some(0), "{killed}");
    assert_eq!(state_of(&clutch, "claude-2"), "killed");
    let attach = clutch.xx(&["attach", "claude-2"]).output();
    assert!(
        attach
            .stderr
            .contains("session `claude-2` has ended (killed"),
        "{attach}"
    );
    let forget = clutch.xx(&["kill", "claude-2"]).output();
    assert!(
        forget.stdout.contains("removed claude-2 (killed)"),
        "{forget}"
    );
    assert!(!clutch.xx(&["ls"]).output().stdout.contains("claude-2"));
}

/// A stand-in that logs `<agent>|<cwd>|<argv>` to `log` before behaving like [`STANDIN`].
fn recorder(agent: &str, log: &std::path::Path) -> String {
    STANDIN.replacen(
        "#!/bin/sh\n",
        &format!(
            "#!/bin/sh\necho \"{agent}|$PWD|$*\" >> '{}'\n",
            log.display()
        ),
        1,
    )
}

/// The lines of an argv log once it has `count` of them.
fn wait_lines(log: &std::path::Path, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= count {
            return text.lines().map(str::to_string).collect();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the agent never started {count} times: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json_file(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn after_a_crash_restore_resumes_each_lost_session_by_id_or_continues_it() {
    if !tmux_available() {
        return;
    }
    let clutch = Clutch::new();
    let _end = EndSessions(&clutch);
    let log = clutch.workdir.path().join("argv.log");
    // Claude Code takes a session id at launch; Pi does not, so it gets its continue form.
    let bin = stand_in(&clutch, "claude", &recorder("claude", &log));
    stand_in(&clutch, "pi", &recorder("pi", &log));
    let project = clutch.workdir.path().join("project");
    let other = clutch.workdir.path().join("other");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&other).unwrap();
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
    tmux.window(
        "two",
        &format!("sh -c 'cd {} && exec {xx} pid'", other.display()),
    );
    tmux.wait_for("two", "READY");

    let claude_record_path = clutch.state_dir().join("sessions/claude-1.json");
    let record = json_file(claude_record_path.clone());
    assert_eq!(record["boot_id"], "boot-before");
    assert_eq!(record["code"], "cid");
    assert_eq!(record["cwd"], project.display().to_string());
    let id = record["agent_session"]
        .as_str()
        .expect("claude's id is recorded");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let first = wait_lines(&log, 2);
    assert!(
        first.contains(&format!(
            "claude|{}|--session-id {id} --dangerously-skip-permissions",
            project.display()
        )),
        "the new session is given its id: {first:?}"
    );
    let pi_record = json_file(clutch.state_dir().join("sessions/pi-1.json"));
    assert!(pi_record["agent_session"].is_null(), "{pi_record}");

    // The machine "crashes": holders and agents die at once, the records stay.
    for name in ["claude-1", "pi-1"] {
        let meta = json_file(
            clutch
                .clutch_home
                .path()
                .join(format!("run/sessions/{name}.json")),
        );
        for pid in [&meta["holder_pid"], &meta["child_pid"]] {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.as_i64().unwrap() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    assert!(claude_record_path.exists(), "a crash leaves the record");

    let after = |args: &[&str]| {
        clutch
            .xx(args)
            .env("PATH", &path)
            .env("IS_SANDBOX", "1")
            .env("CLUTCH_BOOT_ID", "boot-after")
            .output()
    };
    let first_run = after(&["ls"]);
    assert!(
        first_run.stderr.contains(
            "2 sessions (claude-1, pi-1) ended in a crash; `xx restore` brings them back"
        ) || first_run.stderr.contains(
            "2 sessions (pi-1, claude-1) ended in a crash; `xx restore` brings them back"
        ),
        "{first_run}"
    );
    assert!(
        !after(&["ls"]).stderr.contains("crash"),
        "the notice is printed once per boot"
    );
    let restored = after(&["restore"]);
    assert_eq!(restored.code, Some(0), "{restored}");
    for (old, new, dir) in [("claude-1", "claude-2", &project), ("pi-1", "pi-2", &other)] {
        assert!(
            restored
                .stdout
                .contains(&format!("restored {old} as {new} in {}", dir.display())),
            "{restored}"
        );
    }
    let lines = wait_lines(&log, 4);
    let relaunched = &lines[2..];
    assert!(
        relaunched.contains(&format!(
            "claude|{}|--dangerously-skip-permissions --resume {id}",
            project.display()
        )),
        "claude is resumed by id in its recorded cwd: {lines:?}"
    );
    assert!(
        relaunched.contains(&format!("pi|{}|--continue", other.display())),
        "pi is continued in its recorded cwd: {lines:?}"
    );
    assert!(!claude_record_path.exists(), "the old record is gone");
    let new_record = json_file(clutch.state_dir().join("sessions/claude-2.json"));
    assert_eq!(new_record["boot_id"], "boot-after");
    assert_eq!(new_record["agent_session"], id, "still resumable by id");
    let ls = after(&["ls"]);
    for name in ["claude-2", "pi-2"] {
        assert!(
            ls.stdout
                .lines()
                .any(|l| l.starts_with(name) && l.contains("detached")),
            "{ls}"
        );
        assert_eq!(after(&["kill", name]).code, Some(0));
    }
}

/// A full-screen stand-in: the alternate screen, everything drawn at fixed places, redrawn on
/// each line read and on resize (as full-screen agents repaint); `crash` makes it die from
/// SIGSEGV.
const FULL_SCREEN: &str = r#"#!/bin/sh
echo "claude|$PWD|$*" >> "$ARGV_LOG"
ulimit -c 0
draw() { printf '\033[H\033[2J\033[1;1HFULL %s\033[12;20HLAST %s\033[20;1H> ' "$(stty size)" "$1"; }
printf '\033[?1049h\033[?1000h\033[?2004h'
last=none
trap 'draw "$last"' WINCH
draw "$last"
while true; do
  if read line; then
    [ "$line" = crash ] && kill -SEGV $$
    last="$line"
    draw "$last"
  fi
done
"#;

/// Processes running one of this build's clutch binaries for the sandbox `home`.
fn clutch_processes(home: &std::path::Path) -> Vec<(i32, String)> {
    let marker = format!("CLUTCH_HOME={}", home.display());
    let build = std::path::Path::new(env!("CARGO_BIN_EXE_xx"))
        .parent()
        .unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let ours = exe.parent() == Some(build)
                && environ.split(|b| *b == 0).any(|v| v == marker.as_bytes());
            let name = exe.file_name()?.to_string_lossy().into_owned();
            ours.then_some((pid, name))
        })
        .collect()
}

#[test]
fn a_full_screen_agent_outlives_every_other_clutch_process_and_restarts_after_a_signal() {
    if !tmux_available() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clutch = Clutch::new().config(&format!(
        "[gateway]\nurl = \"http://127.0.0.1:{port}\"\n\n\
         [launcher]\nrestart_on_signal = 1\ndetach_key = \"ctrl-b\"\n"
    ));
    let _end = EndSessions(&clutch);
    let log = clutch.workdir.path().join("argv.log");
    let bin = stand_in(&clutch, "claude", FULL_SCREEN);
    let xx = env!("CARGO_BIN_EXE_xx");
    let env = format!(
        // A key, so the launch finds a provider the default profile can use.
        "PATH={}:/usr/bin:/bin HOME={} CLUTCH_HOME={} IS_SANDBOX=1 TERM=xterm ARGV_LOG={} OPENROUTER_API_KEY=sk-or-test",
        bin.display(),
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display(),
        log.display()
    );
    let tmux = Tmux::start("full", env, 80, 24);

    // The proxied launch brings the supervisor and gateway up; the agent runs held.
    tmux.window("one", &format!("{xx} cip"));
    tmux.wait_for("one", "FULL 24 80");
    wait_state(&clutch, "claude-1", "attached");
    tmux.run(&["send-keys", "-t", ":one", "hello", "Enter"]);
    let before = tmux.wait_for("one", "LAST hello");

    // Every other clutch process dies hard: the attach client, supervisor and gateway.
    let processes = clutch_processes(clutch.clutch_home.path());
    let holder: Vec<_> = processes
        .iter()
        .filter(|(_, exe)| exe == "clutch-hold")
        .collect();
    assert_eq!(holder.len(), 1, "one holder: {processes:?}");
    let others: Vec<_> = processes
        .iter()
        .filter(|(_, exe)| exe != "clutch-hold")
        .collect();
    assert!(
        others.len() >= 3,
        "xx, the supervisor and the gateway run: {processes:?}"
    );
    for (pid, _) in &others {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_state(&clutch, "claude-1", "detached");
    let peek = clutch.xx(&["peek", "claude-1"]).output();
    assert!(peek.stdout.contains("LAST hello"), "{peek}");

    // Reattach: the full-screen layout comes back where it was.
    tmux.window("two", &format!("{xx} attach claude-1"));
    let after = tmux.wait_for("two", "LAST hello");
    let row = |screen: &str, text: &str| screen.lines().position(|l| l.contains(text));
    assert_eq!(row(&after, "LAST hello"), row(&before, "LAST hello"));
    assert_eq!(row(&after, "FULL"), Some(0));
    let modes = |window: &str| {
        tmux.run(&[
            "display-message",
            "-p",
            "-t",
            &format!(":{window}"),
            "#{alternate_on} #{mouse_any_flag}",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(
        modes("two"),
        "1 1",
        "the reattached terminal is on the agent's screen and modes"
    );

    // The configured detach key. The agent's screen modes end with the attachment (the
    // shell gets its own screen back, without mouse reporting), and the notice has a line
    // of its own.
    tmux.run(&["send-keys", "-t", ":two", "C-b"]);
    let detached = tmux.wait_for("two", "[detached from claude-1");
    wait_state(&clutch, "claude-1", "detached");
    assert!(
        detached
            .lines()
            .any(|l| l.starts_with("[detached from claude-1; `xx attach claude-1` to come back]")),
        "{detached}"
    );
    assert!(!detached.contains("LAST hello"), "{detached}");
    assert_eq!(
        modes("two"),
        "0 0",
        "alternate screen and mouse mode after detach"
    );

    // Death by signal: started again once, resuming the same conversation by id.
    tmux.window(
        "three",
        &format!("sh -c '{xx} attach claude-1; echo XX-EXIT-$?; sleep 60'"),
    );
    tmux.wait_for("three", "LAST hello");
    tmux.run(&["send-keys", "-t", ":three", "crash", "Enter"]);
    let lines = wait_lines(&log, 2);
    let id = json_file(clutch.state_dir().join("sessions/claude-1.json"))["agent_session"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        lines[0].contains(&format!(
            "|--session-id {id} --dangerously-skip-permissions"
        )),
        "{lines:?}"
    );
    assert!(
        lines[1].contains(&format!("--resume {id}")) && !lines[1].contains("--session-id"),
        "the restart resumes by id: {lines:?}"
    );
    tmux.wait_for("three", "LAST none");
    let meta = json_file(clutch.clutch_home.path().join("run/sessions/claude-1.json"));
    assert_eq!(meta["restarts"], 1);
    assert_eq!(state_of(&clutch, "claude-1"), "attached");

    // The cap: a second death ends the session with the signal's exit code.
    tmux.run(&["send-keys", "-t", ":three", "crash", "Enter"]);
    tmux.wait_for("three", "XX-EXIT-139");
    wait_state(&clutch, "claude-1", "exited");
    assert_eq!(wait_lines(&log, 2).len(), 2, "no third start");
    let _ = Command::new(env!("CARGO_BIN_EXE_proxies"))
        .arg("down")
        .env("CLUTCH_HOME", clutch.clutch_home.path())
        .output();
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

#[test]
fn kill_ends_every_process_the_agent_started_on_its_terminal() {
    if !tmux_available() {
        return;
    }
    let clutch = Clutch::new();
    let _end = EndSessions(&clutch);
    let pid_file = clutch.workdir.path().join("helper.pid");
    // An agent that runs as two processes, as Gemini CLI does: the helper is in its group
    // and, like a node child, does not die of the terminal's hang-up.
    let script = format!(
        "#!/bin/sh\n(trap '' HUP; exec sleep 300) &\necho $! > {}\necho READY\nwait\n",
        pid_file.display()
    );
    let bin = stand_in(&clutch, "claude", &script);
    let env = format!(
        "PATH={}:/usr/bin:/bin HOME={} CLUTCH_HOME={} IS_SANDBOX=1 TERM=xterm",
        bin.display(),
        clutch.user_home.path().display(),
        clutch.clutch_home.path().display()
    );
    let tmux = Tmux::start("killgroup", env, 80, 24);
    tmux.window("one", &format!("{} cid", env!("CARGO_BIN_EXE_xx")));
    tmux.wait_for("one", "READY");
    let helper: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed = clutch.xx(&["kill", "claude-1"]).output();
    assert_eq!(killed.code, Some(0), "{killed}");
    let started = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{helper}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the agent's helper process outlived `xx kill`"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
