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
    /// The body as it arrived, byte for byte (prompt-cache checks compare these).
    pub raw: String,
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
    /// A full turn: any mix of blocks, a stop reason and usage.
    Turn(Turn),
    /// An HTTP error with this body.
    Error {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Exactly these bytes (malformed streams, HTML pages, empty bodies).
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    /// Say nothing for this long, then answer with the inner reply.
    Delay {
        millis: u64,
        then: Box<Reply>,
    },
    /// Send 200 and event-stream headers, then nothing for this long, then close.
    StallStream {
        millis: u64,
    },
    /// `prefix`, then `x` bytes up to `total` bytes in all, made as they are sent (a broken or
    /// hostile upstream's endless answer, error page or SSE line); stops when the caller hangs up.
    Flood {
        status: u16,
        content_type: String,
        prefix: String,
        total: u64,
    },
    /// Send 200 and event-stream headers, then an SSE comment (no event) every `every_ms`
    /// for `for_ms`: an upstream that looks alive and never answers.
    Drip {
        every_ms: u64,
        for_ms: u64,
    },
    /// The reply this function makes of the request's body (a turn that depends on what the
    /// agent sent, such as a recall id it was shown).
    Compute(Responder),
    /// Send 200, event-stream headers and these bytes, then keep the stream open until the
    /// caller hangs up, and say so on `hung_up`.
    Hang {
        first: String,
        hung_up: std::sync::mpsc::Sender<()>,
    },
}

/// A function from a request body to the reply.
#[derive(Clone)]
pub struct Responder(pub std::sync::Arc<dyn Fn(&Value) -> Reply + Send + Sync>);

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

#[derive(Debug, Clone)]
pub struct Turn {
    pub blocks: Vec<Block>,
    pub stop: Stop,
    pub usage: FakeUsage,
}

#[derive(Debug, Clone)]
pub enum Block {
    Text(String),
    Thinking {
        text: String,
        signature: String,
    },
    Tool {
        id: String,
        name: String,
        arguments: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    End,
    MaxTokens,
    Tool,
}

/// Prompt tokens in total (cache included), output tokens, and the cache buckets.
#[derive(Debug, Clone, Copy)]
pub struct FakeUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Default for FakeUsage {
    fn default() -> Self {
        FakeUsage {
            input: USAGE_IN,
            output: USAGE_OUT,
            cache_read: 0,
            cache_write: 0,
        }
    }
}

impl Reply {
    fn turn(&self) -> Option<Turn> {
        match self {
            Reply::Text(text) => Some(Turn {
                blocks: vec![Block::Text(text.clone())],
                stop: Stop::End,
                usage: FakeUsage::default(),
            }),
            Reply::ToolCall { name, arguments } => Some(Turn {
                blocks: vec![Block::Tool {
                    id: "call_fake_1".into(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                }],
                stop: Stop::Tool,
                usage: FakeUsage::default(),
            }),
            Reply::Turn(turn) => Some(turn.clone()),
            _ => None,
        }
    }
}

/// Clients can script the fake through their prompt: `[[tool:NAME]]` asks for a tool call
/// (once: a request that already carries a tool result gets text), `[[status:429]]` or
/// `[[status:500]]` fails with that status.
fn magic_reply(body: &Value, default_text: &str) -> Option<Reply> {
    let text = body.to_string();
    if let Some(at) = text.find("[[status:") {
        let code: u16 = text[at + 9..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()?;
        return Some(Reply::Error {
            status: code,
            body: json!({"error": {"message": format!("fake upstream injected HTTP {code}"), "type": "fake", "code": code}}).to_string(),
            retry_after: (code == 429).then_some(1),
        });
    }
    if let Some(at) = text.find("[[tool:") {
        let answered = [
            "tool_result",
            "\"role\":\"tool\"",
            "function_call_output",
            "functionResponse",
        ]
        .iter()
        .any(|m| text.contains(m));
        if answered {
            return Some(Reply::Text(format!("{default_text} after tool")));
        }
        let name: String = text[at + 7..].chars().take_while(|c| *c != ']').collect();
        return Some(Reply::ToolCall {
            name,
            arguments: json!({"city": "Paris"}),
        });
    }
    None
}

/// What a capable model answers: a call to the first tool offered (its required string
/// arguments filled), or `{"answer": 4}` for a JSON schema.
fn capable_reply(body: &Value) -> Option<Reply> {
    let tools = body["tools"].as_array().filter(|t| !t.is_empty());
    if let Some(tool) = tools.and_then(|t| t.first()) {
        let function = if tool["function"].is_object() {
            &tool["function"]
        } else {
            tool
        };
        let schema = if function["parameters"].is_object() {
            &function["parameters"]
        } else {
            &function["input_schema"]
        };
        let mut arguments = serde_json::Map::new();
        for name in schema["required"].as_array().into_iter().flatten() {
            if let Some(name) = name.as_str() {
                arguments.insert(name.to_string(), json!("Paris"));
            }
        }
        return Some(Reply::ToolCall {
            name: function["name"].as_str()?.to_string(),
            arguments: Value::Object(arguments),
        });
    }
    if body.get("response_format").is_some() || body.pointer("/output_config/format").is_some() {
        return Some(Reply::Text("{\"answer\": 4}".into()));
    }
    None
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    /// Replies for calls that ask for one model, taken before the shared script.
    by_model: std::collections::HashMap<String, VecDeque<Reply>>,
    /// When set, every call that does not present this key gets a 401.
    required_key: Option<String>,
    /// The model list `GET …/models` answers (None: one `fake-model`), and after how long.
    listing: Option<Value>,
    listing_delay: Option<Duration>,
    /// Models that answer a request offering tools with a call to its first tool, and one
    /// asking for a JSON schema with `{"answer": 4}`.
    capable: std::collections::HashSet<String>,
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
                        async move {
                            let (delay, response) = handle(&shared, method, uri, headers, body);
                            if let Some(delay) = delay {
                                tokio::time::sleep(delay).await;
                            }
                            response
                        }
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

    /// Refuse every call that does not present `key` (as a bearer token, `x-api-key` or
    /// `x-goog-api-key`), as a provider refuses a wrong key.
    pub fn require_key(&self, key: &str) {
        self.shared.state.lock().unwrap().required_key = Some(key.to_string());
    }

    /// Answer `GET …/models` with `listing`, after `delay`.
    pub fn set_listing(&self, listing: Value, delay: Option<Duration>) {
        let mut state = self.shared.state.lock().unwrap();
        state.listing = Some(listing);
        state.listing_delay = delay;
    }

    /// `model` calls the first tool it is offered and answers JSON schemas (as a model that
    /// passes model-scan's probes does); other models answer with plain text.
    pub fn make_capable(&self, model: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .capable
            .insert(model.to_string());
    }

    /// Forget every queued reply.
    pub fn clear_script(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.script.clear();
        state.by_model.clear();
    }

    /// Queue replies for the next calls that ask for `model`, in order.
    pub fn script_model(&self, model: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .state
            .lock()
            .unwrap()
            .by_model
            .entry(model.to_string())
            .or_default()
            .extend(replies);
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

fn handle(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Option<Duration>, Response) {
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
        raw: String::from_utf8_lossy(&body).into_owned(),
    };
    let presented = ["authorization", "x-api-key", "x-goog-api-key"]
        .iter()
        .filter_map(|h| record.header(h))
        .map(|v| v.trim_start_matches("Bearer ").to_string())
        .collect::<Vec<_>>();
    let reply = {
        let mut state = shared.state.lock().unwrap();
        if let Some(required) = state.required_key.clone()
            && !presented.contains(&required)
            && path != "/health"
        {
            state.requests.push(record);
            shared.changed.notify_all();
            let refusal = json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}});
            return (
                None,
                Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("content-type", "application/json")
                    .body(Body::from(refusal.to_string()))
                    .unwrap(),
            );
        }
        let model = record.model();
        if method == Method::GET
            && (path.ends_with("/models") && !path.contains("/api/"))
            && let Some(listing) = state.listing.clone()
        {
            let delay = state.listing_delay;
            state.requests.push(record);
            shared.changed.notify_all();
            return (delay, json_response(listing));
        }
        let capable_reply = model
            .as_ref()
            .filter(|m| state.capable.contains(*m))
            .and_then(|_| capable_reply(&body_json));
        state.requests.push(record);
        let reply = if protocol == Protocol::Other || is_gemini_router_call(&body_json) {
            None
        } else {
            model
                .and_then(|m| state.by_model.get_mut(&m).and_then(VecDeque::pop_front))
                .or_else(|| state.script.pop_front())
                .or(capable_reply)
                .or_else(|| magic_reply(&body_json, &shared.default_text))
        };
        shared.changed.notify_all();
        reply.unwrap_or_else(|| Reply::Text(shared.default_text.clone()))
    };
    let reply = match reply {
        Reply::Compute(Responder(make)) => make(&body_json),
        reply => reply,
    };
    let (delay, reply) = match reply {
        Reply::Delay { millis, then } => (Some(Duration::from_millis(millis)), *then),
        reply => (None, reply),
    };
    (delay, respond(protocol, &method, &path, &body_json, reply))
}

fn respond(
    protocol: Protocol,
    method: &Method,
    path: &str,
    body_json: &Value,
    reply: Reply,
) -> Response {
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
    if protocol == Protocol::Other {
        return other(method, path);
    }
    if protocol == Protocol::Anthropic && path.ends_with("/count_tokens") {
        return json_response(json!({"input_tokens": 12}));
    }
    if protocol == Protocol::Gemini && is_gemini_router_call(body_json) {
        let text = r#"{"complexity_reasoning":"a short greeting","complexity_score":1}"#;
        return json_response(gemini_json(&Turn {
            blocks: vec![Block::Text(text.into())],
            stop: Stop::End,
            usage: FakeUsage::default(),
        }));
    }
    let turn = match reply.turn() {
        Some(turn) => turn,
        None => return raw_reply(&reply),
    };
    match protocol {
        Protocol::Anthropic => anthropic(&model, &turn, stream),
        Protocol::Chat => chat(&model, &turn, stream),
        Protocol::Responses => responses(&model, &turn, stream),
        Protocol::Gemini if stream => gemini_stream(&turn),
        Protocol::Gemini => json_response(gemini_json(&turn)),
        Protocol::Other => unreachable!("handled above"),
    }
}

/// Gemini CLI's model router asks for a JSON object matching a schema before the main call.
fn is_gemini_router_call(body: &Value) -> bool {
    let config = &body["generationConfig"];
    config.get("responseJsonSchema").is_some() || config.get("responseSchema").is_some()
}

fn other(method: &Method, path: &str) -> Response {
    let listing = json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]});
    // It stands where the gateway would in the launcher's tests, so it answers `xx`'s health
    // check as the gateway does.
    if method == Method::GET && path == "/health" {
        return json_response(
            json!({"status": "ok", "service": "clutch-gateway", "test_double": true}),
        );
    }
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

fn raw_reply(reply: &Reply) -> Response {
    match reply {
        Reply::Error {
            status,
            body,
            retry_after,
        } => {
            let mut builder = Response::builder()
                .status(*status)
                .header("content-type", "application/json");
            if let Some(seconds) = retry_after {
                builder = builder.header("retry-after", seconds.to_string());
            }
            builder.body(Body::from(body.clone())).unwrap()
        }
        Reply::StallStream { millis } => {
            let millis = *millis;
            let body = futures_util::stream::once(async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok::<_, std::convert::Infallible>(Bytes::new())
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Flood {
            status,
            content_type,
            prefix,
            total,
        } => {
            use futures_util::StreamExt as _;
            const CHUNK: usize = 256 * 1024;
            let filler = Bytes::from(vec![b'x'; CHUNK]);
            let prefix = Bytes::from(prefix.clone());
            let rest = total.saturating_sub(prefix.len() as u64);
            let chunks = rest.div_ceil(CHUNK as u64);
            let body = futures_util::stream::iter(std::iter::once(prefix).chain((0..chunks).map(
                move |i| {
                    let left = rest - i * CHUNK as u64;
                    filler.slice(..(left.min(CHUNK as u64) as usize))
                },
            )))
            .map(Ok::<_, std::convert::Infallible>);
            Response::builder()
                .status(*status)
                .header("content-type", content_type.as_str())
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Drip { every_ms, for_ms } => {
            let (every, count) = (*every_ms, for_ms / every_ms.max(&1));
            let body = futures_util::stream::unfold(0u64, move |sent| async move {
                if sent >= count {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(every)).await;
                Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from_static(b": still thinking\n\n")),
                    sent + 1,
                ))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Hang { first, hung_up } => {
            use futures_util::StreamExt as _;
            /// Reports the hang-up when hyper drops the body: the connection is gone.
            struct OnDrop(std::sync::mpsc::Sender<()>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    let _ = self.0.send(());
                }
            }
            let guard = OnDrop(hung_up.clone());
            let first = Bytes::from(first.clone());
            let body =
                futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
                    .chain(futures_util::stream::once(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await;
                        Ok(Bytes::new())
                    }));
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(*status)
            .header("content-type", content_type.as_str())
            .body(Body::from(body.clone()))
            .unwrap(),
        _ => unreachable!("turns are encoded per protocol"),
    }
}

/// Split text in two so clients must join deltas.
fn halves(text: &str) -> (String, String) {
    let mut at = text.len() / 2;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    (text[..at].to_string(), text[at..].to_string())
}

fn anthropic(model: &str, turn: &Turn, stream: bool) -> Response {
    let stop_reason = match turn.stop {
        Stop::End => "end_turn",
        Stop::MaxTokens => "max_tokens",
        Stop::Tool => "tool_use",
    };
    let u = turn.usage;
    let usage = json!({"input_tokens": u.input - u.cache_read - u.cache_write, "output_tokens": u.output,
        "cache_read_input_tokens": u.cache_read, "cache_creation_input_tokens": u.cache_write});
    if !stream {
        let content: Vec<Value> = turn
            .blocks
            .iter()
            .map(|b| match b {
                Block::Text(text) => json!({"type": "text", "text": text}),
                Block::Thinking { text, signature } => {
                    json!({"type": "thinking", "thinking": text, "signature": signature})
                }
                Block::Tool {
                    id,
                    name,
                    arguments,
                } => json!({"type": "tool_use", "id": id, "name": name, "input": arguments}),
            })
            .collect();
        return json_response(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }));
    }
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut events = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    )];
    for (index, block) in turn.blocks.iter().enumerate() {
        let (start, deltas) = match block {
            Block::Text(text) => {
                let (a, b) = halves(text);
                (
                    json!({"type": "text", "text": ""}),
                    vec![
                        json!({"type": "text_delta", "text": a}),
                        json!({"type": "text_delta", "text": b}),
                    ],
                )
            }
            Block::Thinking { text, signature } => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                vec![
                    json!({"type": "thinking_delta", "thinking": text}),
                    json!({"type": "signature_delta", "signature": signature}),
                ],
            ),
            Block::Tool {
                id,
                name,
                arguments,
            } => {
                let (a, b) = halves(&arguments.to_string());
                (
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    vec![
                        json!({"type": "input_json_delta", "partial_json": a}),
                        json!({"type": "input_json_delta", "partial_json": b}),
                    ],
                )
            }
        };
        events.push((
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push((
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push((
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push((Some("message_delta"), json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": u.output}})));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse(events)
}

fn chat(model: &str, turn: &Turn, stream: bool) -> Response {
    let u = turn.usage;
    let usage = json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read}});
    let finish = match turn.stop {
        Stop::End => "stop",
        Stop::MaxTokens => "length",
        Stop::Tool => "tool_calls",
    };
    let text: String = turn
        .blocks
        .iter()
        .filter_map(|b| {
            if let Block::Text(t) = b {
                Some(t.as_str())
            } else {
                None
            }
        })
        .collect();
    let reasoning: String = turn
        .blocks
        .iter()
        .filter_map(|b| {
            if let Block::Thinking { text, .. } = b {
                Some(text.as_str())
            } else {
                None
            }
        })
        .collect();
    let calls: Vec<(usize, &String, &String, &Value)> = turn
        .blocks
        .iter()
        .filter_map(|b| {
            if let Block::Tool {
                id,
                name,
                arguments,
            } = b
            {
                Some((id, name, arguments))
            } else {
                None
            }
        })
        .enumerate()
        .map(|(i, (id, name, args))| (i, id, name, args))
        .collect();
    if !stream {
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        if !calls.is_empty() {
            message["tool_calls"] = json!(
                calls
                    .iter()
                    .map(|(_, id, name, args)| json!({"id": id, "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}))
                    .collect::<Vec<_>>()
            );
        }
        return json_response(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
        }));
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for block in &turn.blocks {
        match block {
            Block::Thinking { text, .. } => {
                chunks.push(chunk(json!({"reasoning_content": text}), None))
            }
            Block::Text(text) => {
                let (a, b) = halves(text);
                chunks.push(chunk(json!({"content": a}), None));
                chunks.push(chunk(json!({"content": b}), None));
            }
            Block::Tool { .. } => {}
        }
    }
    for (index, id, name, args) in &calls {
        let (a, b) = halves(&args.to_string());
        chunks.push(chunk(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": a}}]}), None));
        chunks.push(chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": b}}]}),
            None,
        ));
    }
    chunks.push(chunk(json!({}), Some(finish)));
    chunks.push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage}));
    let mut text = String::new();
    for data in chunks {
        text.push_str(&format!("data: {data}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    sse_raw(text)
}

fn responses(model: &str, turn: &Turn, stream: bool) -> Response {
    let u = turn.usage;
    let items: Vec<Value> = turn
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| match b {
            Block::Text(text) => json!({"type": "message", "id": format!("msg_{i}"), "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}),
            Block::Thinking { text, signature } => json!({"type": "reasoning", "id": format!("rs_{i}"),
                "summary": [{"type": "summary_text", "text": text}], "encrypted_content": signature}),
            Block::Tool { id, name, arguments } => json!({"type": "function_call", "id": format!("fc_{i}"), "status": "completed",
                "call_id": id, "name": name, "arguments": arguments.to_string()}),
        })
        .collect();
    let status = if turn.stop == Stop::MaxTokens {
        "incomplete"
    } else {
        "completed"
    };
    let response = |status: &str, output: Value| {
        json!({"id": "resp_fake", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": output,
            "usage": {"input_tokens": u.input, "input_tokens_details": {"cached_tokens": u.cache_read},
                "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.input + u.output}})
    };
    if !stream {
        return json_response(response(status, json!(items)));
    }
    let mut events = vec![(
        Some("response.created"),
        json!({"type": "response.created", "response": response("in_progress", json!([]))}),
    )];
    for (i, (block, item)) in turn.blocks.iter().zip(&items).enumerate() {
        let mut added = item.clone();
        match block {
            Block::Text(_) => added["content"] = json!([]),
            Block::Tool { .. } => added["arguments"] = json!(""),
            Block::Thinking { .. } => added["summary"] = json!([]),
        }
        events.push((
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "output_index": i, "item": added}),
        ));
        match block {
            Block::Text(text) => {
                let (a, b) = halves(text);
                for delta in [a, b] {
                    events.push((Some("response.output_text.delta"), json!({"type": "response.output_text.delta", "item_id": item["id"], "output_index": i, "content_index": 0, "delta": delta})));
                }
            }
            Block::Thinking { text, .. } => events.push((Some("response.reasoning_summary_text.delta"), json!({"type": "response.reasoning_summary_text.delta", "item_id": item["id"], "output_index": i, "summary_index": 0, "delta": text}))),
            Block::Tool { arguments, .. } => {
                let (a, b) = halves(&arguments.to_string());
                for delta in [a, b] {
                    events.push((Some("response.function_call_arguments.delta"), json!({"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": i, "delta": delta})));
                }
            }
        }
        events.push((
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "output_index": i, "item": item}),
        ));
    }
    events.push((
        Some("response.completed"),
        json!({"type": "response.completed", "response": response(status, json!(items))}),
    ));
    sse(events)
}

fn gemini_parts(turn: &Turn) -> Vec<Value> {
    turn.blocks
        .iter()
        .map(|b| match b {
            Block::Text(text) => json!({"text": text}),
            Block::Thinking { text, signature } => {
                json!({"text": text, "thought": true, "thoughtSignature": signature})
            }
            Block::Tool {
                name, arguments, ..
            } => json!({"functionCall": {"name": name, "args": arguments}}),
        })
        .collect()
}

fn gemini_finish(turn: &Turn) -> &'static str {
    if turn.stop == Stop::MaxTokens {
        "MAX_TOKENS"
    } else {
        "STOP"
    }
}

fn gemini_usage(turn: &Turn) -> Value {
    let u = turn.usage;
    json!({"promptTokenCount": u.input, "candidatesTokenCount": u.output, "cachedContentTokenCount": u.cache_read, "totalTokenCount": u.input + u.output})
}

fn gemini_json(turn: &Turn) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": gemini_parts(turn)}, "finishReason": gemini_finish(turn), "index": 0}],
        "usageMetadata": gemini_usage(turn),
        "modelVersion": "fake-model",
    })
}

/// One chunk per part; the finish reason and usage ride on the last one.
fn gemini_stream(turn: &Turn) -> Response {
    let parts = gemini_parts(turn);
    let count = parts.len().max(1);
    let mut events = Vec::new();
    for i in 0..count {
        let part = parts.get(i).cloned().map_or_else(Vec::new, |p| vec![p]);
        let mut candidate = json!({"content": {"role": "model", "parts": part}, "index": 0});
        let mut chunk = json!({"modelVersion": "fake-model"});
        if i == count - 1 {
            candidate["finishReason"] = json!(gemini_finish(turn));
            chunk["usageMetadata"] = gemini_usage(turn);
        }
        chunk["candidates"] = json!([candidate]);
        events.push((None, chunk));
    }
    sse(events)
}

/// How long a test waits for an agent or a request before it fails.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);
