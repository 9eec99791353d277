//! Every inbound × upstream protocol pair (4 × 4), non-streaming and streaming, through the
//! real gateway to the scripted fake upstream: text, parallel tool calls, text → tool → text,
//! thinking with cache usage, a max-tokens stop, and upstream 429/500 errors. Each exchange is
//! checked for meaning (what a client of that protocol reads back) and recorded as a golden
//! transcript in `tests/snapshots/`.

mod support;

use serde_json::{Value, json};
use support::fake_upstream::{Block, FakeUpstream, FakeUsage, Recorded, Reply, Stop, Turn};
use support::gateway::{TestGateway, admin_agent, configure, http_agent};

const PROTOCOLS: [&str; 4] = ["anthropic", "chat", "responses", "gemini"];
const IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

struct Scenario {
    name: &'static str,
    reply: Reply,
    expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
struct Expect {
    text: &'static str,
    thinking: &'static str,
    tools: Vec<(&'static str, Value)>,
    stop: &'static str,
    /// (prompt total, output, cache read); None for errors.
    usage: Option<(u64, u64, u64)>,
    /// HTTP status for errors.
    error: Option<u16>,
}

fn turn(blocks: Vec<Block>, stop: Stop, usage: FakeUsage) -> Reply {
    Reply::Turn(Turn {
        blocks,
        stop,
        usage,
    })
}

fn tool(id: &str, name: &str, arguments: Value) -> Block {
    Block::Tool {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

fn scenarios() -> Vec<Scenario> {
    let usage = FakeUsage {
        input: 40,
        output: 7,
        cache_read: 5,
        cache_write: 0,
    };
    let ok = |text, thinking, tools, stop| Expect {
        text,
        thinking,
        tools,
        stop,
        usage: Some((40, 7, 5)),
        error: None,
    };
    vec![
        Scenario {
            name: "text",
            reply: turn(
                vec![Block::Text("Hello from upstream".into())],
                Stop::End,
                usage,
            ),
            expect: ok("Hello from upstream", "", vec![], "end"),
        },
        Scenario {
            name: "parallel_tools",
            reply: turn(
                vec![
                    Block::Text("Let me check.".into()),
                    tool("call_a", "get_weather", json!({"city": "Paris"})),
                    tool("call_b", "get_time", json!({"tz": "CET"})),
                ],
                Stop::Tool,
                usage,
            ),
            expect: ok(
                "Let me check.",
                "",
                vec![
                    ("get_weather", json!({"city": "Paris"})),
                    ("get_time", json!({"tz": "CET"})),
                ],
                "tool",
            ),
        },
        Scenario {
            name: "text_tool_text",
            reply: turn(
                vec![
                    Block::Text("First I look.".into()),
                    tool("call_c", "get_weather", json!({"city": "Rome"})),
                    Block::Text("Then I sum up.".into()),
                ],
                Stop::Tool,
                usage,
            ),
            expect: ok(
                "First I look.Then I sum up.",
                "",
                vec![("get_weather", json!({"city": "Rome"}))],
                "tool",
            ),
        },
        Scenario {
            name: "thinking",
            reply: turn(
                vec![
                    Block::Thinking {
                        text: "Consider the sky.".into(),
                        signature: "sig-123".into(),
                    },
                    Block::Text("It is sunny.".into()),
                ],
                Stop::End,
                usage,
            ),
            expect: ok("It is sunny.", "Consider the sky.", vec![], "end"),
        },
        Scenario {
            name: "max_tokens",
            reply: turn(
                vec![Block::Text("Cut off mid".into())],
                Stop::MaxTokens,
                usage,
            ),
            expect: ok("Cut off mid", "", vec![], "max"),
        },
        Scenario {
            name: "error_429",
            reply: Reply::Error {
                status: 429,
                body: json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string(),
                retry_after: Some(7),
            },
            expect: Expect {
                text: "",
                thinking: "",
                tools: vec![],
                stop: "",
                usage: None,
                error: Some(429),
            },
        },
        Scenario {
            name: "error_500",
            reply: Reply::Error {
                status: 500,
                body: "<html><body>Internal Server Error</body></html>".into(),
                retry_after: None,
            },
            expect: Expect {
                text: "",
                thinking: "",
                tools: vec![],
                stop: "",
                usage: None,
                error: Some(500),
            },
        },
    ]
}

/// The same conversation in each client protocol: system prompt, user text with an image, a
/// prior tool call, its failed result with user text beside it, two tools, thinking on.
fn client_request(protocol: &str, stream: bool) -> (String, Value) {
    let weather =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let time = json!({"type": "object", "properties": {"tz": {"type": "string"}}});
    match protocol {
        "anthropic" => (
            "/v1/messages".into(),
            json!({
                "model": "claude-sonnet-test", "max_tokens": 4000, "stream": stream,
                "system": [{"type": "text", "text": "You are terse."}],
                "thinking": {"type": "enabled", "budget_tokens": 2048},
                "tools": [{"name": "get_weather", "description": "Weather", "input_schema": weather},
                          {"name": "get_time", "description": "Time", "input_schema": time}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What is the weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "call_prev", "name": "get_weather", "input": {"city": "Oslo"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_prev", "content": "Rain gauge offline", "is_error": true},
                        {"type": "text", "text": "Also, be brief."}]},
                ],
            }),
        ),
        "chat" => (
            "/v1/chat/completions".into(),
            json!({
                "model": "claude-sonnet-test", "max_tokens": 4000, "stream": stream, "stream_options": {"include_usage": true},
                "reasoning_effort": "low",
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": weather}},
                          {"type": "function", "function": {"name": "get_time", "description": "Time", "parameters": time}}],
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": [{"type": "text", "text": "What is the weather?"},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{IMAGE}")}}]},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_prev", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_prev", "content": "Error: Rain gauge offline"},
                    {"role": "user", "content": "Also, be brief."},
                ],
            }),
        ),
        "responses" => (
            "/v1/responses".into(),
            json!({
                "model": "claude-sonnet-test", "max_output_tokens": 4000, "stream": stream, "instructions": "You are terse.",
                "reasoning": {"effort": "low"},
                "tools": [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": weather},
                          {"type": "function", "name": "get_time", "description": "Time", "parameters": time}],
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the weather?"},
                        {"type": "input_image", "image_url": format!("data:image/png;base64,{IMAGE}")}]},
                    {"type": "function_call", "call_id": "call_prev", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
                    {"type": "function_call_output", "call_id": "call_prev", "output": "Error: Rain gauge offline"},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Also, be brief."}]},
                ],
            }),
        ),
        _ => (
            format!(
                "/v1beta/models/gemini-test:{}",
                if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                }
            ),
            json!({
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "generationConfig": {"maxOutputTokens": 4000, "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}},
                "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}},
                    {"name": "get_time", "description": "Time", "parametersJsonSchema": time}]}],
                "contents": [
                    {"role": "user", "parts": [{"text": "What is the weather?"}, {"inlineData": {"mimeType": "image/png", "data": IMAGE}}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"error": "Rain gauge offline"}}}, {"text": "Also, be brief."}]},
                ],
            }),
        ),
    }
}

/// What a client of `protocol` reads back.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    text: String,
    thinking: String,
    tools: Vec<(String, Value)>,
    stop: String,
    usage: Option<(u64, u64, u64)>,
    /// The protocol's terminal sequence arrived.
    complete: bool,
}

fn args(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        other => other.clone(),
    }
}

fn summarise(protocol: &str, stream: bool, body: &str) -> Summary {
    let mut s = Summary::default();
    if !stream {
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{protocol}: not JSON ({e}): {body}"));
        s.complete = true;
        match protocol {
            "anthropic" => {
                for block in v["content"].as_array().unwrap() {
                    match block["type"].as_str().unwrap() {
                        "text" => s.text.push_str(block["text"].as_str().unwrap()),
                        "thinking" => s.thinking.push_str(block["thinking"].as_str().unwrap()),
                        "tool_use" => s.tools.push((
                            block["name"].as_str().unwrap().into(),
                            block["input"].clone(),
                        )),
                        _ => {}
                    }
                }
                s.stop = norm_stop(v["stop_reason"].as_str().unwrap());
                let u = &v["usage"];
                let read = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                let write = u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                s.usage = Some((
                    u["input_tokens"].as_u64().unwrap() + read + write,
                    u["output_tokens"].as_u64().unwrap(),
                    read,
                ));
            }
            "chat" => {
                let m = &v["choices"][0]["message"];
                s.text = m["content"].as_str().unwrap_or_default().into();
                s.thinking = m["reasoning_content"].as_str().unwrap_or_default().into();
                for c in m["tool_calls"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    s.tools.push((
                        c["function"]["name"].as_str().unwrap().into(),
                        args(&c["function"]["arguments"]),
                    ));
                }
                s.stop = norm_stop(v["choices"][0]["finish_reason"].as_str().unwrap());
                let u = &v["usage"];
                s.usage = Some((
                    u["prompt_tokens"].as_u64().unwrap(),
                    u["completion_tokens"].as_u64().unwrap(),
                    u["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .unwrap_or(0),
                ));
            }
            "responses" => responses_summary(&v, &mut s),
            _ => gemini_chunk(&v, &mut s),
        }
        return s;
    }
    let mut parser = clutch::gateway::sse::Parser::new();
    let mut events = parser.push(body.as_bytes()).unwrap();
    events.extend(parser.finish());
    let mut tool_args: Vec<String> = Vec::new();
    for event in events {
        if event.data == "[DONE]" {
            s.complete = !s.stop.is_empty();
            continue;
        }
        let v: Value = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("{protocol}: bad event {e}: {}", event.data));
        match protocol {
            "anthropic" => match v["type"].as_str().unwrap() {
                "message_start" => {
                    let u = &v["message"]["usage"];
                    s.usage = Some((
                        u["input_tokens"].as_u64().unwrap()
                            + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
                            + u["cache_creation_input_tokens"].as_u64().unwrap_or(0),
                        0,
                        u["cache_read_input_tokens"].as_u64().unwrap_or(0),
                    ));
                }
                "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                    s.tools.push((
                        v["content_block"]["name"].as_str().unwrap().into(),
                        Value::Null,
                    ));
                    tool_args.push(String::new());
                }
                "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                    "text_delta" => s.text.push_str(v["delta"]["text"].as_str().unwrap()),
                    "thinking_delta" => s
                        .thinking
                        .push_str(v["delta"]["thinking"].as_str().unwrap()),
                    "input_json_delta" => tool_args
                        .last_mut()
                        .unwrap()
                        .push_str(v["delta"]["partial_json"].as_str().unwrap()),
                    _ => {}
                },
                "message_delta" => {
                    s.stop = norm_stop(v["delta"]["stop_reason"].as_str().unwrap());
                    let u = &v["usage"];
                    let read = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                    let input = u["input_tokens"]
                        .as_u64()
                        .map(|i| i + read + u["cache_creation_input_tokens"].as_u64().unwrap_or(0));
                    let prev = s.usage.unwrap_or_default();
                    s.usage = Some((
                        input.unwrap_or(prev.0),
                        u["output_tokens"].as_u64().unwrap(),
                        if input.is_some() { read } else { prev.2 },
                    ));
                }
                "message_stop" => s.complete = true,
                "error" => panic!("error event: {v}"),
                _ => {}
            },
            "chat" => {
                if let Some(choice) = v["choices"].get(0) {
                    let d = &choice["delta"];
                    s.text.push_str(d["content"].as_str().unwrap_or_default());
                    s.thinking
                        .push_str(d["reasoning_content"].as_str().unwrap_or_default());
                    for c in d["tool_calls"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        let i = c["index"].as_u64().unwrap() as usize;
                        if i >= s.tools.len() {
                            s.tools.push((
                                c["function"]["name"].as_str().unwrap().into(),
                                Value::Null,
                            ));
                            tool_args.push(String::new());
                        }
                        tool_args[i]
                            .push_str(c["function"]["arguments"].as_str().unwrap_or_default());
                    }
                    if let Some(f) = choice["finish_reason"].as_str() {
                        s.stop = norm_stop(f);
                    }
                }
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    s.usage = Some((
                        u["prompt_tokens"].as_u64().unwrap(),
                        u["completion_tokens"].as_u64().unwrap(),
                        u["prompt_tokens_details"]["cached_tokens"]
                            .as_u64()
                            .unwrap_or(0),
                    ));
                }
                assert!(v.get("error").is_none(), "error chunk: {v}");
            }
            "responses" => match v["type"].as_str().unwrap() {
                "response.output_text.delta" => s.text.push_str(v["delta"].as_str().unwrap()),
                "response.reasoning_summary_text.delta" => {
                    s.thinking.push_str(v["delta"].as_str().unwrap())
                }
                "response.completed" => {
                    let mut done = Summary::default();
                    responses_summary(&v["response"], &mut done);
                    assert_eq!(
                        done.text, s.text,
                        "the final response repeats the streamed text"
                    );
                    s.tools = done.tools;
                    s.stop = done.stop;
                    s.usage = done.usage;
                    s.complete = true;
                }
                "response.failed" => panic!("failed: {v}"),
                _ => {}
            },
            _ => {
                gemini_chunk(&v, &mut s);
                s.complete = !s.stop.is_empty();
            }
        }
    }
    for (tool, raw) in s.tools.iter_mut().zip(&tool_args) {
        tool.1 = args(&Value::String(raw.clone()));
    }
    s
}

fn responses_summary(v: &Value, s: &mut Summary) {
    for item in v["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for c in item["content"].as_array().unwrap() {
                    s.text.push_str(c["text"].as_str().unwrap());
                }
            }
            "reasoning" => {
                for c in item["summary"].as_array().unwrap() {
                    s.thinking.push_str(c["text"].as_str().unwrap());
                }
            }
            "function_call" => s.tools.push((
                item["name"].as_str().unwrap().into(),
                args(&item["arguments"]),
            )),
            _ => {}
        }
    }
    let has_tools = !s.tools.is_empty();
    s.stop = match v["status"].as_str().unwrap() {
        "incomplete" => "max".into(),
        _ if has_tools => "tool".into(),
        _ => "end".into(),
    };
    let u = &v["usage"];
    s.usage = Some((
        u["input_tokens"].as_u64().unwrap(),
        u["output_tokens"].as_u64().unwrap(),
        u["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
    ));
}

fn gemini_chunk(v: &Value, s: &mut Summary) {
    assert!(v.get("error").is_none(), "error chunk: {v}");
    let candidate = &v["candidates"][0];
    for part in candidate["content"]["parts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        if let Some(text) = part["text"].as_str() {
            if part["thought"] == true {
                s.thinking.push_str(text);
            } else {
                s.text.push_str(text);
            }
        } else if let Some(call) = part.get("functionCall") {
            s.tools
                .push((call["name"].as_str().unwrap().into(), call["args"].clone()));
        }
    }
    if let Some(reason) = candidate["finishReason"].as_str() {
        s.stop = match reason {
            "MAX_TOKENS" => "max".into(),
            _ if !s.tools.is_empty() => "tool".into(),
            _ => "end".into(),
        };
    }
    if let Some(u) = v.get("usageMetadata") {
        s.usage = Some((
            u["promptTokenCount"].as_u64().unwrap(),
            u["candidatesTokenCount"].as_u64().unwrap()
                + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
            u["cachedContentTokenCount"].as_u64().unwrap_or(0),
        ));
    }
}

fn norm_stop(reason: &str) -> String {
    match reason {
        "end_turn" | "stop" => "end",
        "max_tokens" | "length" => "max",
        "tool_use" | "tool_calls" => "tool",
        other => other,
    }
    .into()
}

/// Replace run-dependent values (timestamps) so transcripts compare across runs.
fn stable(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if matches!(k.as_str(), "created" | "created_at") && v.is_number() {
                        *v = json!(0);
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn events_of(body: &str) -> Value {
    let mut parser = clutch::gateway::sse::Parser::new();
    let mut events = parser.push(body.as_bytes()).unwrap();
    events.extend(parser.finish());
    Value::Array(
        events
            .into_iter()
            .map(|e| {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data.clone()));
                match e.name {
                    Some(name) => json!({"event": name, "data": data}),
                    None => json!({"data": data}),
                }
            })
            .collect(),
    )
}

#[test]
fn every_inbound_and_upstream_pair() {
    let home = tempfile::tempdir().unwrap();
    let fakes: Vec<FakeUpstream> = PROTOCOLS
        .iter()
        .map(|_| FakeUpstream::start("unused"))
        .collect();
    // Each injected 500 must surface, not be retried away or open a breaker.
    let mut config =
        String::from("[gateway]\nauto_start = false\nretries = 0\nbreaker_threshold = 100000\n");
    for (protocol, fake) in PROTOCOLS.iter().zip(&fakes) {
        let base = if matches!(*protocol, "chat" | "responses") {
            format!("{}/v1", fake.url())
        } else {
            fake.url()
        };
        config.push_str(&format!("[providers.{protocol}]\nbase_url = \"{base}\"\nformat = \"{protocol}\"\napi_key = \"k-{protocol}\"\n"));
    }
    let profiles: Vec<(String, String)> = PROTOCOLS
        .iter()
        .map(|p| {
            (
                format!("to-{p}"),
                format!("[tiers.middle]\nmodel = \"{p}|up-{p}\"\n"),
            )
        })
        .collect();
    let profiles: Vec<(&str, &str)> = profiles
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    configure(home.path(), &config, &profiles);
    let gateway = TestGateway::start(home.path());
    let agent = http_agent();

    for (upstream, fake) in PROTOCOLS.iter().zip(&fakes) {
        for client in PROTOCOLS {
            let mut transcript = serde_json::Map::new();
            for stream in [false, true] {
                for scenario in scenarios() {
                    fake.script([scenario.reply.clone()]);
                    let before = fake.model_calls().len();
                    let (path, request) = client_request(client, stream);
                    let url = format!("{}/p/to-{upstream}{path}", gateway.url);
                    let mut response = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .send(request.to_string())
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let body = response.body_mut().read_to_string().unwrap();
                    if scenario.name == "error_429" {
                        // The 429 cools the model; the next scenario needs it at once.
                        let reset = admin_agent(home.path())
                            .post(&format!("{}/api/keys/reset", gateway.url))
                            .send("")
                            .unwrap();
                        assert_eq!(reset.status().as_u16(), 200);
                    }
                    let calls = fake.model_calls();
                    assert_eq!(
                        calls.len(),
                        before + 1,
                        "{client}->{upstream} {}: one upstream call",
                        scenario.name
                    );
                    let sent: &Recorded = calls.last().unwrap();
                    let label =
                        format!("{client} -> {upstream}, {}, stream={stream}", scenario.name);

                    // What reached the upstream: nothing of the conversation was dropped.
                    let sent_text = sent.body.to_string();
                    for needle in [
                        "You are terse.",
                        "What is the weather?",
                        "Rain gauge offline",
                        "Also, be brief.",
                        "get_time",
                        &IMAGE[..40],
                    ] {
                        assert!(
                            sent_text.contains(needle),
                            "{label}: upstream request lacks {needle:?}: {sent_text}"
                        );
                    }
                    assert!(
                        sent.model().is_some_and(|m| m == format!("up-{upstream}")),
                        "{label}: model {:?}",
                        sent.model()
                    );
                    if *upstream == "gemini" {
                        let answered =
                            sent.body["contents"][2]["parts"][0]["functionResponse"]["name"]
                                .clone();
                        assert_eq!(
                            answered, "get_weather",
                            "{label}: a Gemini function response names the function"
                        );
                    }
                    assert!(
                        sent_text.contains("Oslo"),
                        "{label}: the prior tool call's arguments survive: {sent_text}"
                    );

                    match scenario.expect.error {
                        Some(expected) => {
                            assert_eq!(status, expected, "{label}: {body}");
                            let v: Value = serde_json::from_str(&body)
                                .unwrap_or_else(|_| panic!("{label}: error body not JSON: {body}"));
                            match client {
                                "anthropic" => assert_eq!(v["type"], "error", "{label}: {v}"),
                                "gemini" => {
                                    assert!(v["error"]["status"].is_string(), "{label}: {v}")
                                }
                                _ => assert!(v["error"]["message"].is_string(), "{label}: {v}"),
                            }
                            if expected == 429 {
                                assert_eq!(
                                    retry_after.as_deref(),
                                    Some("7"),
                                    "{label}: Retry-After is passed on"
                                );
                            }
                        }
                        None => {
                            assert_eq!(status, 200, "{label}: {body}");
                            let got = summarise(client, stream, &body);
                            let e = &scenario.expect;
                            assert!(got.complete, "{label}: no terminal sequence\n{body}");
                            assert_eq!(got.text, e.text, "{label}\n{body}");
                            assert!(
                                !got.text.contains("Consider"),
                                "{label}: reasoning leaked into text"
                            );
                            assert_eq!(got.thinking, e.thinking, "{label}\n{body}");
                            let tools: Vec<(String, Value)> = e
                                .tools
                                .iter()
                                .map(|(n, a)| (n.to_string(), a.clone()))
                                .collect();
                            assert_eq!(got.tools, tools, "{label}\n{body}");
                            assert_eq!(got.stop, e.stop, "{label}\n{body}");
                            assert_eq!(got.usage, e.usage, "{label}\n{body}");
                        }
                    }
                    let client_body = if stream && status == 200 {
                        events_of(&body)
                    } else {
                        serde_json::from_str(&body).unwrap_or(Value::String(body.clone()))
                    };
                    let mut entry = json!({"status": status, "response": stable(client_body)});
                    if scenario.name == "text" {
                        entry["upstream_request"] =
                            json!({"path": sent.path, "body": stable(sent.body.clone())});
                    }
                    transcript.insert(
                        format!("{}{}", scenario.name, if stream { " (stream)" } else { "" }),
                        entry,
                    );
                }
            }
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path("snapshots/conversion");
            settings.bind(|| {
                insta::assert_json_snapshot!(
                    format!("{client}_to_{upstream}"),
                    Value::Object(transcript)
                )
            });
        }
    }
}

#[test]
fn anthropic_usage_keeps_the_three_bucket_invariant() {
    // Prompt 100 = 60 fresh + 30 cache reads + 10 cache writes, from an Anthropic upstream
    // to an Anthropic client and from a chat upstream (which reports only cache reads).
    let home = tempfile::tempdir().unwrap();
    let anthropic = FakeUpstream::start("x");
    let chat = FakeUpstream::start("x");
    let config = format!(
        "[gateway]\nauto_start = false\n[providers.a]\nbase_url = \"{}\"\nformat = \"anthropic\"\n[providers.c]\nbase_url = \"{}/v1\"\nformat = \"chat\"\n",
        anthropic.url(),
        chat.url()
    );
    configure(
        home.path(),
        &config,
        &[
            ("a", "[tiers.middle]\nmodel = \"a|m\"\n"),
            ("c", "[tiers.middle]\nmodel = \"c|m\"\n"),
        ],
    );
    let gateway = TestGateway::start(home.path());
    let agent = http_agent();
    let usage = FakeUsage {
        input: 100,
        output: 9,
        cache_read: 30,
        cache_write: 10,
    };
    for (profile, fake, expect_write) in [("a", &anthropic, 10), ("c", &chat, 0)] {
        for stream in [false, true] {
            fake.script([turn(vec![Block::Text("ok".into())], Stop::End, usage)]);
            let (_, request) = client_request("anthropic", stream);
            let mut response = agent
                .post(&format!("{}/p/{profile}/v1/messages", gateway.url))
                .send(request.to_string())
                .unwrap();
            let body = response.body_mut().read_to_string().unwrap();
            let usage: Value = if stream {
                let events = events_of(&body);
                let events = events.as_array().unwrap();
                let start = &events
                    .iter()
                    .find(|e| e["event"] == "message_start")
                    .unwrap()["data"]["message"]["usage"];
                let delta = &events
                    .iter()
                    .find(|e| e["event"] == "message_delta")
                    .unwrap()["data"]["usage"];
                let mut u = start.clone();
                for (k, v) in delta.as_object().unwrap() {
                    u[k] = v.clone();
                }
                u
            } else {
                serde_json::from_str::<Value>(&body).unwrap()["usage"].clone()
            };
            let read = usage["cache_read_input_tokens"].as_u64().unwrap();
            let write = usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
            assert_eq!(read, 30, "{profile} stream={stream}: {usage}");
            assert_eq!(write, expect_write, "{profile} stream={stream}: {usage}");
            assert_eq!(
                usage["input_tokens"].as_u64().unwrap() + read + write,
                100,
                "{profile} stream={stream}: input excludes both cache buckets: {usage}"
            );
        }
    }
}

/// The `functionCall` parts of the model turns in a Gemini request body.
fn replayed_calls(body: &Value) -> Vec<Value> {
    body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["role"] == "model")
        .flat_map(|c| c["parts"].as_array().unwrap().clone())
        .filter(|p| p.get("functionCall").is_some())
        .collect()
}

#[test]
fn gemini_3_gets_a_thought_signature_on_every_replayed_call() {
    // A tool turn made through another protocol has no Gemini signature; Gemini 3 refuses such
    // a history (400 "missing a thought_signature") unless each call carries one, so the
    // gateway puts Google's documented stand-in there. Gemini 2.x does not check and gets none.
    let home = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start("done");
    let config = format!(
        "[gateway]\nauto_start = false\n[providers.g]\nbase_url = \"{}\"\nformat = \"gemini\"\n",
        fake.url()
    );
    configure(
        home.path(),
        &config,
        &[
            ("g3", "[tiers.middle]\nmodel = \"g|gemini-3-pro-preview\"\n"),
            ("g25", "[tiers.middle]\nmodel = \"g|gemini-2.5-flash\"\n"),
        ],
    );
    let gateway = TestGateway::start(home.path());
    let agent = http_agent();
    let anthropic = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": {"path": "."}},
                                          {"type": "tool_use", "id": "t2", "name": "ls", "input": {"path": "src"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.rs"},
                                     {"type": "tool_result", "tool_use_id": "t2", "content": "b.rs"}]}]});
    let chat = json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "a.rs"}]});
    for (path, request) in [
        ("/v1/messages", &anthropic),
        ("/v1/chat/completions", &chat),
    ] {
        for (profile, expected) in [
            ("g3", Some("skip_thought_signature_validator")),
            ("g25", None),
        ] {
            let before = fake.model_calls().len();
            let response = agent
                .post(&format!("{}/p/{profile}{path}", gateway.url))
                .send(request.to_string())
                .unwrap();
            assert_eq!(response.status().as_u16(), 200, "{profile}{path}");
            let calls = fake.model_calls();
            assert_eq!(calls.len(), before + 1);
            let replayed = replayed_calls(&calls.last().unwrap().body);
            assert!(
                !replayed.is_empty(),
                "{profile}{path}: the calls are replayed"
            );
            for call in replayed {
                assert_eq!(
                    call["thoughtSignature"].as_str(),
                    expected,
                    "{profile}{path}: {call}"
                );
            }
        }
    }

    // A signature Gemini gave is handed back as it was, not replaced by the stand-in.
    use clutch::gateway::proto::{self, Protocol};
    let gemini_request = json!({"contents": [
        {"role": "user", "parts": [{"text": "list files"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "ls", "args": {"path": "."}}, "thoughtSignature": "c2lnLTE="}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "ls", "response": {"output": "a.rs"}}}]}]});
    let decoded = proto::decode_request(
        Protocol::Gemini,
        gemini_request.to_string().as_bytes(),
        Some("m"),
    )
    .unwrap();
    let encoded = proto::encode_request(Protocol::Gemini, &decoded, "gemini-3-pro-preview");
    assert_eq!(replayed_calls(&encoded)[0]["thoughtSignature"], "c2lnLTE=");
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "ls", "args": {}}, "thoughtSignature": "c2lnLTI="}]}, "finishReason": "STOP"}]});
    let response = proto::decode_response(Protocol::Gemini, answer.to_string().as_bytes()).unwrap();
    let written = proto::encode_response(Protocol::Gemini, &response, &decoded);
    assert_eq!(
        written["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
        "c2lnLTI="
    );
}
