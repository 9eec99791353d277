//! The dashboard in a real browser: headless Chromium (Debian's package) opens the URL
//! `xx dashboard` prints, trades the token for a cookie, and shows the request the test just
//! made, with its attempts, and logs nothing to the console; a screenshot is saved as
//! `target/dashboard.png` for people to look at. Without the token the page is refused.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Clutch;
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{ProcessGateway, configure, free_port, http_agent};

fn chromium_available() -> bool {
    if which::which("chromium").is_ok() {
        return true;
    }
    assert!(
        std::env::var("CLUTCH_REQUIRE_BROWSER").is_err(),
        "chromium is needed: .ci/run installs Debian's chromium"
    );
    eprintln!("skipped: chromium is not installed (Debian's chromium)");
    false
}

/// Chromium, headless, on `url`, with a profile of its own; its stdout and stderr.
fn chromium(profile: &std::path::Path, url: &str, extra: &[&str]) -> (String, String) {
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            // Room for the page's requests and first redraw, in virtual time.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("start chromium");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("chromium did not finish within 60 s");
        }
    };
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_dashboard_shows_the_request_just_made_with_no_console_errors() {
    if !chromium_available() {
        return;
    }
    let fake = FakeUpstream::start("dashboard answer");
    let port = free_port();
    let clutch = Clutch::new();
    let home = clutch.clutch_home.path();
    configure(
        home,
        &format!(
            "[gateway]\nurl = \"http://127.0.0.1:{port}\"\nauto_start = false\n\
             [providers.fake]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\
             models.m = {{ input_price = 0.5, output_price = 1.5 }}\n",
            fake.url()
        ),
        &[("claude", "[tiers.middle]\nmodel = \"fake|m\"\n")],
    );
    let gateway = ProcessGateway::start_at(home, port);
    let mut response = http_agent()
        .post(&format!("{}/p/claude/v1/messages", gateway.url))
        .send(
            json!({"model": "claude-sonnet-4-5", "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello dashboard"}]})
            .to_string(),
        )
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-clutch-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.body_mut().read_to_string();
    fake.script([Reply::Error {
        status: 503,
        body: "{\"error\": {\"message\": \"overloaded\"}}".into(),
        retry_after: None,
    }]);
    let _ = http_agent()
        .post(&format!("{}/p/claude/v1/messages", gateway.url))
        .send(
            json!({"model": "claude-haiku-4-5", "max_tokens": 50,
                "messages": [{"role": "user", "content": "this one fails over"}]})
            .to_string(),
        )
        .unwrap();
    // Both rows are in the ledger before the page is loaded.
    let admin = support::gateway::admin_agent(home);
    let started = Instant::now();
    loop {
        let mut stats = admin
            .get(&format!("{}/api/stats", gateway.url))
            .call()
            .unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&stats.body_mut().read_to_string().unwrap()).unwrap();
        if stats["ledger"]["written"].as_u64() >= Some(2) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{stats}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The URL `xx dashboard` prints.
    let printed = clutch.xx(&["dashboard"]).output();
    printed.assert_ok();
    let url = printed.stdout.trim().to_string();
    assert!(
        url.starts_with(&format!("{}/dashboard?token=", gateway.url)),
        "{printed}"
    );

    let profile = tempfile::tempdir().unwrap();
    let (dom, log) = chromium(profile.path(), &url, &["--dump-dom"]);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page finished loading:\n{dom}\n{log}"
    );
    assert!(
        dom.contains(&format!("data-id=\"{id}\"")),
        "the request is listed:\n{dom}"
    );
    assert!(dom.contains(">claude-sonnet-4-5<"), "{dom}");
    assert!(dom.contains("fake|m"), "who served it is shown:\n{dom}");
    assert!(
        dom.contains("Attempts"),
        "a request's detail is open:\n{dom}"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");

    // A picture for people: the same page, rendered.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1500",
            "--hide-scrollbars",
        ],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "a screenshot at {} ({size} bytes)",
        shot.display()
    );

    // Without the token (a fresh browser profile, no cookie), the page is refused.
    let stranger = tempfile::tempdir().unwrap();
    let (dom, _) = chromium(
        stranger.path(),
        &format!("{}/dashboard", gateway.url),
        &["--dump-dom"],
    );
    assert!(dom.contains("needs the gateway's admin token"), "{dom}");
    assert!(!dom.contains("data-ready"), "{dom}");
}
