//! `cargo bench --bench gateway -- soak`: 100k requests at concurrency 16 through the gateway,
//! whose two candidate upstreams inject random faults of every kind into 10% of their answers,
//! in two shapes: the candidates on two providers with a key each, and both as models of one
//! provider behind one key (the shipped default's shape). Every request must get a definite
//! answer (a complete one, or an error in the caller's shape), at least 98% must be answered
//! 200 (the rest are streams cut after their first event, which no gateway can rescue), the
//! gateway must not panic, and its RSS must stay within ±10% between the first and the last
//! 10k requests. `soak 20000` runs fewer requests per shape.
//!
//! `cargo bench --bench gateway -- failover`: the time one failed candidate adds beyond its
//! own failure time (median; target <= 1 ms).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Killed, free_port, rss_kib, wait_ready};

pub const TOTAL: usize = 100_000;
const CONCURRENCY: usize = 16;
/// The share of requests that must be answered 200.
const FLOOR: f64 = 0.98;

pub fn start_fake(mode: &str) -> (Killed, String) {
    let port = free_port();
    let me = std::env::current_exe().unwrap();
    let child = Command::new(me)
        .args(["fake", &port.to_string(), mode])
        .spawn()
        .unwrap();
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

fn start_gateway(
    home: &std::path::Path,
    config: &str,
    profile: &str,
) -> (Killed, String, std::path::PathBuf) {
    std::fs::create_dir_all(home.join("config/profiles")).unwrap();
    std::fs::write(home.join("config/config.toml"), config).unwrap();
    std::fs::write(home.join("config/profiles/default.toml"), profile).unwrap();
    let port = free_port();
    let log = home.join("gateway.log");
    let child = Command::new(env!("CARGO_BIN_EXE_xx"))
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("CLUTCH_HOME", home)
        .env("CLUTCH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Killed(child), format!("http://127.0.0.1:{port}"), log)
}

/// A definite answer: 200 with a complete body or stream, or an error in Anthropic's shape.
fn definite(status: u16, body: &str, stream: bool) -> bool {
    if status != 200 {
        return serde_json::from_str::<Value>(body).is_ok_and(|v| v["type"] == "error");
    }
    if !stream {
        return serde_json::from_str::<Value>(body).is_ok_and(|v| v["type"] == "message");
    }
    body.contains("event: message_stop") || body.contains("event: error")
}

/// Both shapes, one after the other; `total` requests each.
pub async fn run(total: usize) {
    let (_a, a) = start_fake("faults:0.1");
    let (_b, b) = start_fake("faults:0.1");
    wait_ready(&format!("{a}/health")).await;
    wait_ready(&format!("{b}/health")).await;
    let two_providers = format!(
        "[gateway]\nfirst_byte_timeout_secs = 2\nidle_timeout_secs = 2\nretries = 1\n\
         [providers.a]\nbase_url = \"{a}/v1\"\nformat = \"chat\"\napi_key = \"ka\"\n\
         [providers.b]\nbase_url = \"{b}/v1\"\nformat = \"chat\"\napi_key = \"kb\"\n"
    );
    shape(
        "two candidates on two providers, one key each",
        &two_providers,
        "[tiers.middle]\nmodel = \"a|fast\"\ncascade = [\"b|fast\"]\n",
        total,
    )
    .await;
    let one_key = format!(
        "[gateway]\nfirst_byte_timeout_secs = 2\nidle_timeout_secs = 2\nretries = 1\n\
         [providers.a]\nbase_url = \"{a}/v1\"\nformat = \"chat\"\napi_key = \"ka\"\n"
    );
    shape(
        "two candidates as models of one provider behind one key",
        &one_key,
        "[tiers.middle]\nmodel = \"a|fast\"\ncascade = [\"a|fast-too\"]\n",
        total,
    )
    .await;
}

async fn shape(name: &str, config: &str, profile: &str, total: usize) {
    let work = tempfile::tempdir().unwrap();
    let (gateway, url, log) = start_gateway(work.path(), config, profile);
    wait_ready(&format!("{url}/health")).await;
    let pid = gateway.0.id();

    let client = reqwest::Client::builder()
        .default_headers(super::json_headers())
        .pool_max_idle_per_host(64)
        .no_proxy()
        .build()
        .unwrap();
    let issued = Arc::new(AtomicUsize::new(0));
    let indefinite = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let error_kinds = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    let mut rss_first = 0;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let (client, url, issued, indefinite, ok, errors, error_kinds) = (
            client.clone(),
            url.clone(),
            issued.clone(),
            indefinite.clone(),
            ok.clone(),
            errors.clone(),
            error_kinds.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let stream = (n + worker) % 2 == 0;
                let body = json!({"model": "claude-sonnet-x", "max_tokens": 32, "stream": stream,
                    "messages": [{"role": "user", "content": "hello"}]});
                let definite_answer = match client
                    .post(format!("{url}/v1/messages"))
                    .body(body.to_string())
                    .send()
                    .await
                {
                    Err(_) => false,
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.text().await {
                            Ok(text) => {
                                if status == 200 && !text.contains("event: error") {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    *error_kinds
                                        .lock()
                                        .unwrap()
                                        .entry(failure_kind(status, &text))
                                        .or_default() += 1;
                                }
                                definite(status, &text, stream)
                            }
                            Err(_) => false,
                        }
                    }
                };
                if !definite_answer {
                    indefinite.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // RSS after the first 10k requests, while the rest run.
    while issued.load(Ordering::Relaxed) < total / 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rss_first = rss_first.max(rss_kib(pid));
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let rss_last = rss_kib(pid);
    let alive = std::fs::metadata(format!("/proc/{pid}")).is_ok();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = log_text.matches("panicked").count();
    let token = clutch::gateway::admin::token::read(&clutch::paths::Paths::under(work.path()))
        .unwrap_or_default();
    let breakers = client
        .get(format!("{url}/api/breakers"))
        .header(clutch::gateway::admin::token::HEADER, &token)
        .send()
        .await
        .ok();
    let breakers = match breakers {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    let (answered, failed) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let rate = answered as f64 / total as f64;
    println!("soak, {name}:");
    println!(
        "  {total} requests at concurrency {CONCURRENCY} in {:.1} s ({:.0} req/s), 10% injected faults on each candidate",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  answered 200: {answered} ({:.2}%, floor {:.0}%: {}), answered with an error in the caller's shape: {failed}",
        rate * 100.0,
        FLOOR * 100.0,
        if rate >= FLOOR { "held" } else { "MISSED" }
    );
    println!(
        "  without a definite answer: {} (target 0)",
        indefinite.load(Ordering::Relaxed)
    );
    println!("  gateway alive: {alive}; panics in its log: {panics} (target 0)");
    let change = (rss_last as f64 - rss_first as f64) / rss_first.max(1) as f64 * 100.0;
    println!(
        "  RSS after {}: {:.1} MB, after {total}: {:.1} MB ({change:+.1}%, target within ±10%)",
        total / 10,
        rss_first as f64 / 1024.0,
        rss_last as f64 / 1024.0
    );
    println!("  breakers at the end: {breakers}");
    // Every request has its one ledger row: wait for the writer to drain, then count.
    let ledger = work.path().join("state/usage.db");
    let mut rows = 0u64;
    let mut stats = serde_json::Value::Null;
    let drained = Instant::now();
    while drained.elapsed() < Duration::from_secs(60) {
        if let Ok(response) = client
            .get(format!("{url}/api/stats"))
            .header(clutch::gateway::admin::token::HEADER, &token)
            .send()
            .await
            && let Ok(text) = response.text().await
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
        {
            stats = value;
        }
        if stats["ledger"]["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(connection) =
        rusqlite::Connection::open_with_flags(&ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    {
        rows = connection
            .query_row("SELECT COUNT(*) FROM requests", [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap_or(0) as u64;
    }
    let ledger_stats = &stats["ledger"];
    println!(
        "  ledger: {rows} rows for {total} requests (target: equal); dropped {}, failed {}, pending {}",
        ledger_stats["dropped"], ledger_stats["failed"], ledger_stats["pending"]
    );
    let kinds = error_kinds.lock().unwrap();
    let mut kinds: Vec<_> = kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    for (kind, count) in kinds.iter().take(6) {
        println!("  failed: {count} x {kind}");
    }
}

/// A failure as a short label: the status and the gist of the first attempt's error, with
/// numbers blanked so like failures count together.
fn failure_kind(status: u16, text: &str) -> String {
    let message = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .chain(std::iter::once(text))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    let gist: String = message
        .chars()
        .take(90)
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let cut = if status == 200 { "stream cut: " } else { "" };
    format!("{status} {cut}{gist}")
}

pub async fn failover() {
    let work = tempfile::tempdir().unwrap();
    let (_ok, ok_url) = start_fake("ok");
    let (_bad, bad_url) = start_fake("fail");
    wait_ready(&format!("{ok_url}/health")).await;
    wait_ready(&format!("{bad_url}/health")).await;
    let config = format!(
        "[gateway]\nretries = 0\nbreaker_threshold = 1000000000\n[providers.good]\nbase_url = \"{ok_url}/v1\"\nformat = \"chat\"\n\
         [providers.bad]\nbase_url = \"{bad_url}/v1\"\nformat = \"chat\"\n"
    );
    let (_g1, only_good, _) = start_gateway(
        &work.path().join("one"),
        &config,
        "[tiers.middle]\nmodel = \"good|fast\"\n",
    );
    let (_g2, fail_then_good, _) = start_gateway(
        &work.path().join("two"),
        &config,
        "[tiers.middle]\nmodel = \"bad|fast\"\ncascade = [\"good|fast\"]\n",
    );
    wait_ready(&format!("{only_good}/health")).await;
    wait_ready(&format!("{fail_then_good}/health")).await;
    let client = reqwest::Client::builder()
        .default_headers(super::json_headers())
        .no_proxy()
        .build()
        .unwrap();
    let chat =
        json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let anthropic = json!({"model": "claude-sonnet-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let median = |mut samples: Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut both = Vec::new();
    for round in 0..4000 {
        // Interleaved, so drift on a shared machine affects all three alike.
        let t = Instant::now();
        let r = client
            .post(format!("{bad_url}/v1/chat/completions"))
            .body(chat.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 500);
        let _ = r.bytes().await;
        let bad_alone = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let r = client
            .post(format!("{only_good}/v1/messages"))
            .body(anthropic.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await;
        let good_alone = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let r = client
            .post(format!("{fail_then_good}/v1/messages"))
            .body(anthropic.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await;
        let failover = t.elapsed().as_secs_f64() * 1000.0;
        if round >= 200 {
            a.push(bad_alone);
            b.push(good_alone);
            both.push(failover);
        }
    }
    let (a, b, both) = (median(a), median(b), median(both));
    println!("failover: medians over 3800 interleaved rounds");
    println!("  the failing candidate alone (direct 500): {a:.3} ms");
    println!("  the gateway to the good candidate only:   {b:.3} ms");
    println!("  the gateway, failing candidate then good: {both:.3} ms");
    println!(
        "  added by the failed candidate beyond its own failure time: {:.3} ms (target <= 1)",
        both - b - a
    );
}
