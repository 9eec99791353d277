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
use futures_util::FutureExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::Gateway;
use super::admin;
use super::admission::Held;
use super::breaker;
use super::call::{Call, Class};
use super::ir::{self, ApiError, ErrorKind};
use super::proto::{self, Protocol};
use super::ratelimit;
use super::route;
use super::usage::{self, record::Attempt, record::Trace};

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

pub fn json_response(status: u16, value: &Value) -> Response {
    let mut response =
        json_body_response(serde_json::to_vec(value).expect("a JSON value serialises"));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
}

/// A 200 with a body that is already JSON.
pub fn json_body_response(body: Vec<u8>) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body))
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
    if let Err(error) = admin::boundary::check(&headers, &gateway.routing.load().own_hosts) {
        drain(&gateway, body).await;
        return error_response(protocol, &error);
    }
    if admin::is_admin(rest) {
        let body = admin_body(&gateway, body).await;
        if admin::presents_token(&gateway, &headers)
            && let Some(response) =
                admin::usage_api::handle(&gateway, &method, rest, uri.query()).await
        {
            return response;
        }
        return admin::handle(&gateway, &method, rest, &headers, &body)
            .unwrap_or_else(|| not_found(Protocol::Chat, &method, rest));
    }
    let rest = rest.to_string();
    let profile = profile.map(str::to_string);
    match (&method, rest.as_str()) {
        (&Method::GET | &Method::HEAD, "/health" | "/") => json_response(200, &gateway.health()),
        (&Method::GET, "/dashboard") => admin::dashboard::respond(&gateway, uri.query(), &headers),
        (&Method::GET, "/metrics") => Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .body(Body::from(gateway.metrics.render(&gateway)))
            .expect("static parts"),
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
                Some((_, "countTokens")) => gemini_count_tokens(&gateway, &headers, body).await,
                _ => {
                    drain(&gateway, body).await;
                    not_found(Protocol::Gemini, &method, &rest)
                }
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
        _ => {
            drain(&gateway, body).await;
            not_found(protocol, &method, &rest)
        }
    }
}

/// An admin request's body: small JSON at most, so the first 64 KB; the rest is drained.
async fn admin_body(gateway: &Gateway, mut body: Body) -> Vec<u8> {
    const MAX: usize = 64 * 1024;
    let gap = gateway.routing.load().header_read_timeout;
    let mut held = Vec::new();
    while held.len() <= MAX {
        match tokio::time::timeout(gap, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    held.extend_from_slice(data);
                }
            }
            _ => return held,
        }
    }
    drain(gateway, body).await;
    held.clear();
    held
}

/// Reads an unwanted body to its end and drops it (up to the size limit, within the header
/// timeout for each gap), so the connection stays reusable: a client that pools connections
/// must not find this one closed under it. A body that stalls is abandoned.
async fn drain(gateway: &Gateway, mut body: Body) {
    let (limit, gap) = {
        let routing = gateway.routing.load();
        (routing.max_body, routing.header_read_timeout)
    };
    let mut seen = 0usize;
    while seen <= limit {
        match tokio::time::timeout(gap, body.frame()).await {
            Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
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

/// The body, or an error in the caller's shape: 413 when it is larger than allowed, 503 when
/// the gateway already holds its limit of body bytes, 408 when it stops arriving (a declared
/// length that never comes). The bytes stay counted in `held` until it is dropped.
async fn read_body(
    gateway: &Gateway,
    protocol: Protocol,
    mut body: Body,
    held: &mut Held,
) -> Result<Bytes, Response> {
    let (limit, gap) = {
        let routing = gateway.routing.load();
        (routing.max_body, routing.header_read_timeout)
    };
    let closing = |error: ApiError| {
        let mut response = error_response(protocol, &error);
        // The rest of the body is never read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        response
    };
    let deadline = tokio::time::Instant::now() + BODY_DEADLINE;
    let declared = axum::body::HttpBody::size_hint(&body)
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= limit);
    // One frame is kept as it came; more are copied as they arrive into one buffer (sized
    // from Content-Length when there is one), not joined in one large copy at the end.
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut size = 0usize;
    loop {
        // Usually the frame is already here: no timer for it then.
        let next = match body.frame().now_or_never() {
            Some(frame) => Ok(frame),
            None => {
                let wait = (tokio::time::Instant::now() + gap).min(deadline);
                tokio::time::timeout_at(wait, body.frame()).await
            }
        };
        let frame = match next {
            Err(_) => {
                return Err(closing(ApiError {
                    status: 408,
                    kind: ErrorKind::Timeout,
                    message: format!(
                        "the request body stopped arriving after {size} bytes (nothing for {} s, or more than {} s in all)",
                        gap.as_secs(),
                        BODY_DEADLINE.as_secs()
                    ),
                    retry_after: None,
                }));
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                return Err(error_response(
                    protocol,
                    &ApiError::invalid(format!("cannot read the request body: {err}")),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len();
        if size > limit {
            return Err(closing(ApiError::new(
                ErrorKind::RequestTooLarge,
                format!(
                    "the request body is larger than the gateway's limit of {limit} bytes (gateway.max_body_bytes)"
                ),
            )));
        }
        if let Err(error) = gateway.admission.hold(held, data.len()) {
            return Err(closing(error));
        }
        match (&mut joined, first.take()) {
            (Some(whole), _) => whole.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(earlier)) => {
                let mut whole =
                    bytes::BytesMut::with_capacity(declared.unwrap_or(size * 2).max(size));
                whole.extend_from_slice(&earlier);
                whole.extend_from_slice(&data);
                joined = Some(whole);
            }
        }
    }
    Ok(match joined {
        Some(whole) => whole.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// Request bodies larger than this are decoded and encoded on the blocking pool.
pub const OFF_THREAD_BYTES: usize = 1024 * 1024;

/// The longest a request body may take to arrive in all.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

async fn model_call(
    gateway: &Arc<Gateway>,
    protocol: Protocol,
    profile: Option<String>,
    gemini: Option<(String, bool)>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(ledger) = &gateway.usage else {
        return traced_call(
            gateway, protocol, profile, gemini, query, headers, body, None,
        )
        .await;
    };
    let trace = start_trace(gateway, ledger, protocol, profile.as_deref(), headers);
    let mut response = traced_call(
        gateway,
        protocol,
        profile,
        gemini,
        query,
        headers,
        body,
        Some(&trace),
    )
    .await;
    let status = response.status().as_u16();
    trace.answered(
        status,
        (status >= 400).then(|| usage_error_kind(ErrorKind::from_status(status))),
    );
    if let Ok(id) = axum::http::HeaderValue::from_str(&trace.id()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    response
}

/// The header that carries a request's ledger id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-clutch-request-id";

fn usage_error_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::Authentication => "authentication",
        ErrorKind::Permission => "permission",
        ErrorKind::NotFound => "not_found",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Api => "upstream",
    }
}

/// The ledger record of a model call, priced when it is handed over: the cost on the model
/// that answered, and on the premium baseline (the configured one, else the model asked for).
fn start_trace(
    gateway: &Arc<Gateway>,
    ledger: &super::usage::Ledger,
    protocol: Protocol,
    profile: Option<&str>,
    headers: &HeaderMap,
) -> Trace {
    let session = ["x-claude-code-session-id", "session_id", "x-session-id"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .filter(|v| v.len() <= 128 && crate::config::is_plain_value(v))
        .map(str::to_string);
    let record = usage::record::Record {
        id: ledger.new_id(),
        ts_ms: usage::now_ms(),
        agent: profile.map(|p| p.trim_end_matches("-bypass").to_string()),
        profile: profile.map(str::to_string),
        session,
        protocol: protocol.name().to_string(),
        ..Default::default()
    };
    let routing = gateway.routing.load_full();
    let capture = routing.capture;
    ledger.trace(
        record,
        // Run by the ledger's writer thread, not here.
        Box::new(move |record: &mut usage::record::Record| {
            if record.request_body.is_some() || record.response_body.is_some() {
                // Captured bodies lose every configured key and anything shaped like one.
                let keys: Vec<String> = routing
                    .providers
                    .values()
                    .flat_map(|p| p.keys.iter().cloned())
                    .chain(routing.token.clone())
                    .collect();
                for body in [&mut record.request_body, &mut record.response_body]
                    .into_iter()
                    .flatten()
                {
                    *body = super::secrets::scrub(body, &keys);
                }
            }
            if record.provider.is_none() {
                // Nothing answered: the prompt's estimate was never used.
                record.input_tokens = 0;
                record.estimated = false;
            }
            let usage = record.usage();
            record.cost_usd = match (&record.provider, &record.model) {
                (Some(provider), Some(model)) => routing
                    .provider_configs
                    .get(provider)
                    .and_then(|config| {
                        usage::prices::rates(
                            provider,
                            config,
                            model,
                            usage.input_tokens,
                            record.ts_ms,
                        )
                    })
                    .map(|rates| rates.cost(&usage)),
                // Nothing answered: nothing was used.
                _ => Some(0.0),
            };
            let premium = routing
                .premium_model
                .as_deref()
                .or(record.requested_model.as_deref());
            record.premium_cost_usd = premium
                .and_then(|m| usage::prices::premium_rates(m, usage.input_tokens, record.ts_ms))
                .map(|rates| rates.cost(&usage));
            record.saved_usd = match (record.premium_cost_usd, record.cost_usd) {
                (Some(premium), Some(cost)) => Some(premium - cost),
                _ => None,
            };
        }),
        capture,
    )
}

#[allow(clippy::too_many_arguments)]
async fn traced_call(
    gateway: &Arc<Gateway>,
    protocol: Protocol,
    profile: Option<String>,
    gemini: Option<(String, bool)>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    trace: Option<&Trace>,
) -> Response {
    let started = Instant::now();
    if let Err(error) = admin::boundary::check_json(headers) {
        drain(gateway, body).await;
        return error_response(protocol, &error);
    }
    let mut held = match gateway.admission.enter() {
        Ok(held) => held,
        Err(error) => {
            drain(gateway, body).await;
            return error_response(protocol, &error);
        }
    };
    let _in_flight = gateway.stats.begin();
    let body = match read_body(gateway, protocol, body, &mut held).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Some(trace) = trace {
        trace.capture_request(&body);
    }
    let routing = gateway.routing.load_full();
    let (profile_name, profile_spec) = match routing.profiles.get(profile.as_deref()) {
        Ok(found) => found,
        Err(error) => return error_response(protocol, &error),
    };
    // Every request is decoded once: it is checked before anything is sent, and routing and
    // translation read the same canonical form. Its tool results are then condensed (a
    // pure function of each output, so the prompt cache still hits).
    let compress = routing
        .compress
        .settings_for(profile.as_deref(), profile_spec.compress.as_ref());
    let path_model = gemini.as_ref().map(|(m, _)| m.as_str());
    let (body, decoded, compressed) = if body.len() > OFF_THREAD_BYTES {
        // A large body takes tens of milliseconds to decode: off the event loop, so other
        // clients (and `/health`) are not kept waiting behind it.
        let (gateway, routing) = (gateway.clone(), routing.clone());
        let path_model = path_model.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            prepare(
                &gateway,
                &routing,
                protocol,
                body,
                path_model.as_deref(),
                compress.as_ref(),
            )
        })
        .await
        .unwrap_or_else(|_| {
            let failed = ApiError::new(ErrorKind::Api, "the request decoder failed");
            (Bytes::new(), Err(failed), 0)
        })
    } else {
        prepare(
            gateway,
            &routing,
            protocol,
            body,
            path_model,
            compress.as_ref(),
        )
    };
    let mut request = match decoded {
        Ok(request) => request,
        Err(error) => return error_response(protocol, &error),
    };
    if let Some(trace) = trace
        && compressed > 0
    {
        trace.compressed(compressed);
    }
    if let Some((_, stream)) = &gemini {
        request.stream = *stream;
    }
    let (model, stream) = (request.model.clone(), request.stream);
    if let Some(trace) = trace {
        trace.requested(&model, stream, request.estimate_tokens());
    }
    if protocol == Protocol::Gemini
        && !stream
        && let Some(answer) = gemini_router_answer(&request)
    {
        return json_response(200, &answer);
    }
    let estimate = request.estimate_tokens();
    if let Err(error) = routing.limits.admit(estimate, &gateway.ledger) {
        return error_response(protocol, &error);
    }
    let bypass = profile.as_deref().is_some_and(|p| p.ends_with("-bypass"));
    let scan_snapshot = gateway.scan.get();
    let scan_refused = match &scan_snapshot {
        Some(_) => None,
        None => gateway.scan.refused(),
    };
    let plan = match route::plan(
        profile_spec,
        &request,
        estimate,
        bypass,
        &routing.provider_configs,
        route::Ranked {
            snapshot: scan_snapshot.as_deref(),
            blocklist: &routing.blocklist,
            missing: scan_refused.as_deref().map(String::as_str),
        },
    ) {
        Ok(plan) => plan,
        Err(error) => return error_response(protocol, &error),
    };
    if let Some(trace) = trace {
        trace.set_route(plan.tier.as_deref(), plan.scene.map(route::Scene::name));
    }
    let request = Arc::new(request);
    let large = body.len() > OFF_THREAD_BYTES;
    let (response, served_by) = cascade(
        gateway,
        &routing,
        protocol,
        stream,
        &plan,
        &request,
        body.clone(),
        query,
        headers,
        trace,
    )
    .await;
    if large {
        // Freeing tens of megabytes is not free either: not on the event loop.
        tokio::task::spawn_blocking(move || drop((request, body)));
    }
    let ok = response.status().is_success();
    gateway.stats.record(
        served_by.as_deref().unwrap_or("none"),
        ok,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    // One line per call at debug; failures at info, so a default log shows what went wrong
    // without costing every request a write.
    macro_rules! log_call {
        ($level:ident) => {
            tracing::$level!(
                protocol = protocol.name(),
                profile = profile_name,
                requested = %model,
                scene = plan.scene.map_or("-", route::Scene::name),
                served_by = served_by.as_deref().unwrap_or("-"),
                stream,
                status = response.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "model call"
            )
        };
    }
    if ok {
        log_call!(debug);
    } else {
        log_call!(info);
    }
    response
}

/// The body as it goes upstream (tool results condensed when `compress` says so), its
/// decoded form, and the tokens compression saved.
fn prepare(
    gateway: &Gateway,
    routing: &super::Routing,
    protocol: Protocol,
    body: Bytes,
    path_model: Option<&str>,
    compress: Option<&super::compress::Settings>,
) -> (Bytes, Result<ir::Request, ApiError>, u64) {
    let mut request = match proto::decode_request(protocol, &body, path_model) {
        Ok(request) => request,
        Err(error) => return (body, Err(error), 0),
    };
    let rewritten = compress.and_then(|settings| {
        gateway
            .compressor
            .rewrite(&body, &mut request, settings, &routing.secret_values)
    });
    match rewritten {
        Some(rewritten) => (
            Bytes::from(rewritten.body),
            Ok(request),
            rewritten.tokens_saved,
        ),
        None => (body, Ok(request), 0),
    }
}

/// Try the plan's candidates in order until one commits: skip open breakers, rotate keys on
/// rate limits, retry transient faults a bounded number of times, and return a client error
/// at once. A rate limit cools only what it names (see [`super::ratelimit`]); when nothing is
/// left but cooling candidates, the request waits for the soonest one if that is within
/// `gateway.rate_limit_wait_secs` and the overall deadline, and is otherwise answered as a
/// rate limit with that candidate's `Retry-After`. When every candidate fails, one error
/// lists each attempt and why.
#[allow(clippy::too_many_arguments)]
async fn cascade(
    gateway: &Arc<Gateway>,
    routing: &super::Routing,
    protocol: Protocol,
    stream: bool,
    plan: &route::Plan,
    request: &Arc<ir::Request>,
    body: Bytes,
    query: Option<&str>,
    headers: &HeaderMap,
    trace: Option<&Trace>,
) -> (Response, Option<String>) {
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(routing.timeouts.total)
        .unwrap_or(now + std::time::Duration::from_secs(86_400 * 365));
    let limits = routing.rate_limits;
    let mut attempts: Vec<String> = Vec::new();
    let mut last: Option<ApiError> = None;
    let mut quota_skips: Vec<String> = Vec::new();
    // Candidates that failed for good in this request; only rate-limited ones come round again.
    let mut done = vec![false; plan.candidates.len()];
    let mut waited_ms = 0u64;
    let mut out_of_time = false;
    // Candidates skipped for an open breaker; when nothing else was tried, the one due
    // soonest is probed (`forced`) rather than the request refused untried.
    let mut breaker_open: Vec<usize> = Vec::new();
    let mut forced: Option<usize> = None;
    loop {
        // When the soonest rate-limited candidate is free again (unix ms).
        let mut soonest: Option<u64> = None;
        'candidates: for (index, target) in plan.candidates.iter().enumerate() {
            if done[index] {
                continue;
            }
            let id = format!("{}|{}", target.provider, target.model);
            let now_ms = trace.map_or(0, Trace::elapsed_ms);
            let Some(provider) = routing.providers.get(&target.provider) else {
                note(
                    trace,
                    target,
                    "skipped",
                    None,
                    now_ms,
                    Some("provider not configured"),
                );
                attempts.push(format!("{id}: provider not configured"));
                done[index] = true;
                continue;
            };
            if let Some(why) = &provider.missing_key {
                note(trace, target, "skipped", None, now_ms, Some(why));
                attempts.push(format!("{id}: skipped, {why}"));
                done[index] = true;
                continue;
            }
            let key_count = provider.keys.len();
            let usable =
                gateway
                    .keys
                    .usable(&provider.name, &target.model, key_count, breaker::now_ms());
            if usable.is_empty() {
                let now = breaker::now_ms();
                let free = gateway
                    .keys
                    .free_at(&provider.name, &target.model, key_count, now);
                soonest = Some(soonest.map_or(free, |s| s.min(free)));
                let why = gateway
                    .keys
                    .why_cooling(&provider.name, &target.model, key_count, now);
                note(trace, target, "skipped", None, now_ms, Some(&why));
                attempts.push(format!("{id}: skipped, {why}"));
                continue;
            }
            if let Err(reason) =
                routing
                    .limits
                    .take(&provider.name, &id, breaker::now_ms(), &gateway.ledger)
            {
                note(trace, target, "skipped", None, now_ms, Some(&reason));
                attempts.push(format!("{id}: skipped, {reason}"));
                quota_skips.push(reason);
                done[index] = true;
                continue;
            }
            if forced == Some(index) {
                gateway.breakers.force_probe(&id);
            } else if !gateway.breakers.allow(&id, breaker::now_ms()) {
                let why = gateway.breakers.describe_open(&id, breaker::now_ms());
                note(trace, target, "skipped", None, now_ms, Some(&why));
                attempts.push(format!("{id}: skipped, {why}"));
                breaker_open.push(index);
                done[index] = true;
                continue;
            }
            let mut keys = usable.into_iter();
            let mut key = keys.next().flatten();
            let mut retries = routing.retries;
            loop {
                let Some(timeouts) = routing.timeouts.within(deadline) else {
                    out_of_time = true;
                    break 'candidates;
                };
                let call_start = trace.map_or(0, Trace::elapsed_ms);
                let call = Call {
                    gateway: gateway.clone(),
                    protocol,
                    provider: provider.clone(),
                    model: target.model.clone(),
                    stream,
                    timeouts,
                    key,
                    trace: trace.cloned(),
                };
                let outcome = if provider.format == protocol {
                    call.forward(body.clone(), &request.model_span, query, headers)
                        .await
                } else {
                    call.translate(request, body.len() > OFF_THREAD_BYTES).await
                };
                let failure = match outcome {
                    Ok(response) => {
                        note(trace, target, "ok", Some(200), call_start, None);
                        if let Some(trace) = trace {
                            trace.served_by(&target.provider, &target.model);
                        }
                        gateway.breakers.success(&id);
                        gateway
                            .keys
                            .succeeded(&provider.name, key.unwrap_or(0), &target.model);
                        return (response, Some(id));
                    }
                    Err(failure) => failure,
                };
                let now = breaker::now_ms();
                let outcome = match failure.class {
                    Class::Client => "client_error",
                    Class::RateLimited | Class::QuotaExhausted => "rate_limited",
                    _ => "failed",
                };
                note(
                    trace,
                    target,
                    outcome,
                    Some(failure.error.status),
                    call_start,
                    Some(&failure.error.message),
                );
                let mut attempt = format!("{id}: {}", failure.error.message);
                match failure.class {
                    Class::Client => return (error_response(protocol, &failure.error), None),
                    Class::RateLimited | Class::QuotaExhausted => {
                        // A rate limit is not a fault of the model: no breaker is touched.
                        let slot = key.unwrap_or(0);
                        let limit = gateway.keys.rate_limited(
                            &provider.name,
                            slot,
                            &target.model,
                            ratelimit::Said {
                                retry_after: failure.error.retry_after,
                                exhausted: failure.class == Class::QuotaExhausted,
                            },
                            &limits,
                            now,
                        );
                        attempt
                            .push_str(&format!(" ({})", limit.describe(slot, &target.model, now)));
                        attempts.push(attempt);
                        last = Some(failure.error);
                        // The next key still free for this model (a key-wide rule may have
                        // just ruled out more than the one that was limited).
                        let still =
                            gateway
                                .keys
                                .usable(&provider.name, &target.model, key_count, now);
                        match keys.by_ref().find(|k| still.contains(k)) {
                            Some(next) => key = next,
                            None => {
                                let free = gateway.keys.free_at(
                                    &provider.name,
                                    &target.model,
                                    key_count,
                                    now,
                                );
                                soonest = Some(soonest.map_or(free, |s| s.min(free)));
                                break;
                            }
                        }
                        continue;
                    }
                    Class::Retryable => {
                        attempts.push(attempt);
                        gateway
                            .breakers
                            .failure(&id, now, false, &failure.error.message);
                        last = Some(failure.error);
                        if retries == 0 || !gateway.breakers.allow(&id, now) {
                            done[index] = true;
                            break;
                        }
                        retries -= 1;
                    }
                    Class::Skip | Class::Soft => {
                        attempts.push(attempt);
                        let soft = failure.class == Class::Soft;
                        gateway
                            .breakers
                            .failure(&id, now, soft, &failure.error.message);
                        last = Some(failure.error);
                        done[index] = true;
                        break;
                    }
                    Class::ContextLength => {
                        attempts.push(attempt);
                        last = Some(failure.error);
                        done[index] = true;
                        break;
                    }
                }
            }
        }
        if forced.is_none()
            && soonest.is_none()
            && last.is_none()
            && quota_skips.is_empty()
            && !out_of_time
            && let Some(&index) = breaker_open.iter().min_by_key(|&&i| {
                let target = &plan.candidates[i];
                gateway
                    .breakers
                    .open_until(&format!("{}|{}", target.provider, target.model))
            })
        {
            forced = Some(index);
            done[index] = false;
            continue;
        }
        let Some(free) = soonest.filter(|_| !out_of_time) else {
            break;
        };
        // Nothing left but rate-limited candidates: wait for the soonest, within bounds.
        let wait_ms = free
            .saturating_sub(breaker::now_ms())
            .max(MIN_RATE_LIMIT_WAIT_MS);
        let before_deadline = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis() as u64;
        if waited_ms + wait_ms <= limits.max_wait_ms && wait_ms < before_deadline {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            waited_ms += wait_ms;
            continue;
        }
        let seconds = free.saturating_sub(breaker::now_ms()).div_ceil(1000).max(1);
        let count = plan.candidates.len();
        let error = ApiError {
            status: 429,
            kind: ErrorKind::RateLimit,
            message: format!(
                "rate-limited: {} free again in {seconds} s (retry then); {}",
                if count == 1 {
                    "the only candidate is".to_string()
                } else {
                    format!("the soonest of {count} candidates is")
                },
                attempts.join("; ")
            ),
            retry_after: Some(seconds),
        };
        return (error_response(protocol, &error), None);
    }
    if out_of_time {
        attempts.push(
            "no time left: the request's overall deadline (gateway.total_timeout_secs) passed"
                .into(),
        );
        last = Some(ApiError::new(
            ErrorKind::Timeout,
            "the request's overall deadline passed",
        ));
    }
    if last.is_none() && !quota_skips.is_empty() && quota_skips.len() == attempts.len() {
        return (
            error_response(protocol, &super::quota::Limits::exhausted(&quota_skips)),
            None,
        );
    }
    let mut error = last.unwrap_or_else(|| ApiError::upstream("no candidate could be tried"));
    if error.status == 429 {
        error.status = 502;
        error.kind = ErrorKind::Api;
        error.retry_after = None;
    }
    let count = plan.candidates.len();
    error.message = format!(
        "{}all {count} candidate{} failed: {}",
        what_to_do(&attempts).map_or(String::new(), |lead| format!("{lead} — ")),
        if count == 1 { "" } else { "s" },
        attempts.join("; ")
    );
    (error_response(protocol, &error), None)
}

/// When every attempt failed for the same fixable reason, the one thing to do about it, put
/// before the list of attempts.
fn what_to_do(attempts: &[String]) -> Option<&'static str> {
    let all = |needles: &[&str]| {
        !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| needles.iter().any(|needle| a.contains(needle)))
    };
    let any = |needle: &str| attempts.iter().any(|a| a.contains(needle));
    if all(&["has no key"]) {
        Some("No candidate has a key: run `xx setup`, or export the variable named below")
    } else if all(&["rejected the gateway's credentials", "has no key"]) {
        Some(
            "The provider refused the key: fix the key named below or run `xx setup` (its breakers reset when the key changes)",
        )
    } else if any("invalid peer certificate") {
        Some(
            "The provider's TLS certificate is not trusted here: set SSL_CERT_FILE to your network's CA bundle, then `proxies restart gateway`",
        )
    } else if all(&["cannot reach provider"]) {
        Some(
            "No provider could be reached: check the network, and HTTPS_PROXY if you are behind a proxy",
        )
    } else if all(&["circuit breaker is open"]) {
        Some(
            "Every candidate's circuit breaker is open: `proxies breakers reset` once the provider is back",
        )
    } else {
        None
    }
}

/// One candidate's try, in the request's ledger record.
fn note(
    trace: Option<&Trace>,
    target: &route::Target,
    outcome: &str,
    status: Option<u16>,
    start_ms: u64,
    detail: Option<&str>,
) {
    if let Some(trace) = trace {
        let mut detail = detail.map(str::to_string);
        if let Some(text) = &mut detail
            && text.len() > 500
        {
            let mut cut = 500;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        trace.attempt(Attempt {
            provider: target.provider.clone(),
            model: target.model.clone(),
            outcome: outcome.to_string(),
            status,
            start_ms,
            ms: trace.elapsed_ms().saturating_sub(start_ms),
            detail,
        });
    }
}

/// A rate-limited request waits at least this long before it tries again, so a provider that
/// answers `Retry-After: 0` is not called in a tight loop.
const MIN_RATE_LIMIT_WAIT_MS: u64 = 250;

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

/// Anthropic's token counter, estimated locally (about four characters a token) from
/// everything the model would read: system, messages, tool calls and results, tool schemas.
async fn count_tokens(gateway: &Arc<Gateway>, headers: &HeaderMap, body: Body) -> Response {
    if let Err(error) = admin::boundary::check_json(headers) {
        drain(gateway, body).await;
        return error_response(Protocol::Anthropic, &error);
    }
    let mut held = Held::default();
    let body = match read_body(gateway, Protocol::Anthropic, body, &mut held).await {
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
        Ok(request) => json_response(200, &json!({"input_tokens": request.estimate_tokens()})),
        Err(error) => error_response(Protocol::Anthropic, &error),
    }
}

async fn gemini_count_tokens(gateway: &Arc<Gateway>, headers: &HeaderMap, body: Body) -> Response {
    if let Err(error) = admin::boundary::check_json(headers) {
        drain(gateway, body).await;
        return error_response(Protocol::Gemini, &error);
    }
    let mut held = Held::default();
    let body = match read_body(gateway, Protocol::Gemini, body, &mut held).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match proto::gemini::decode_request(&body, "count") {
        Ok(request) => json_response(200, &json!({"totalTokens": request.estimate_tokens()})),
        Err(error) => error_response(Protocol::Gemini, &error),
    }
}
