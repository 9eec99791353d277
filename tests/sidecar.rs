//! `proxies` and `xx`'s auto-start with real processes: up, idempotent up, recovery from
//! kill -9, down leaving nothing behind, a foreign process on the port, corrupt and stale pid
//! files, ten concurrent launches starting exactly one gateway, and a crashing service marked
//! failed with its log tail. Every wait is bounded and waits for a fact.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Clutch;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sandbox whose gateway listens on its own port; `proxies down` runs when it is dropped.
struct Lab {
    clutch: Clutch,
    port: u16,
}

impl Lab {
    fn new(extra: &str) -> Lab {
        let port = free_port();
        let clutch = Clutch::new().config(&format!(
            "[gateway]\nurl = \"http://127.0.0.1:{port}\"\n{extra}"
        ));
        Lab { clutch, port }
    }

    fn proxies(&self, args: &[&str]) -> support::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proxies"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CLUTCH_HOME", self.clutch.clutch_home.path())
            .env("HOME", self.clutch.user_home.path());
        let output = command.output().unwrap();
        support::Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn status(&self) -> Value {
        let output = self.proxies(&["status", "--json"]);
        serde_json::from_str(&output.stdout).unwrap_or_else(|_| panic!("status --json: {output}"))
    }

    fn service(&self, name: &str) -> Value {
        self.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn healthy(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && ureq::get(&format!("http://127.0.0.1:{}/health", self.port))
                .call()
                .is_ok_and(|r| r.status() == 200)
    }

    fn run_dir(&self) -> std::path::PathBuf {
        self.clutch.clutch_home.path().join("run")
    }

    /// Processes of this sandbox (by their CLUTCH_HOME) whose command line has `marker`.
    fn processes(&self, marker: &str) -> Vec<u32> {
        let home = format!("CLUTCH_HOME={}", self.clutch.clutch_home.path().display());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let has = |hay: &[u8], needle: &str| {
                hay.split(|b| *b == 0).any(|part| part == needle.as_bytes())
            };
            if has(&cmdline, marker) && has(&environ, &home) {
                // A zombie has no cmdline; count live processes only.
                found.push(pid);
            }
        }
        found
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.proxies(&["down"]);
    }
}

fn wait_until(limit: Duration, what: &str, mut fact: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !fact() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

#[test]
fn up_is_idempotent_recovers_from_kill_and_down_leaves_nothing() {
    let lab = Lab::new("");
    let output = lab.proxies(&["up"]);
    assert_eq!(output.code, Some(0), "{output}");
    assert!(lab.healthy());
    let first = lab.service("gateway");
    assert_eq!(first["state"], "running", "{first}");
    let pid = first["pid"].as_u64().unwrap() as u32;

    let again = lab.proxies(&["up"]);
    assert_eq!(again.code, Some(0), "{again}");
    assert!(again.stdout.contains("already up"), "{again}");
    assert_eq!(
        lab.service("gateway")["pid"],
        first["pid"],
        "nothing new was started"
    );
    assert_eq!(lab.processes("__supervise").len(), 1);
    assert_eq!(lab.processes("__gateway"), vec![pid]);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed_at = Instant::now();
    wait_until(Duration::from_secs(5), "the old gateway to be gone", || {
        lab.service("gateway")["pid"] != first["pid"]
    });
    wait_until(
        Duration::from_secs(5),
        "the gateway to answer again",
        || lab.healthy(),
    );
    let recovered = killed_at.elapsed();
    eprintln!(
        "gateway healthy again {} ms after kill -9",
        recovered.as_millis()
    );
    assert!(
        recovered < Duration::from_secs(2),
        "recovery took {recovered:?}"
    );
    let after = lab.service("gateway");
    assert_eq!(after["restarts"], 1, "{after}");
    assert!(
        after["last_error"].as_str().unwrap().contains("signal 9"),
        "{after}"
    );

    let down = lab.proxies(&["down"]);
    assert_eq!(down.code, Some(0), "{down}");
    assert!(
        lab.processes("__gateway").is_empty() && lab.processes("__supervise").is_empty(),
        "no process of ours is left"
    );
    let leftovers: Vec<_> = std::fs::read_dir(lab.run_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pid") || n.ends_with(".json"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "pid and state files remain: {leftovers:?}"
    );
    assert!(!lab.healthy());
    let status = lab.proxies(&["status"]);
    assert_eq!(
        status.code,
        Some(1),
        "status fails when things are down\n{status}"
    );
}

#[test]
fn a_foreign_process_on_the_port_is_named_and_left_alone() {
    let lab = Lab::new("");
    let foreign = std::net::TcpListener::bind(("127.0.0.1", lab.port)).unwrap();
    let output = lab.proxies(&["up"]);
    assert_ne!(output.code, Some(0), "{output}");
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains(&format!(
            "port {} is held by pid {}",
            lab.port,
            std::process::id()
        )),
        "{text}"
    );
    assert!(
        text.contains("leaves alone") || text.contains("not a clutch gateway"),
        "{text}"
    );
    // Still ours to use: the listener was not touched.
    assert!(foreign.local_addr().is_ok());
    std::net::TcpStream::connect(("127.0.0.1", lab.port))
        .expect("the foreign listener still accepts");
    drop(foreign);

    // The port is free again: restarting the failed gateway brings it up, not `starting`
    // for good.
    assert!(
        lab.status()["supervisor"]["pid"].is_u64(),
        "the supervisor stays up"
    );
    let restart = lab.proxies(&["restart", "gateway"]);
    assert_eq!(restart.code, Some(0), "{restart}");
    assert_eq!(lab.service("gateway")["state"], "running", "{restart}");
    assert!(lab.healthy());
}

#[test]
fn corrupt_and_stale_pid_files_are_recovered() {
    let lab = Lab::new("");
    std::fs::create_dir_all(lab.run_dir()).unwrap();
    std::fs::write(lab.run_dir().join("gateway.pid"), "this is not json").unwrap();
    // A pid that is surely not ours (pid 1 with a made-up start time) and a stale state file.
    std::fs::write(
        lab.run_dir().join("old.pid"),
        "{\"pid\": 1, \"pid_start\": 12345}",
    )
    .unwrap();
    std::fs::write(
        lab.run_dir().join("supervisor.json"),
        "{\"pid\": 1, \"pid_start\": 1, \"started_at\": 0, \"services\": []}",
    )
    .unwrap();
    let output = lab.proxies(&["up"]);
    assert_eq!(output.code, Some(0), "{output}");
    assert!(lab.healthy());
    assert!(
        !lab.run_dir().join("old.pid").exists(),
        "stale pid file removed"
    );
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.run_dir().join("gateway.pid")).unwrap())
            .unwrap();
    assert_eq!(
        record["pid"],
        lab.service("gateway")["pid"],
        "the pid file is rewritten for the new gateway"
    );
    // Pid 1 was never signalled: this test process would have no way to see that, but the
    // status of an unrelated pid in a pid file must not be taken as ours.
    assert!(Path::new("/proc/1").exists());
}

#[test]
fn ten_concurrent_launches_start_exactly_one_gateway() {
    let lab = Lab::new("");
    let bin = lab.clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let agent = bin.join("standin-agent");
    std::fs::write(&agent, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agents = lab.clutch.clutch_home.path().join("config/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("claude.toml"),
        include_str!("../agents/claude.toml")
            .replace("binary = \"claude\"", "binary = \"standin-agent\""),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let run = lab
                .clutch
                .xx(&["cIp", "-p", "hello"])
                .env("PATH", &path)
                .env("IS_SANDBOX", "1")
                // A key, so the default profile has a provider to reach.
                .env("OPENROUTER_API_KEY", "sk-or-test")
                .timeout(Duration::from_secs(30));
            std::thread::spawn(move || run.output())
        })
        .collect();
    for handle in handles {
        let output = handle.join().unwrap();
        assert_eq!(
            output.code,
            Some(0),
            "every launch reaches its agent\n{output}"
        );
    }
    assert!(lab.healthy());
    assert_eq!(lab.processes("__gateway").len(), 1, "exactly one gateway");
    assert_eq!(
        lab.processes("__supervise").len(),
        1,
        "exactly one supervisor"
    );
}

#[test]
fn a_service_that_keeps_crashing_is_marked_failed_with_its_log_tail() {
    let lab = Lab::new(
        "[[services]]\nname = \"crasher\"\ncommand = [\"sh\", \"-c\", \"echo boom-marker-4711; exit 3\"]\n",
    );
    let output = lab.proxies(&["up"]);
    assert_eq!(
        output.code,
        Some(1),
        "up reports that not everything came up\n{output}"
    );
    let crasher = lab.service("crasher");
    assert_eq!(crasher["state"], "failed", "{crasher}");
    assert!(crasher["restarts"].as_u64().unwrap() >= 5, "{crasher}");
    assert!(
        crasher["last_error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{crasher}"
    );
    assert!(
        crasher["log_tail"].to_string().contains("boom-marker-4711"),
        "{crasher}"
    );
    assert!(
        output.stdout.contains("boom-marker-4711"),
        "up shows the log tail\n{output}"
    );
    assert_eq!(
        lab.service("gateway")["state"],
        "running",
        "the gateway is unaffected"
    );
    let logs = lab.proxies(&["logs", "crasher"]);
    assert!(logs.stdout.contains("crasher | boom-marker-4711"), "{logs}");
}

#[test]
fn auto_start_off_is_honoured_and_says_what_to_do() {
    let lab = Lab::new("auto_start = false\n");
    let bin = lab.clutch.workdir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("claude"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        bin.join("claude"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = lab.clutch.xx(&["cip"]).env("PATH", &path).output();
    assert_eq!(output.code, Some(2), "{output}");
    assert!(
        output.stderr.contains("auto_start is off") && output.stderr.contains("proxies up"),
        "{output}"
    );
    assert!(lab.processes("__gateway").is_empty(), "nothing was started");
}

#[test]
fn config_check_show_watch_and_the_systemd_unit() {
    let lab = Lab::new("");
    let check = lab.proxies(&["config", "check"]);
    assert_eq!(check.code, Some(0), "{check}");
    let show = lab.proxies(&["config", "show"]);
    assert!(show.stdout.contains("gateway: port"), "{show}");
    assert!(
        show.stdout
            .contains("  default, from profiles/default.toml (built in)\n")
            && show.stdout.contains("    middle: openrouter|"),
        "config show lists profiles: {show}"
    );
    assert!(lab.proxies(&["up"]).code == Some(0));
    let watch = lab.proxies(&["watch", "--once"]);
    assert!(
        watch.stdout.contains("requests 0") && watch.stdout.contains("gateway"),
        "{watch}"
    );
    // Today's spend comes from the usage ledger, in status and watch alike.
    assert!(
        watch.stdout.contains("today: 0 requests, $0.0000 spent"),
        "{watch}"
    );
    let status = lab.proxies(&["status"]);
    assert!(status.stdout.contains("today: 0 requests"), "{status}");
    assert!(lab.status()["today"]["total_requests"] == 0, "{status}");
    assert!(
        !watch.stdout.contains('\x1b'),
        "no screen control into a pipe: {watch}"
    );
    let completions = lab.proxies(&["completions", "bash"]);
    assert_eq!(completions.code, Some(0), "{completions}");
    assert!(
        completions.stdout.contains("proxies") && completions.stdout.contains("breakers"),
        "{completions}"
    );
    let install = lab.proxies(&["service", "install"]);
    let unit = lab
        .clutch
        .clutch_home
        .path()
        .join("config/systemd/clutch.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|_| panic!("{install}"));
    assert!(
        text.contains("__supervise") && text.contains("Restart=on-failure"),
        "{text}"
    );
    let uninstall = lab.proxies(&["service", "uninstall"]);
    assert!(!unit.exists(), "{uninstall}");
    // The model-scan refresh as a systemd timer, on the config's interval.
    let install = lab.proxies(&["service", "install", "--scan-timer"]);
    let systemd = lab.clutch.clutch_home.path().join("config/systemd");
    let timer = std::fs::read_to_string(systemd.join("clutch-scan.timer"))
        .unwrap_or_else(|_| panic!("{install}"));
    assert!(
        timer.contains("OnUnitActiveSec=21600s") && timer.contains("RandomizedDelaySec=2160s"),
        "{timer}"
    );
    let job = std::fs::read_to_string(systemd.join("clutch-scan.service")).unwrap();
    assert!(
        job.contains("Type=oneshot") && job.contains("__scan_refresh"),
        "{job}"
    );
    let uninstall = lab.proxies(&["service", "uninstall"]);
    assert!(
        !systemd.join("clutch-scan.timer").exists() && !unit.exists(),
        "{uninstall}"
    );

    let bad = Lab::new("[[services]]\nname = \"gateway\"\ncommand = [\"x\"]\n");
    let check = bad.proxies(&["config", "check"]);
    assert_eq!(check.code, Some(2), "{check}");
    assert!(
        check.stderr.contains("services[0].name") && check.stderr.contains("taken"),
        "{check}"
    );
}

#[test]
fn a_service_that_ignores_sigterm_does_not_outlive_a_killed_supervisor() {
    let lab = Lab::new(
        "[[services]]\nname = \"stubborn\"\ncommand = [\"sh\", \"-c\", \"trap '' TERM; echo stubborn-marker-5150; while true; do sleep 1; done\"]\n",
    );
    let output = lab.proxies(&["up"]);
    assert!(output.code.is_some(), "{output}");
    wait_until(Duration::from_secs(10), "the stubborn service", || {
        lab.service("stubborn")["pid"].is_u64()
    });
    let service = lab.service("stubborn")["pid"].as_u64().unwrap() as i32;
    let supervisor = lab.status()["supervisor"]["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The service and what it started (its `sleep`) go with the supervisor.
    wait_until(Duration::from_secs(10), "the service to die", || {
        let stat = std::fs::read_to_string(format!("/proc/{service}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    });
}

#[test]
fn up_starts_a_failed_service_again() {
    let flag = tempfile::tempdir().unwrap();
    let ready = flag.path().join("ready");
    let lab = Lab::new(&format!(
        "[[services]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"test -f {} || exit 3; echo flaky-up; exec sleep 300\"]\n",
        ready.display()
    ));
    let first = lab.proxies(&["up"]);
    assert_eq!(first.code, Some(1), "{first}");
    assert_eq!(lab.service("flaky")["state"], "failed");
    // The cause is fixed; `proxies up` revives it.
    std::fs::write(&ready, "").unwrap();
    let again = lab.proxies(&["up"]);
    assert_eq!(again.code, Some(0), "{again}");
    assert!(again.stdout.contains("starting flaky again"), "{again}");
    assert_eq!(lab.service("flaky")["state"], "running");
}

#[test]
fn sighup_brings_services_in_line_with_the_config() {
    let service = |name: &str, marker: &str| {
        format!(
            "[[services]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo {marker}; exec sleep 300\"]\n"
        )
    };
    let lab = Lab::new(&service("alpha", "alpha-one"));
    lab.proxies(&["up"]).assert_ok();
    let first_alpha = lab.service("alpha")["pid"].as_u64().expect("alpha runs");
    let gateway = lab.service("gateway")["pid"].as_u64().unwrap();
    let supervisor = lab.status()["supervisor"]["pid"].as_u64().unwrap() as i32;

    // alpha's command changes and beta is added; SIGHUP, as the README says.
    let config = lab.clutch.clutch_home.path().join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let head = text.split("[[services]]").next().unwrap().to_string();
    std::fs::write(
        &config,
        format!(
            "{head}{}{}",
            service("alpha", "alpha-two"),
            service("beta", "beta-one")
        ),
    )
    .unwrap();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(supervisor),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    hup();
    wait_until(
        Duration::from_secs(15),
        "beta to run and alpha to restart",
        || {
            lab.service("beta")["state"] == "running"
                && lab.service("alpha")["state"] == "running"
                && lab.service("alpha")["pid"].as_u64() != Some(first_alpha)
        },
    );
    let log = lab.clutch.clutch_home.path().join("state/logs/alpha.log");
    wait_until(Duration::from_secs(5), "the new alpha's output", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("alpha-two")
    });
    assert_eq!(
        lab.service("gateway")["pid"].as_u64(),
        Some(gateway),
        "the gateway reloads in place"
    );

    // alpha removed, applied with `proxies reload`: stopped and gone from the status.
    std::fs::write(&config, format!("{head}{}", service("beta", "beta-one"))).unwrap();
    let reload = lab.proxies(&["reload"]);
    reload.assert_ok();
    assert!(!reload.stdout.contains("alpha"), "{reload}");
    wait_until(Duration::from_secs(15), "alpha to be gone", || {
        lab.service("alpha").is_null()
    });
    let stat = std::fs::read_to_string(format!("/proc/{first_alpha}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    assert_eq!(lab.service("beta")["state"], "running");
}
