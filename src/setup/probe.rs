//! Testing a provider before it is saved: its model list, fetched with the key, over the
//! gateway's own HTTP client (so a proxy and the system CA store apply as they will later).

use std::time::Duration;

use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::Value;

use crate::agent::Protocol;

/// What the provider said.
pub enum Probe {
    /// It answered with this many models (ids in its own listing order).
    Listed(Vec<String>),
    /// It refused the key.
    Refused(String),
    /// It could not be reached, or answered something else.
    Failed(String),
}

/// The largest model list read (OpenRouter's is about 1 MB).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

pub fn list_models(base_url: &str, format: Protocol, key: Option<&str>) -> Probe {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Probe::Failed(format!("cannot start the HTTP client: {e}")),
    };
    runtime.block_on(async {
        match tokio::time::timeout(Duration::from_secs(15), fetch(base_url, format, key)).await {
            Ok(probe) => probe,
            Err(_) => Probe::Failed("no answer within 15 s".into()),
        }
    })
}

async fn fetch(base_url: &str, format: Protocol, key: Option<&str>) -> Probe {
    let base = base_url.trim_end_matches('/');
    let url = match format {
        Protocol::Anthropic => format!("{base}/v1/models?limit=1000"),
        Protocol::Gemini => format!("{base}/v1beta/models?pageSize=1000"),
        Protocol::Chat | Protocol::Responses => format!("{base}/models"),
    };
    let mut request = Request::get(url.as_str());
    if let Some(key) = key {
        request = match format {
            Protocol::Anthropic => request
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01"),
            Protocol::Gemini => request.header("x-goog-api-key", key),
            Protocol::Chat | Protocol::Responses => {
                request.header("authorization", format!("Bearer {key}"))
            }
        };
    }
    let request = match request.body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(e) => return Probe::Failed(format!("`{base_url}` is not a usable URL: {e}")),
    };
    let client = crate::gateway::upstream::client(&crate::config::GatewayConfig::default());
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                text.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            return Probe::Failed(format!("cannot reach {url}: {text}"));
        }
    };
    let status = response.status();
    let body = match Limited::new(response.into_body(), MAX_LIST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Probe::Failed(format!("{url}: could not read the answer: {e}")),
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = value["error"]["message"]
        .as_str()
        .or(value["error"].as_str())
        .or(value["message"].as_str())
        .map(|m| {
            let mut m = crate::gateway::secrets::scrub(
                m,
                key.into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .as_slice(),
            );
            m.truncate(300);
            m
        });
    let said = |what: &str| match &message {
        Some(message) => format!("{what} (HTTP {}: {message})", status.as_u16()),
        None => format!("{what} (HTTP {})", status.as_u16()),
    };
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Probe::Refused(said("it refused the key"));
    }
    if !status.is_success() {
        return Probe::Failed(said(&format!("{url} answered with an error")));
    }
    let ids: Vec<String> = if let Some(data) = value["data"].as_array() {
        data.iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect()
    } else if let Some(models) = value["models"].as_array() {
        models
            .iter()
            .filter_map(|m| {
                m["name"]
                    .as_str()
                    .map(|n| n.trim_start_matches("models/").to_string())
            })
            .collect()
    } else {
        return Probe::Failed(format!(
            "{url} answered, but not with a model list; is `{base_url}` the API root (…/v1 for OpenAI-compatible servers)?"
        ));
    };
    // Ids that could not travel in TOML, JSON and argv unquoted are not offered.
    Probe::Listed(
        ids.into_iter()
            .filter(|id| crate::config::is_plain_value(id))
            .collect(),
    )
}
