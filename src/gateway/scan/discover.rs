//! Discovery: every provider's model list in its own protocol, with what each listing says
//! about a model (prices, context, capabilities, age), and model servers on this machine's
//! usual ports. `xx setup` tests keys with the same listing call.

use std::time::Duration;

use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::Value;

use crate::agent::Protocol;
use crate::gateway::upstream::Client;

/// Model servers people run locally: provider name, label, API root. Ollama is the built-in
/// `local` provider.
pub const LOCAL_SERVERS: &[(&str, &str, &str)] = &[
    ("local", "Ollama", "http://127.0.0.1:11434/v1"),
    ("lmstudio", "LM Studio", "http://127.0.0.1:1234/v1"),
    ("llamacpp", "llama.cpp", "http://127.0.0.1:8080/v1"),
    ("vllm", "vLLM", "http://127.0.0.1:8000/v1"),
    ("jan", "Jan", "http://127.0.0.1:1337/v1"),
    (
        "textgen",
        "text-generation-webui",
        "http://127.0.0.1:5000/v1",
    ),
    ("koboldcpp", "KoboldCpp", "http://127.0.0.1:5001/v1"),
];

/// The largest model list read (OpenRouter's is about 1 MB).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// One model as a provider lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listed {
    pub id: String,
    pub context: Option<u64>,
    pub max_output: Option<u64>,
    /// US dollars per million tokens.
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    /// What the listing says it supports (None: the listing does not say).
    pub tools: Option<bool>,
    pub reasoning: Option<bool>,
    pub structured: Option<bool>,
    pub vision: Option<bool>,
    /// Unix seconds.
    pub created: Option<u64>,
}

/// Why a provider's list could not be had.
#[derive(Debug, Clone, PartialEq)]
pub struct Down {
    /// It refused the key (401/403), as opposed to not answering or answering oddly.
    pub refused: bool,
    pub message: String,
}

/// Fetch and read `base_url`'s model list, within `timeout`.
pub async fn list(
    client: &Client,
    base_url: &str,
    format: Protocol,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Listed>, Down> {
    match tokio::time::timeout(timeout, fetch(client, base_url, format, key)).await {
        Ok(result) => result,
        Err(_) => Err(Down {
            refused: false,
            message: format!("no model list within {} s", timeout.as_secs_f64()),
        }),
    }
}

async fn fetch(
    client: &Client,
    base_url: &str,
    format: Protocol,
    key: Option<&str>,
) -> Result<Vec<Listed>, Down> {
    let failed = |message: String| Down {
        refused: false,
        message,
    };
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
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| failed(format!("`{base_url}` is not a usable URL: {e}")))?;
    let response = client.request(request).await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(inner) = source {
            text.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        failed(format!("cannot reach {url}: {text}"))
    })?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_LIST_BYTES)
        .collect()
        .await
        .map_err(|e| failed(format!("{url}: could not read the answer: {e}")))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = value["error"]["message"]
        .as_str()
        .or(value["error"].as_str())
        .or(value["message"].as_str())
        .map(|m| {
            let keys: Vec<String> = key.into_iter().map(str::to_string).collect();
            let mut m = crate::gateway::secrets::scrub(m, &keys);
            m.truncate(300);
            m
        });
    let said = |what: &str| match &message {
        Some(message) => format!("{what} (HTTP {}: {message})", status.as_u16()),
        None => format!("{what} (HTTP {})", status.as_u16()),
    };
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(Down {
            refused: true,
            message: said("it refused the key"),
        });
    }
    if !status.is_success() {
        return Err(failed(said(&format!("{url} answered with an error"))));
    }
    parse(&value).ok_or_else(|| {
        failed(format!(
            "{url} answered, but not with a model list; is `{base_url}` the API root (…/v1 for OpenAI-compatible servers)?"
        ))
    })
}

/// A listing in any of the shapes providers use: `data[]` (OpenAI, OpenRouter with prices and
/// parameters, Anthropic, local servers) or `models[]` (Gemini). Ids that could not travel in
/// TOML, JSON and argv unquoted are left out.
pub fn parse(value: &Value) -> Option<Vec<Listed>> {
    let entries = value["data"].as_array().or(value["models"].as_array())?;
    Some(
        entries
            .iter()
            .filter_map(entry)
            .filter(|m| crate::config::is_plain_value(&m.id))
            .collect(),
    )
}

fn entry(model: &Value) -> Option<Listed> {
    let id = match model["id"].as_str() {
        Some(id) => id.to_string(),
        None => model["name"]
            .as_str()?
            .trim_start_matches("models/")
            .to_string(),
    };
    // Gemini lists embedding and other models beside the ones that answer.
    if let Some(methods) = model["supportedGenerationMethods"].as_array()
        && !methods.iter().any(|m| m == "generateContent")
    {
        return None;
    }
    let number = |v: &Value| v.as_u64().or_else(|| v.as_str()?.parse().ok());
    // OpenRouter prices are US dollars per token, as strings.
    let per_million = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str()?.parse::<f64>().ok())
            .filter(|p| p.is_finite() && *p >= 0.0)
            .map(|p| p * 1_000_000.0)
    };
    let parameters: Option<Vec<&str>> = model["supported_parameters"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect());
    let supports = |names: &[&str]| {
        parameters
            .as_ref()
            .map(|p| names.iter().any(|n| p.contains(n)))
    };
    let vision = model["architecture"]["input_modalities"]
        .as_array()
        .map(|m| m.iter().any(|x| x == "image"));
    let created = number(&model["created"]).or_else(|| {
        let text = model["created_at"].as_str()?;
        let at = humantime::parse_rfc3339_weak(text).ok()?;
        Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    });
    Some(Listed {
        context: number(&model["context_length"])
            .or_else(|| number(&model["context_window"]))
            .or_else(|| number(&model["max_model_len"]))
            .or_else(|| number(&model["inputTokenLimit"])),
        max_output: number(&model["top_provider"]["max_completion_tokens"])
            .or_else(|| number(&model["outputTokenLimit"])),
        input_price: per_million(&model["pricing"]["prompt"]),
        output_price: per_million(&model["pricing"]["completion"]),
        tools: supports(&["tools", "tool_choice"]),
        reasoning: supports(&["reasoning", "include_reasoning"])
            .or_else(|| model["thinking"].as_bool()),
        structured: supports(&["structured_outputs", "response_format"]),
        vision,
        created,
        id,
    })
}

/// A model server found on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalServer {
    pub name: String,
    pub label: String,
    pub base_url: String,
    pub models: Vec<Listed>,
}

/// The local servers that answer a model listing: the usual ports, with `moved` (name ->
/// API root, from `[scan] local`) replacing or adding entries. Each gets `timeout`.
pub async fn local_servers(
    client: &Client,
    moved: &[(String, String)],
    timeout: Duration,
) -> Vec<LocalServer> {
    let mut wanted: Vec<(String, String, String)> = LOCAL_SERVERS
        .iter()
        .map(|(name, label, url)| (name.to_string(), label.to_string(), url.to_string()))
        .collect();
    for (name, url) in moved {
        match wanted.iter_mut().find(|(n, _, _)| n == name) {
            Some(entry) => entry.2 = url.clone(),
            None => wanted.push((name.clone(), name.clone(), url.clone())),
        }
    }
    let found = futures_util::future::join_all(wanted.into_iter().map(
        |(name, label, base_url)| async move {
            let models = list(client, &base_url, Protocol::Chat, None, timeout).await;
            models
                .ok()
                .filter(|m| !m.is_empty())
                .map(|models| LocalServer {
                    name,
                    label,
                    base_url,
                    models,
                })
        },
    ))
    .await;
    found.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openrouter_prices_context_and_parameters() {
        let listed = parse(&json!({"data": [{
            "id": "qwen/qwen3-coder:free", "created": 1753230546, "context_length": 262144,
            "pricing": {"prompt": "0", "completion": "0"},
            "top_provider": {"max_completion_tokens": 65536},
            "architecture": {"input_modalities": ["text"]},
            "supported_parameters": ["tools", "tool_choice", "max_tokens"]
        }, {
            "id": "anthropic/claude-sonnet-4", "context_length": 200000,
            "pricing": {"prompt": "0.000003", "completion": "0.000015"},
            "architecture": {"input_modalities": ["text", "image"]},
            "supported_parameters": ["tools", "reasoning", "structured_outputs"]
        }]}))
        .unwrap();
        assert_eq!(listed[0].context, Some(262144));
        assert_eq!(listed[0].max_output, Some(65536));
        assert_eq!(listed[0].input_price, Some(0.0));
        assert_eq!(listed[0].tools, Some(true));
        assert_eq!(listed[0].reasoning, Some(false));
        assert_eq!(listed[0].vision, Some(false));
        assert_eq!(listed[0].created, Some(1753230546));
        assert!((listed[1].input_price.unwrap() - 3.0).abs() < 1e-9);
        assert!((listed[1].output_price.unwrap() - 15.0).abs() < 1e-9);
        assert_eq!(listed[1].structured, Some(true));
        assert_eq!(listed[1].vision, Some(true));
    }

    #[test]
    fn reads_gemini_and_anthropic_lists() {
        let gemini = parse(&json!({"models": [
            {"name": "models/gemini-2.5-flash", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
             "supportedGenerationMethods": ["generateContent", "countTokens"]},
            {"name": "models/text-embedding-004", "supportedGenerationMethods": ["embedContent"]}
        ]}))
        .unwrap();
        assert_eq!(gemini.len(), 1);
        assert_eq!(gemini[0].id, "gemini-2.5-flash");
        assert_eq!(gemini[0].context, Some(1048576));
        let anthropic = parse(&json!({"data": [
            {"type": "model", "id": "claude-sonnet-4-5", "created_at": "2025-09-29T00:00:00Z"}
        ]}))
        .unwrap();
        assert_eq!(anthropic[0].created, Some(1759104000));
        assert_eq!(anthropic[0].tools, None);
        assert!(parse(&json!({"object": "error"})).is_none());
    }
}
