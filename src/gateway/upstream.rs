//! Talking to model providers: one pooled keep-alive client, the URL and headers each
//! protocol wants, and the timeouts (connect, first byte, idle gap, total) turned into
//! errors the client can read.

use std::time::Duration;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ir::{ApiError, ErrorKind};
use super::proto::Protocol;
use crate::config::{GatewayConfig, ProviderConfig};

/// A configured provider, ready to be called.
#[derive(Clone)]
pub struct Provider {
    pub name: String,
    pub format: Protocol,
    pub base_url: String,
    pub keys: Vec<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The model-call endpoint, parsed once (every protocol but Gemini has one fixed URL).
    endpoint: Option<Uri>,
    /// Each key as the header that carries it, built once rather than on every call.
    auth: Vec<Option<(HeaderName, HeaderValue)>>,
    /// `Host` for the base URL, set here so the HTTP client does not format it per request.
    host: Option<HeaderValue>,
    /// Why this provider cannot be called: it takes a key (from its config or a variable)
    /// and none is set. Calling it anyway only earns 401s and open breakers.
    pub missing_key: Option<String>,
    /// Where its key comes from, for the message when the provider rejects it.
    pub key_origin: String,
    /// A hash of what decides how it is called (URL, format, keys, headers), to tell on a
    /// reload whether its breakers and cool-downs still apply. Never stored.
    pub fingerprint: u64,
}

/// Names the provider without its keys or headers, which may hold secrets.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("base_url", &self.base_url)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(name: &str, config: &ProviderConfig) -> Result<Provider, String> {
        let mut headers = Vec::new();
        for (key, value) in &config.headers {
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| format!("providers.{name}.headers: `{key}` is not a header name"))?;
            let value = HeaderValue::from_str(value.as_str())
                .map_err(|_| format!("providers.{name}.headers.{key}: not a valid header value"))?;
            headers.push((name, value));
        }
        let keys = config.keys();
        let missing_key = (config.declares_key() && keys.is_empty()).then(|| match &config.key_env {
            Some(var) => format!(
                "provider `{name}` has no key: {var} is not set; export it and run xx again, or run `xx setup`"
            ),
            None => format!("provider `{name}` has no key: its api_key is empty; run `xx setup`"),
        });
        let auth = keys
            .iter()
            .map(|key| auth_header(config.format, key))
            .collect();
        let mut provider = Provider {
            name: name.to_string(),
            format: config.format,
            base_url: config.base_url.as_str().trim_end_matches('/').to_string(),
            keys,
            headers,
            endpoint: None,
            auth,
            host: None,
            missing_key,
            key_origin: key_origin(name, config),
            fingerprint: 0,
        };
        provider.fingerprint = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (&provider.base_url, provider.format.name(), &provider.keys).hash(&mut hasher);
            for (name, value) in &provider.headers {
                (name.as_str(), value.as_bytes()).hash(&mut hasher);
            }
            hasher.finish()
        };
        let base = parse_uri(&provider.url("model", false, None))
            .map_err(|e| format!("providers.{name}.base_url: {e}"))?;
        provider.host = host_header(&base);
        if provider.format != Protocol::Gemini {
            provider.endpoint = Some(base);
        }
        Ok(provider)
    }

    /// `text` (an upstream's error message) without this provider's keys or anything shaped
    /// like a key.
    pub fn scrub(&self, text: &str) -> String {
        super::secrets::scrub(text, &self.keys)
    }

    /// The endpoint as a parsed URL, reusing the one parsed at start-up when it applies.
    pub fn endpoint(
        &self,
        model: &str,
        stream: bool,
        anthropic_query: Option<&str>,
    ) -> Result<Uri, String> {
        match (&self.endpoint, anthropic_query) {
            (Some(url), None) => Ok(url.clone()),
            (Some(url), Some("")) => Ok(url.clone()),
            _ => parse_uri(&self.url(model, stream, anthropic_query)),
        }
    }

    /// The endpoint for a model call.
    pub fn url(&self, model: &str, stream: bool, anthropic_query: Option<&str>) -> String {
        match self.format {
            Protocol::Anthropic => match anthropic_query {
                Some(q) if !q.is_empty() => format!("{}/v1/messages?{q}", self.base_url),
                _ => format!("{}/v1/messages", self.base_url),
            },
            Protocol::Chat => format!("{}/chat/completions", self.base_url),
            Protocol::Responses => format!("{}/responses", self.base_url),
            Protocol::Gemini if stream => format!(
                "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                self.base_url
            ),
            Protocol::Gemini => format!("{}/v1beta/models/{model}:generateContent", self.base_url),
        }
    }

    /// Auth and protocol headers, with the key at index `key` of [`Provider::keys`].
    pub fn headers(
        &self,
        key: Option<usize>,
        passthrough: &[(HeaderName, HeaderValue)],
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(host) = &self.host {
            headers.insert(header::HOST, host.clone());
        }
        for (name, value) in passthrough {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(Some((name, value))) = key.and_then(|k| self.auth.get(k)) {
            headers.insert(name.clone(), value.clone());
        }
        if self.format == Protocol::Anthropic && !headers.contains_key("anthropic-version") {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        headers
    }
}

/// `Host` as hyper's client would write it: the host, and the port only when it is not the
/// scheme's default.
fn host_header(url: &Uri) -> Option<HeaderValue> {
    let host = url.host()?;
    let default_port = match url.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match url.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    }
    .ok()
}

/// The header that carries `key` for a provider speaking `format` (None: the key cannot be a
/// header value, and the provider is called without it, as before).
fn auth_header(format: Protocol, key: &str) -> Option<(HeaderName, HeaderValue)> {
    let (name, value) = match format {
        Protocol::Anthropic => (HeaderName::from_static("x-api-key"), key.to_string()),
        Protocol::Gemini => (HeaderName::from_static("x-goog-api-key"), key.to_string()),
        Protocol::Chat | Protocol::Responses => (header::AUTHORIZATION, format!("Bearer {key}")),
    };
    let mut value = HeaderValue::from_str(&value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Timeouts for one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Timeouts {
    /// These timeouts cut to what is left before `deadline`, the request's overall one;
    /// `None` when nothing is left.
    pub fn within(self, deadline: tokio::time::Instant) -> Option<Timeouts> {
        let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
        if left.is_zero() {
            return None;
        }
        Some(Timeouts {
            first_byte: self.first_byte.min(left),
            idle: self.idle.min(left),
            total: self.total.min(left),
        })
    }

    pub fn from_config(config: &GatewayConfig) -> Timeouts {
        Timeouts {
            first_byte: Duration::from_secs(config.first_byte_timeout_secs),
            idle: Duration::from_secs(config.idle_timeout_secs),
            total: Duration::from_secs(config.total_timeout_secs),
        }
    }
}

/// The shared HTTP client: hyper's pooled keep-alive client over plain TCP or rustls (HTTP/2
/// when the provider offers it), with the connect timeout, through the environment's proxy
/// when it names one. No redirects: a provider URL means exactly that host.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<super::connect::ProxyConnector>,
    Full<Bytes>,
>;

/// A provider's answer, its body still to be read.
pub type UpstreamResponse = axum::http::Response<hyper::body::Incoming>;

pub fn client(config: &GatewayConfig) -> Client {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(Duration::from_secs(config.connect_timeout_secs)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(super::connect::tls_config())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(super::connect::ProxyConnector::new(tcp));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Where a provider's keys come from and what to do when one is refused.
fn key_origin(name: &str, config: &ProviderConfig) -> String {
    let mut sources = Vec::new();
    if config.api_key.is_some() || !config.api_keys.is_empty() {
        sources.push(format!("providers.{name}.api_key(s) in the clutch config"));
    }
    if config.secret.is_some() {
        sources.push(format!("the `{name}` entry of the secrets file"));
    }
    if let Some(var) = &config.key_env {
        sources.push(format!("{var} in the environment"));
    }
    match sources.as_slice() {
        [] => format!(
            "it has no key; run `xx setup`, or set providers.{name}.api_key or key_env in the clutch config"
        ),
        [one] if config.key_env.is_some() => format!(
            "its key comes from {one}; export the right one and run xx again (it hands it to the gateway), or run `xx setup`"
        ),
        [one] => format!(
            "its key comes from {one}; fix it there or run `xx setup` (the gateway reloads it)"
        ),
        many => format!(
            "its keys come from {}; fix the wrong one or run `xx setup`",
            many.join(" and ")
        ),
    }
}

fn parse_uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("`{url}` is not an http:// or https:// URL")),
    }
}

/// POST `body` and wait for the response headers, within the first-byte timeout.
pub async fn send(
    client: &Client,
    provider: &Provider,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    timeouts: Timeouts,
) -> Result<UpstreamResponse, ApiError> {
    let shown = url.clone();
    let mut request = Request::post(url)
        .body(Full::new(body))
        .expect("a parsed URI and a POST make a request");
    *request.headers_mut() = headers;
    match tokio::time::timeout(timeouts.first_byte, client.request(request)).await {
        Err(_) => Err(ApiError {
            status: 504,
            kind: ErrorKind::Timeout,
            message: format!(
                "provider `{}` sent no response within {:?}",
                provider.name, timeouts.first_byte
            ),
            retry_after: None,
        }),
        Ok(Err(err)) => {
            let cause = error_chain(&err);
            let hint = if cause.contains("invalid peer certificate") {
                "; if a proxy or firewall on this network inspects TLS, set SSL_CERT_FILE to its CA bundle and restart the gateway"
            } else {
                ""
            };
            Err(ApiError {
                status: 502,
                kind: ErrorKind::Api,
                message: format!(
                    "cannot reach provider `{}` ({}): {cause}{hint}",
                    provider.name,
                    redact_url(&shown.to_string()),
                ),
                retry_after: None,
            })
        }
        Ok(Ok(response)) => Ok(response),
    }
}

/// The URL without its query, which may carry a key.
fn redact_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// An upstream's non-success answer as the error the client gets. A rejected key is the
/// gateway's problem, not the agent's login, so it becomes a 502 that names the provider.
pub fn status_error(
    provider: &Provider,
    status: u16,
    retry_after: Option<u64>,
    body: &[u8],
) -> ApiError {
    let message = provider.scrub(&super::proto::upstream_error_message(body));
    match status {
        401 | 403 => ApiError {
            status: 502,
            kind: ErrorKind::Api,
            message: format!(
                "provider `{}` rejected the gateway's credentials ({status}): {message}; {}",
                provider.name, provider.key_origin
            ),
            retry_after: None,
        },
        _ => {
            let kind = ErrorKind::from_status(status);
            ApiError {
                status: if status >= 400 { status } else { 502 },
                kind,
                message: format!("provider `{}` answered {status}: {message}", provider.name),
                retry_after,
            }
        }
    }
}

/// Seconds from a `Retry-After` header (delta-seconds form).
pub fn retry_after(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|s| s.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(format: &str, base_url: &str) -> Provider {
        let config: ProviderConfig = toml::from_str(&format!(
            "base_url = \"{base_url}\"\nformat = \"{format}\"\napi_keys = [\"first\", \"second\"]\n"
        ))
        .unwrap();
        Provider::new("p", &config).unwrap()
    }

    #[test]
    fn the_host_header_carries_the_port_only_when_it_is_not_the_default() {
        let host = |format, url| {
            let headers = provider(format, url).headers(None, &[]);
            headers[header::HOST].to_str().unwrap().to_string()
        };
        assert_eq!(
            host("chat", "https://api.example.com/v1"),
            "api.example.com"
        );
        assert_eq!(
            host("chat", "https://api.example.com:443/v1"),
            "api.example.com"
        );
        assert_eq!(host("chat", "http://127.0.0.1:8082/v1"), "127.0.0.1:8082");
        assert_eq!(host("gemini", "http://[::1]:9000"), "[::1]:9000");
        assert_eq!(host("anthropic", "http://localhost"), "localhost");
    }

    #[test]
    fn each_call_carries_the_key_it_names_in_its_protocols_header() {
        let chat = provider("chat", "https://api.example.com/v1");
        assert_eq!(
            chat.headers(Some(1), &[])[header::AUTHORIZATION],
            "Bearer second"
        );
        assert!(chat.headers(Some(0), &[])[header::AUTHORIZATION].is_sensitive());
        assert!(!chat.headers(None, &[]).contains_key(header::AUTHORIZATION));
        let anthropic = provider("anthropic", "https://api.example.com");
        let headers = anthropic.headers(Some(0), &[]);
        assert_eq!(headers["x-api-key"], "first");
        assert_eq!(headers["anthropic-version"], "2023-06-01");
        assert!(!format!("{chat:?}").contains("second"), "{chat:?}");
        let gemini = provider("gemini", "https://api.example.com");
        assert_eq!(gemini.headers(Some(1), &[])["x-goog-api-key"], "second");
    }
}
