//! Probes: three tiny requests per model, in the provider's own protocol through the
//! gateway's encoders and HTTP client. A streamed count for time to first token and tokens
//! per second; a trivial tool (does a well-formed call come back?); a JSON answer to a
//! schema. Each is bounded in time and size; none is retried.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::agent::Protocol;
use crate::gateway::ir::{self, Part, StreamEvent};
use crate::gateway::upstream::{self, Client, Provider, Timeouts};
use crate::gateway::{proto, sse};

/// The most of one probe's answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How a probe went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    NotRun,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotRun => "not_run",
        }
    }
}

/// Why a probe got no answer, when it says something about the provider rather than the
/// model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// 401/403: the key is refused.
    Refused(String),
    /// No answer in time.
    TimedOut(String),
    /// 429: not the model's fault; it is left unranked by speed, not failed.
    RateLimited(String),
    /// Anything else: the model failed the probe.
    Failed(String),
}

/// What the three probes found about one model.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The speed probe got a complete text answer.
    pub answered: bool,
    pub ttft_ms: Option<u64>,
    pub tokens_per_s: Option<f64>,
    pub tool: Verdict,
    pub json: Verdict,
    /// Requests sent.
    pub requests: usize,
    /// The first trouble met, if any.
    pub trouble: Option<Trouble>,
}

/// Run the probes on `model`, stopping at the first that says the provider is unusable.
pub async fn probe(client: &Client, provider: &Provider, model: &str, timeout: Duration) -> Probed {
    let mut probed = Probed {
        answered: false,
        ttft_ms: None,
        tokens_per_s: None,
        tool: Verdict::NotRun,
        json: Verdict::NotRun,
        requests: 0,
        trouble: None,
    };
    probed.requests += 1;
    match speed(client, provider, model, timeout).await {
        Ok((ttft, tps)) => {
            probed.answered = true;
            probed.ttft_ms = Some(ttft);
            probed.tokens_per_s = tps;
        }
        Err(trouble) => {
            probed.trouble = Some(trouble);
            return probed;
        }
    }
    probed.requests += 1;
    match call(client, provider, model, &tool_request(), timeout).await {
        Ok(answer) => probed.tool = verdict(tool_called(&answer)),
        Err(Trouble::Failed(_)) => probed.tool = Verdict::Fail,
        Err(trouble) => {
            probed.trouble = Some(trouble);
            return probed;
        }
    }
    probed.requests += 1;
    match call(client, provider, model, &json_request(), timeout).await {
        Ok(answer) => probed.json = verdict(json_answered(&answer)),
        Err(Trouble::Failed(_)) => probed.json = Verdict::Fail,
        Err(trouble) => probed.trouble = Some(trouble),
    }
    probed
}

fn verdict(pass: bool) -> Verdict {
    if pass { Verdict::Pass } else { Verdict::Fail }
}

/// A chat-shaped request, decoded into the IR so each provider gets its own protocol.
fn request(body: Value) -> ir::Request {
    let bytes = serde_json::to_vec(&body).expect("a probe body serialises");
    proto::decode_request(Protocol::Chat, &bytes, None)
        .expect("probe requests are valid chat requests")
}

fn speed_request() -> ir::Request {
    request(json!({
        "model": "probe",
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 64,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Count from 1 to 20, separated by spaces. Reply with the numbers only."}]
    }))
}

fn tool_request() -> ir::Request {
    request(json!({
        "model": "probe",
        "max_tokens": 128,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the weather in Paris right now? Use the get_weather tool."}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}]
    }))
}

fn json_request() -> ir::Request {
    request(json!({
        "model": "probe",
        "max_tokens": 64,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is 2 + 2? Answer with a JSON object {\"answer\": <the number>} and nothing else."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": {
            "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"], "additionalProperties": false
        }}}
    }))
}

/// A call to `get_weather` with a string `city`.
fn tool_called(answer: &ir::Response) -> bool {
    answer.parts.iter().any(|part| match part {
        Part::ToolCall(call) => {
            call.name == "get_weather"
                && serde_json::from_str::<Value>(&call.arguments)
                    .is_ok_and(|args| args["city"].as_str().is_some_and(|c| !c.trim().is_empty()))
        }
        _ => false,
    })
}

/// Text that is the JSON object `{"answer": 4}` (a fenced block allowed).
fn json_answered(answer: &ir::Response) -> bool {
    let text: String = answer
        .parts
        .iter()
        .filter_map(|part| match part {
            Part::Text { text } => Some(text.as_str().into_owned()),
            _ => None,
        })
        .collect();
    let trimmed = text
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    serde_json::from_str::<Value>(trimmed).is_ok_and(|v| v["answer"].as_i64() == Some(4))
}

async fn send(
    client: &Client,
    provider: &Provider,
    model: &str,
    request: &ir::Request,
    timeout: Duration,
) -> Result<upstream::UpstreamResponse, Trouble> {
    let url = provider
        .endpoint(model, request.stream, None)
        .map_err(Trouble::Failed)?;
    let key = (!provider.keys.is_empty()).then_some(0);
    let headers = provider.headers(key, &[]);
    let body = Bytes::from(proto::encode_request_bytes(provider.format, request, model));
    let timeouts = Timeouts {
        first_byte: timeout,
        idle: timeout,
        total: timeout,
    };
    let response = upstream::send(client, provider, url, headers, body, timeouts)
        .await
        .map_err(|e| match e.kind {
            ir::ErrorKind::Timeout => Trouble::TimedOut(e.message),
            _ => Trouble::Failed(e.message),
        })?;
    let status = response.status().as_u16();
    if status >= 400 {
        let retry_after = upstream::retry_after(response.headers());
        let body = read(response, timeout).await.unwrap_or_default();
        let error = upstream::status_error(provider, status, retry_after, &body);
        return Err(match status {
            401 | 403 => Trouble::Refused(error.message),
            429 => Trouble::RateLimited(error.message),
            _ => Trouble::Failed(error.message),
        });
    }
    Ok(response)
}

async fn read(response: upstream::UpstreamResponse, timeout: Duration) -> Result<Bytes, Trouble> {
    let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(Trouble::Failed(format!(
            "the answer could not be read: {e}"
        ))),
        Err(_) => Err(Trouble::TimedOut(format!(
            "the answer did not finish within {} s",
            timeout.as_secs_f64()
        ))),
    }
}

/// A whole (non-streamed) answer.
async fn call(
    client: &Client,
    provider: &Provider,
    model: &str,
    request: &ir::Request,
    timeout: Duration,
) -> Result<ir::Response, Trouble> {
    let response = send(client, provider, model, request, timeout).await?;
    let body = read(response, timeout).await?;
    proto::decode_response(provider.format, &body).map_err(|e| Trouble::Failed(e.message))
}

/// Time to the first token, and tokens per second after it (None when the whole answer
/// came at once).
async fn speed(
    client: &Client,
    provider: &Provider,
    model: &str,
    timeout: Duration,
) -> Result<(u64, Option<f64>), Trouble> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let response = send(client, provider, model, &speed_request(), timeout).await?;
    let mut body = response.into_body();
    let mut parser = sse::Parser::new();
    let mut decoder = proto::stream_decoder(provider.format);
    let mut first: Option<Instant> = None;
    let mut last = started;
    let mut chars = 0usize;
    let mut reported: Option<u64> = None;
    let mut stopped = false;
    let mut read = 0usize;
    while !stopped {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Trouble::TimedOut(format!(
                    "the streamed answer did not finish within {} s",
                    timeout.as_secs_f64()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Trouble::Failed(format!("the stream broke: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > MAX_ANSWER_BYTES {
            return Err(Trouble::Failed(
                "the streamed answer is far too long".into(),
            ));
        }
        let events = parser.push(&data).map_err(Trouble::Failed)?;
        for event in events {
            let decoded = decoder
                .event(&event)
                .map_err(|e| Trouble::Failed(e.message))?;
            for step in decoded {
                match step {
                    StreamEvent::TextDelta { text } | StreamEvent::ThinkingDelta { text }
                        if !text.is_empty() =>
                    {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = now;
                        chars += text.len();
                    }
                    StreamEvent::Usage(usage) if usage.output_tokens > 0 => {
                        reported = Some(usage.output_tokens)
                    }
                    StreamEvent::Stop(_) => stopped = true,
                    _ => {}
                }
            }
        }
    }
    let Some(first) = first else {
        return Err(Trouble::Failed("the stream held no text".into()));
    };
    let ttft = first.duration_since(started).as_millis() as u64;
    let tokens = reported.unwrap_or((chars as u64).div_ceil(4));
    let spread = last.duration_since(first).as_secs_f64();
    let tps = (spread > 0.005 && tokens > 1).then(|| ((tokens - 1) as f64 / spread).min(10_000.0));
    Ok((ttft, tps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_requests_encode_for_every_protocol() {
        for protocol in [
            Protocol::Anthropic,
            Protocol::Chat,
            Protocol::Responses,
            Protocol::Gemini,
        ] {
            for request in [speed_request(), tool_request(), json_request()] {
                let body = proto::encode_request(protocol, &request, "m");
                assert!(body.is_object(), "{protocol:?}");
            }
        }
        assert_eq!(tool_request().tools.len(), 1);
        assert!(json_request().json_schema.is_some());
        assert!(speed_request().stream);
    }
}
