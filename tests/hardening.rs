//! What a web page, a broken or hostile upstream, a slow client or another local user can do
//! to the gateway, each tried as they would: a cross-site page's `text/plain` POST and a DNS-
//! rebinding `Host` never reach the upstream; admin endpoints want the admin token; a 1 GB
//! answer, a 100 MB SSE line and a 1 GB error body end with a definite error while the
//! gateway's memory stays bounded; a key the provider echoes appears in no answer, file or
//! log; slow clients are cut off; config that would break serving is refused at load; a
//! planted runtime dir is refused and nothing is signalled.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::Clutch;
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{ProcessGateway, TestGateway, admin_agent, configure, http_agent};

/// One request written by hand (any `Host`, any header), and the status and body that came
/// back; `None` when the gateway closed the connection without an answer.
fn raw_request(url: &str, head: &str, body: &str) -> Option<(u16, String)> {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

fn chat_body() -> String {
    json!({"model": "gpt-x", "messages": [{"role": "user", "content": "spend the user's key"}]})
        .to_string()
}

#[test]
fn a_web_page_cannot_spend_the_keys_or_drive_the_admin_endpoints() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("answered");
    let port = support::gateway::free_port();
    support::gateway::route_everything_to(
        home.path(),
        &format!("http://127.0.0.1:{port}"),
        &fake.url(),
        "chat",
    );
    let gateway = TestGateway::start(home.path());
    let host = gateway.url.trim_start_matches("http://").to_string();
    let page_posts = [
        // A form-like simple request from a page: no preflight in any browser.
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain;charset=UTF-8\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: cross-site"
        ),
        // The same without Origin (a sandboxed page, an older browser).
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain"
        ),
        // A body with no declared type (a Blob), also sent without preflight.
        format!("POST /v1/messages HTTP/1.1\r\nHost: {host}"),
        // DNS rebinding: the page's own name now points at 127.0.0.1, so it may send JSON.
        "POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example:8082\r\nContent-Type: application/json".to_string(),
        // A cross-site fetch that did get a JSON type (it would need a preflight; refused anyway).
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nSec-Fetch-Site: cross-site"
        ),
        format!(
            "POST /v1beta/models/gemini-x:generateContent HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nOrigin: http://localhost:3000"
        ),
    ];
    for head in &page_posts {
        let (status, body) = raw_request(&gateway.url, head, &chat_body()).expect("an answer");
        assert!(status == 403 || status == 415, "{head}\n-> {status} {body}");
        assert!(
            body.contains("refused") || body.contains("Content-Type"),
            "{body}"
        );
    }
    assert_eq!(fake.model_calls().len(), 0, "no page reached the upstream");

    // Admin endpoints want the token, from anyone; a rebinding page cannot read them either.
    let token = clutch::gateway::admin::token::read(&clutch::paths::Paths::under(home.path()))
        .expect("the gateway made its admin token");
    for (method, path) in [
        ("GET", "/api/breakers"),
        ("GET", "/api/keys"),
        ("GET", "/api/stats"),
        ("GET", "/api/usage"),
        ("POST", "/api/reload"),
        ("POST", "/api/breakers/fake%7Cfake-middle/reset"),
        ("POST", "/api/keys/reset"),
    ] {
        let (status, body) = raw_request(
            &gateway.url,
            &format!("{method} {path} HTTP/1.1\r\nHost: {host}"),
            "",
        )
        .unwrap();
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("admin token"), "{body}");
        let (status, _) = raw_request(
            &gateway.url,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: evil.example\r\nX-Clutch-Admin-Token: {token}"
            ),
            "",
        )
        .unwrap();
        assert_eq!(status, 403, "{method} {path} with a rebinding Host");
    }
    let (status, body) = raw_request(
        &gateway.url,
        &format!("GET /api/breakers HTTP/1.1\r\nHost: {host}\r\nX-Clutch-Admin-Token: {token}"),
        "",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // What agents call keeps working: Claude Code's probe, and a real JSON call.
    let (status, _) = raw_request(
        &gateway.url,
        &format!("GET /api/hello HTTP/1.1\r\nHost: {host}"),
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, body) = raw_request(
        &gateway.url,
        &format!("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Type: application/json"),
        &chat_body(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.model_calls().len(), 1);
}

/// The fake answers 1 GB (or a 100 MB line) in whatever shape; the gateway gives a definite
/// error for each and stays small.
#[test]
fn a_broken_upstream_cannot_exhaust_the_gateways_memory() {
    const GB: u64 = 1024 * 1024 * 1024;
    /// The stated bound: the 64 MB answer cap, read once and copied once, plus the gateway.
    const RSS_BOUND_MB: f64 = 200.0;
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("fine");
    support::gateway::route_everything_to(home.path(), "http://127.0.0.1:1", &fake.url(), "chat");
    // Each case is a fault of the one model: its breaker must not hide the next case.
    let config = home.path().join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[gateway]\n", "[gateway]\nbreaker_threshold = 1000\n"),
    )
    .unwrap();
    let mut gateway = ProcessGateway::start(home.path());
    let agent = http_agent();
    let answer_prefix = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":""#;
    let cases: [(&str, &str, bool, Reply, &str); 5] = [
        (
            "1 GB answer, translated",
            "/v1/messages",
            false,
            Reply::Flood {
                status: 200,
                content_type: "application/json".into(),
                prefix: answer_prefix.into(),
                total: GB,
            },
            "larger than",
        ),
        (
            "1 GB answer, same protocol",
            "/v1/chat/completions",
            false,
            Reply::Flood {
                status: 200,
                content_type: "application/json".into(),
                prefix: answer_prefix.into(),
                total: GB,
            },
            "larger than",
        ),
        (
            "100 MB SSE line",
            "/v1/messages",
            true,
            Reply::Flood {
                status: 200,
                content_type: "text/event-stream".into(),
                prefix: "data: {\"choices\":[{\"delta\":{\"content\":\"".into(),
                total: 100 * 1024 * 1024,
            },
            "exceeds",
        ),
        (
            "100 MB SSE line, same protocol",
            "/v1/chat/completions",
            true,
            Reply::Flood {
                status: 200,
                content_type: "text/event-stream".into(),
                prefix: "data: {\"choices\":[{\"delta\":{\"content\":\"".into(),
                total: 100 * 1024 * 1024,
            },
            "exceeds",
        ),
        (
            "1 GB error body",
            "/v1/messages",
            false,
            Reply::Flood {
                status: 500,
                content_type: "text/html".into(),
                prefix: "<html>".into(),
                total: GB,
            },
            "answered 500",
        ),
    ];
    let mut peak: f64 = 0.0;
    for (name, path, stream, reply, says) in cases {
        // One for the call and one for its retry (5xx and broken answers are retried once).
        fake.script([reply.clone(), reply]);
        let body = if path.contains("messages") {
            json!({"model": "claude-sonnet-x", "max_tokens": 9, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "gpt-x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        };
        let started = Instant::now();
        let mut response = agent
            .post(&format!("{}{path}", gateway.url))
            .send(body.to_string())
            .unwrap();
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(1024 * 1024)
            .read_to_string()
            .unwrap();
        assert!(status >= 500, "{name}: {status} {text}");
        assert!(text.contains(says), "{name}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: took {:?}",
            started.elapsed()
        );
        let rss = gateway.rss_mb();
        peak = peak.max(rss);
        assert!(rss < RSS_BOUND_MB, "{name}: RSS {rss:.0} MB");
        assert!(gateway.alive(), "{name}: the gateway died");
        // A reply the gateway did not ask for (no retry after a cap) is not left for the next.
        fake.clear_script();
    }
    eprintln!("peak RSS over the cases: {peak:.1} MB (bound {RSS_BOUND_MB} MB)");
}

#[test]
fn a_key_the_provider_echoes_appears_in_no_answer_file_or_log() {
    const CANARY: &str = "sk-canary-4f1c9e7a2b6d8e0f13579bdf";
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("fine");
    configure(
        home.path(),
        &format!(
            "[gateway]\nauto_start = false\nretries = 0\nbreaker_threshold = 1\n\
             [providers.a]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"{CANARY}\"\n\
             [providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\napi_key = \"{CANARY}\"\n",
            fake.url(),
            fake.url()
        ),
        &[(
            "default",
            "[tiers.middle]\nmodel = \"a|m1\"\ncascade = [\"b|m2\"]\n",
        )],
    );
    let gateway = ProcessGateway::start(home.path());
    let echo = |status: u16| {
        Reply::Error {
        status,
        body: json!({"error": {"message": format!("Incorrect API key provided: {CANARY}. You can find your API key at https://example.com/keys.")}}).to_string(),
        retry_after: None,
    }
    };
    let stream_echo = Reply::Raw {
        status: 200,
        content_type: "text/event-stream".into(),
        body: format!("data: {{\"error\":{{\"message\":\"bad key {CANARY}\",\"code\":500}}}}\n\n"),
    };
    let agent = admin_agent(home.path());
    let mut answers = String::new();
    for (replies, path, stream) in [
        (vec![echo(401), echo(403)], "/v1/messages", false),
        (
            vec![echo(500), stream_echo.clone()],
            "/v1/chat/completions",
            true,
        ),
        (vec![stream_echo.clone(), stream_echo], "/v1/messages", true),
    ] {
        let _ = agent
            .post(&format!("{}/api/breakers/a%7Cm1/reset", gateway.url))
            .send("");
        let _ = agent
            .post(&format!("{}/api/breakers/b%7Cm2/reset", gateway.url))
            .send("");
        fake.script(replies);
        let body = if path.contains("messages") {
            json!({"model": "claude-sonnet-x", "max_tokens": 9, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "gpt-x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        };
        let mut response = agent
            .post(&format!("{}{path}", gateway.url))
            .send(body.to_string())
            .unwrap();
        answers.push_str(&response.body_mut().read_to_string().unwrap());
    }
    assert!(answers.contains("[redacted]"), "{answers}");
    let breakers_api = agent
        .get(&format!("{}/api/breakers", gateway.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(breakers_api.contains("[redacted]"), "{breakers_api}");
    drop(gateway);
    let mut checked = vec![
        ("answers".to_string(), answers),
        ("/api/breakers".into(), breakers_api),
    ];
    for dir in [home.path().join("state"), home.path().to_path_buf()] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.path().is_file() {
                let text =
                    String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
                checked.push((entry.path().display().to_string(), text));
            }
        }
    }
    assert!(
        checked
            .iter()
            .any(|(name, _)| name.ends_with("breakers.json"))
    );
    assert!(
        checked
            .iter()
            .any(|(name, _)| name.ends_with("gateway.log"))
    );
    for (name, text) in &checked {
        assert!(!text.contains(CANARY), "the key is in {name}:\n{text}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(home.path().join("state/breakers.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "state files are the user's alone");
}

#[test]
fn slow_clients_are_cut_off_and_a_body_that_never_comes_times_out() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("fine");
    support::gateway::route_everything_to(home.path(), "http://127.0.0.1:1", &fake.url(), "chat");
    let config = home.path().join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[gateway]\n", "[gateway]\nheader_read_timeout_secs = 1\n"),
    )
    .unwrap();
    let gateway = TestGateway::start(home.path());
    let addr = gateway.url.trim_start_matches("http://").to_string();
    // Slowloris: headers that never end. The connection is closed after the timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // An idle keep-alive connection goes too.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let _ = idle.read_to_end(&mut sink);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A declared body that never arrives: a 408, not a task held forever.
    let mut short = TcpStream::connect(&addr).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    short
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"model\":")
        .unwrap();
    let mut answer = String::new();
    let _ = short.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("stopped arriving"), "{answer}");
    assert_eq!(fake.model_calls().len(), 0);
    let (status, _) =
        raw_request(&gateway.url, "GET /health HTTP/1.1\r\nHost: 127.0.0.1", "").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn config_that_would_break_serving_is_refused_with_file_line_key_and_range() {
    for (line, key, value) in [
        (
            "total_timeout_secs = 18446744073709551615",
            "gateway.total_timeout_secs",
            "between 1 and",
        ),
        (
            "first_byte_timeout_secs = 0",
            "gateway.first_byte_timeout_secs",
            "between 1 and",
        ),
        (
            "max_body_bytes = 0",
            "gateway.max_body_bytes",
            "between 1024 and",
        ),
        // The ledger's settings: a retention whose milliseconds overflow, a capture of nothing.
        (
            "[usage]\nretention_days = 999999999999",
            "usage.retention_days",
            "between 0 (keep everything) and 36500",
        ),
        (
            "[usage]\ncapture_max_bytes = 0",
            "usage.capture_max_bytes",
            "between 1024 and",
        ),
    ] {
        let clutch = Clutch::new().config(&format!("[gateway]\nauto_start = false\n{line}\n"));
        let out = clutch.xx(&["doctor"]).output();
        assert!(out.stdout.contains(key), "doctor: {}", out.stdout);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .args(["config", "check"])
            .env("CLUTCH_HOME", clutch.clutch_home.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let at = 2 + line.lines().count();
        assert!(stderr.contains(&format!("config.toml:{at}")), "{stderr}");
        assert!(stderr.contains(key) && stderr.contains(value), "{stderr}");
    }
    // A value with an unclosed `${` is never printed back: it may be a pasted key.
    let clutch = Clutch::new().config(
        "[providers.x]\nbase_url = \"https://x.example/v1\"\nformat = \"chat\"\napi_key = \"${sk-pasted-secret-123456\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
        .args(["config", "check"])
        .env("CLUTCH_HOME", clutch.clutch_home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without a closing"), "{stderr}");
    assert!(!stderr.contains("pasted-secret"), "{stderr}");
    // A profile naming an unknown provider: its file and line, and doctor agrees.
    let clutch = Clutch::new().config("[gateway]\nauto_start = false\n");
    let profiles = clutch.clutch_home.path().join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("work.toml"),
        "[tiers.middle]\nmodel = \"nowhere|m\"\n",
    )
    .unwrap();
    let out = clutch.xx(&["doctor"]).output();
    assert_ne!(out.code, Some(0));
    assert!(out.stdout.contains("work.toml:2"), "{}", out.stdout);
    assert!(out.stdout.contains("provider `nowhere`"), "{}", out.stdout);
}

#[test]
fn a_planted_runtime_dir_is_refused_and_nothing_is_signalled() {
    use std::os::unix::fs::PermissionsExt as _;
    let clutch = Clutch::new().config("[gateway]\nauto_start = false\n");
    let run = clutch.clutch_home.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    // A stand-in for the victim's process, and pid files that name it.
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let record = json!({"pid": pid, "pid_start": start}).to_string();
    std::fs::write(run.join("gateway.pid"), &record).unwrap();
    std::fs::write(
        run.join("supervisor.json"),
        json!({"pid": pid, "pid_start": start, "started_at": 1, "services": []}).to_string(),
    )
    .unwrap();
    for args in [["down"], ["status"], ["up"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .args(args)
            .env("CLUTCH_HOME", clutch.clutch_home.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if args == ["up"] {
            assert_eq!(out.status.code(), Some(2), "{text}");
            assert!(
                text.contains("refusing to use") && text.contains("others can write"),
                "{text}"
            );
        }
        assert!(
            victim.try_wait().unwrap().is_none(),
            "proxies {args:?} signalled the victim"
        );
    }
    // Owned by someone else (as root the test can make it so).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&run, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxies"))
            .args(["up"])
            .env("CLUTCH_HOME", clutch.clutch_home.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
        assert!(victim.try_wait().unwrap().is_none());
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn a_closed_pipe_ends_listing_commands_quietly() {
    let clutch = Clutch::new().config("[gateway]\nauto_start = false\n");
    for (program, args) in [
        (env!("CARGO_BIN_EXE_xx"), vec!["agents"]),
        (env!("CARGO_BIN_EXE_xx"), vec!["doctor"]),
        (env!("CARGO_BIN_EXE_proxies"), vec!["status"]),
        (env!("CARGO_BIN_EXE_proxies"), vec!["config", "show"]),
    ] {
        let mut child = std::process::Command::new(program)
            .args(&args)
            .env("CLUTCH_HOME", clutch.clutch_home.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once, as `| head -0` does.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

#[test]
fn a_corrupt_state_file_is_moved_aside_not_silently_reset() {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("fine");
    support::gateway::route_everything_to(home.path(), "http://127.0.0.1:1", &fake.url(), "chat");
    let state = home.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("breakers.json"), "{\"half a file").unwrap();
    let gateway = TestGateway::start(home.path());
    let (status, _) =
        raw_request(&gateway.url, "GET /health HTTP/1.1\r\nHost: 127.0.0.1", "").unwrap();
    assert_eq!(status, 200);
    let aside: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("breakers.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept for a look: {aside:?}");
    assert_eq!(
        std::fs::read_to_string(state.join(&aside[0])).unwrap(),
        "{\"half a file"
    );
}

#[test]
fn a_drip_of_keep_alives_cannot_hold_a_client_past_the_overall_deadline() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start("from-a"), FakeUpstream::start("from-b"));
    configure(
        home.path(),
        &format!(
            "[gateway]\nauto_start = false\nretries = 1\nfirst_byte_timeout_secs = 1\ntotal_timeout_secs = 2\n\
             [providers.a]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n\
             [providers.b]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n",
            a.url(),
            b.url()
        ),
        &[(
            "default",
            "[tiers.middle]\nmodel = \"a|m\"\ncascade = [\"b|m\"]\n",
        )],
    );
    let drip = Reply::Drip {
        every_ms: 200,
        for_ms: 20_000,
    };
    a.script([drip.clone(), drip.clone()]);
    b.script([drip.clone(), drip]);
    let gateway = TestGateway::start(home.path());
    let started = Instant::now();
    let mut response = http_agent()
        .post(&format!("{}/v1/messages", gateway.url))
        .send(json!({"model": "claude-sonnet-x", "max_tokens": 9, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .unwrap();
    let text = response.body_mut().read_to_string().unwrap();
    let took = started.elapsed();
    assert!(response.status().as_u16() >= 500, "{text}");
    // Four attempts of a drip would have taken minutes; one deadline covers them all.
    assert!(took < Duration::from_millis(3500), "took {took:?}: {text}");
}

#[test]
fn the_gateway_raises_its_open_file_limit_to_the_hard_limit() {
    use std::os::unix::process::CommandExt as _;
    let home = tempfile::tempdir().unwrap();
    let port = support::gateway::free_port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xx"));
    command
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("CLUTCH_HOME", home.path())
        .stderr(std::process::Stdio::null());
    unsafe {
        command.pre_exec(|| {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
            setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}/health");
    let started = Instant::now();
    while ureq::get(&url).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {line}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
