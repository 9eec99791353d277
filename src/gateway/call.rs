//! One attempt at one provider: forward (same protocol, only `model` rewritten) or
//! translate through the IR, up to the commit point. A failure before the first good
//! upstream byte comes back as a classified [`Failure`] so the cascade can try the next key
//! or candidate; after it, failures become protocol-correct error events in the stream.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::Value;

use super::Gateway;
use super::ir::{self, ApiError, ErrorKind, StreamEvent};
use super::proto::{self, Protocol};
use super::server::json_body_response;
use super::sse;
use super::upstream::{self, Provider, Timeouts, UpstreamResponse};

/// How a failed attempt should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 429/529: this model cools on this key; the next key, then the next candidate.
    RateLimited,
    /// The provider says the key or account is spent (insufficient quota, no credits): the
    /// whole key cools; the next key, then the next candidate.
    QuotaExhausted,
    /// 5xx, connection failure, timeout: retry the same candidate, then the next.
    Retryable,
    /// Rejected key, unknown model: the next candidate.
    Skip,
    /// The request does not fit this model's context: the next candidate.
    ContextLength,
    /// A well-formed but useless answer (empty, or no tool call where one was required).
    Soft,
    /// The client's own request is wrong: returned to it, no cascade.
    Client,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub error: ApiError,
    pub class: Class,
}

impl Failure {
    fn new(error: ApiError, class: Class) -> Failure {
        Failure { error, class }
    }

    /// Classify an error by the upstream's HTTP status (None: no answer at all).
    fn from_status(error: ApiError, status: Option<u16>) -> Failure {
        let class = match status {
            None => Class::Retryable,
            Some(429 | 529) => Class::RateLimited,
            Some(401 | 403 | 404) => Class::Skip,
            Some(400 | 413 | 422) if is_context_length(&error.message) => Class::ContextLength,
            Some(s) if s >= 500 => Class::Retryable,
            Some(408) => Class::Retryable,
            Some(_) => Class::Client,
        };
        Failure { error, class }
    }

    /// Classify an error event a stream opened with, or an error a 200 answer carried.
    fn from_event(error: ApiError) -> Failure {
        let class = match error.kind {
            ErrorKind::RateLimit => Class::RateLimited,
            ErrorKind::InvalidRequest if is_context_length(&error.message) => Class::ContextLength,
            ErrorKind::InvalidRequest => Class::Client,
            ErrorKind::Authentication | ErrorKind::Permission | ErrorKind::NotFound => Class::Skip,
            _ => Class::Retryable,
        };
        Failure { error, class }
    }

    /// A 200 whose body could not be read as an answer: a rate limit or a rejected key it
    /// reports is classed as such (never a fault of the model); anything else is the
    /// upstream's fault, retried and counted.
    fn from_answer(error: ApiError) -> Failure {
        let class = match error.kind {
            ErrorKind::RateLimit => Class::RateLimited,
            ErrorKind::Authentication | ErrorKind::Permission | ErrorKind::NotFound => Class::Skip,
            _ => Class::Retryable,
        };
        Failure { error, class }
    }
}

/// The most of an upstream's error body that is read: its message is near the start.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The start of an error body, read for at most `wait`; the rest is dropped with the
/// connection.
async fn error_body(mut body: Incoming, wait: std::time::Duration) -> Bytes {
    let mut out = bytes::BytesMut::new();
    let read = async {
        while out.len() < ERROR_BODY_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = ERROR_BODY_LIMIT - out.len();
                        out.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    out.freeze()
}

fn is_context_length(message: &str) -> bool {
    let m = message.to_lowercase();
    [
        "context length",
        "context_length",
        "maximum context",
        "context window",
        "too many tokens",
        "prompt is too long",
        "reduce the length",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// One model call on its way to one provider.
#[derive(Clone)]
pub struct Call {
    pub gateway: Arc<Gateway>,
    pub protocol: Protocol,
    pub provider: Arc<Provider>,
    pub model: String,
    pub stream: bool,
    pub timeouts: Timeouts,
    /// The index in the provider's keys of the key for this attempt (None: it has none).
    pub key: Option<usize>,
    /// The request's ledger record, which a streamed answer keeps until it ends.
    pub trace: Option<super::usage::record::Trace>,
}

/// Headers a same-protocol client sends that the provider must see too.
fn forwarded_headers(protocol: Protocol, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
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
                .map(|v| (HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// The body with only its top-level `model` replaced; everything else byte for byte.
fn rewrite_model(body: &[u8], model: &str, span: &ir::ModelSpan) -> Result<Bytes, ApiError> {
    let new_value = Value::String(model.to_string()).to_string();
    // Usually one plain `"model"` key: its value is replaced where it stands, with no copy
    // of the rest taken apart and written again. The decoder has most often found it already.
    let found = match &span.0 {
        Some(range) if range.end <= body.len() => Some(range.clone()),
        _ => match serde_json::from_slice::<TopLevelModel>(body) {
            Ok(TopLevelModel(Some(value))) => ir::ModelSpan::of(body, value).0,
            _ => None,
        },
    };
    if let Some(std::ops::Range { start, end }) = found {
        let mut out = Vec::with_capacity(body.len() + new_value.len());
        out.extend_from_slice(&body[..start]);
        out.extend_from_slice(new_value.as_bytes());
        out.extend_from_slice(&body[end..]);
        return Ok(Bytes::from(out));
    }
    let mut map: indexmap::IndexMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!("the request body is not a JSON object: {e}"))
        })?;
    let raw =
        serde_json::value::RawValue::from_string(new_value).expect("a JSON string is valid JSON");
    map.insert("model".to_string(), raw);
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| ApiError::new(ErrorKind::Api, format!("cannot re-encode the request: {e}")))
}

/// Where a JSON object's one top-level `model` value lies, read without copying anything.
/// `None` inside when there is no such key or more than one: the body is then re-encoded.
struct TopLevelModel<'a>(Option<&'a serde_json::value::RawValue>);

impl<'de> serde::Deserialize<'de> for TopLevelModel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevelModel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut found = None;
                let mut models = 0;
                // A key written with escapes cannot be borrowed: an error, so the caller
                // takes the general path.
                while let Some(key) = map.next_key::<&'de str>()? {
                    if key == "model" {
                        models += 1;
                        found = Some(map.next_value::<&'de serde_json::value::RawValue>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(TopLevelModel(if models == 1 { found } else { None }))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Call {
    async fn send(
        &self,
        body: Bytes,
        query: Option<&str>,
        passthrough: &[(HeaderName, HeaderValue)],
    ) -> Result<UpstreamResponse, Failure> {
        let url = self
            .provider
            .endpoint(&self.model, self.stream, query)
            .map_err(|e| {
                Failure::new(
                    ApiError::upstream(format!(
                        "provider `{}` has an unusable URL: {e}",
                        self.provider.name
                    )),
                    Class::Skip,
                )
            })?;
        let headers = self.provider.headers(self.key, passthrough);
        let response = upstream::send(
            &self.gateway.client,
            &self.provider,
            url,
            headers,
            body,
            self.timeouts,
        )
        .await
        .map_err(|e| Failure::from_status(e, None))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = upstream::retry_after(response.headers());
        let body = error_body(response.into_body(), self.timeouts.idle).await;
        let mut failure = Failure::from_status(
            upstream::status_error(&self.provider, status, retry_after, &body),
            Some(status),
        );
        if matches!(status, 402 | 429) && super::ratelimit::says_exhausted(status, &body) {
            failure.class = Class::QuotaExhausted;
        }
        Err(failure)
    }

    async fn whole_body(&self, response: UpstreamResponse) -> Result<Bytes, Failure> {
        let limit = self.gateway.routing.load().max_answer;
        let body = http_body_util::Limited::new(response.into_body(), limit);
        let body = match tokio::time::timeout(self.timeouts.total, body.collect()).await {
            Ok(Err(err))
                if err
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                // A fault of this model's provider, not worth a retry.
                return Err(Failure::new(
                    ApiError::upstream(format!(
                        "provider `{}` sent an answer larger than {limit} bytes (gateway.max_answer_bytes)",
                        self.provider.name
                    )),
                    Class::Skip,
                ));
            }
            Err(_) => {
                return Err(Failure::new(
                    ApiError::new(
                        ErrorKind::Timeout,
                        format!(
                            "provider `{}` did not finish its answer in time",
                            self.provider.name
                        ),
                    ),
                    Class::Retryable,
                ));
            }
            Ok(Err(err)) => {
                return Err(Failure::new(
                    ApiError {
                        status: 502,
                        kind: ErrorKind::Api,
                        message: format!(
                            "provider `{}` broke off its answer: {err}",
                            self.provider.name
                        ),
                        retry_after: None,
                    },
                    Class::Retryable,
                ));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(Failure::new(self.empty(), Class::Soft));
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
    /// `model_span`: where the decoder found `model` in `body`, if it did.
    pub async fn forward(
        self,
        body: Bytes,
        model_span: &ir::ModelSpan,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Response, Failure> {
        let protocol = self.protocol;
        let body = if protocol == Protocol::Gemini {
            body
        } else {
            match rewrite_model(&body, &self.model, model_span) {
                Ok(body) => body,
                Err(error) => return Err(Failure::new(error, Class::Client)),
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
            Err(failure) => return Err(failure),
        };
        if !self.stream {
            let body = self.whole_body(response).await?;
            // Forwarded, but read first: a 200 that is not the protocol's answer (an HTML
            // page, an error object) is the upstream's fault, never a 200 to the client.
            match proto::decode_response(protocol, &body) {
                Ok(answer) => self.record_usage(&answer.usage),
                Err(error) => return Err(Failure::from_answer(self.named(error))),
            }
            self.captured(&body);
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("static parts"));
        }
        if !is_event_stream(&response) {
            return self.non_stream_answer_to_stream(response, None).await;
        }
        let mut upstream = EventStream::new(response, self.timeouts);
        let mut decoder = proto::stream_decoder(protocol);
        // Commit point: the first event must be a good one.
        let first = match upstream.next(self.timeouts.first_byte).await {
            Err(error) => return Err(Failure::new(error, Class::Retryable)),
            Ok(None) => return Err(Failure::new(self.empty(), Class::Soft)),
            Ok(Some(event)) => event,
        };
        let mut usage = ir::Usage::default();
        match decoder.event(&first) {
            Err(error) => return Err(Failure::from_event(self.scrubbed(error))),
            Ok(events) => track_usage(&mut usage, &events),
        }
        Ok(Relay {
            head: first.raw.to_vec(),
            call: self,
            upstream,
            decoder,
            encoder: None,
            usage,
            done: false,
            emitted_bytes: 0,
        }
        .into_response())
    }

    /// Different protocols: decode to the IR, encode for the provider, and back.
    /// `large`: the client's body was large enough that encoding goes off the event loop.
    pub async fn translate(
        self,
        shared: &Arc<ir::Request>,
        large: bool,
    ) -> Result<Response, Failure> {
        let protocol = self.protocol;
        let request: &ir::Request = shared;
        let upstream_body = if large {
            // As with decoding: a large request is encoded off the event loop.
            let (shared, format, model) =
                (shared.clone(), self.provider.format, self.model.clone());
            tokio::task::spawn_blocking(move || {
                proto::encode_request_bytes(format, &shared, &model)
            })
            .await
            .map(Bytes::from)
            .map_err(|_| {
                Failure::new(
                    ApiError::new(ErrorKind::Api, "the request encoder failed"),
                    Class::Retryable,
                )
            })?
        } else {
            Bytes::from(proto::encode_request_bytes(
                self.provider.format,
                request,
                &self.model,
            ))
        };
        let response = match self.send(upstream_body, None, &[]).await {
            Ok(response) => response,
            Err(failure) => return Err(failure),
        };
        if !self.stream {
            let body = self.whole_body(response).await?;
            let answer = proto::decode_response(self.provider.format, &body)
                .map_err(|error| Failure::from_answer(self.named(error)))?;
            self.record_usage(&answer.usage);
            if let Some(why) = soft_failure(request, &answer) {
                return Err(Failure::new(
                    ApiError::upstream(format!("provider `{}` {why}", self.provider.name)),
                    Class::Soft,
                ));
            }
            let encoded = proto::encode_response_bytes(protocol, &answer, request);
            self.captured(&encoded);
            return Ok(json_body_response(encoded));
        }
        if !is_event_stream(&response) {
            return self
                .non_stream_answer_to_stream(response, Some(request.clone()))
                .await;
        }
        let mut upstream = EventStream::new(response, self.timeouts);
        let mut decoder = proto::stream_decoder(self.provider.format);
        let mut encoder = proto::stream_encoder(protocol, request);
        // Commit point: read until the upstream has said something that is not an error.
        let mut pending: Vec<StreamEvent> = Vec::new();
        loop {
            match upstream.next(self.timeouts.first_byte).await {
                Err(error) => return Err(Failure::new(error, Class::Retryable)),
                Ok(None) => {
                    pending.extend(decoder.finish());
                    if pending
                        .iter()
                        .all(|e| matches!(e, StreamEvent::Start { .. } | StreamEvent::Usage(_)))
                    {
                        return Err(Failure::new(self.empty(), Class::Soft));
                    }
                    break;
                }
                Ok(Some(event)) => match decoder.event(&event) {
                    Err(error) => return Err(Failure::from_event(self.named(error))),
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
        let mut usage = ir::Usage::default();
        track_usage(&mut usage, &pending);
        let mut head = Vec::new();
        for event in &pending {
            encoder.event(event, &mut head);
        }
        Ok(Relay {
            head,
            call: self,
            upstream,
            decoder,
            encoder: Some(encoder),
            usage,
            done: false,
            emitted_bytes: 0,
        }
        .into_response())
    }

    /// Keep what the client is sent with the request's record, when bodies are captured.
    fn captured(&self, bytes: &[u8]) {
        if let Some(trace) = &self.trace
            && trace.captures()
        {
            trace.capture_response(bytes);
        }
    }

    /// Count a completed answer against today's budgets and in the request's record.
    fn record_usage(&self, usage: &ir::Usage) {
        if let Some(trace) = &self.trace {
            trace.usage(usage, false);
        }
        let routing = self.gateway.routing.load();
        self.gateway.ledger.record(
            &self.provider.name,
            &self.model,
            usage,
            &routing.provider_configs,
        );
    }

    /// An upstream's own error without secrets, for a client of the same protocol.
    fn scrubbed(&self, mut error: ApiError) -> ApiError {
        error.message = self.provider.scrub(&error.message);
        error
    }

    /// Prefix an upstream's own error message (scrubbed) with the provider's name.
    fn named(&self, mut error: ApiError) -> ApiError {
        error.message = self.provider.scrub(&error.message);
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
        response: UpstreamResponse,
        request: Option<ir::Request>,
    ) -> Result<Response, Failure> {
        let protocol = self.protocol;
        let body = self.whole_body(response).await?;
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
                return Err(Failure::from_answer(self.named(error)));
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
        let mut body = Vec::new();
        for event in replay(&answer) {
            encoder.event(&event, &mut body);
        }
        self.captured(&body);
        Ok(event_stream_response(Body::from(body)))
    }
}

fn track_usage(usage: &mut ir::Usage, events: &[StreamEvent]) {
    for event in events {
        if let StreamEvent::Usage(u) = event {
            usage.merge(u);
        }
    }
}

/// Why an answer that parsed is still no answer: nothing in it, or no tool call where the
/// request required one.
fn soft_failure(request: &ir::Request, answer: &ir::Response) -> Option<&'static str> {
    if answer.parts.is_empty() {
        return Some("answered with nothing");
    }
    let called = answer
        .parts
        .iter()
        .any(|p| matches!(p, ir::Part::ToolCall(_)));
    if request.tool_choice == Some(ir::ToolChoice::Required) && !called {
        return Some("made no tool call although the request required one");
    }
    None
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
            ir::Part::Text { text } => events.push(StreamEvent::TextDelta {
                text: text.to_string(),
            }),
            ir::Part::Thinking { text, signature } => {
                events.push(StreamEvent::ThinkingDelta {
                    text: text.to_string(),
                });
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

fn is_event_stream(response: &UpstreamResponse) -> bool {
    response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.contains("event-stream"))
}

fn event_stream_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .expect("static parts")
}

/// The client's side of a committed stream. Each piece it hands out is everything one
/// upstream read produced, translated (or, for the same protocol, forwarded as received),
/// so a burst of upstream events becomes one write. The body is pulled by the server as
/// the client reads; when the client goes away the body is dropped, and with it the
/// upstream response, which cancels the upstream request.
struct Relay {
    /// What was read before the commit point, ready to go out first.
    head: Vec<u8>,
    call: Call,
    upstream: EventStream,
    decoder: Box<dyn proto::StreamDecoder>,
    /// None: the client speaks the upstream's protocol and gets its events as they came.
    encoder: Option<Box<dyn proto::StreamEncoder>>,
    usage: ir::Usage,
    done: bool,
    /// Bytes of answer text sent, for an estimate when the upstream never says.
    emitted_bytes: u64,
}

impl Relay {
    fn into_response(self) -> Response {
        let stream = futures_util::stream::unfold(self, |mut relay| async move {
            let chunk = relay.next_chunk().await?;
            Some((Ok::<_, std::io::Error>(chunk), relay))
        });
        event_stream_response(Body::from_stream(stream))
    }

    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut out = std::mem::take(&mut self.head);
        // An event translates to a few hundred bytes; a burst of them to a few kilobytes.
        out.reserve(1024);
        loop {
            while !self.done
                && let Some(event) = self.upstream.ready()
            {
                self.pass(&event, &mut out);
            }
            if !self.done && self.decoder.finished() {
                // The answer is whole: the client's stream ends now, not whenever the
                // upstream gets round to closing its body.
                self.upstream
                    .release(DRAIN_LIMIT.min(self.call.timeouts.idle));
                self.end(&mut out);
            }
            if !out.is_empty() || self.done {
                break;
            }
            match self.upstream.next(self.call.timeouts.idle).await {
                Ok(Some(event)) => self.pass(&event, &mut out),
                Ok(None) => self.end(&mut out),
                Err(error) => self.fail(&error, &mut out),
            }
        }
        self.call.captured(&out);
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn pass(&mut self, event: &sse::Event, out: &mut Vec<u8>) {
        match self.decoder.event(event) {
            Ok(events) => {
                track_usage(&mut self.usage, &events);
                if self.call.trace.is_some() {
                    self.emitted_bytes += answer_bytes(&events);
                }
                match &mut self.encoder {
                    Some(encoder) => {
                        for event in &events {
                            encoder.event(event, out);
                        }
                    }
                    None => out.extend_from_slice(&event.raw),
                }
            }
            // An error the upstream reported in its stream.
            Err(error) => {
                let error = match self.encoder {
                    Some(_) => self.call.named(error),
                    None => self.call.scrubbed(error),
                };
                self.fail(&error, out);
            }
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.call.record_usage(&self.usage);
        if let Some(trace) = &self.call.trace {
            trace.ended("ok");
        }
        let owed = self.decoder.finish();
        if let Some(encoder) = &mut self.encoder {
            for event in &owed {
                encoder.event(event, out);
            }
        }
        if self.decoder.complete() {
            self.done = true;
        } else {
            self.fail(&early_end(&self.call.provider), out);
        }
    }

    fn fail(&mut self, error: &ApiError, out: &mut Vec<u8>) {
        self.note_partial("upstream_cut");
        match &mut self.encoder {
            Some(encoder) => encoder.error(error, out),
            None => proto::stream_error(self.call.protocol, error, out),
        }
        self.done = true;
    }

    /// What a stream that did not end well used: the upstream's counts so far (its final
    /// ones never came, so the row is marked estimated), with the answer at least as long as
    /// what was sent of it (four bytes a token).
    fn note_partial(&self, outcome: &str) {
        let Some(trace) = &self.call.trace else {
            return;
        };
        let mut usage = self.usage;
        usage.output_tokens = usage.output_tokens.max(self.emitted_bytes.div_ceil(4));
        if usage.input_tokens > 0 || usage.output_tokens > 0 {
            trace.usage(&usage, true);
        }
        trace.ended(outcome);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The client hung up before the answer ended.
        if !self.done {
            self.note_partial("client_closed");
        }
    }
}

/// Bytes of text, thinking and tool arguments in `events`.
fn answer_bytes(events: &[StreamEvent]) -> u64 {
    events
        .iter()
        .map(|event| match event {
            StreamEvent::TextDelta { text } | StreamEvent::ThinkingDelta { text } => text.len(),
            StreamEvent::ToolCallDelta { arguments, .. } => arguments.len(),
            _ => 0,
        } as u64)
        .sum()
}

/// How long a released upstream body may stay open after its closing event (at most the
/// idle timeout, which is what a stall mid-answer is allowed).
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// SSE events from an upstream response, with the idle and total timeouts applied.
struct EventStream {
    /// Taken when the stream is released before its end.
    body: Option<Incoming>,
    parser: sse::Parser,
    pending: std::collections::VecDeque<sse::Event>,
    deadline: tokio::time::Instant,
    ended: bool,
}

impl EventStream {
    fn new(response: UpstreamResponse, timeouts: Timeouts) -> EventStream {
        EventStream {
            body: Some(response.into_body()),
            parser: sse::Parser::new(),
            pending: Default::default(),
            deadline: tokio::time::Instant::now() + timeouts.total,
            ended: false,
        }
    }

    /// An event already read and parsed, if there is one; never waits.
    fn ready(&mut self) -> Option<sse::Event> {
        self.pending.pop_front()
    }

    /// The answer is complete; whatever the upstream still sends is read and dropped in the
    /// background, so its connection goes back to the pool. An upstream that keeps the body
    /// open past `limit` loses the connection instead.
    fn release(&mut self, limit: std::time::Duration) {
        self.ended = true;
        self.pending.clear();
        let Some(mut body) = self.body.take() else {
            return;
        };
        // Usually the body's end came in the same read as the closing event.
        loop {
            match body.frame().now_or_never() {
                Some(Some(Ok(_))) => continue,
                Some(None | Some(Err(_))) => return,
                None => break,
            }
        }
        tokio::spawn(async move {
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(limit, drain).await;
        });
    }

    /// The next event; `None` when the upstream closed the stream.
    async fn next(&mut self, wait: std::time::Duration) -> Result<Option<sse::Event>, ApiError> {
        // One limit for the whole wait: bytes that make no event (keep-alive comments, a
        // drip of a line) do not extend it.
        let limit = (tokio::time::Instant::now() + wait).min(self.deadline);
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match tokio::time::timeout_at(limit, body.frame()).await {
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
                Ok(Some(Ok(frame))) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers carry no events
                    };
                    match self.parser.push(&chunk) {
                        Ok(events) => self.pending.extend(events),
                        Err(why) => {
                            return Err(ApiError::new(
                                ErrorKind::Api,
                                format!("the provider's stream is malformed: {why}"),
                            ));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite_model;
    use crate::gateway::ir::ModelSpan;
    use serde_json::{Value, json};

    fn rewrite(body: &[u8], model: &str) -> Result<bytes::Bytes, crate::gateway::ir::ApiError> {
        rewrite_model(body, model, &ModelSpan::default())
    }

    fn model_of(body: &[u8]) -> Value {
        serde_json::from_slice::<Value>(body).unwrap()["model"].clone()
    }

    #[test]
    fn only_the_model_value_changes_and_every_other_byte_stays() {
        let body = br#"{ "stream":true,  "model" : "claude-x", "messages":[{"content":"a\"b","model":"inner"}] }"#;
        let out = rewrite(body, "up\"stream").unwrap();
        let expected = br#"{ "stream":true,  "model" : "up\"stream", "messages":[{"content":"a\"b","model":"inner"}] }"#;
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn the_span_the_decoder_found_is_what_gets_replaced() {
        let body = br#"{"model":"a\"b","x":1}"#;
        let span = ModelSpan(Some(9..15));
        assert_eq!(&body[9..15], br#""a\"b""#);
        let out = rewrite_model(body, "m", &span).unwrap();
        assert_eq!(&out[..], br#"{"model":"m","x":1}"#);
    }

    #[test]
    fn an_escaped_duplicate_or_missing_model_key_still_ends_with_one_model() {
        for body in [
            r#"{"mod\u0065l": "x", "a": 1}"#,
            r#"{"model": "x", "a": 1, "model": "y"}"#,
            r#"{"a": 1}"#,
        ] {
            let out = rewrite(body.as_bytes(), "m").unwrap();
            assert_eq!(model_of(&out), json!("m"), "{body}");
            assert_eq!(
                serde_json::from_slice::<Value>(&out).unwrap()["a"],
                json!(1)
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for body in ["[1]", "\"model\"", "{\"model\": \"x\"", ""] {
            assert!(rewrite(body.as_bytes(), "m").is_err(), "{body}");
        }
    }
}
