//! The usage ledger, checked against requests the test makes: every inbound × upstream
//! protocol pair, streamed and not, gets one row with the upstream's token buckets, the cost
//! at the configured prices, the premium-equivalent cost and the saving; a stream the client
//! abandons and one the upstream cuts still get their row; `xx usage daily --json` adds up
//! to the test's own sums; budgets survive a gateway restart; the provider key is nowhere in
//! the database.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Clutch;
use support::fake_upstream::{Block, FakeUpstream, FakeUsage, Reply, Stop, Turn};
use support::gateway::{
    ProcessGateway, TestGateway, admin_agent, configure, free_port, http_agent,
};

const PROTOCOLS: [&str; 4] = ["anthropic", "chat", "responses", "gemini"];
const CANARY: &str = "sk-canary-usage-7Q2xV9kLmN4pR8sT";
const REQUESTED: &str = "claude-sonnet-4-5";

/// $/M tokens the test configures for every upstream model.
const PRICES: (f64, f64, f64, f64) = (1.0, 2.0, 0.1, 1.25);

fn config(fakes: &[FakeUpstream], extra: &str) -> String {
    let mut config =
        format!("[gateway]\nauto_start = false\nretries = 0\nbreaker_threshold = 100000\n{extra}");
    for (protocol, fake) in PROTOCOLS.iter().zip(fakes) {
        let base = if matches!(*protocol, "chat" | "responses") {
            format!("{}/v1", fake.url())
        } else {
            fake.url()
        };
        let (input, output, read, write) = PRICES;
        config.push_str(&format!(
            "[providers.{protocol}]\nbase_url = \"{base}\"\nformat = \"{protocol}\"\napi_key = \"{CANARY}\"\n\
             models.up-{protocol} = {{ input_price = {input}, output_price = {output}, cache_read_price = {read}, cache_write_price = {write} }}\n"
        ));
    }
    config
}

fn profiles() -> Vec<(String, String)> {
    PROTOCOLS
        .iter()
        .map(|p| {
            (
                format!("to-{p}"),
                format!("[tiers.middle]\nmodel = \"{p}|up-{p}\"\n"),
            )
        })
        .collect()
}

fn setup(home: &std::path::Path, fakes: &[FakeUpstream], extra: &str) {
    let profiles = profiles();
    let profiles: Vec<(&str, &str)> = profiles
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    configure(home, &config(fakes, extra), &profiles);
}

/// A plain one-line request in `protocol`'s shape.
fn request(protocol: &str, stream: bool) -> (String, Value) {
    let text = "count my tokens";
    match protocol {
        "anthropic" => (
            "/v1/messages".into(),
            json!({"model": REQUESTED, "max_tokens": 100, "stream": stream,
                "messages": [{"role": "user", "content": text}]}),
        ),
        "chat" => (
            "/v1/chat/completions".into(),
            json!({"model": REQUESTED, "stream": stream,
                "messages": [{"role": "user", "content": text}]}),
        ),
        "responses" => (
            "/v1/responses".into(),
            json!({"model": REQUESTED, "stream": stream, "input": text}),
        ),
        _ => (
            if stream {
                format!("/v1beta/models/{REQUESTED}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{REQUESTED}:generateContent")
            },
            json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}),
        ),
    }
}

fn turn() -> Reply {
    Reply::Turn(Turn {
        blocks: vec![Block::Text("counted".into())],
        stop: Stop::End,
        usage: FakeUsage {
            input: 1000,
            output: 200,
            cache_read: 300,
            cache_write: 100,
        },
    })
}

/// Send one request; its status, body and ledger id.
fn send(url: &str, protocol: &str, stream: bool) -> (u16, String, String) {
    let (path, body) = request(protocol, stream);
    let mut response = http_agent()
        .post(&format!("{url}{path}"))
        .send(body.to_string())
        .unwrap();
    let id = response
        .headers()
        .get("x-clutch-request-id")
        .map(|v| v.to_str().unwrap().to_string())
        .expect("every model call carries its ledger id");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap(), id)
}

/// The ledger row of request `id`, once the writer has written it.
fn row(home: &std::path::Path, gateway_url: &str, id: &str) -> Value {
    let admin = admin_agent(home);
    let started = Instant::now();
    loop {
        let mut response = admin
            .get(&format!("{gateway_url}/api/requests/{id}"))
            .call()
            .unwrap();
        if response.status() == 200 {
            return serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "request {id} never reached the ledger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn every_protocol_pair_gets_one_priced_row_and_the_report_adds_up() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    setup(home.path(), &fakes, "");
    let gateway = TestGateway::start(home.path());
    let premium = clutch::gateway::usage::prices::premium_rates(
        REQUESTED,
        1000,
        clutch::gateway::usage::now_ms(),
    )
    .expect("the premium model is priced");
    let mut sums = (0u64, 0u64, 0u64, 0u64, 0.0f64, 0.0f64);
    for (upstream, fake) in PROTOCOLS.iter().zip(&fakes) {
        for client in PROTOCOLS {
            for stream in [false, true] {
                fake.script([turn()]);
                let url = format!("{}/p/to-{upstream}", gateway.url);
                let (status, body, id) = send(&url, client, stream);
                assert_eq!(
                    status, 200,
                    "{client} -> {upstream} stream={stream}: {body}"
                );
                let row = row(home.path(), &gateway.url, &id);
                let what = format!("{client} -> {upstream} stream={stream}: {row}");
                // Only Anthropic reports cache writes; every protocol reports the prompt,
                // the answer and cache reads.
                let write = if *upstream == "anthropic" { 100 } else { 0 };
                assert_eq!(row["input_tokens"], 1000, "{what}");
                assert_eq!(row["output_tokens"], 200, "{what}");
                assert_eq!(row["cache_read_tokens"], 300, "{what}");
                assert_eq!(row["cache_write_tokens"], write, "{what}");
                assert_eq!(row["estimated"], false, "{what}");
                assert_eq!(row["stream"], stream, "{what}");
                assert_eq!(row["protocol"], client, "{what}");
                assert_eq!(row["provider"], *upstream, "{what}");
                assert_eq!(row["model"], format!("up-{upstream}"), "{what}");
                assert_eq!(row["requested_model"], REQUESTED, "{what}");
                assert_eq!(row["outcome"], "ok", "{what}");
                assert_eq!(row["attempts"].as_array().unwrap().len(), 1, "{what}");
                assert!(row["ttfb_ms"].is_u64(), "{what}");
                let uncached = (1000 - 300 - write) as f64;
                let (input, output, read, write_price) = PRICES;
                let cost =
                    (uncached * input + 200.0 * output + 300.0 * read + write as f64 * write_price)
                        / 1e6;
                let premium_cost = (uncached * premium.input
                    + 200.0 * premium.output
                    + 300.0 * premium.cache_read
                    + write as f64 * premium.cache_write)
                    / 1e6;
                assert!(close(row["cost_usd"].as_f64().unwrap(), cost), "{what}");
                assert!(
                    close(row["premium_cost_usd"].as_f64().unwrap(), premium_cost),
                    "{what}"
                );
                assert!(
                    close(row["saved_usd"].as_f64().unwrap(), premium_cost - cost),
                    "{what}"
                );
                sums.0 += 1;
                sums.1 += 1000 - 300 - write;
                sums.2 += 300;
                sums.3 += write;
                sums.4 += cost;
                sums.5 += premium_cost - cost;
            }
        }
    }

    // The report adds up to the test's own sums.
    let report = Clutch::new();
    let output = report
        .xx(&["usage", "daily", "--json"])
        .env("CLUTCH_HOME", home.path())
        .output();
    output.assert_ok();
    let value: Value = serde_json::from_str(&output.stdout).unwrap();
    let total = &value["total"];
    assert_eq!(total["requests"], sums.0, "{value}");
    assert_eq!(total["input_tokens"], sums.1, "{value}");
    assert_eq!(total["output_tokens"], 200 * sums.0, "{value}");
    assert_eq!(total["cache_read_tokens"], sums.2, "{value}");
    assert_eq!(total["cache_write_tokens"], sums.3, "{value}");
    assert!(
        (total["cost_usd"].as_f64().unwrap() - sums.4).abs() < 1e-9,
        "{value}"
    );
    assert!(
        (total["saved_usd"].as_f64().unwrap() - sums.5).abs() < 1e-9,
        "{value}"
    );
    assert_eq!(
        value["rows"].as_array().unwrap().len(),
        1,
        "one day: {value}"
    );
    let table = report
        .xx(&["usage", "model"])
        .env("CLUTCH_HOME", home.path())
        .output();
    table.assert_ok();
    for upstream in PROTOCOLS {
        assert!(
            table.stdout.contains(&format!("{upstream}|up-{upstream}")),
            "{table}"
        );
    }
    assert!(table.stdout.contains("TOTAL"), "{table}");

    // The key is nowhere in the ledger, once the writer has closed it (and folded its
    // write-ahead log into the file).
    drop(gateway);
    let wal = home.path().join("state/usage.db-wal");
    let started = Instant::now();
    while wal.exists() && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for entry in std::fs::read_dir(home.path().join("state"))
        .unwrap()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("usage.db") {
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            assert!(
                !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
                "{} holds the key",
                entry.path().display()
            );
        }
    }
}

#[test]
fn abandoned_and_cut_streams_still_get_their_row() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    setup(home.path(), &fakes, "");
    let gateway = TestGateway::start(home.path());

    // The client reads the first event and hangs up.
    let (hung_up_tx, hung_up) = std::sync::mpsc::channel();
    let start = json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
        "model": "up-anthropic", "content": [], "stop_reason": null,
        "usage": {"input_tokens": 900, "output_tokens": 1}}});
    let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a partial answer of some forty characters"}});
    let first = format!(
        "event: message_start\ndata: {start}\n\nevent: content_block_start\ndata: {block}\n\nevent: content_block_delta\ndata: {delta}\n\n"
    );
    fakes[0].script([Reply::Hang {
        first: first.clone(),
        hung_up: hung_up_tx,
    }]);
    let (path, body) = request("anthropic", true);
    let mut response = http_agent()
        .post(&format!("{}/p/to-anthropic{path}", gateway.url))
        .send(body.to_string())
        .unwrap();
    let id = response.headers()["x-clutch-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut reader = response.body_mut().as_reader();
    let mut first_bytes = [0u8; 64];
    std::io::Read::read(&mut reader, &mut first_bytes).unwrap();
    drop(reader);
    drop(response);
    hung_up
        .recv_timeout(Duration::from_secs(10))
        .expect("the upstream request is cancelled");
    let abandoned = row(home.path(), &gateway.url, &id);
    assert_eq!(abandoned["outcome"], "client_closed", "{abandoned}");
    assert_eq!(abandoned["input_tokens"], 900, "{abandoned}");
    assert_eq!(abandoned["estimated"], true, "{abandoned}");
    assert!(
        abandoned["output_tokens"].as_u64().unwrap() >= 1,
        "{abandoned}"
    );
    assert!(abandoned["cost_usd"].as_f64().unwrap() > 0.0, "{abandoned}");

    // The upstream ends its stream before the answer does.
    fakes[0].script([Reply::Raw {
        status: 200,
        content_type: "text/event-stream".into(),
        body: first,
    }]);
    let (status, _, id) = send(&format!("{}/p/to-anthropic", gateway.url), "chat", true);
    assert_eq!(status, 200);
    let cut = row(home.path(), &gateway.url, &id);
    assert_eq!(cut["outcome"], "upstream_cut", "{cut}");
    assert_eq!(cut["input_tokens"], 900, "{cut}");
    assert_eq!(cut["estimated"], true, "{cut}");

    // A request no candidate could answer: a row, with its attempt and no tokens.
    fakes[1].script([Reply::Error {
        status: 500,
        body: "{\"error\": {\"message\": \"down\"}}".into(),
        retry_after: None,
    }]);
    let (status, _, id) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
    assert_eq!(status, 500);
    let failed = row(home.path(), &gateway.url, &id);
    assert_eq!(failed["outcome"], "error", "{failed}");
    assert_eq!(failed["input_tokens"], 0, "{failed}");
    assert_eq!(failed["cost_usd"], 0.0, "{failed}");
    assert_eq!(failed["attempts"][0]["outcome"], "failed", "{failed}");
    assert_eq!(failed["attempts"][0]["status"], 500, "{failed}");
}

#[test]
fn a_daily_budget_spent_before_a_restart_still_counts_after_it() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    // Each call costs $0.00113 at the test's prices: two before the restart, one after, and
    // the fourth finds the budget spent.
    setup(home.path(), &fakes, "\n[quotas]\ndaily_cost_usd = 0.003\n");
    let port = free_port();
    let gateway = ProcessGateway::start_at(home.path(), port);
    for _ in 0..2 {
        fakes[1].script([turn()]);
        let (status, body, id) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
        assert_eq!(status, 200, "{body}");
        row(home.path(), &gateway.url, &id);
    }
    drop(gateway);

    let gateway = ProcessGateway::start_at(home.path(), port);
    fakes[1].script([turn()]);
    let (status, body, _) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
    assert_eq!(status, 200, "still under the budget: {body}");
    fakes[1].script([turn()]);
    let (status, body, _) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
    assert_eq!(
        status, 429,
        "the budget remembers the spend from before the restart: {body}"
    );
    assert!(body.contains("quotas.daily_cost_usd"), "{body}");
}

/// Whether `program` is here; CI (`CLUTCH_REQUIRE_BROWSER=1`) must have it.
fn tool_available(program: &str, package: &str) -> bool {
    if which::which(program).is_ok() {
        return true;
    }
    assert!(
        std::env::var("CLUTCH_REQUIRE_BROWSER").is_err(),
        "{program} is needed: .ci/run installs Debian's {package}"
    );
    eprintln!("skipped: {program} is not installed (Debian's {package})");
    false
}

fn metrics(url: &str) -> String {
    http_agent()
        .get(&format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// The value of the sample whose line starts with `series`, or 0 when there is none.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_pass_promtool_and_move_with_the_requests() {
    if !tool_available("promtool", "prometheus") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    setup(home.path(), &fakes, "");
    let gateway = TestGateway::start(home.path());
    let calls = "clutch_model_calls_total{model=\"up-chat\",outcome=\"ok\",protocol=\"chat\",provider=\"chat\"}";
    let output_tokens = "clutch_tokens_total{kind=\"output\",model=\"up-chat\",provider=\"chat\"}";
    let before = metrics(&gateway.url);
    let mut ids = Vec::new();
    for _ in 0..3 {
        fakes[1].script([turn()]);
        let (status, _, id) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
        assert_eq!(status, 200);
        ids.push(id);
    }
    for id in &ids {
        row(home.path(), &gateway.url, id);
    }
    let after = metrics(&gateway.url);
    assert_eq!(
        sample(&after, calls) - sample(&before, calls),
        3.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, output_tokens) - sample(&before, output_tokens),
        600.0,
        "{after}"
    );
    assert!(
        after.contains("clutch_ledger_records{state=\"written\"} 3"),
        "{after}"
    );
    assert!(
        after.contains("clutch_model_call_duration_seconds_bucket"),
        "{after}"
    );

    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), after.as_bytes()).unwrap();
    let result = check.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "promtool check metrics: {}{}\n{after}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn captured_bodies_are_kept_only_when_asked_capped_and_without_keys() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    setup(
        home.path(),
        &fakes,
        "\n[usage]\ncapture_bodies = true\ncapture_max_bytes = 4096\n",
    );
    let gateway = TestGateway::start(home.path());
    // An upstream that echoes the key it was sent: the capture must not keep it.
    fakes[1].script([Reply::Text(format!("the key you sent is {CANARY}"))]);
    let (status, body, id) = send(&format!("{}/p/to-chat", gateway.url), "chat", false);
    assert_eq!(status, 200, "{body}");
    let captured = row(home.path(), &gateway.url, &id);
    let request = captured["request_body"].as_str().unwrap();
    let response = captured["response_body"].as_str().unwrap();
    assert!(request.contains("count my tokens"), "{captured}");
    assert!(response.contains("the key you sent is"), "{captured}");
    assert!(!response.contains(CANARY), "{captured}");

    // A stream is kept piece by piece, up to the cap.
    let long = "x".repeat(10_000);
    fakes[0].script([Reply::Text(long)]);
    let (status, _, id) = send(
        &format!("{}/p/to-anthropic", gateway.url),
        "anthropic",
        true,
    );
    assert_eq!(status, 200);
    let streamed = row(home.path(), &gateway.url, &id);
    let response = streamed["response_body"].as_str().unwrap();
    assert!(response.starts_with("event: message_start"), "{streamed}");
    assert!(
        response.len() <= 4096 + 64 && response.ends_with("[cut: capture_max_bytes reached]"),
        "{} bytes: {}",
        response.len(),
        &response[response.len().saturating_sub(80)..]
    );

    // Without `capture_bodies`, nothing is kept.
    let plain = tempfile::tempdir().unwrap();
    setup(plain.path(), &fakes, "");
    let other = TestGateway::start(plain.path());
    let (_, _, id) = send(&format!("{}/p/to-chat", other.url), "chat", false);
    let uncaptured = row(plain.path(), &other.url, &id);
    assert!(uncaptured.get("request_body").is_none(), "{uncaptured}");
    drop(other);
    drop(gateway);
    let started = Instant::now();
    while home.path().join("state/usage.db-wal").exists()
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for entry in std::fs::read_dir(home.path().join("state"))
        .unwrap()
        .flatten()
    {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            assert!(
                !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
                "{} holds the key",
                entry.path().display()
            );
        }
    }
}
