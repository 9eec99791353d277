//! A scripted fake model provider on loopback that speaks all four agent APIs: Anthropic
//! Messages, OpenAI Chat Completions, OpenAI Responses and Gemini. It picks the protocol from
//! the request path (so `/p/<profile>/v1/messages` works as well as `/v1/messages`), answers
//! with the next scripted reply (or the default text), always ends streams with the protocol's
//! complete terminal sequence, and records every request for the test to inspect.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// Which API a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Anthropic,
    Chat,
    Responses,
    Gemini,
    /// Model listings, probes and other side calls.
    Other,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    /// The model the request asked for (body field, or Gemini's path segment).
    pub fn model(&self) -> Option<String> {
        if let Some(model) = self.body.get("model").and_then(Value::as_str) {
            return Some(model.to_string());
        }
        let rest = self.path.split("/models/").nth(1)?;
        Some(rest.split(':').next()?.to_string())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body mentions `text` anywhere (history checks).
    pub fn mentions(&self, text: &str) -> bool {
        self.body.to_string().contains(text)
    }
}

/// What the fake answers to the next model call.
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    /// Ask the client to call a tool with these JSON arguments.
    ToolCall {
        name: String,
        arguments: Value,
    },
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    default_text: String,
}

/// A running fake. Stops when dropped.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    /// Start on 127.0.0.1 with an OS-chosen port; model calls answer `default_text` unless a
    /// reply is scripted.
    pub fn start(default_text: &str) -> FakeUpstream {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            default_text: default_text.to_string(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app_shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let shared = app_shared.clone();
                        async move { handle(&shared, method, uri, headers, body) }
                    },
                );
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeUpstream {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue replies for the next model calls, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.state.lock().unwrap().script.extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Model calls only (no probes or listings).
    pub fn model_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.protocol != Protocol::Other)
            .collect()
    }

    /// Wait until a recorded request satisfies `pred`, or `timeout` passes.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        loop {
            if let Some(found) = state.requests.iter().find(|r| pred(r)) {
                return Some(found.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn protocol_of(method: &Method, path: &str) -> Protocol {
    if method != Method::POST {
        return Protocol::Other;
    }
    if path.ends_with("/messages") {
        Protocol::Anthropic
    } else if path.ends_with("/chat/completions") {
        Protocol::Chat
    } else if path.ends_with("/responses") {
        Protocol::Responses
    } else if path.ends_with(":streamGenerateContent") || path.ends_with(":generateContent") {
        Protocol::Gemini
    } else {
        Protocol::Other
    }
}

fn handle(shared: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let protocol = protocol_of(&method, &path);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let record = Recorded {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or(path.clone(), |pq| pq.to_string()),
        protocol,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body_json.clone(),
    };
    let reply = {
        let mut state = shared.state.lock().unwrap();
        state.requests.push(record);
        let reply = if protocol == Protocol::Other || is_gemini_router_call(&body_json) {
            None
        } else {
            state.script.pop_front()
        };
        shared.changed.notify_all();
        reply.unwrap_or_else(|| Reply::Text(shared.default_text.clone()))
    };
    let stream = body_json
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || path.ends_with(":streamGenerateContent");
    let model = body_json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_string();
    match protocol {
        Protocol::Anthropic if path.ends_with("/count_tokens") => {
            json_response(json!({"input_tokens": 12}))
        }
        Protocol::Anthropic => anthropic(&model, &reply, stream),
        Protocol::Chat => chat(&model, &reply, stream),
        Protocol::Responses => responses(&model, &reply, stream),
        Protocol::Gemini if is_gemini_router_call(&body_json) => {
            json_response(gemini_json(&Reply::Text(
                r#"{"complexity_reasoning":"a short greeting","complexity_score":1}"#.into(),
            )))
        }
        Protocol::Gemini if stream => sse(vec![(None, gemini_json(&reply))]),
        Protocol::Gemini => json_response(gemini_json(&reply)),
        Protocol::Other => other(&method, &path),
    }
}

/// Gemini CLI's model router asks for a JSON object matching a schema before the main call.
fn is_gemini_router_call(body: &Value) -> bool {
    let config = &body["generationConfig"];
    config.get("responseJsonSchema").is_some() || config.get("responseSchema").is_some()
}

fn other(method: &Method, path: &str) -> Response {
    let listing = json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]});
    if method == Method::HEAD {
        return Response::builder()
            .status(StatusCode::OK)
            .body(Body::empty())
            .unwrap();
    }
    if method == Method::GET
        && (path.ends_with("/v1/models") || path.ends_with("/models"))
        && !path.contains("/api/")
    {
        return json_response(listing);
    }
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"error": {"message": "not found", "type": "not_found"}}).to_string(),
        ))
        .unwrap()
}

fn json_response(value: Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

fn sse(events: Vec<(Option<&str>, Value)>) -> Response {
    let mut text = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            text.push_str(&format!("event: {name}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    sse_raw(text)
}

fn sse_raw(text: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from(text))
        .unwrap()
}

const USAGE_IN: u64 = 12;
const USAGE_OUT: u64 = 3;

fn anthropic(model: &str, reply: &Reply, stream: bool) -> Response {
    let (block, stop_reason) = match reply {
        Reply::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Reply::ToolCall { name, arguments } => (
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": arguments}),
            "tool_use",
        ),
    };
    let usage = json!({"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT});
    if !stream {
        return json_response(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }));
    }
    let (start_block, delta) = match reply {
        Reply::Text(text) => (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": text}),
        ),
        Reply::ToolCall { name, arguments } => (
            json!({"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {}}),
            json!({"type": "input_json_delta", "partial_json": arguments.to_string()}),
        ),
    };
    sse(vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": USAGE_IN, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": USAGE_OUT}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ])
}

fn chat(model: &str, reply: &Reply, stream: bool) -> Response {
    let usage = json!({"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT});
    let (message, finish) = match reply {
        Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake_1", "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}}]}),
            "tool_calls",
        ),
    };
    if !stream {
        return json_response(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
        }));
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let delta = match reply {
        Reply::Text(text) => json!({"content": text}),
        Reply::ToolCall { name, arguments } => {
            json!({"tool_calls": [{"index": 0, "id": "call_fake_1", "type": "function",
            "function": {"name": name, "arguments": arguments.to_string()}}]})
        }
    };
    let mut text = String::new();
    for data in [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(delta, None),
        chunk(json!({}), Some(finish)),
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage}),
    ] {
        text.push_str(&format!("data: {data}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    sse_raw(text)
}

fn responses(model: &str, reply: &Reply, stream: bool) -> Response {
    let item = match reply {
        Reply::Text(text) => {
            json!({"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
        Reply::ToolCall { name, arguments } => {
            json!({"type": "function_call", "id": "fc_fake", "status": "completed",
            "call_id": "call_fake_1", "name": name, "arguments": arguments.to_string()})
        }
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_fake", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": output,
            "usage": {"input_tokens": USAGE_IN, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": USAGE_OUT, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": USAGE_IN + USAGE_OUT}})
    };
    if !stream {
        return json_response(response("completed", json!([item])));
    }
    let mut events = vec![
        (
            Some("response.created"),
            json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", json!([]))}),
        ),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": item["type"], "id": item["id"], "status": "in_progress", "role": "assistant", "content": []}}),
        ),
    ];
    if let Reply::Text(text) = reply {
        events.push((
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "sequence_number": 2,
            "item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": text}),
        ));
    }
    events.push((Some("response.output_item.done"), json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": item})));
    events.push((Some("response.completed"), json!({"type": "response.completed", "sequence_number": 4, "response": response("completed", json!([item]))})));
    sse(events)
}

fn gemini_json(reply: &Reply) -> Value {
    let part = match reply {
        Reply::Text(text) => json!({"text": text}),
        Reply::ToolCall { name, arguments } => {
            json!({"functionCall": {"name": name, "args": arguments}})
        }
    };
    json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": USAGE_IN, "candidatesTokenCount": USAGE_OUT, "totalTokenCount": USAGE_IN + USAGE_OUT},
        "modelVersion": "fake-model",
    })
}

/// How long a test waits for an agent or a request before it fails.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
