//! `cargo bench --bench gateway -- probes`: what a web page, a broken or hostile upstream and a
//! slow client can do, tried against a running gateway process, with a table probe -> held or
//! FAILED. The same findings are asserted one by one in `tests/hardening.rs`; this runs them
//! together against a real process, as an attacker would.
//!
//! `cargo bench --bench gateway -- abuse`: load held under abuse. For 20 s, 16 clients send
//! 30 MB requests back to back while 1,000 idle sockets and 200 slowloris connections (headers
//! one byte a second) stay open; `/health` is timed every 100 ms, a normal small request is
//! made every 200 ms, and the gateway's RSS is sampled. Loopback only; it stops by itself.

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::{Killed, free_port, rss_kib, soak, wait_ready};

const GB: u64 = 1024 * 1024 * 1024;
/// The key the echoing upstream is given, and must never be seen again.
const CANARY: &str = "sk-probe-canary-0123456789abcdef0123";

/// The fake upstream's hostile answers, chosen by the first path segment of a provider's
/// base URL; `None` for the ordinary fake.
pub fn hostile_answer(path: &str, headers: &axum::http::HeaderMap) -> Option<Response> {
    let flood = |status: u16, content_type: &str, prefix: &str, total: u64| {
        const CHUNK: usize = 256 * 1024;
        let filler = Bytes::from(vec![b'x'; CHUNK]);
        let prefix = Bytes::copy_from_slice(prefix.as_bytes());
        let rest = total - prefix.len() as u64;
        let chunks = rest.div_ceil(CHUNK as u64);
        let body =
            futures_util::stream::iter(std::iter::once(prefix).chain((0..chunks).map(move |i| {
                filler.slice(..((rest - i * CHUNK as u64).min(CHUNK as u64) as usize))
            })));
        use futures_util::StreamExt as _;
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(axum::body::Body::from_stream(
                body.map(Ok::<_, std::convert::Infallible>),
            ))
            .unwrap()
    };
    let answer = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":""#;
    Some(match path.split('/').nth(1)? {
        "flood-answer" => flood(200, "application/json", answer, GB),
        "flood-sse" => flood(
            200,
            "text/event-stream",
            "data: {\"x\":\"",
            100 * 1024 * 1024,
        ),
        "flood-error" => flood(500, "text/html", "<html>", GB),
        "html" => Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .body("<html><body>Welcome to the captive portal</body></html>".into())
            .unwrap(),
        "echo-key" => {
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_start_matches("Bearer ");
            Response::builder()
                .status(401)
                .header("content-type", "application/json")
                .body(
                    json!({"error": {"message": format!("Incorrect API key provided: {key}.")}})
                        .to_string()
                        .into(),
                )
                .unwrap()
        }
        _ => return None,
    })
}

struct Probed {
    gateway: Killed,
    url: String,
    fake: String,
    home: tempfile::TempDir,
    token: String,
    _fake: Killed,
}

async fn start() -> Probed {
    let (fake_process, fake) = soak::start_fake("ok");
    wait_ready(&format!("{fake}/health")).await;
    let home = tempfile::tempdir().unwrap();
    let mut config = String::from("[gateway]\nretries = 0\nbreaker_threshold = 1000000\n");
    let mut profiles = Vec::new();
    for (name, path, key) in [
        ("ok", "", "probe-key"),
        ("answer", "/flood-answer", "probe-key"),
        ("sse", "/flood-sse", "probe-key"),
        ("error", "/flood-error", "probe-key"),
        ("html", "/html", "probe-key"),
        ("echo", "/echo-key", CANARY),
    ] {
        config.push_str(&format!(
            "[providers.{name}]\nbase_url = \"{fake}{path}/v1\"\nformat = \"chat\"\napi_key = \"{key}\"\n"
        ));
        profiles.push((
            name.to_string(),
            format!("[tiers.middle]\nmodel = \"{name}|fast\"\n"),
        ));
    }
    std::fs::create_dir_all(home.path().join("config/profiles")).unwrap();
    std::fs::write(home.path().join("config/config.toml"), config).unwrap();
    for (name, text) in profiles {
        std::fs::write(
            home.path().join(format!("config/profiles/{name}.toml")),
            text,
        )
        .unwrap();
    }
    let port = free_port();
    let gateway = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_xx"))
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
            .env("CLUTCH_HOME", home.path())
            .env("CLUTCH_LOG", "info")
            .env(
                "CLUTCH_GATEWAY_THREADS",
                std::env::var("CLUTCH_GATEWAY_THREADS").unwrap_or_default(),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(home.path().join("gateway.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/health")).await;
    let token = clutch::gateway::admin::token::read(&clutch::paths::Paths::under(home.path()))
        .expect("the gateway made its admin token");
    Probed {
        gateway,
        url,
        fake,
        home,
        token,
        _fake: fake_process,
    }
}

/// A request written by hand; the status and body, or `None` for a closed connection.
fn raw(url: &str, head: &str, body: &str, wait: Duration) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.take(2 * 1024 * 1024).read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

async fn fake_calls(fake: &str) -> u64 {
    reqwest::get(format!("{fake}/count"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap()
}

pub async fn probes() {
    let p = start().await;
    let host = p.url.trim_start_matches("http://").to_string();
    let chat =
        json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let anthropic = |stream: bool| {
        json!({"model": "claude-sonnet-x", "max_tokens": 9, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
    };
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    let mut row = |name: &str, observed: String, held: bool| {
        println!(
            "  {:<58} {:<44} {}",
            name,
            observed,
            if held { "held" } else { "FAILED" }
        );
        rows.push((name.to_string(), observed, held));
    };
    println!("probes against {} (fake upstream {}):", p.url, p.fake);
    println!("  {:<58} {:<44} result", "probe", "observed");

    // The browser boundary: nothing reaches the upstream.
    let before = fake_calls(&p.fake).await;
    for (name, head) in [
        ("cross-site text/plain POST from a page", format!("POST /p/ok/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nOrigin: https://evil.example\r\nSec-Fetch-Site: cross-site")),
        ("POST with no content type (a Blob body)", format!("POST /p/ok/v1/chat/completions HTTP/1.1\r\nHost: {host}")),
        ("DNS rebinding: Host evil.example, JSON body", "POST /p/ok/v1/chat/completions HTTP/1.1\r\nHost: evil.example:8082\r\nContent-Type: application/json".to_string()),
        ("foreign Origin with a JSON body", format!("POST /p/ok/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nOrigin: http://localhost:3000")),
    ] {
        let answer = raw(&p.url, &head, &chat, Duration::from_secs(5));
        let status = answer.as_ref().map_or(0, |a| a.0);
        row(name, format!("HTTP {status}"), (400..500).contains(&status));
    }
    let after = fake_calls(&p.fake).await;
    row(
        "... upstream calls made by those requests",
        format!("{}", after - before),
        after == before,
    );

    // Admin endpoints.
    for (method, path) in [
        ("GET", "/api/breakers"),
        ("POST", "/api/reload"),
        ("POST", "/api/keys/reset"),
    ] {
        let status = raw(
            &p.url,
            &format!("{method} {path} HTTP/1.1\r\nHost: {host}"),
            "",
            Duration::from_secs(5),
        )
        .map_or(0, |a| a.0);
        row(
            &format!("{method} {path} without the admin token"),
            format!("HTTP {status}"),
            status == 401,
        );
    }
    let status = raw(
        &p.url,
        &format!(
            "GET /api/breakers HTTP/1.1\r\nHost: evil.example\r\nX-Clutch-Admin-Token: {}",
            p.token
        ),
        "",
        Duration::from_secs(5),
    )
    .map_or(0, |a| a.0);
    row(
        "GET /api/breakers, token but a rebinding Host",
        format!("HTTP {status}"),
        status == 403,
    );
    let status = raw(
        &p.url,
        &format!(
            "GET /api/breakers HTTP/1.1\r\nHost: {host}\r\nX-Clutch-Admin-Token: {}",
            p.token
        ),
        "",
        Duration::from_secs(5),
    )
    .map_or(0, |a| a.0);
    row(
        "GET /api/breakers with the token (proxies' way)",
        format!("HTTP {status}"),
        status == 200,
    );

    // Broken and hostile upstreams, with the gateway's memory read after each.
    let pid = p.gateway.0.id();
    const RSS_BOUND_MB: f64 = 200.0;
    for (name, path, body, says) in [
        (
            "1 GB answer",
            "/p/answer/v1/messages",
            anthropic(false),
            "larger than",
        ),
        (
            "1 GB answer, same protocol",
            "/p/answer/v1/chat/completions",
            chat.clone(),
            "larger than",
        ),
        (
            "100 MB SSE line",
            "/p/sse/v1/messages",
            anthropic(true),
            "exceeds",
        ),
        (
            "1 GB error body",
            "/p/error/v1/messages",
            anthropic(false),
            "answered 500",
        ),
        (
            "200 with an HTML page, same protocol",
            "/p/html/v1/chat/completions",
            chat.clone(),
            "provider `html`",
        ),
    ] {
        let started = Instant::now();
        let answer = raw(
            &p.url,
            &format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"),
            &body,
            Duration::from_secs(60),
        );
        let rss = rss_kib(pid) as f64 / 1024.0;
        let (status, text) = answer.unwrap_or((0, String::new()));
        row(
            name,
            format!(
                "HTTP {status} in {:.2} s, RSS {rss:.0} MB",
                started.elapsed().as_secs_f64()
            ),
            status >= 500 && text.contains(says) && rss < RSS_BOUND_MB,
        );
    }
    let answer = raw(
        &p.url,
        &format!(
            "POST /p/echo/v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        ),
        &anthropic(false),
        Duration::from_secs(10),
    )
    .unwrap_or_default();
    let breakers = raw(
        &p.url,
        &format!(
            "GET /api/breakers HTTP/1.1\r\nHost: {host}\r\nX-Clutch-Admin-Token: {}",
            p.token
        ),
        "",
        Duration::from_secs(5),
    )
    .unwrap_or_default();
    let mut files = String::new();
    for dir in [p.home.path().join("state"), p.home.path().to_path_buf()] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_file() {
                files.push_str(&String::from_utf8_lossy(
                    &std::fs::read(entry.path()).unwrap_or_default(),
                ));
            }
        }
    }
    let leaked = [&answer.1, &breakers.1, &files]
        .iter()
        .any(|t| t.contains(CANARY));
    row(
        "a key echoed in a 401 (answer, /api/breakers, state, log)",
        if leaked {
            "key found".into()
        } else {
            "not found anywhere".into()
        },
        !leaked && answer.1.contains("[redacted]"),
    );

    // Slow clients.
    let started = Instant::now();
    let mut slow = std::net::TcpStream::connect(&host).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    let waited = started.elapsed().as_secs_f64();
    row(
        "slowloris: headers that never end",
        format!("closed after {waited:.1} s"),
        waited < 35.0,
    );
    let started = Instant::now();
    let mut short = std::net::TcpStream::connect(&host).unwrap();
    short
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    short
        .write_all(format!("POST /p/ok/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"model\":").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = short.read_to_string(&mut answer);
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    row(
        "a declared body that never arrives",
        format!(
            "HTTP {status} after {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        status == 408,
    );
    let held = rows.iter().filter(|r| r.2).count();
    println!("{held} of {} probes held", rows.len());
}

pub async fn abuse() {
    clutch::gateway::raise_open_file_limit();
    let p = start().await;
    let host = p.url.trim_start_matches("http://").to_string();
    let pid = p.gateway.0.id();
    const RUN: Duration = Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    let rss_idle = rss_kib(pid) as f64 / 1024.0;

    // 1,000 idle sockets and 200 slowloris connections, held open for the run.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(socket) = tokio::net::TcpStream::connect(&host).await {
            idle.push(socket);
        }
    }
    let opened_idle = idle.len();
    let mut slowloris = Vec::new();
    for _ in 0..200 {
        let host = host.clone();
        let stop = stop.clone();
        slowloris.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let Ok(mut socket) = tokio::net::TcpStream::connect(&host).await else {
                return;
            };
            let _ = socket
                .write_all(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
                .await;
            while !stop.load(Ordering::Relaxed) {
                if socket.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    // 16 clients sending 30 MB requests back to back.
    let big = Bytes::from(
        json!({"model": "claude-sonnet-x", "max_tokens": 9,
            "messages": [{"role": "user", "content": "a".repeat(30 * 1024 * 1024)}]})
        .to_string(),
    );
    let big_ok = Arc::new(AtomicUsize::new(0));
    let big_busy = Arc::new(AtomicUsize::new(0));
    let big_other = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    let client = super::client();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (client, url, big, stop) = (client.clone(), p.url.clone(), big.clone(), stop.clone());
        let (ok, busy, other) = (big_ok.clone(), big_busy.clone(), big_other.clone());
        senders.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = match client
                    .post(format!("{url}/p/ok/v1/messages"))
                    .body(big.clone())
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        status
                    }
                    Err(_) => 0,
                };
                match status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    503 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        busy.fetch_add(1, Ordering::Relaxed)
                    }
                    status => {
                        *other.lock().unwrap().entry(status).or_default() += 1;
                        0
                    }
                };
            }
        }));
    }

    // /health every 100 ms, a normal request every 200 ms, RSS every 100 ms.
    let started = Instant::now();
    let mut health = Vec::new();
    let mut health_failed = 0;
    let mut baseline = Vec::new();
    let (mut normal_ok, mut normal_total) = (0, 0);
    let mut rss_peak: f64 = 0.0;
    let small = json!({"model": "claude-sonnet-x", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut tick = 0u64;
    while started.elapsed() < RUN {
        let t = Instant::now();
        match client.get(format!("{}/health", p.url)).send().await {
            Ok(r) if r.status().is_success() => health.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => health_failed += 1,
        }
        // The fake upstream's own /health, under the same machine load, as the baseline.
        let t = Instant::now();
        if client
            .get(format!("{}/health", p.fake))
            .send()
            .await
            .is_ok()
        {
            baseline.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rss_peak = rss_peak.max(rss_kib(pid) as f64 / 1024.0);
        if tick.is_multiple_of(2) {
            normal_total += 1;
            if let Ok(r) = client
                .post(format!("{}/p/ok/v1/messages", p.url))
                .body(small.clone())
                .send()
                .await
                && r.status().is_success()
            {
                normal_ok += 1;
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let _ = sender.await;
    }
    for task in slowloris {
        task.abort();
    }
    let still_open = idle.len();
    drop(idle);
    health.sort_by(f64::total_cmp);
    baseline.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let pct = |q: f64| at(&health, q);
    println!(
        "abuse for {} s: 16 clients x 30 MB requests, {opened_idle} idle sockets, 200 slowloris connections",
        RUN.as_secs()
    );
    println!(
        "  /health: {} answered, {health_failed} failed; median {:.2} ms, p99 {:.2} ms, max {:.2} ms (target: every one under 50 ms)",
        health.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  the fake upstream's /health in the same run (the machine's own delay): median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(&baseline, 0.5),
        at(&baseline, 0.99),
        at(&baseline, 1.0)
    );
    println!("  normal small requests: {normal_ok} of {normal_total} answered 200");
    println!(
        "  30 MB requests: {} answered 200, {} refused 503 (over gateway.max_held_body_bytes), other statuses {:?} (0: the connection closed while the body was being sent, after a 503)",
        big_ok.load(Ordering::Relaxed),
        big_busy.load(Ordering::Relaxed),
        big_other.lock().unwrap()
    );
    println!(
        "  gateway RSS: idle {rss_idle:.1} MB, peak {rss_peak:.1} MB (bound 700 MB), idle sockets still held at the end: {still_open}"
    );
}
