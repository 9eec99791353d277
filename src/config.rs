//! The user's config file (`config.toml` in the config dir) and the TOML rules every
//! human-edited file follows: unknown keys are rejected with file, line and key name, and
//! string values may reference `${ENV}` variables, expanded when the file is read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Why a config or spec file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: `{field}` {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// Parse TOML into `T`, turning serde's message into `file:line:column: message`.
///
/// The source line is deliberately not echoed: it may hold a key.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let (line, column) = match err.span() {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        let message = err.message().trim().replace("unknown field", "unknown key");
        ConfigError::Parse {
            origin: origin.to_string(),
            line,
            column,
            message: format!("{message} (fix or remove it, then run again)"),
        }
    })
}

/// The line where `key` is set in `[section]` (1 when it is not written there).
fn key_line(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if (current == section && name == key) || name == format!("{section}.{key}") {
            return index + 1;
        }
    }
    1
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// A string with `${NAME}` references replaced from the environment when it is read.
/// A reference to an unset variable is an error that names the variable.
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct EnvString(String);

impl From<String> for EnvString {
    /// A value taken as it is, with no `${VAR}` expansion.
    fn from(value: String) -> EnvString {
        EnvString(value)
    }
}

impl EnvString {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn expand(raw: &str) -> Result<EnvString, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                // The value itself is never shown: it may be a key pasted in by mistake.
                .ok_or_else(|| {
                    "has `${` without a closing `}`; write `${NAME}` to use an environment variable"
                        .to_string()
                })?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "has `${{…}}` with a name that is not a variable name (letters, digits, `_`; {} characters given)",
                    name.chars().count()
                ));
            }
            match std::env::var(name) {
                Ok(value) => out.push_str(&value),
                Err(_) => {
                    return Err(format!(
                        "environment variable {name} is not set (referenced as ${{{name}}}); \
                         export it or remove the reference"
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(EnvString(out))
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EnvString::expand(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for EnvString {
    // A config string may hold a key once expanded; never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvString(..)")
    }
}

/// The whole config file. Every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub launcher: LauncherConfig,
    /// Named tiers `d n k q`: letter -> model.
    #[serde(default)]
    pub tiers: BTreeMap<char, EnvString>,
    /// Model-scan kinds (`best`, `free`, `tool`, `reasoning`, `verifier`, `fast`) -> model,
    /// used for the `m f t r v s` tier letters.
    #[serde(default)]
    pub selectors: BTreeMap<String, EnvString>,
    /// Slots `0`-`9`: a model, a routing profile, or both.
    #[serde(default)]
    pub slots: BTreeMap<char, Slot>,
    /// Per-agent settings, keyed by agent name.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSettings>,
    /// Model providers the gateway sends requests to, keyed by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// External services the supervisor runs after the gateway.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Rate limits and budgets the gateway enforces.
    #[serde(default)]
    pub quotas: Quotas,
    /// The usage ledger.
    #[serde(default)]
    pub usage: UsageConfig,
    /// Model-scan: discovering, probing and ranking the models the providers offer.
    #[serde(default)]
    pub scan: ScanConfig,
    /// Tool-output compression in the gateway.
    #[serde(default)]
    pub compress: CompressConfig,
    /// Keys from the secrets file beside the config (`xx setup` writes it), by provider.
    #[serde(skip)]
    pub secrets: BTreeMap<String, EnvString>,
}

/// Limits; zero or absent means no limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Largest estimated prompt (tokens) one request may send.
    #[serde(default)]
    pub request_tokens: u64,
    /// Tokens (prompt plus answer) per UTC day, over all providers.
    #[serde(default)]
    pub daily_tokens: u64,
    /// US dollars per UTC day, over all providers (needs model prices).
    #[serde(default)]
    pub daily_cost_usd: f64,
    /// Per provider name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderQuota>,
    /// Per `provider|model`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelQuota>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderQuota {
    #[serde(default)]
    pub daily_tokens: u64,
    #[serde(default)]
    pub daily_cost_usd: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelQuota {
    pub requests_per_minute: u32,
    /// Seconds the model is left alone after it hit its limit.
    #[serde(default = "default_quota_cooldown")]
    pub cooldown_secs: u64,
}

fn default_quota_cooldown() -> u64 {
    60
}

/// An external sidecar service (a compression proxy, say).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// Program and arguments.
    pub command: Vec<EnvString>,
    /// The port it listens on, for its health check; none means no check.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Lower starts first (after the gateway).
    #[serde(default)]
    pub order: i32,
    #[serde(default)]
    pub env: BTreeMap<String, EnvString>,
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u64,
}

fn default_health_path() -> String {
    "/health".into()
}

fn default_start_timeout() -> u64 {
    30
}

/// One upstream model provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The API root: `…/v1` for `chat` and `responses`, without `/v1` for `anthropic`,
    /// without `/v1beta` for `gemini` (each SDK's own convention).
    pub base_url: EnvString,
    /// The protocol it speaks.
    pub format: crate::agent::Protocol,
    /// One key, or several in `api_keys` (rotated on rate limits).
    #[serde(default)]
    pub api_key: Option<EnvString>,
    #[serde(default)]
    pub api_keys: Vec<EnvString>,
    /// The name of an environment variable holding the key; unset means no key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, EnvString>,
    /// Models it serves, with their context windows.
    #[serde(default)]
    pub models: BTreeMap<String, ModelInfo>,
    /// Its entry in the secrets file, filled in by [`Config::all_providers`].
    #[serde(skip)]
    pub secret: Option<EnvString>,
}

impl ProviderConfig {
    /// A model server on this machine: OpenAI-compatible, no key.
    pub fn local_server(base_url: &str) -> ProviderConfig {
        ProviderConfig {
            base_url: EnvString(base_url.to_string()),
            format: crate::agent::Protocol::Chat,
            api_key: None,
            api_keys: Vec::new(),
            key_env: None,
            headers: BTreeMap::new(),
            models: BTreeMap::new(),
            secret: None,
        }
    }

    /// Whether it is meant to have a key at all (a local server usually is not).
    pub fn declares_key(&self) -> bool {
        self.api_key.is_some()
            || !self.api_keys.is_empty()
            || self.key_env.is_some()
            || self.secret.is_some()
    }

    /// The keys to use, in order: `api_key`, `api_keys`, the secrets file's, then
    /// `key_env`'s if set.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .api_key
            .iter()
            .chain(&self.api_keys)
            .chain(&self.secret)
            .map(|k| k.as_str().to_string())
            .collect();
        if let Some(var) = &self.key_env
            && let Some(value) = crate::keys::env_key(var)
        {
            keys.push(value);
        }
        keys.retain(|k| !k.is_empty());
        keys.dedup();
        keys
    }
}

/// What the gateway knows about one model.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Tokens of context the model accepts.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// US dollars per million prompt tokens; unset: the embedded price table's, if it has
    /// one. Set 0 for a model that is free.
    #[serde(default)]
    pub input_price: Option<f64>,
    /// US dollars per million answer tokens (the input price when unset).
    #[serde(default)]
    pub output_price: Option<f64>,
    /// US dollars per million prompt tokens read from the provider's cache.
    #[serde(default)]
    pub cache_read_price: Option<f64>,
    /// US dollars per million prompt tokens written to the provider's cache.
    #[serde(default)]
    pub cache_write_price: Option<f64>,
}

/// The usage ledger (`[usage]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Record every request in the ledger (`xx usage`, the dashboard, budgets across
    /// restarts).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Days a request stays in the ledger; 0 keeps them all.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// The model savings are measured against; unset: the model each request asked for.
    #[serde(default)]
    pub premium_model: Option<String>,
    /// Keep each request's and answer's body with its row, for the dashboard's request view
    /// (keys and key-shaped tokens redacted). Off by default: bodies hold your code.
    #[serde(default)]
    pub capture_bodies: bool,
    /// The most of each body kept when capturing.
    #[serde(default = "default_capture_bytes")]
    pub capture_max_bytes: usize,
}

fn default_capture_bytes() -> usize {
    64 * 1024
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            retention_days: default_retention_days(),
            premium_model: None,
            capture_bodies: false,
            capture_max_bytes: default_capture_bytes(),
        }
    }
}

fn default_retention_days() -> u64 {
    365
}

/// Tool-output compression (`[compress]`): the gateway condenses the tool results of every
/// request it routes; the originals stay one `xx recall <id>` away.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Outputs shorter than this many bytes are sent as they are.
    #[serde(default = "default_compress_min")]
    pub min_bytes: usize,
    /// File reads up to this many bytes are sent verbatim (the agent may edit them next).
    #[serde(default = "default_compress_read_max")]
    pub read_max_bytes: usize,
    /// Originals are kept this many days after they were last condensed…
    #[serde(default = "default_compress_retention")]
    pub retention_days: u64,
    /// …and the store is kept under this many MiB (the oldest go first).
    #[serde(default = "default_compress_store")]
    pub store_max_mb: u64,
    /// Per agent (the name its launch routes under): on or off, other thresholds.
    #[serde(default)]
    pub agents: BTreeMap<String, CompressOverride>,
}

/// What a profile (`[compress]` in its file) or an agent (`[compress.agents.<name>]`)
/// changes of `[compress]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressOverride {
    pub enabled: Option<bool>,
    pub min_bytes: Option<usize>,
    pub read_max_bytes: Option<usize>,
}

fn default_compress_min() -> usize {
    2048
}

fn default_compress_read_max() -> usize {
    96 * 1024
}

fn default_compress_retention() -> u64 {
    14
}

fn default_compress_store() -> u64 {
    256
}

impl Default for CompressConfig {
    fn default() -> Self {
        CompressConfig {
            enabled: true,
            min_bytes: default_compress_min(),
            read_max_bytes: default_compress_read_max(),
            retention_days: default_compress_retention(),
            store_max_mb: default_compress_store(),
            agents: BTreeMap::new(),
        }
    }
}

impl CompressConfig {
    /// The settings for a request routed under `profile` (whose file may say more), or
    /// `None` when compression is off for it.
    pub fn settings_for(
        &self,
        profile: Option<&str>,
        from_profile: Option<&CompressOverride>,
    ) -> Option<crate::gateway::compress::Settings> {
        let agent = profile.map(|p| p.trim_end_matches("-bypass"));
        let mut enabled = self.enabled;
        let mut settings = crate::gateway::compress::Settings {
            min_bytes: self.min_bytes,
            read_max_bytes: self.read_max_bytes,
        };
        for layer in [from_profile, agent.and_then(|a| self.agents.get(a))]
            .into_iter()
            .flatten()
        {
            enabled = layer.enabled.unwrap_or(enabled);
            settings.min_bytes = layer.min_bytes.unwrap_or(settings.min_bytes);
            settings.read_max_bytes = layer.read_max_bytes.unwrap_or(settings.read_max_bytes);
        }
        enabled.then_some(settings)
    }
}

/// Model-scan (`[scan]`): refresh jobs that list every provider's models, probe a few, rank
/// them per kind and write the routing snapshot the tier letters and `scan:<kind>` read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// The supervisor runs a refresh job every `interval_hours` (with up to a tenth of it
    /// as random delay, so several machines do not probe at once).
    #[serde(default = "yes")]
    pub jobs: bool,
    #[serde(default = "default_scan_interval")]
    pub interval_hours: f64,
    /// Probe only free models (price 0, `:free`, local servers): refreshes spend nothing.
    #[serde(default = "yes")]
    pub free_only: bool,
    /// Models probed per refresh (three small requests each).
    #[serde(default = "default_scan_probes")]
    pub max_probes: usize,
    /// Probes in flight at once.
    #[serde(default = "default_scan_concurrency")]
    pub concurrency: usize,
    /// Seconds one listing or probe may take.
    #[serde(default = "default_scan_timeout")]
    pub timeout_secs: u64,
    /// Look for model servers on this machine's usual ports and offer them as providers.
    #[serde(default = "yes")]
    pub local_servers: bool,
    /// Local servers at other addresses than the usual ones: name -> API root (`…/v1`).
    #[serde(default)]
    pub local: BTreeMap<String, EnvString>,
    /// Models never used (`*` globs on `provider|model` or the model id).
    #[serde(default)]
    pub blocklist: Vec<String>,
    /// A snapshot older than this many hours is refused.
    #[serde(default = "default_scan_max_age")]
    pub max_age_hours: f64,
    /// Read the snapshot from here instead of the state dir (another producer's, say).
    #[serde(default)]
    pub snapshot: Option<EnvString>,
}

fn default_scan_interval() -> f64 {
    6.0
}

fn default_scan_probes() -> usize {
    20
}

fn default_scan_concurrency() -> usize {
    4
}

fn default_scan_timeout() -> u64 {
    20
}

fn default_scan_max_age() -> f64 {
    72.0
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            jobs: true,
            interval_hours: default_scan_interval(),
            free_only: true,
            max_probes: default_scan_probes(),
            concurrency: default_scan_concurrency(),
            timeout_secs: default_scan_timeout(),
            local_servers: true,
            local: BTreeMap::new(),
            blocklist: Vec::new(),
            max_age_hours: default_scan_max_age(),
            snapshot: None,
        }
    }
}

/// Where the gateway is and how agents authenticate to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The base URL agents are pointed at.
    #[serde(default = "default_gateway_url")]
    pub url: EnvString,
    /// The token agents present; `None` means the gateway accepts loopback clients without one.
    #[serde(default)]
    pub token: Option<EnvString>,
    /// Start the gateway when a launch needs it and it is down.
    #[serde(default = "yes")]
    pub auto_start: bool,
    /// Largest request body accepted, in bytes; larger ones get a 413 in the caller's shape.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds to establish an upstream connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds until the upstream's response headers (and, for streams, first event).
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout_secs: u64,
    /// Seconds of silence allowed between stream events.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a whole request may take.
    #[serde(default = "default_total_timeout")]
    pub total_timeout_secs: u64,
    /// Client addresses allowed besides loopback (needs `token`).
    #[serde(default)]
    pub allow: Vec<std::net::IpAddr>,
    /// Extra tries of the same model after a 5xx, connection failure or timeout.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Consecutive faults that open a model's circuit breaker.
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// Seconds an open breaker waits before letting one probe through (doubles per trip).
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_secs: u64,
    #[serde(default = "default_breaker_max_cooldown")]
    pub breaker_max_cooldown_secs: u64,
    /// Seconds a request may wait for a rate-limited candidate to be free again before it is
    /// answered with a 429 (never past `total_timeout_secs`).
    #[serde(default = "default_rate_limit_wait")]
    pub rate_limit_wait_secs: u64,
    /// Different models of one key limited within `rate_limit_window_secs` that cool the whole
    /// key (0: never; a 429 then cools only its model).
    #[serde(default = "default_rate_limit_key_models")]
    pub rate_limit_key_models: u32,
    #[serde(default = "default_rate_limit_window")]
    pub rate_limit_window_secs: u64,
    /// Largest upstream answer (a non-streamed body) the gateway reads; larger ones are the
    /// upstream's fault.
    #[serde(default = "default_max_answer")]
    pub max_answer_bytes: usize,
    /// Model calls served at once; more get a 503 with `Retry-After`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Request body bytes held at once across all calls; a call that would pass it gets a 503.
    #[serde(default = "default_max_held_body")]
    pub max_held_body_bytes: usize,
    /// Seconds a client has to send a request's headers (and an idle connection stays open),
    /// and the longest gap allowed while its body arrives.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            url: default_gateway_url(),
            token: None,
            auto_start: true,
            max_body_bytes: default_max_body(),
            connect_timeout_secs: default_connect_timeout(),
            first_byte_timeout_secs: default_first_byte_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            total_timeout_secs: default_total_timeout(),
            allow: Vec::new(),
            retries: default_retries(),
            breaker_threshold: default_breaker_threshold(),
            breaker_cooldown_secs: default_breaker_cooldown(),
            breaker_max_cooldown_secs: default_breaker_max_cooldown(),
            rate_limit_wait_secs: default_rate_limit_wait(),
            rate_limit_key_models: default_rate_limit_key_models(),
            rate_limit_window_secs: default_rate_limit_window(),
            max_answer_bytes: default_max_answer(),
            max_in_flight: default_max_in_flight(),
            max_held_body_bytes: default_max_held_body(),
            header_read_timeout_secs: default_header_read_timeout(),
        }
    }
}

/// How `xx` launches agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherConfig {
    /// Pass each agent its approval-bypass flag.
    #[serde(default = "yes")]
    pub bypass: bool,
    /// Hold interactive agents in a session that survives the terminal.
    #[serde(default = "yes")]
    pub guard: bool,
    /// The key that detaches from a session: `ctrl-]` (the default) or `ctrl-<letter>`.
    #[serde(default)]
    pub detach_key: DetachKey,
    /// How many times a held agent that dies from a signal is started again in its continue
    /// form (0: never).
    #[serde(default)]
    pub restart_on_signal: u32,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            bypass: true,
            guard: true,
            detach_key: DetachKey::default(),
            restart_on_signal: 0,
        }
    }
}

/// A control key, kept as the byte the terminal sends for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetachKey(pub u8);

impl Default for DetachKey {
    fn default() -> Self {
        DetachKey(0x1d)
    }
}

impl<'de> Deserialize<'de> for DetachKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let lower = text.trim().to_ascii_lowercase();
        let key = lower
            .strip_prefix("ctrl-")
            .or_else(|| lower.strip_prefix("ctrl+"))
            .or_else(|| lower.strip_prefix('^'));
        match key.map(str::as_bytes) {
            Some([c @ (b'a'..=b'z' | b'[' | b'\\' | b']' | b'^' | b'_')]) => {
                Ok(DetachKey(c.to_ascii_uppercase() & 0x1f))
            }
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not a control key; write it as `ctrl-]` or `ctrl-<letter>`"
            ))),
        }
    }
}

/// What a digit slot selects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    #[serde(default)]
    pub model: Option<EnvString>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// Per-agent settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// The gateway profile this agent uses instead of the one in its spec.
    #[serde(default)]
    pub profile: Option<String>,
}

fn default_gateway_url() -> EnvString {
    EnvString("http://127.0.0.1:8082".into())
}

fn yes() -> bool {
    true
}

fn default_retries() -> u32 {
    1
}

fn default_breaker_threshold() -> u32 {
    3
}

fn default_breaker_cooldown() -> u64 {
    60
}

fn default_breaker_max_cooldown() -> u64 {
    900
}

fn default_rate_limit_wait() -> u64 {
    5
}

fn default_rate_limit_key_models() -> u32 {
    3
}

fn default_rate_limit_window() -> u64 {
    60
}

fn default_max_answer() -> usize {
    64 * 1024 * 1024
}

fn default_max_in_flight() -> usize {
    256
}

fn default_max_held_body() -> usize {
    96 * 1024 * 1024
}

fn default_header_read_timeout() -> u64 {
    30
}

fn default_max_body() -> usize {
    32 * 1024 * 1024
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_first_byte_timeout() -> u64 {
    300
}

fn default_idle_timeout() -> u64 {
    300
}

fn default_total_timeout() -> u64 {
    3600
}

/// The placeholder key agents send when the gateway has no token configured.
pub const LOOPBACK_KEY: &str = "clutch-local";

impl Config {
    /// Read `path`; a missing file is the default config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config {
                    secrets: Config::load_secrets(path)?,
                    ..Config::default()
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let origin = path.display().to_string();
        let mut config: Config = parse_toml(&text, &origin)?;
        config.check_ranges(&text, &origin)?;
        config.check(&origin)?;
        config.secrets = Config::load_secrets(path)?;
        Ok(config)
    }

    /// The secrets file beside the config file at `path`.
    fn load_secrets(path: &Path) -> Result<BTreeMap<String, EnvString>, ConfigError> {
        let file = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(crate::keys::SECRETS_FILE);
        Ok(crate::keys::load_secrets(&file)?
            .into_iter()
            .map(|(name, key)| (name, EnvString(key)))
            .collect())
    }

    /// Numbers that would break serving (a panic on the first stream, every call a 504) are
    /// refused here, with the file, the line, the key and the range allowed.
    fn check_ranges(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        const DAY: u64 = 86_400;
        const GIB: u64 = 1024 * 1024 * 1024;
        let g = &self.gateway;
        let ranges: [(&str, u64, u64, u64); 16] = [
            ("max_body_bytes", g.max_body_bytes as u64, 1024, GIB),
            ("max_answer_bytes", g.max_answer_bytes as u64, 1024, 4 * GIB),
            (
                "max_held_body_bytes",
                g.max_held_body_bytes as u64,
                1024,
                16 * GIB,
            ),
            ("max_in_flight", g.max_in_flight as u64, 1, 100_000),
            ("connect_timeout_secs", g.connect_timeout_secs, 1, 600),
            ("first_byte_timeout_secs", g.first_byte_timeout_secs, 1, DAY),
            ("idle_timeout_secs", g.idle_timeout_secs, 1, DAY),
            ("total_timeout_secs", g.total_timeout_secs, 1, 7 * DAY),
            (
                "header_read_timeout_secs",
                g.header_read_timeout_secs,
                1,
                3600,
            ),
            ("retries", u64::from(g.retries), 0, 10),
            (
                "breaker_threshold",
                u64::from(g.breaker_threshold),
                1,
                1_000_000_000,
            ),
            ("breaker_cooldown_secs", g.breaker_cooldown_secs, 1, 7 * DAY),
            (
                "breaker_max_cooldown_secs",
                g.breaker_max_cooldown_secs,
                1,
                30 * DAY,
            ),
            ("rate_limit_wait_secs", g.rate_limit_wait_secs, 0, 3600),
            (
                "rate_limit_key_models",
                u64::from(g.rate_limit_key_models),
                0,
                10_000,
            ),
            (
                "rate_limit_window_secs",
                g.rate_limit_window_secs,
                1,
                7 * DAY,
            ),
        ];
        for (key, value, low, high) in ranges {
            if value < low || value > high {
                return Err(ConfigError::Invalid {
                    origin: format!("{origin}:{}", key_line(text, "gateway", key)),
                    field: format!("gateway.{key}"),
                    message: format!("must be between {low} and {high} (got {value})"),
                });
            }
        }
        if self.usage.retention_days > 36_500 {
            return Err(ConfigError::Invalid {
                origin: format!("{origin}:{}", key_line(text, "usage", "retention_days")),
                field: "usage.retention_days".into(),
                message: format!(
                    "must be between 0 (keep everything) and 36500 (got {})",
                    self.usage.retention_days
                ),
            });
        }
        let capture = self.usage.capture_max_bytes as u64;
        if !(1024..=16 * 1024 * 1024).contains(&capture) {
            return Err(ConfigError::Invalid {
                origin: format!("{origin}:{}", key_line(text, "usage", "capture_max_bytes")),
                field: "usage.capture_max_bytes".into(),
                message: format!("must be between 1024 and 16777216 (got {capture})"),
            });
        }
        let compress = &self.compress;
        let compress_ranges: [(&str, u64, u64, u64); 4] = [
            ("min_bytes", compress.min_bytes as u64, 256, GIB),
            (
                "read_max_bytes",
                compress.read_max_bytes as u64,
                0,
                16 * GIB,
            ),
            ("retention_days", compress.retention_days, 1, 36_500),
            ("store_max_mb", compress.store_max_mb, 1, 1 << 30),
        ];
        for (key, value, low, high) in compress_ranges {
            if value < low || value > high {
                return Err(ConfigError::Invalid {
                    origin: format!("{origin}:{}", key_line(text, "compress", key)),
                    field: format!("compress.{key}"),
                    message: format!("must be between {low} and {high} (got {value})"),
                });
            }
        }
        let scan = &self.scan;
        let scan_ranges: [(&str, f64, f64, f64); 5] = [
            ("interval_hours", scan.interval_hours, 0.0003, 24.0 * 365.0),
            ("max_probes", scan.max_probes as f64, 0.0, 1000.0),
            ("concurrency", scan.concurrency as f64, 1.0, 64.0),
            ("timeout_secs", scan.timeout_secs as f64, 1.0, 600.0),
            ("max_age_hours", scan.max_age_hours, 0.01, 24.0 * 365.0),
        ];
        for (key, value, low, high) in scan_ranges {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::Invalid {
                    origin: format!("{origin}:{}", key_line(text, "scan", key)),
                    field: format!("scan.{key}"),
                    message: format!("must be between {low} and {high} (got {value})"),
                });
            }
        }
        if g.breaker_max_cooldown_secs < g.breaker_cooldown_secs {
            return Err(ConfigError::Invalid {
                origin: format!(
                    "{origin}:{}",
                    key_line(text, "gateway", "breaker_max_cooldown_secs")
                ),
                field: "gateway.breaker_max_cooldown_secs".into(),
                message: format!(
                    "must be at least gateway.breaker_cooldown_secs ({})",
                    g.breaker_cooldown_secs
                ),
            });
        }
        Ok(())
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };
        let url = self.gateway.url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "gateway.url".into(),
                format!("must start with http:// or https:// (got `{url}`)"),
            ));
        }
        if let Some(token) = &self.gateway.token
            && !is_plain_value(token.as_str())
        {
            return Err(invalid(
                "gateway.token".into(),
                "must be non-empty printable ASCII without spaces or quotes".into(),
            ));
        }
        for (name, provider) in &self.providers {
            let url = provider.base_url.as_str();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    format!("providers.{name}.base_url"),
                    format!("must start with http:// or https:// (got `{url}`)"),
                ));
            }
            if name.contains('|') {
                return Err(invalid(
                    format!("providers.{name}"),
                    "a provider name cannot contain `|`".into(),
                ));
            }
        }
        let mut names = vec!["gateway", "supervisor"];
        for (i, service) in self.services.iter().enumerate() {
            if service.name.is_empty()
                || !service
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    format!("services[{i}].name"),
                    "must be letters, digits, `-` or `_`".into(),
                ));
            }
            if names.contains(&service.name.as_str()) {
                return Err(invalid(
                    format!("services[{i}].name"),
                    format!("`{}` is taken; pick another name", service.name),
                ));
            }
            names.push(&service.name);
            if service.command.is_empty() {
                return Err(invalid(
                    format!("services[{i}].command"),
                    "needs at least the program".into(),
                ));
            }
        }
        for (id, quota) in &self.quotas.models {
            if !id.contains('|') {
                return Err(invalid(
                    format!("quotas.models.\"{id}\""),
                    "must be `provider|model`".into(),
                ));
            }
            if quota.requests_per_minute == 0 {
                return Err(invalid(
                    format!("quotas.models.\"{id}\".requests_per_minute"),
                    "must be at least 1 (remove the entry for no limit)".into(),
                ));
            }
        }
        if !self.gateway.allow.is_empty() && self.gateway.token.is_none() {
            return Err(invalid(
                "gateway.allow".into(),
                "lets other machines in, so `gateway.token` must be set too".into(),
            ));
        }
        for letter in self.tiers.keys() {
            if !matches!(letter, 'd' | 'n' | 'k' | 'q') {
                return Err(invalid(
                    format!("tiers.{letter}"),
                    "is not a named tier letter (use d, n, k or q)".into(),
                ));
            }
        }
        for kind in self.selectors.keys() {
            let known = ["best", "free", "tool", "reasoning", "verifier", "fast"];
            if !known.contains(&kind.as_str()) {
                return Err(invalid(
                    format!("selectors.{kind}"),
                    format!(
                        "is not a model-scan kind (use one of: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        for (digit, slot) in &self.slots {
            if !digit.is_ascii_digit() {
                return Err(invalid(
                    format!("slots.{digit}"),
                    "slots are named 0 to 9".into(),
                ));
            }
            if slot.model.is_none() && slot.profile.is_none() {
                return Err(invalid(
                    format!("slots.{digit}"),
                    "needs `model`, `profile` or both".into(),
                ));
            }
        }
        let models =
            self.tiers
                .iter()
                .map(|(k, v)| (format!("tiers.{k}"), v))
                .chain(
                    self.selectors
                        .iter()
                        .map(|(k, v)| (format!("selectors.{k}"), v)),
                )
                .chain(self.slots.iter().filter_map(|(k, s)| {
                    s.model.as_ref().map(|m| (format!("slots.{k}.model"), m))
                }));
        for (field, model) in models {
            check_model_name(model.as_str()).map_err(|why| invalid(field, why))?;
        }
        Ok(())
    }

    /// The key agents present to the gateway.
    /// The built-in providers (each replaced by a user entry of the same name) plus the
    /// user's own.
    pub fn all_providers(&self) -> BTreeMap<String, ProviderConfig> {
        let mut all = BTreeMap::new();
        all.insert(
            "openrouter".to_string(),
            ProviderConfig {
                base_url: EnvString("https://openrouter.ai/api/v1".into()),
                format: crate::agent::Protocol::Chat,
                api_key: None,
                api_keys: Vec::new(),
                key_env: Some("OPENROUTER_API_KEY".into()),
                headers: BTreeMap::new(),
                models: BTreeMap::new(),
                secret: None,
            },
        );
        all.insert(
            "local".to_string(),
            ProviderConfig::local_server("http://127.0.0.1:11434/v1"),
        );
        for (name, provider) in &self.providers {
            all.insert(name.clone(), provider.clone());
        }
        for (name, provider) in all.iter_mut() {
            provider.secret = self.secrets.get(name).cloned();
        }
        all
    }

    pub fn gateway_key(&self) -> &str {
        self.gateway
            .token
            .as_ref()
            .map_or(LOOPBACK_KEY, EnvString::as_str)
    }
}

/// Printable ASCII with no whitespace or quoting characters: safe to place in env values,
/// argv, JSON and TOML without escaping.
pub fn is_plain_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'`' | b'$'))
}

/// Model names travel inside JSON, TOML and argv; keep them to what real model ids use.
pub fn check_model_name(model: &str) -> Result<(), String> {
    if is_plain_value(model) {
        Ok(())
    } else {
        Err(format!(
            "`{model}` is not a usable model name (printable, no spaces or quotes)"
        ))
    }
}
