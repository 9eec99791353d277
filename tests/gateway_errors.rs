//! Bad input never panics and always gets an answer in the caller's own shape: malformed
//! JSON, wrong types, unknown paths and oversized bodies from clients; truncated or malformed
//! streams, HTML error pages, empty 200s, stalls and refused connections from upstreams.

mod support;

use serde_json::{Value, json};
use support::fake_upstream::{FakeUpstream, Reply};
use support::gateway::{TestGateway, configure, http_agent};

const CLIENTS: [(&str, &str); 4] = [
    ("anthropic", "/v1/messages"),
    ("chat", "/v1/chat/completions"),
    ("responses", "/v1/responses"),
    ("gemini", "/v1beta/models/m:generateContent"),
];

struct Bench {
    _home: tempfile::TempDir,
    gateway: TestGateway,
    fake: FakeUpstream,
    agent: ureq::Agent,
}

/// A gateway whose every profile goes to a fake speaking `upstream`; the body limit is 64 KiB
/// and the first-byte timeout 1 s, so the limits are quick to reach.
fn bench(upstream: &str) -> Bench {
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("fine");
    let base = if matches!(upstream, "chat" | "responses") {
        format!("{}/v1", fake.url())
    } else {
        fake.url()
    };
    let config = format!(
        "[gateway]\nauto_start = false\nmax_body_bytes = 65536\nfirst_byte_timeout_secs = 1\nidle_timeout_secs = 1\n\
         retries = 0\nbreaker_threshold = 100000\n\
         [providers.up]\nbase_url = \"{base}\"\nformat = \"{upstream}\"\n\
         [providers.nowhere]\nbase_url = \"http://127.0.0.1:9\"\nformat = \"chat\"\n"
    );
    configure(
        home.path(),
        &config,
        &[
            ("default", "[tiers.middle]\nmodel = \"up|m\"\n"),
            ("dead", "[tiers.middle]\nmodel = \"nowhere|m\"\n"),
        ],
    );
    let gateway = TestGateway::start(home.path());
    let agent = http_agent();
    Bench {
        _home: home,
        gateway,
        fake,
        agent,
    }
}

impl Bench {
    fn post(&self, path: &str, body: impl Into<String>) -> (u16, String) {
        let mut response = self
            .agent
            .post(&format!("{}{path}", self.gateway.url))
            .header("content-type", "application/json")
            .send(body.into())
            .unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    }

    fn still_healthy(&self) {
        let mut response = self
            .agent
            .get(&format!("{}/health", self.gateway.url))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            response
                .body_mut()
                .read_to_string()
                .unwrap()
                .contains("\"ok\"")
        );
    }
}

/// The error is in `client`'s shape and its message mentions `needle`.
fn assert_shape(client: &str, status: u16, body: &str, expected: u16, needle: &str) {
    assert_eq!(status, expected, "{client}: {body}");
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{client}: not JSON: {body}"));
    let message = match client {
        "anthropic" => {
            assert_eq!(v["type"], "error", "{v}");
            v["error"]["message"].as_str()
        }
        "gemini" => {
            assert!(v["error"]["status"].is_string(), "{v}");
            v["error"]["message"].as_str()
        }
        _ => {
            assert!(v["error"]["type"].is_string(), "{v}");
            v["error"]["message"].as_str()
        }
    };
    let message = message.unwrap_or_else(|| panic!("{client}: no message: {v}"));
    assert!(
        message.contains(needle),
        "{client}: {message:?} lacks {needle:?}"
    );
}

fn minimal(client: &str, stream: bool) -> Value {
    match client {
        "anthropic" => {
            json!({"model": "m", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        }
        "chat" => {
            json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        }
        "responses" => json!({"model": "m", "stream": stream, "input": "hi"}),
        _ => json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    }
}

fn path_for(client: &str, stream: bool) -> String {
    let path = CLIENTS.iter().find(|(c, _)| *c == client).unwrap().1;
    if client == "gemini" && stream {
        path.replace(":generateContent", ":streamGenerateContent?alt=sse")
    } else {
        path.to_string()
    }
}

#[test]
fn malformed_client_requests_get_errors_in_their_own_shape() {
    let b = bench("chat");
    for (client, path) in CLIENTS {
        let (status, body) = b.post(path, "{not json");
        assert_shape(client, status, &body, 400, "not valid JSON");
        let (status, body) = b.post(path, "[1,2,3]");
        assert_shape(client, status, &body, 400, "");
        let (status, body) = b.post(
            &format!("/p/nope{path}"),
            minimal(client, false).to_string(),
        );
        assert_shape(client, status, &body, 404, "no routing profile `nope`");
        let big =
            json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(70_000)}]});
        let (status, body) = b.post(path, big.to_string());
        assert_shape(client, status, &body, 413, "max_body_bytes");
    }
    let wrong_types = [
        (
            "anthropic",
            json!({"model": "m", "messages": "hello"}),
            "messages: expected an array",
        ),
        (
            "anthropic",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}),
            "messages[0].content[0].text",
        ),
        ("anthropic", json!({"model": 7, "messages": []}), "model"),
        (
            "chat",
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "unknown role `wizard`",
        ),
        (
            "chat",
            json!({"model": "m", "messages": [], "max_tokens": "lots"}),
            "max_tokens",
        ),
        ("responses", json!({"model": "m", "input": 42}), "input"),
        ("gemini", json!({"contents": "hello"}), "contents"),
    ];
    for (client, body, needle) in wrong_types {
        let (status, text) = b.post(&path_for(client, false), body.to_string());
        assert_shape(client, status, &text, 400, needle);
    }
    for (client, path) in [
        ("anthropic", "/v1/messages/nothing"),
        ("chat", "/v1/embeddings"),
        ("gemini", "/v1beta/models/m:embed"),
    ] {
        let (status, body) = b.post(path, "{}");
        assert_shape(client, status, &body, 404, "has no POST");
    }
    assert!(
        b.fake.model_calls().is_empty(),
        "no bad request reached the upstream"
    );
    b.still_healthy();
}

/// Each upstream fault, for streaming and non-streaming calls from every client protocol.
#[test]
fn upstream_faults_become_errors_in_the_callers_shape() {
    for upstream in ["chat", "anthropic", "responses", "gemini"] {
        let b = bench(upstream);
        for (client, _) in CLIENTS {
            for stream in [false, true] {
                let label = format!("{client} -> {upstream}, stream={stream}");
                let send = |reply: Reply| {
                    b.fake.script([reply]);
                    b.post(
                        &path_for(client, stream),
                        minimal(client, stream).to_string(),
                    )
                };
                // An HTML error page.
                let (status, body) = send(Reply::Raw {
                    status: 502,
                    content_type: "text/html".into(),
                    body: "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
                });
                assert_shape(client, status, &body, 502, "502 Bad Gateway");
                // An empty 200.
                let content_type = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let (status, body) = send(Reply::Raw {
                    status: 200,
                    content_type: content_type.into(),
                    body: String::new(),
                });
                assert_shape(client, status, &body, 502, "empty");
                // A stall before the headers (first-byte timeout is 1 s); once per upstream and mode.
                if client == "anthropic" {
                    let (status, body) = send(Reply::Delay {
                        millis: 2500,
                        then: Box::new(Reply::Text("late".into())),
                    });
                    assert_shape(client, status, &body, 504, "no response within");
                }
                if stream {
                    // Garbage as the first event: nothing was sent yet, so an HTTP error.
                    let (status, body) = send(Reply::Raw {
                        status: 200,
                        content_type: "text/event-stream".into(),
                        body: "data: {this is not json\n\n".into(),
                    });
                    assert_shape(client, status, &body, 502, "malformed");
                    // A good start, then the upstream is cut: a protocol-correct error event.
                    let cut = truncated_stream(upstream);
                    let (status, body) = send(Reply::Raw {
                        status: 200,
                        content_type: "text/event-stream".into(),
                        body: cut,
                    });
                    assert_eq!(status, 200, "{label}: {body}");
                    assert_ends_with_error(client, &body, &label);
                } else {
                    // Not JSON where a JSON answer was due.
                    let (status, body) = send(Reply::Raw {
                        status: 200,
                        content_type: "application/json".into(),
                        body: "{\"truncated\": ".into(),
                    });
                    // Same protocol too: a body that is not the protocol's answer is the
                    // upstream's fault, never a 200 to the client.
                    assert_shape(client, status, &body, 502, "provider `up`");
                }
            }
            let (status, body) = b.post(
                &format!("/p/dead{}", path_for(client, false)),
                minimal(client, false).to_string(),
            );
            assert_shape(
                client,
                status,
                &body,
                502,
                "cannot reach provider `nowhere`",
            );
        }
        b.still_healthy();
    }
}

/// A stream that starts properly and stops without its terminal event.
fn truncated_stream(upstream: &str) -> String {
    match upstream {
        "anthropic" => concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
        )
        .into(),
        "chat" => "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n".into(),
        "responses" => concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"model\":\"m\"}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"partial\"}\n\n",
        )
        .into(),
        _ => "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"partial\"}]}}]}\n\n".into(),
    }
}

/// A whole stream: [`truncated_stream`] followed by the protocol's closing events.
fn complete_stream(upstream: &str) -> String {
    let ending = match upstream {
        "anthropic" => concat!(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ),
        "chat" => concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        ),
        "responses" => concat!(
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"model\":\"m\",\"status\":\"completed\",",
            "\"usage\":{\"input_tokens\":3,\"output_tokens\":2,\"total_tokens\":5}}}\n\n",
        ),
        _ => unreachable!("gemini streams have no closing event"),
    };
    truncated_stream(upstream) + ending
}

/// Every SSE event in a response body.
fn events_of(body: &str) -> Vec<clutch::gateway::sse::Event> {
    let mut parser = clutch::gateway::sse::Parser::new();
    let mut events = parser.push(body.as_bytes()).unwrap();
    events.extend(parser.finish());
    events
}

/// The client got the whole answer and its protocol's own ending, with no error after it.
fn assert_ends_complete(client: &str, body: &str, label: &str) {
    let events = events_of(body);
    assert!(
        body.contains("partial"),
        "{label}: the text arrives: {body}"
    );
    assert!(
        !body.contains("\"error\"") && events.iter().all(|e| e.name.as_deref() != Some("error")),
        "{label}: no error follows a complete answer: {body}"
    );
    let last = events
        .last()
        .unwrap_or_else(|| panic!("{label}: no events"));
    let json = |data: &str| serde_json::from_str::<Value>(data).unwrap();
    match client {
        "anthropic" => assert_eq!(
            last.name.as_deref(),
            Some("message_stop"),
            "{label}: {body}"
        ),
        "chat" => {
            assert_eq!(last.data, "[DONE]", "{label}: {body}");
            assert!(
                body.contains("\"finish_reason\":\"stop\""),
                "{label}: {body}"
            );
        }
        "responses" => assert_eq!(
            json(&last.data)["type"],
            "response.completed",
            "{label}: {body}"
        ),
        _ => assert_eq!(
            json(&last.data)["candidates"][0]["finishReason"],
            "STOP",
            "{label}: {body}"
        ),
    }
}

fn assert_ends_with_error(client: &str, body: &str, label: &str) {
    let events = events_of(body);
    assert!(
        body.contains("partial"),
        "{label}: what arrived before the cut is delivered: {body}"
    );
    let last = events
        .iter()
        .rev()
        .find(|e| e.data != "[DONE]")
        .unwrap_or_else(|| panic!("{label}: no events: {body}"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    match client {
        "anthropic" => assert_eq!(last.name.as_deref(), Some("error"), "{label}: {body}"),
        "responses" => assert_eq!(v["type"], "response.failed", "{label}: {body}"),
        "chat" => {
            assert!(v["error"]["message"].is_string(), "{label}: {body}");
            assert_eq!(
                events.last().unwrap().data,
                "[DONE]",
                "{label}: chat streams end with [DONE]"
            );
        }
        _ => assert!(v["error"]["message"].is_string(), "{label}: {body}"),
    }
    let message = v
        .pointer("/error/message")
        .or(v.pointer("/response/error/message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        message.contains("before the answer was complete"),
        "{label}: {message}"
    );
}

#[test]
fn upstream_rate_limits_and_rejected_keys_are_reported_honestly() {
    let b = bench("chat");
    // A 401 from the provider is the gateway's key, not the agent's login: 502, provider named.
    b.fake.script([Reply::Error {
        status: 401,
        body: json!({"error": {"message": "bad key"}}).to_string(),
        retry_after: None,
    }]);
    let (status, body) = b.post("/v1/messages", minimal("anthropic", false).to_string());
    assert_shape(
        "anthropic",
        status,
        &body,
        502,
        "provider `up` rejected the gateway's credentials (401)",
    );
    // A rate limit longer than the gateway waits: the agent gets it, with its Retry-After.
    b.fake.script([Reply::Error {
        status: 429,
        body: json!({"error": {"message": "quota"}}).to_string(),
        retry_after: Some(30),
    }]);
    let mut response = b
        .agent
        .post(&format!("{}/v1/messages", b.gateway.url))
        .send(minimal("anthropic", false).to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers().get("retry-after").unwrap(), "30");
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[test]
fn side_calls_agents_make_are_answered() {
    let b = bench("chat");
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = b.agent.get(&format!("{}{path}", b.gateway.url));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut response = request.call().unwrap();
        (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap(),
        )
    };
    assert_eq!(
        get("/p/claude/api/hello", &[]).0,
        200,
        "Claude Code's HEAD/GET /api/hello"
    );
    let (status, body) = get("/p/hermes/v1/models", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["object"],
        "list"
    );
    let (_, body) = get("/v1/models", &[("anthropic-version", "2023-06-01")]);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["data"][0]["type"] == "model",
        "{body}"
    );
    let (_, body) = get("/v1beta/models", &[]);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["models"].is_array(),
        "{body}"
    );
    let (status, body) = get("/p/hermes/v1/models/auto", &[]);
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["id"].clone()
        ),
        (200, json!("auto"))
    );
    for probe in [
        "/p/hermes/api/v1/models",
        "/p/hermes/api/tags",
        "/p/hermes/props",
    ] {
        assert_eq!(
            get(probe, &[]).0,
            404,
            "{probe}: answered as absent, which Hermes accepts"
        );
    }
    let (status, body) = b.post(
        "/p/claude/v1/messages/count_tokens",
        json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(400)}]})
            .to_string(),
    );
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
            >= 100,
        "{body}"
    );
    // Gemini CLI's complexity router call is answered without an upstream call.
    let router = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"responseMimeType": "application/json",
        "responseJsonSchema": {"type": "OBJECT", "properties": {"complexity_reasoning": {"type": "STRING"}, "complexity_score": {"type": "INTEGER"}}}}});
    let (status, body) = b.post(
        "/p/gemini/v1beta/models/gemini-3.5-flash-lite:generateContent",
        router.to_string(),
    );
    assert_eq!(status, 200);
    let text = serde_json::from_str::<Value>(&body).unwrap()["candidates"][0]["content"]["parts"]
        [0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        serde_json::from_str::<Value>(&text).unwrap()["complexity_score"].is_number(),
        "{text}"
    );
    assert!(b.fake.model_calls().is_empty());
}

#[test]
fn same_protocol_traffic_is_forwarded_with_only_the_model_rewritten() {
    let b = bench("anthropic");
    // Fields clutch does not model, a thinking signature and cache_control must survive.
    let request = json!({"model": "claude-opus-9", "max_tokens": 10, "future_field": {"nested": [1, 2]},
        "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "SIG-KEEP"}]},
                     {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}],
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]}});
    let mut response = b
        .agent
        .post(&format!("{}/p/claude/v1/messages?beta=true", b.gateway.url))
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("x-api-key", "agent-key-must-not-travel")
        .send(request.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let _ = response.body_mut().read_to_string();
    let sent = b.fake.model_calls().pop().unwrap();
    let mut expected = request.clone();
    expected["model"] = json!("m");
    assert_eq!(
        sent.body, expected,
        "everything but the model arrives unchanged"
    );
    assert!(
        sent.path.ends_with("/v1/messages?beta=true"),
        "{}",
        sent.path
    );
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    assert_ne!(
        sent.header("x-api-key"),
        Some("agent-key-must-not-travel"),
        "the agent's key is not forwarded"
    );
}

/// A client that hangs up mid-stream cancels the upstream request: the gateway drops its
/// connection to the provider instead of reading an answer nobody will see. Checked for a
/// translated stream (Anthropic client, chat upstream) and a forwarded one (chat to chat).
#[test]
fn a_client_hanging_up_mid_stream_cancels_the_upstream_request() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let b = bench("chat");
    let address = b.gateway.url.trim_start_matches("http://").to_string();
    for (path, body) in [
        ("/v1/messages", minimal("anthropic", true)),
        ("/v1/chat/completions", minimal("chat", true)),
    ] {
        let (hung_up, told) = std::sync::mpsc::channel();
        let first = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}, "finish_reason": null}]});
        b.fake.script([Reply::Hang {
            first: format!("data: {first}\n\n"),
            hung_up,
        }]);
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = body.to_string();
        write!(
            socket,
            "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("partial") {
            let n = socket.read(&mut buffer).expect("the first event arrives");
            assert!(n > 0, "{path}: the gateway closed before the first event");
            seen.extend_from_slice(&buffer[..n]);
        }
        assert!(
            told.try_recv().is_err(),
            "{path}: the upstream stream is still open while the client reads"
        );
        drop(socket);
        told.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{path}: the upstream request was not cancelled"));
    }
    b.still_healthy();
}

/// An upstream that sends its closing event (`message_stop`, `[DONE]`, `response.completed`)
/// and then leaves its body open: every client's stream ends there, complete and with no
/// timeout error tacked on after it, and the gateway lets go of the upstream soon after.
#[test]
fn a_stream_ends_at_the_upstreams_closing_event_even_if_its_body_stays_open() {
    use std::time::Duration;
    for upstream in ["anthropic", "chat", "responses"] {
        let b = bench(upstream);
        let mut released = Vec::new();
        for (client, _) in CLIENTS {
            let label = format!("{client} client, {upstream} upstream");
            let (hung_up, told) = std::sync::mpsc::channel();
            b.fake.script([Reply::Hang {
                first: complete_stream(upstream),
                hung_up,
            }]);
            let (status, body) = b.post(&path_for(client, true), minimal(client, true).to_string());
            assert_eq!(status, 200, "{label}: {body}");
            assert_ends_complete(client, &body, &label);
            released.push((label, told));
        }
        for (label, told) in released {
            told.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{label}: the gateway never let go of the upstream"));
        }
        b.still_healthy();
    }
}
