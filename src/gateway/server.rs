//! The HTTP surface: every endpoint agents call (each also under `/p/<profile>/…`), the side
//! calls they make, and the pipeline for a model call: pick the upstream, then forward
//! (same protocol, only `model` rewritten) or translate through the IR. Before the first
//! good upstream event a failure is an ordinary HTTP error in the caller's shape; after it,
//! a protocol-correct error event that ends the stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::Gateway;
use super::ir::{self, ApiError, ErrorKind, StreamEvent};
use super::proto::{self, Protocol};
use super::route;
use super::sse;
use super::upstream::{self, Provider, Timeouts};

/// `/p/<profile>/rest` -> (Some(profile), "/rest").
fn split_profile(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/p/") {
        return match rest.find('/') {
            Some(at) => (Some(&rest[..at]), &rest[at..]),
            None => (Some(rest), "/"),
        };
    }
    (None, path)
}

/// `model:action` of a Gemini model call, under `/v1beta/models/` or the stable `/v1/models/`.
fn gemini_target(path: &str) -> Option<&str> {
    let target = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    target.contains(':').then_some(target)
}

/// The protocol a request to `path` speaks, for shaping errors before anything is parsed.
fn protocol_of_path(path: &str, headers: &HeaderMap) -> Protocol {
    if path.starts_with("/v1beta") || gemini_target(path).is_some() {
        Protocol::Gemini
    } else if path.contains("/messages") || headers.contains_key("anthropic-version") {
        Protocol::Anthropic
    } else if path.contains("/responses") {
        Protocol::Responses
    } else {
        Protocol::Chat
    }
}

pub fn error_response(protocol: Protocol, error: &ApiError) -> Response {
    let status = proto::error_status(protocol, error);
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        .header("content-type", "application/json")
        .body(Body::from(proto::error_body(protocol, error).to_string()))
        .expect("static parts");
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(seconds));
    }
    response
}

fn json_response(status: u16, value: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .expect("static parts")
}

/// Every request lands here; dispatch is by path so `/p/<profile>` works everywhere.
pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (profile, rest) = split_profile(uri.path());
    let protocol = protocol_of_path(rest, &headers);
    if let Err(error) = gateway.authorize(peer, &headers, uri.query()) {
        return error_response(protocol, &error);
    }
    let rest = rest.to_string();
    let profile = profile.map(str::to_string);
    match (&method, rest.as_str()) {
        (&Method::GET | &Method::HEAD, "/health" | "/") => json_response(200, &gateway.health()),
        (&Method::GET, "/api/stats") => {
            let mut stats = gateway.stats.to_json();
            stats["uptime_secs"] = gateway.health()["uptime_secs"].clone();
            json_response(200, &stats)
        }
        // Claude Code's reachability probe.
        (&Method::GET | &Method::HEAD, "/api/hello") => json_response(200, &json!({"ok": true})),
        (&Method::POST, "/v1/messages") => {
            model_call(
                &gateway,
                Protocol::Anthropic,
                profile,
                None,
                uri.query(),
                &headers,
                body,
            )
            .await
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            count_tokens(&gateway, &headers, body).await
        }
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            model_call(
                &gateway,
                Protocol::Chat,
                profile,
                None,
                uri.query(),
                &headers,
                body,
            )
            .await
        }
        (&Method::POST, "/v1/responses" | "/responses") => {
            model_call(
                &gateway,
                Protocol::Responses,
                profile,
                None,
                uri.query(),
                &headers,
                body,
            )
            .await
        }
        (&Method::POST, path) if gemini_target(path).is_some() => {
            let target = gemini_target(path).unwrap_or_default();
            match target.rsplit_once(':') {
                Some((model, "generateContent" | "streamGenerateContent")) => {
                    let model = model.to_string();
                    model_call(
                        &gateway,
                        Protocol::Gemini,
                        profile,
                        Some((model, target.ends_with(":streamGenerateContent"))),
                        uri.query(),
                        &headers,
                        body,
                    )
                    .await
                }
                Some((_, "countTokens")) => gemini_count_tokens(&gateway, body).await,
                _ => not_found(Protocol::Gemini, &method, &rest),
            }
        }
        (&Method::GET, "/v1/models" | "/models") => {
            json_response(200, &gateway.model_list(protocol))
        }
        (&Method::GET, "/v1beta/models") => {
            json_response(200, &gateway.model_list(Protocol::Gemini))
        }
        (&Method::GET, path) if path.starts_with("/v1/models/") => {
            let id = &path["/v1/models/".len()..];
            json_response(
                200,
                &json!({"id": id, "object": "model", "created": 0, "owned_by": "clutch"}),
            )
        }
        _ => not_found(protocol, &method, &rest),
    }
}

fn not_found(protocol: Protocol, method: &Method, path: &str) -> Response {
    error_response(
        protocol,
        &ApiError::new(
            ErrorKind::NotFound,
            format!(
                "clutch gateway has no {method} {path}; model calls go to /v1/messages, /v1/chat/completions, \
                 /v1/responses or /v1beta/models/<model>:generateContent (each also under /p/<profile>)"
            ),
        ),
    )
}

/// The body, or a 413 in the caller's shape when it is larger than allowed.
async fn read_body(gateway: &Gateway, protocol: Protocol, body: Body) -> Result<Bytes, Response> {
    let limit = gateway.max_body;
    let too_large = || {
        error_response(
            protocol,
            &ApiError::new(
                ErrorKind::RequestTooLarge,
                format!(
                    "the request body is larger than the gateway's limit of {limit} bytes (gateway.max_body_bytes)"
                ),
            ),
        )
    };
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(err) => Err(error_response(
            protocol,
            &ApiError::invalid(format!("cannot read the request body: {err}")),
        )),
    }
}

async fn model_call(
    gateway: &Arc<Gateway>,
    protocol: Protocol,
    profile: Option<String>,
    gemini: Option<(String, bool)>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let _in_flight = gateway.stats.begin();
    let body = match read_body(gateway, protocol, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    // Every request is decoded once: it is checked before anything is sent, and routing
    // and translation read the same canonical form.
    let path_model = gemini.as_ref().map(|(m, _)| m.as_str());
    let mut request = match proto::decode_request(protocol, &body, path_model) {
        Ok(request) => request,
        Err(error) => return error_response(protocol, &error),
    };
    if let Some((_, stream)) = &gemini {
        request.stream = *stream;
    }
    let (model, stream) = (request.model.clone(), request.stream);
    if protocol == Protocol::Gemini
        && !stream
        && let Some(answer) = gemini_router_answer(&request)
    {
        return json_response(200, &answer);
    }
    let (profile_name, profile_spec) = match gateway.profiles.get(profile.as_deref()) {
        Ok(found) => found,
        Err(error) => return error_response(protocol, &error),
    };
    let bypass = profile.as_deref().is_some_and(|p| p.ends_with("-bypass"));
    let target = match route::resolve(profile_spec, &model, bypass, &gateway.provider_configs) {
        Ok(target) => target,
        Err(error) => return error_response(protocol, &error),
    };
    let Some(provider) = gateway.providers.get(&target.provider) else {
        return error_response(
            protocol,
            &ApiError::invalid(format!("provider `{}` is not configured", target.provider)),
        );
    };
    let call = Call {
        gateway: gateway.clone(),
        protocol,
        provider: provider.clone(),
        model: target.model.clone(),
        stream,
        timeouts: gateway.timeouts,
    };
    let response = if provider.format == protocol {
        call.forward(body, query, headers).await
    } else {
        call.translate(request).await
    };
    // One line per call at debug; failures at info, so a default log shows what went wrong
    // without costing every request a write.
    let level_info = !response.status().is_success();
    gateway.stats.record(
        &format!("{}|{}", target.provider, target.model),
        response.status().is_success(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    macro_rules! log_call {
        ($level:ident) => {
            tracing::$level!(
                protocol = protocol.name(),
                profile = profile_name,
                requested = %model,
                provider = %target.provider,
                upstream_model = %target.model,
                stream,
                status = response.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "model call"
            )
        };
    }
    if level_info {
        log_call!(info);
    } else {
        log_call!(debug);
    }
    response
}

/// Gemini CLI asks a small model to score each prompt's complexity (a JSON object matching
/// a schema) before the main call. The gateway routes by profile anyway, so it answers that
/// side call itself instead of spending an upstream call on it.
fn gemini_router_answer(request: &ir::Request) -> Option<Value> {
    request
        .json_schema
        .as_ref()?
        .pointer("/properties/complexity_score")?;
    let text = json!({"complexity_reasoning": "clutch routes this request by profile", "complexity_score": 50}).to_string();
    Some(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0},
        "modelVersion": "clutch-router",
    }))
}

/// One model call on its way to one provider.
struct Call {
    gateway: Arc<Gateway>,
    protocol: Protocol,
    provider: Provider,
    model: String,
    stream: bool,
    timeouts: Timeouts,
}

/// Headers a same-protocol client sends that the provider must see too.
fn forwarded_headers(
    protocol: Protocol,
    headers: &HeaderMap,
) -> Vec<(reqwest::header::HeaderName, HeaderValue)> {
    let names: &[&str] = match protocol {
        Protocol::Anthropic => &["anthropic-version", "anthropic-beta"],
        Protocol::Chat | Protocol::Responses => &["openai-beta"],
        Protocol::Gemini => &[],
    };
    names
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .map(|v| (reqwest::header::HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// The body with only its top-level `model` replaced; everything else byte for byte.
fn rewrite_model(body: &[u8], model: &str) -> Result<Bytes, ApiError> {
    let mut map: indexmap::IndexMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!("the request body is not a JSON object: {e}"))
        })?;
    let raw =
        serde_json::value::RawValue::from_string(Value::String(model.to_string()).to_string())
            .expect("a JSON string is valid JSON");
    map.insert("model".to_string(), raw);
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| ApiError::new(ErrorKind::Api, format!("cannot re-encode the request: {e}")))
}

impl Call {
    fn key(&self) -> Option<&str> {
        self.provider.keys.first().map(String::as_str)
    }

    async fn send(
        &self,
        body: Bytes,
        query: Option<&str>,
        passthrough: &[(reqwest::header::HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, ApiError> {
        let url = self
            .provider
            .endpoint(&self.model, self.stream, query)
            .map_err(|e| {
                ApiError::upstream(format!(
                    "provider `{}` has an unusable URL: {e}",
                    self.provider.name
                ))
            })?;
        let headers = self.provider.headers(self.key(), passthrough);
        let response = upstream::send(
            &self.gateway.client,
            &self.provider,
            url,
            headers,
            body,
            self.timeouts,
        )
        .await?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = upstream::retry_after(response.headers());
        let body = tokio::time::timeout(self.timeouts.idle, response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(upstream::status_error(
            &self.provider,
            status,
            retry_after,
            &body,
        ))
    }

    async fn whole_body(&self, response: reqwest::Response) -> Result<Bytes, ApiError> {
        let body = match tokio::time::timeout(self.timeouts.total, response.bytes()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorKind::Timeout,
                    format!(
                        "provider `{}` did not finish its answer in time",
                        self.provider.name
                    ),
                ));
            }
            Ok(Err(err)) => {
                return Err(ApiError {
                    status: 502,
                    kind: ErrorKind::Api,
                    message: format!(
                        "provider `{}` broke off its answer: {err}",
                        self.provider.name
                    ),
                    retry_after: None,
                });
            }
            Ok(Ok(body)) => body,
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(self.empty());
        }
        Ok(body)
    }

    fn empty(&self) -> ApiError {
        ApiError {
            status: 502,
            kind: ErrorKind::Api,
            message: format!(
                "provider `{}` answered 200 with an empty body",
                self.provider.name
            ),
            retry_after: None,
        }
    }

    /// Same protocol: only `model` is rewritten, the answer is forwarded as it comes.
    async fn forward(self, body: Bytes, query: Option<&str>, headers: &HeaderMap) -> Response {
        let protocol = self.protocol;
        let body = if protocol == Protocol::Gemini {
            body
        } else {
            match rewrite_model(&body, &self.model) {
                Ok(body) => body,
                Err(error) => return error_response(protocol, &error),
            }
        };
        let passthrough = forwarded_headers(protocol, headers);
        let anthropic_query = if protocol == Protocol::Anthropic {
            query
        } else {
            None
        };
        let response = match self.send(body, anthropic_query, &passthrough).await {
            Ok(response) => response,
            Err(error) => return error_response(protocol, &error),
        };
        if !self.stream {
            return match self.whole_body(response).await {
                Ok(body) => Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("static parts"),
                Err(error) => error_response(protocol, &error),
            };
        }
        if !is_event_stream(&response) {
            return self.non_stream_answer_to_stream(response, None).await;
        }
        let mut upstream = EventStream::new(response, self.timeouts);
        let mut decoder = proto::stream_decoder(protocol);
        // Commit point: the first event must be a good one.
        let first = match upstream.next(self.timeouts.first_byte).await {
            Err(error) => return error_response(protocol, &error),
            Ok(None) => return error_response(protocol, &self.empty()),
            Ok(Some(event)) => event,
        };
        if let Err(error) = decoder.event(&first) {
            return error_response(protocol, &error);
        }
        stream_response(move |tx| async move {
            if tx.send(Ok(first.raw)).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    next = upstream.next(self.timeouts.idle) => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(event)) => {
                        if let Err(error) = decoder.event(&event) {
                            send_all(&tx, proto::stream_error(protocol, &error)).await;
                            return;
                        }
                        if tx.send(Ok(event.raw)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = decoder.finish();
                        if !decoder.complete() {
                            let error = early_end(&self.provider);
                            send_all(&tx, proto::stream_error(protocol, &error)).await;
                        }
                        return;
                    }
                    Err(error) => {
                        send_all(&tx, proto::stream_error(protocol, &error)).await;
                        return;
                    }
                }
            }
        })
    }

    /// Different protocols: decode to the IR, encode for the provider, and back.
    async fn translate(self, request: ir::Request) -> Response {
        let protocol = self.protocol;
        let upstream_body = proto::encode_request(self.provider.format, &request, &self.model);
        let upstream_body =
            Bytes::from(serde_json::to_vec(&upstream_body).expect("a JSON value serialises"));
        let response = match self.send(upstream_body, None, &[]).await {
            Ok(response) => response,
            Err(error) => return error_response(protocol, &error),
        };
        if !self.stream {
            let body = match self.whole_body(response).await {
                Ok(body) => body,
                Err(error) => return error_response(protocol, &error),
            };
            return match proto::decode_response(self.provider.format, &body) {
                Ok(answer) => {
                    json_response(200, &proto::encode_response(protocol, &answer, &request))
                }
                Err(error) => error_response(protocol, &self.named(error)),
            };
        }
        if !is_event_stream(&response) {
            return self
                .non_stream_answer_to_stream(response, Some(request))
                .await;
        }
        let mut upstream = EventStream::new(response, self.timeouts);
        let mut decoder = proto::stream_decoder(self.provider.format);
        let mut encoder = proto::stream_encoder(protocol, &request);
        // Commit point: read until the upstream has said something that is not an error.
        let mut pending: Vec<StreamEvent> = Vec::new();
        loop {
            match upstream.next(self.timeouts.first_byte).await {
                Err(error) => return error_response(protocol, &error),
                Ok(None) => {
                    pending.extend(decoder.finish());
                    if pending
                        .iter()
                        .all(|e| matches!(e, StreamEvent::Start { .. } | StreamEvent::Usage(_)))
                    {
                        return error_response(protocol, &self.empty());
                    }
                    break;
                }
                Ok(Some(event)) => match decoder.event(&event) {
                    Err(error) => return error_response(protocol, &self.named(error)),
                    Ok(events) => {
                        pending.extend(events);
                        if pending.iter().any(|e| {
                            !matches!(e, StreamEvent::Start { .. } | StreamEvent::Usage(_))
                        }) {
                            break;
                        }
                    }
                },
            }
        }
        stream_response(move |tx| async move {
            for event in &pending {
                if !send_all(&tx, encoder.event(event)).await {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    next = upstream.next(self.timeouts.idle) => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(event)) => match decoder.event(&event) {
                        Ok(events) => {
                            for event in &events {
                                if !send_all(&tx, encoder.event(event)).await {
                                    return;
                                }
                            }
                        }
                        Err(error) => {
                            send_all(&tx, encoder.error(&self.named(error))).await;
                            return;
                        }
                    },
                    Ok(None) => {
                        for event in &decoder.finish() {
                            send_all(&tx, encoder.event(event)).await;
                        }
                        if !decoder.complete() {
                            send_all(&tx, encoder.error(&early_end(&self.provider))).await;
                        }
                        return;
                    }
                    Err(error) => {
                        send_all(&tx, encoder.error(&error)).await;
                        return;
                    }
                }
            }
        })
    }

    /// Prefix an upstream's own error message with the provider's name.
    fn named(&self, mut error: ApiError) -> ApiError {
        if !error.message.starts_with("provider ") {
            error.message = format!("provider `{}`: {}", self.provider.name, error.message);
        }
        if error.status < 400 {
            error.status = 502;
        }
        error
    }

    /// A provider that ignored `stream: true` and answered with one JSON body: its answer is
    /// replayed as a stream, or its error returned.
    async fn non_stream_answer_to_stream(
        self,
        response: reqwest::Response,
        request: Option<ir::Request>,
    ) -> Response {
        let protocol = self.protocol;
        let body = match self.whole_body(response).await {
            Ok(body) => body,
            Err(error) => return error_response(protocol, &error),
        };
        let answer = match proto::decode_response(self.provider.format, &body) {
            Ok(answer) => answer,
            Err(error) => {
                let message = proto::upstream_error_message(&body);
                let error = ApiError {
                    message: format!(
                        "provider `{}` answered a stream request without a stream: {message}",
                        self.provider.name
                    ),
                    ..error
                };
                return error_response(protocol, &self.named(error));
            }
        };
        let request = match request {
            Some(request) => request,
            None => ir::Request {
                model: self.model.clone(),
                stream: true,
                ..Default::default()
            },
        };
        let mut encoder = proto::stream_encoder(protocol, &request);
        let mut frames = Vec::new();
        for event in replay(&answer) {
            frames.extend(encoder.event(&event));
        }
        stream_response(move |tx| async move {
            send_all(&tx, frames).await;
        })
    }
}

/// A complete answer as the stream events that would have produced it.
fn replay(answer: &ir::Response) -> Vec<StreamEvent> {
    let mut events = vec![
        StreamEvent::Start {
            id: answer.id.clone(),
            model: answer.model.clone(),
        },
        StreamEvent::Usage(answer.usage),
    ];
    for (index, part) in answer.parts.iter().enumerate() {
        match part {
            ir::Part::Text { text } => events.push(StreamEvent::TextDelta { text: text.clone() }),
            ir::Part::Thinking { text, signature } => {
                events.push(StreamEvent::ThinkingDelta { text: text.clone() });
                if let Some(signature) = signature {
                    events.push(StreamEvent::ThinkingSignature {
                        signature: signature.clone(),
                    });
                }
            }
            ir::Part::ToolCall(call) => {
                events.push(StreamEvent::ToolCallStart {
                    index,
                    id: call.id.clone(),
                    name: call.name.clone(),
                    kind: call.kind,
                });
                events.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: call.arguments.clone(),
                });
            }
            _ => {}
        }
    }
    events.push(StreamEvent::Stop(answer.stop));
    events
}

fn early_end(provider: &Provider) -> ApiError {
    ApiError {
        status: 502,
        kind: ErrorKind::Api,
        message: format!(
            "provider `{}` ended the stream before the answer was complete",
            provider.name
        ),
        retry_after: None,
    }
}

fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.contains("event-stream"))
}

type Frame = Result<Bytes, std::io::Error>;

/// Send frames in order; false once the client is gone.
async fn send_all(tx: &tokio::sync::mpsc::Sender<Frame>, frames: Vec<Bytes>) -> bool {
    for frame in frames {
        if tx.send(Ok(frame)).await.is_err() {
            return false;
        }
    }
    true
}

/// A streaming response fed by `produce`, which runs as its own task. When the client goes
/// away the channel closes, `produce` stops, and dropping the upstream response cancels it.
fn stream_response<F, Fut>(produce: F) -> Response
where
    F: FnOnce(tokio::sync::mpsc::Sender<Frame>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(32);
    tokio::spawn(produce(tx));
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("static parts")
}

/// SSE events from an upstream response, with the idle and total timeouts applied.
struct EventStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    parser: sse::Parser,
    pending: std::collections::VecDeque<sse::Event>,
    deadline: tokio::time::Instant,
    ended: bool,
}

impl EventStream {
    fn new(response: reqwest::Response, timeouts: Timeouts) -> EventStream {
        EventStream {
            body: response.bytes_stream().boxed(),
            parser: sse::Parser::new(),
            pending: Default::default(),
            deadline: tokio::time::Instant::now() + timeouts.total,
            ended: false,
        }
    }

    /// The next event; `None` when the upstream closed the stream.
    async fn next(&mut self, wait: std::time::Duration) -> Result<Option<sse::Event>, ApiError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let limit = (tokio::time::Instant::now() + wait).min(self.deadline);
            match tokio::time::timeout_at(limit, self.body.next()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorKind::Timeout,
                        format!("the provider sent nothing for {} s", wait.as_secs()),
                    ));
                }
                Ok(None) => {
                    self.ended = true;
                    self.pending.extend(self.parser.finish());
                }
                Ok(Some(Err(err))) => {
                    return Err(ApiError {
                        status: 502,
                        kind: ErrorKind::Api,
                        message: format!("the provider's stream broke: {err}"),
                        retry_after: None,
                    });
                }
                Ok(Some(Ok(chunk))) => match self.parser.push(&chunk) {
                    Ok(events) => self.pending.extend(events),
                    Err(why) => {
                        return Err(ApiError::new(
                            ErrorKind::Api,
                            format!("the provider's stream is malformed: {why}"),
                        ));
                    }
                },
            }
        }
    }
}

/// Anthropic's token counter, estimated locally (about four characters a token) from
/// everything the model would read: system, messages, tool calls and results, tool schemas.
async fn count_tokens(gateway: &Arc<Gateway>, _headers: &HeaderMap, body: Body) -> Response {
    let body = match read_body(gateway, Protocol::Anthropic, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let mut v: Value = match proto::json::parse(&body) {
        Ok(v) => v,
        Err(error) => return error_response(Protocol::Anthropic, &error),
    };
    if v.get("model").is_none() {
        v["model"] = json!("count");
    }
    match proto::anthropic::decode_request(v.to_string().as_bytes()) {
        Ok(request) => json_response(200, &json!({"input_tokens": estimate_tokens(&request)})),
        Err(error) => error_response(Protocol::Anthropic, &error),
    }
}

async fn gemini_count_tokens(gateway: &Arc<Gateway>, body: Body) -> Response {
    let body = match read_body(gateway, Protocol::Gemini, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match proto::gemini::decode_request(&body, "count") {
        Ok(request) => json_response(200, &json!({"totalTokens": estimate_tokens(&request)})),
        Err(error) => error_response(Protocol::Gemini, &error),
    }
}

pub fn estimate_tokens(request: &ir::Request) -> u64 {
    let mut chars: usize = request.system.iter().map(String::len).sum();
    for message in &request.messages {
        for part in &message.parts {
            chars += match part {
                ir::Part::Text { text } | ir::Part::Thinking { text, .. } => text.len(),
                ir::Part::ToolCall(call) => call.name.len() + call.arguments.len(),
                ir::Part::ToolResult(result) => result.text().len(),
                // A typical image costs about 1600 tokens.
                ir::Part::Image { .. } => 6400,
                ir::Part::RedactedThinking { data } => data.len(),
            };
        }
    }
    for tool in &request.tools {
        chars += tool.name.len()
            + tool.description.as_deref().map_or(0, str::len)
            + tool.parameters.to_string().len();
    }
    (chars as u64).div_ceil(4).max(1)
}
