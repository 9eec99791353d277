//! Tool-output compression: what it keeps of real outputs, `xx compress` and `xx recall`,
//! the prompt cache across a 20-turn conversation, every inbound × upstream pair, random
//! outputs, and a real Claude Code session that recalls an original.

mod support;

use std::path::Path;
use std::time::Duration;

use clutch::gateway::compress::{Input, Settings, compress, recall_line};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::Clutch;
use support::fake_upstream::{
    AGENT_TIMEOUT, Block, FakeUpstream, FakeUsage, Protocol, Reply, Responder, Stop, Turn,
};
use support::gateway::{TestGateway, http_agent, route_everything_to};

struct Entry {
    id: String,
    command: String,
    output: String,
    keep: Vec<String>,
}

fn corpus() -> Vec<Entry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compress/corpus");
    std::fs::read_to_string(dir.join("index.tsv"))
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let id = fields[0].to_string();
            let output = std::fs::read(dir.join(format!("{id}.out"))).unwrap();
            let keep = std::fs::read_to_string(dir.join(format!("{id}.keep"))).unwrap();
            Entry {
                command: fields[4].to_string(),
                output: String::from_utf8_lossy(&output).into_owned(),
                keep: keep.lines().map(str::to_string).collect(),
                id,
            }
        })
        .collect()
}

fn condense(output: &str, command: Option<&str>) -> Option<String> {
    let input = Input {
        output,
        command,
        tool: Some("Bash"),
        is_error: false,
    };
    compress(&input, &Settings::default()).map(|c| c.text)
}

#[test]
fn every_output_of_the_corpus_keeps_what_a_model_needs() {
    let entries = corpus();
    assert!(
        entries.len() >= 60,
        "the corpus has {} outputs",
        entries.len()
    );
    let (mut before, mut after) = (0usize, 0usize);
    let mut missing = Vec::new();
    for entry in &entries {
        let text = condense(&entry.output, Some(&entry.command));
        let shown = text.as_deref().unwrap_or(&entry.output);
        before += entry.output.len();
        after += shown.len();
        for keep in &entry.keep {
            if !shown.contains(keep.as_str()) {
                missing.push(format!("{}: {keep}", entry.id));
            }
        }
    }
    let mut by_output: std::collections::BTreeMap<&str, usize> = Default::default();
    for m in &missing {
        *by_output.entry(m.split(':').next().unwrap()).or_default() += 1;
    }
    assert!(
        missing.is_empty(),
        "{} must-keep strings lost ({by_output:?}), first: {:#?}",
        missing.len(),
        &missing[..missing.len().min(30)]
    );
    let reduction = 1.0 - after as f64 / before as f64;
    assert!(
        reduction >= 0.60,
        "overall reduction {:.1}% (target 60%)",
        reduction * 100.0
    );
}

#[test]
fn xx_compress_keeps_the_original_for_xx_recall() {
    let clutch = Clutch::new();
    let entry = corpus().into_iter().find(|e| e.id == "grep-fn").unwrap();
    let out = clutch
        .xx(&["compress", "--command", &entry.command, "--stats"])
        .stdin(&entry.output)
        .timeout(Duration::from_secs(20))
        .output();
    out.assert_ok();
    let last = out.stdout.trim_end().lines().last().unwrap().to_string();
    assert!(
        last.starts_with("[clutch: ") && last.contains("xx recall "),
        "{out}"
    );
    assert!(out.stderr.contains("fewer"), "{out}");
    let id = last.rsplit(' ').next().unwrap().trim_end_matches(']');
    assert_eq!(
        out.stdout.trim_end(),
        condense(&entry.output, Some(&entry.command)).unwrap()
    );
    let recalled = clutch
        .xx(&["recall", id])
        .timeout(Duration::from_secs(20))
        .output();
    recalled.assert_ok();
    assert_eq!(recalled.stdout, entry.output);
    let unknown = clutch
        .xx(&["recall", "abcdef012345"])
        .timeout(Duration::from_secs(20))
        .output();
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(unknown.stderr.contains("retention_days"), "{unknown}");
    // Short outputs pass through unchanged.
    let short = clutch
        .xx(&["compress"])
        .stdin("just a line\n")
        .timeout(Duration::from_secs(20))
        .output();
    assert_eq!(short.stdout, "just a line\n");
}

/// A gateway routing everything to a fake upstream of `format`.
fn gateway(format: &str) -> (Clutch, FakeUpstream, TestGateway) {
    let clutch = Clutch::new();
    let fake = FakeUpstream::start("OK");
    let home = clutch.clutch_home.path();
    route_everything_to(home, "http://127.0.0.1:9", &fake.url(), format);
    let gateway = TestGateway::start(home);
    route_everything_to(home, &gateway.url, &fake.url(), format);
    (clutch, fake, gateway)
}

fn post(url: &str, path: &str, body: &Value) -> (u16, String) {
    let mut response = http_agent()
        .post(&format!("{url}{path}"))
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// Where the body's `messages` array ends (its closing bracket), for prefix checks.
fn messages_end(raw: &str, field: &str) -> usize {
    let value: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(raw).unwrap();
    let messages = value[field].get();
    let start = raw.find(messages).unwrap();
    start + messages.len() - 1
}

#[test]
fn a_twenty_turn_conversation_keeps_a_byte_identical_prefix_upstream() {
    let outputs = corpus();
    for (format, field) in [("anthropic", "messages"), ("chat", "messages")] {
        let (clutch, fake, gateway) = gateway(format);
        let mut messages = vec![json!({"role": "user", "content": "Fix the build."})];
        for turn in 0..20 {
            let entry = &outputs[(turn * 7) % outputs.len()];
            let id = format!("toolu_{turn:02}");
            messages.push(json!({"role": "assistant", "content": [
                {"type": "text", "text": format!("Running {}", entry.command)},
                {"type": "tool_use", "id": id, "name": "Bash", "input": {"command": entry.command}}
            ]}));
            messages.push(json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id, "content": entry.output}
            ]}));
            let body =
                json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages});
            let (status, answer) = post(&gateway.url, "/v1/messages", &body);
            assert_eq!(status, 200, "{answer}");
        }
        let bodies: Vec<String> = fake.model_calls().into_iter().map(|r| r.raw).collect();
        assert_eq!(bodies.len(), 20);
        for pair in bodies.windows(2) {
            let end = messages_end(&pair[0], field);
            assert!(
                pair[1].as_bytes().starts_with(&pair[0].as_bytes()[..end]),
                "{format}: a later turn rewrote an earlier one"
            );
        }
        let last = &bodies[19];
        let condensed = last.matches("xx recall ").count();
        assert!(
            condensed >= 8,
            "{format}: only {condensed} outputs condensed"
        );
        assert!(last.len() * 2 < serde_json::to_string(&messages).unwrap().len());
        // The originals are one command away.
        let id = last.split("xx recall ").nth(1).unwrap()[..12].to_string();
        let recalled = clutch
            .xx(&["recall", &id])
            .timeout(Duration::from_secs(20))
            .output();
        recalled.assert_ok();
        assert!(outputs.iter().any(|e| e.output == recalled.stdout));
        // The ledger counts what compression took out.
        let stats_url = format!("{}/api/stats", gateway.url);
        let admin = support::gateway::admin_agent(clutch.clutch_home.path());
        let mut compressed = 0;
        for _ in 0..100 {
            let stats: Value = serde_json::from_str(
                &admin
                    .get(&stats_url)
                    .call()
                    .unwrap()
                    .body_mut()
                    .read_to_string()
                    .unwrap(),
            )
            .unwrap();
            compressed = stats["period"]["compressed_tokens"].as_u64().unwrap_or(0);
            if compressed > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            compressed > 10_000,
            "{format}: the ledger says {compressed} tokens"
        );
    }
}

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn long_test_output() -> String {
    let mut text = String::from("running 400 tests\n");
    for i in 0..399 {
        text.push_str(&format!("test gateway::case_{i} ... ok\n"));
    }
    text.push_str("test gateway::broken ... FAILED\n\nfailures:\n\n---- gateway::broken stdout ----\nthread 'gateway::broken' panicked at src/gateway/mod.rs:12:5:\nassertion failed: left == right\n\ntest result: FAILED. 399 passed; 1 failed; 0 ignored\n");
    text
}

fn error_output() -> String {
    (0..120)
        .map(|i| format!("step {i}: value {} differs from {}\n", i * 7, i * 11))
        .collect()
}

/// A request with a shell call, its long result, an image and (where the protocol has the
/// flag) an error result, in each inbound protocol.
fn inbound(protocol: &str) -> (String, Value) {
    let output = long_test_output();
    let arguments = json!({"command": "cargo test"});
    match protocol {
        "anthropic" => (
            "/v1/messages".into(),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "test it"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_run", "name": "Bash", "input": arguments},
                    {"type": "tool_use", "id": "toolu_err", "name": "Bash", "input": {"command": "./check.sh"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_run", "content": output},
                    {"type": "tool_result", "tool_use_id": "toolu_err", "is_error": true, "content": error_output()}
                ]}
            ]}),
        ),
        "chat" => (
            "/v1/chat/completions".into(),
            json!({"model": "claude-sonnet-4-5", "messages": [
                {"role": "user", "content": [{"type": "text", "text": "test it"}, {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_run", "type": "function", "function": {"name": "shell", "arguments": arguments.to_string()}}]},
                {"role": "tool", "tool_call_id": "call_run", "content": output}
            ]}),
        ),
        "responses" => (
            "/v1/responses".into(),
            json!({"model": "claude-sonnet-4-5", "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "test it"}, {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}")}]},
                {"type": "function_call", "call_id": "call_run", "name": "shell", "arguments": arguments.to_string()},
                {"type": "function_call_output", "call_id": "call_run", "output": output}
            ]}),
        ),
        _ => (
            "/v1beta/models/claude-sonnet-4-5:generateContent".into(),
            json!({"contents": [
                {"role": "user", "parts": [{"text": "test it"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": arguments}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": output}}}]}
            ]}),
        ),
    }
}

/// The call's id (or name) and the result's, as the upstream protocol pairs them.
fn pairing(format: &str, body: &Value) -> (String, String) {
    let find = |items: &Value, pred: &dyn Fn(&Value) -> bool| -> Value {
        items
            .as_array()
            .unwrap()
            .iter()
            .find(|v| pred(v))
            .cloned()
            .unwrap_or(Value::Null)
    };
    match format {
        "anthropic" => {
            let blocks: Vec<Value> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
                .collect();
            let blocks = Value::Array(blocks);
            let call = find(&blocks, &|b| b["type"] == "tool_use");
            let result = find(&blocks, &|b| b["type"] == "tool_result");
            (call["id"].to_string(), result["tool_use_id"].to_string())
        }
        "chat" => {
            let call = find(&body["messages"], &|m| m["tool_calls"].is_array());
            let result = find(&body["messages"], &|m| m["role"] == "tool");
            (
                call["tool_calls"][0]["id"].to_string(),
                result["tool_call_id"].to_string(),
            )
        }
        "responses" => {
            let call = find(&body["input"], &|i| i["type"] == "function_call");
            let result = find(&body["input"], &|i| i["type"] == "function_call_output");
            (call["call_id"].to_string(), result["call_id"].to_string())
        }
        _ => {
            let parts: Vec<Value> = body["contents"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
                .collect();
            let parts = Value::Array(parts);
            let call = find(&parts, &|p| p["functionCall"].is_object());
            let result = find(&parts, &|p| p["functionResponse"].is_object());
            (
                call["functionCall"]["name"].to_string(),
                result["functionResponse"]["name"].to_string(),
            )
        }
    }
}

#[test]
fn pairing_images_and_error_results_survive_every_inbound_and_upstream_pair() {
    for format in ["anthropic", "chat", "responses", "gemini"] {
        let (_clutch, fake, gateway) = gateway(format);
        for protocol in ["anthropic", "chat", "responses", "gemini"] {
            let (path, body) = inbound(protocol);
            let (status, answer) = post(&gateway.url, &path, &body);
            assert_eq!(status, 200, "{protocol} -> {format}: {answer}");
            let upstream = fake.model_calls().pop().unwrap();
            let what = format!("{protocol} -> {format}");
            let (call, result) = pairing(format, &upstream.body);
            assert!(
                call != "null" && call == result,
                "{what}: call {call}, result {result}"
            );
            assert!(upstream.raw.contains(PNG), "{what}: the image was lost");
            assert!(upstream.mentions("xx recall "), "{what}: not condensed");
            assert!(
                upstream.mentions("test gateway::broken ... FAILED"),
                "{what}"
            );
            assert!(
                upstream.mentions("assertion failed: left == right"),
                "{what}"
            );
            assert!(!upstream.mentions("case_200 ... ok"), "{what}");
            if protocol == "anthropic" {
                let error = serde_json::to_string(&error_output()).unwrap();
                assert!(
                    upstream.raw.contains(error.trim_matches('"')),
                    "{what}: an is_error result was shortened"
                );
            }
        }
    }
}

#[test]
fn compression_is_off_when_the_config_or_an_agent_says_so() {
    let (clutch, fake, gateway) = gateway("anthropic");
    let home = clutch.clutch_home.path();
    let config = std::fs::read_to_string(home.join("config/config.toml")).unwrap();
    std::fs::write(
        home.join("config/config.toml"),
        format!("{config}\n[compress.agents.codex]\nenabled = false\n"),
    )
    .unwrap();
    let reload = support::gateway::admin_agent(home)
        .post(&format!("{}/api/reload", gateway.url))
        .send("")
        .unwrap();
    assert_eq!(reload.status().as_u16(), 200);
    let (path, body) = inbound("anthropic");
    for (prefix, condensed) in [("/p/claude", true), ("/p/codex", false)] {
        let (status, answer) = post(&gateway.url, &format!("{prefix}{path}"), &body);
        assert_eq!(status, 200, "{answer}");
        let upstream = fake.model_calls().pop().unwrap();
        assert_eq!(upstream.mentions("xx recall "), condensed, "{prefix}");
    }
}

fn arbitrary_output() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[a-z ]{0,40}",
        "(error|warning|FAILED|test [a-z_]{1,12} \\.\\.\\. ok|commit [0-9a-f]{40}|src/[a-z]{1,6}\\.rs:[0-9]{1,4}:[0-9]{1,2}: [a-z ]{0,20})",
        "\x1b\\[[0-9;]{0,6}m[a-z]{0,10}\r?[a-z]{0,5}",
        "[ \\|\\-+@{}\\[\\]\":,0-9a-zé✔█]{0,30}",
        Just(String::new()),
    ];
    (proptest::collection::vec(line, 0..400), 1usize..6).prop_map(|(lines, repeat)| {
        let mut text = String::new();
        for line in &lines {
            for _ in 0..(if line.len() % 5 == 0 { repeat } else { 1 }) {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_outputs_never_panic_or_grow(
        output in arbitrary_output(),
        command in prop_oneof![
            Just(None), Just(Some("cargo test")), Just(Some("git log")), Just(Some("git diff")),
            Just(Some("grep -rn x .")), Just(Some("find .")), Just(Some("pytest")),
            Just(Some("npm test")), Just(Some("make")), Just(Some("ruff check")),
            Just(Some("pip install x")), Just(Some("cat x.json"))
        ],
        is_error in any::<bool>(),
    ) {
        let input = Input { output: &output, command, tool: None, is_error };
        let settings = Settings { min_bytes: 256, read_max_bytes: 1024 };
        if let Some(condensed) = compress(&input, &settings) {
            let line = recall_line(0, 0, &condensed.id);
            prop_assert!(condensed.text.len() <= output.len() + line.len());
            prop_assert!(condensed.text.len() < output.len());
            prop_assert!(condensed.text.lines().last().unwrap().contains(&condensed.id));
            prop_assert_eq!(Some(condensed), compress(&input, &settings));
        }
    }
}

/// Claude Code runs a command with a long output; the upstream sees it condensed, asks for
/// the detail, Claude Code runs the `xx recall` the last line names, and the next request
/// carries the original.
#[test]
fn claude_code_recalls_a_condensed_output() {
    if !support::agent_available("claude") {
        return;
    }
    let (clutch, fake, _gateway) = gateway("chat");
    let command = "for i in $(seq 1 600); do echo \"compiling unit $i of the build\"; done";
    fn tool_text(body: &Value) -> Vec<String> {
        body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].to_string())
            .collect()
    }
    fake.script([
        Reply::ToolCall {
            name: "Bash".into(),
            arguments: json!({"command": command, "description": "build"}),
        },
        Reply::Compute(Responder(std::sync::Arc::new(|body: &Value| {
            let results = tool_text(body);
            let id = results
                .iter()
                .find_map(|r| r.split("xx recall ").nth(1))
                .map(|rest| rest[..12].to_string())
                .unwrap_or_else(|| "no-recall-line".into());
            // A call id of its own: the first call's id again would be a duplicate.
            Reply::Turn(Turn {
                blocks: vec![Block::Tool {
                    id: "call_recall".into(),
                    name: "Bash".into(),
                    arguments: json!({"command": format!("xx recall {id}"), "description": "see all"}),
                }],
                stop: Stop::Tool,
                usage: FakeUsage::default(),
            })
        }))),
        Reply::Text("RECALLED-AND-DONE".into()),
    ]);
    let xx_dir = Path::new(env!("CARGO_BIN_EXE_xx")).parent().unwrap();
    let path = format!(
        "{}:{}",
        xx_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = clutch
        .xx(&["cIp", "-p", "build it, and look at every line"])
        .env("IS_SANDBOX", "1")
        .env("PATH", &path)
        .timeout(AGENT_TIMEOUT)
        .output();
    let calls = fake.model_calls();
    let condensed = calls
        .iter()
        .find(|r| tool_text(&r.body).iter().any(|t| t.contains("xx recall ")))
        .unwrap_or_else(|| panic!("no condensed result reached the upstream\n{output}"));
    assert!(!condensed.mentions("compiling unit 300 of the build"));
    let recalled = calls
        .iter()
        .find(|r| {
            tool_text(&r.body)
                .iter()
                .any(|t| t.contains("compiling unit 300 of the build"))
        })
        .unwrap_or_else(|| {
            let seen: Vec<Vec<String>> = calls.iter().map(|r| tool_text(&r.body)).collect();
            panic!("the original never came back: {seen:#?}\n{output}")
        });
    assert!(recalled.protocol == Protocol::Chat);
    output.assert_ok();
    assert!(output.stdout.contains("RECALLED-AND-DONE"), "{output}");
}
