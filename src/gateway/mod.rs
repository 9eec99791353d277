//! The gateway: a local HTTP server that speaks every agent's API and sends each request to
//! the provider its routing profile picks. [`serve`] takes a listener and a shutdown future,
//! so tests bind port 0; `xx gateway` runs it in the foreground.

pub mod admin;
pub mod admission;
pub mod breaker;
pub mod call;
pub mod compress;
pub mod connect;
pub mod ir;
pub mod proto;
pub mod quota;
pub mod ratelimit;
pub mod route;
pub mod scan;
pub mod secrets;
pub mod server;
pub mod sse;
pub mod upstream;
pub mod usage;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::config::{Config, ConfigError, ProviderConfig};
use crate::error::Error;
use crate::paths::Paths;
use ir::{ApiError, ErrorKind};
use proto::Protocol;
use ratelimit::KeyPool;
use upstream::{Provider, Timeouts};

/// Everything a request handler needs, shared by all requests.
pub struct Gateway {
    /// Everything that comes from the config files; swapped whole on reload, so a request
    /// in flight finishes on the snapshot it started with.
    pub routing: arc_swap::ArcSwap<Routing>,
    pub client: upstream::Client,
    started: Instant,
    pub stats: Stats,
    pub breakers: breaker::Breakers,
    pub keys: KeyPool,
    /// Today's usage, for the daily budgets.
    pub ledger: quota::Ledger,
    /// Every request's record (None: `usage.enabled = false`).
    pub usage: Option<usage::Ledger>,
    /// What `/metrics` reports.
    pub metrics: Arc<admin::metrics::Metrics>,
    /// Limits on calls and request body bytes held at once.
    pub admission: admission::Admission,
    /// The model-scan snapshot in force.
    pub scan: scan::snapshot::Live,
    /// Tool-output compression's memo and recall store.
    pub compressor: compress::Compressor,
    /// What admin endpoints want even on loopback (see [`admin::token`]).
    admin_token: String,
    paths: Paths,
}

/// The config-derived part of the gateway.
pub struct Routing {
    pub providers: BTreeMap<String, Arc<Provider>>,
    pub provider_configs: BTreeMap<String, ProviderConfig>,
    pub profiles: route::Profiles,
    pub timeouts: Timeouts,
    pub max_body: usize,
    /// Extra tries of the same candidate after a transient fault.
    pub retries: u32,
    token: Option<String>,
    allow: Vec<IpAddr>,
    pub limits: quota::Limits,
    pub rate_limits: ratelimit::Settings,
    /// How long a client may take to send a request's headers, and the longest gap while its
    /// body arrives.
    pub header_read_timeout: std::time::Duration,
    /// The largest non-streamed answer read from an upstream.
    pub max_answer: usize,
    /// The names this gateway answers to besides loopback ones.
    pub own_hosts: admin::boundary::OwnHosts,
    /// The model savings are measured against (None: the model each request asked for).
    pub premium_model: Option<String>,
    /// Bytes of each body kept with its ledger row (None: bodies are not kept).
    pub capture: Option<usize>,
    /// Models never routed to (`scan.blocklist`).
    pub blocklist: Vec<String>,
    /// Where the model-scan snapshot is read from, and the oldest one accepted.
    pub scan_file: std::path::PathBuf,
    pub scan_max_age_hours: f64,
    /// Tool-output compression (`[compress]`).
    pub compress: crate::config::CompressConfig,
    /// Every configured key and token: removed from what is stored (recall originals).
    pub secret_values: Vec<String>,
}

impl Routing {
    /// Read and check the config and profiles under `paths`.
    pub fn load(paths: &Paths) -> Result<(Config, Routing), ConfigError> {
        let config = Config::load(&paths.config_file())?;
        let file = scan::snapshot::path(paths, &config.scan);
        let snapshot = scan::snapshot::load(&file, config.scan.max_age_hours).ok();
        let routing = Routing::from_config(&config, paths, snapshot.as_ref())?;
        Ok((config, routing))
    }

    /// `snapshot`'s local model servers join the providers (unless the config names one
    /// the same, or `scan.local_servers` is off).
    fn from_config(
        config: &Config,
        paths: &Paths,
        snapshot: Option<&scan::snapshot::Snapshot>,
    ) -> Result<Routing, ConfigError> {
        let mut provider_configs = config.all_providers();
        if config.scan.local_servers
            && let Some(snapshot) = snapshot
        {
            for (name, base_url) in &snapshot.local_servers {
                if !config.providers.contains_key(name) && crate::config::is_plain_value(name) {
                    provider_configs.insert(name.clone(), ProviderConfig::local_server(base_url));
                }
            }
        }
        let mut providers = BTreeMap::new();
        for (name, provider) in &provider_configs {
            let ready = Provider::new(name, provider).map_err(|message| ConfigError::Invalid {
                origin: paths.config_file().display().to_string(),
                field: format!("providers.{name}"),
                message,
            })?;
            providers.insert(name.clone(), Arc::new(ready));
        }
        let secret_values = providers
            .values()
            .flat_map(|p: &Arc<Provider>| p.keys.iter().cloned())
            .chain(
                config
                    .gateway
                    .token
                    .as_ref()
                    .map(|t| t.as_str().to_string()),
            )
            .collect();
        let profiles = route::Profiles::load(&paths.user_profiles_dir())?;
        profiles.check(&provider_configs)?;
        // Profiles the config names for slots and agents must exist now, not on first use.
        let named = config
            .slots
            .iter()
            .filter_map(|(digit, slot)| {
                slot.profile
                    .as_ref()
                    .map(|p| (format!("slots.{digit}.profile"), p))
            })
            .chain(config.agents.iter().filter_map(|(agent, settings)| {
                settings
                    .profile
                    .as_ref()
                    .map(|p| (format!("agents.{agent}.profile"), p))
            }));
        for (field, profile) in named {
            if let Err(error) = profiles.get(Some(profile)) {
                return Err(ConfigError::Invalid {
                    origin: paths.config_file().display().to_string(),
                    field,
                    message: error.message,
                });
            }
        }
        Ok(Routing {
            providers,
            provider_configs,
            profiles,
            timeouts: Timeouts::from_config(&config.gateway),
            max_body: config.gateway.max_body_bytes,
            retries: config.gateway.retries,
            token: config
                .gateway
                .token
                .as_ref()
                .map(|t| t.as_str().to_string()),
            allow: config.gateway.allow.clone(),
            limits: quota::Limits::new(&config.quotas),
            rate_limits: ratelimit::Settings::from_config(&config.gateway),
            own_hosts: admin::boundary::OwnHosts::from_url(config.gateway.url.as_str()),
            header_read_timeout: std::time::Duration::from_secs(
                config.gateway.header_read_timeout_secs,
            ),
            max_answer: config.gateway.max_answer_bytes,
            premium_model: config.usage.premium_model.clone(),
            capture: config
                .usage
                .capture_bodies
                .then_some(config.usage.capture_max_bytes),
            blocklist: config.scan.blocklist.clone(),
            scan_file: scan::snapshot::path(paths, &config.scan),
            scan_max_age_hours: config.scan.max_age_hours,
            compress: config.compress.clone(),
            secret_values,
        })
    }
}

/// The recall store is pruned at start and every hour after, off the request path.
fn prune_recall_hourly(store: compress::store::Store) {
    let spawned = std::thread::Builder::new()
        .name("recall-prune".into())
        .spawn(move || {
            loop {
                let removed = store.prune();
                if removed > 0 {
                    tracing::debug!(removed, "recall store pruned");
                }
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start pruning the recall store");
    }
}

fn breaker_settings(config: &Config) -> breaker::Settings {
    breaker::Settings {
        threshold: config.gateway.breaker_threshold,
        cooldown_ms: config.gateway.breaker_cooldown_secs * 1000,
        max_cooldown_ms: config.gateway.breaker_max_cooldown_secs * 1000,
    }
}

/// Request counters for `proxies watch` (`GET /api/stats`).
#[derive(Default)]
pub struct Stats {
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicI64,
    /// `provider|model` -> (requests, errors, total milliseconds to the first byte).
    models: std::sync::Mutex<BTreeMap<String, (u64, u64, f64)>>,
}

impl Stats {
    /// Count a call as in flight until the returned guard is dropped.
    pub fn begin(&self) -> impl Drop + '_ {
        struct InFlight<'a>(&'a std::sync::atomic::AtomicI64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    pub fn record(&self, target: &str, ok: bool, ms: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        if let Ok(mut models) = self.models.lock() {
            let entry = models.entry(target.to_string()).or_default();
            entry.0 += 1;
            entry.1 += u64::from(!ok);
            entry.2 += ms;
        }
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn to_json(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let models: Vec<Value> = self
            .models
            .lock()
            .map(|m| m.iter().map(|(k, (n, e, ms))| json!({"model": k, "requests": n, "errors": e, "avg_ms": ms / (*n).max(1) as f64})).collect())
            .unwrap_or_default();
        json!({"requests": self.requests.load(Relaxed), "errors": self.errors.load(Relaxed),
            "in_flight": self.in_flight.load(Relaxed), "models": models})
    }
}

impl Gateway {
    /// Build from the config and the profiles in `paths`; every reference is checked here so
    /// a mistake fails at start-up, not on the first request.
    pub fn new(config: &Config, paths: &Paths) -> Result<Gateway, ConfigError> {
        crate::paths::ensure_private_dir(&paths.state_dir).map_err(|message| {
            ConfigError::Invalid {
                origin: paths.state_dir.display().to_string(),
                field: "state dir".into(),
                message,
            }
        })?;
        let admin_token =
            admin::token::load_or_create(paths).map_err(|message| ConfigError::Invalid {
                origin: paths.admin_token_file().display().to_string(),
                field: "admin token".into(),
                message,
            })?;
        let metrics = Arc::new(admin::metrics::Metrics::new());
        let usage = config.usage.enabled.then(|| {
            let observer = metrics.clone();
            usage::Ledger::open(
                usage::ledger_file(paths),
                config.usage.retention_days,
                Arc::new(move |record: &usage::record::Record| observer.observe(record)),
            )
        });
        // Today's budgets go on from what the ledger already holds for today (UTC).
        let spent = quota::Ledger::default();
        if let Some(usage) = &usage {
            let day_start = usage::now_ms() / 86_400_000 * 86_400_000;
            for (provider, tokens, cost) in usage.spend_since(day_start) {
                spent.add(&provider, tokens, cost);
            }
        }
        let scan = scan::snapshot::Live::default();
        scan.reload(
            &scan::snapshot::path(paths, &config.scan),
            config.scan.max_age_hours,
        );
        let routing = Routing::from_config(config, paths, scan.get().as_deref())?;
        let recall = compress::store::Store::new(
            &paths.state_dir,
            config.compress.retention_days,
            config.compress.store_max_mb,
        );
        Ok(Gateway {
            routing: arc_swap::ArcSwap::from_pointee(routing),
            scan,
            compressor: compress::Compressor::new(recall),
            client: upstream::client(&config.gateway),
            started: Instant::now(),
            stats: Stats::default(),
            breakers: breaker::Breakers::new(
                breaker_settings(config),
                Some(paths.state_dir.join("breakers.json")),
            ),
            keys: KeyPool::default(),
            ledger: spent,
            usage,
            metrics,
            admission: admission::Admission::new(
                config.gateway.max_in_flight,
                config.gateway.max_held_body_bytes,
            ),
            admin_token,
            paths: paths.clone(),
        })
    }

    /// Re-read the config and profiles. An invalid new config is rejected with its error and
    /// the old one stays; requests in flight finish on the config they started with.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = match Config::load(&self.paths.config_file()) {
            Ok(config) => config,
            Err(error) => {
                // A broken config does not hold back a new snapshot.
                let old = self.routing.load();
                self.scan.reload(&old.scan_file, old.scan_max_age_hours);
                return Err(error);
            }
        };
        self.scan.reload(
            &scan::snapshot::path(&self.paths, &config.scan),
            config.scan.max_age_hours,
        );
        let routing = Routing::from_config(&config, &self.paths, self.scan.get().as_deref())?;
        self.breakers.set_settings(breaker_settings(&config));
        // A provider whose key, URL or headers changed starts afresh: the faults and rate
        // limits of its old settings (a wrong key, most often) say nothing about the new.
        let old = self.routing.load();
        for (name, provider) in &routing.providers {
            let changed = old
                .providers
                .get(name)
                .is_none_or(|before| before.fingerprint != provider.fingerprint);
            if changed {
                let reset = self.breakers.reset_provider(name);
                self.keys.reset(Some(name));
                if reset > 0 {
                    tracing::info!(provider = %name, breakers = reset, "provider changed; its breakers were reset");
                }
            }
        }
        self.routing.store(Arc::new(routing));
        Ok(())
    }

    /// When the config file or a profile last changed, for the file watcher.
    pub fn config_stamp(&self) -> Vec<(std::path::PathBuf, Option<std::time::SystemTime>)> {
        let mut files = vec![
            self.paths.config_file(),
            self.paths.config_dir.join(crate::keys::SECRETS_FILE),
            self.routing.load().scan_file.clone(),
        ];
        if let Ok(entries) = std::fs::read_dir(self.paths.user_profiles_dir()) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
        files.sort();
        files
            .into_iter()
            .map(|f| {
                let modified = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
                (f, modified)
            })
            .collect()
    }

    /// Loopback clients are always let in; others must be allowed and present the token.
    pub fn authorize(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), ApiError> {
        if peer.ip().is_loopback() {
            return Ok(());
        }
        let routing = self.routing.load();
        if !routing.allow.contains(&peer.ip()) {
            return Err(ApiError::new(
                ErrorKind::Permission,
                format!("{} is not in gateway.allow", peer.ip()),
            ));
        }
        let presented = headers
            .get("x-api-key")
            .or(headers.get("x-goog-api-key"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            })
            .or_else(|| {
                query.and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("key=").map(str::to_string))
                })
            });
        match (&routing.token, presented) {
            (Some(token), Some(presented)) if *token == presented => Ok(()),
            _ => Err(ApiError::new(
                ErrorKind::Authentication,
                "the gateway token is missing or wrong",
            )),
        }
    }

    pub fn health(&self) -> Value {
        json!({
            "status": "ok",
            "service": "clutch-gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_secs": self.started.elapsed().as_secs(),
        })
    }

    /// The models this gateway can route to by name, in the caller's listing shape.
    pub fn model_list(&self, protocol: Protocol) -> Value {
        let mut ids: Vec<String> = Vec::new();
        let routing = self.routing.load();
        for (_, profile) in routing.profiles.iter() {
            ids.extend(profile.model_map.keys().cloned());
            ids.extend(profile.tiers.values().map(|t| t.model.clone()));
        }
        for (name, provider) in &routing.provider_configs {
            ids.extend(provider.models.keys().map(|m| format!("{name}|{m}")));
        }
        ids.sort();
        ids.dedup();
        match protocol {
            Protocol::Anthropic => json!({
                "data": ids.iter().map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})).collect::<Vec<_>>(),
                "has_more": false, "first_id": ids.first(), "last_id": ids.last(),
            }),
            Protocol::Gemini => json!({
                "models": ids.iter().map(|id| json!({"name": format!("models/{id}"), "displayName": id,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})).collect::<Vec<_>>(),
            }),
            Protocol::Chat | Protocol::Responses => json!({
                "object": "list",
                "data": ids.iter().map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "clutch"})).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Serve on `listener` until `shutdown` completes, then let open connections finish (for at
/// most a few seconds).
///
/// Each connection is served by hyper's HTTP/1 connection with a timer, so a client must send
/// its headers within `gateway.header_read_timeout_secs` (slowloris), and a keep-alive
/// connection that sits idle that long is closed.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower_service::Service as _;
    let header_timeout = gateway.routing.load().header_read_timeout;
    let app = axum::Router::new()
        .fallback(server::handle)
        .with_state(gateway);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset while queued: wait a
                    // moment rather than spin; the connections already open go on.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // Streams are many small writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().call(request)
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Raise the soft limit on open files to the hard limit: at the usual soft limit of 1,024 a
/// thousand idle sockets would leave no descriptor for `/health` or an upstream call.
pub fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %err, "cannot raise the open-file limit");
    }
}

/// The address to listen on: `--listen`, else the host and port of `gateway.url`.
pub fn listen_address(config: &Config, listen: Option<&str>) -> Result<SocketAddr, Error> {
    let text = match listen {
        Some(text) => text.to_string(),
        None => {
            let url: axum::http::Uri = config.gateway.url.as_str().parse().map_err(|e| {
                Error::Usage(format!(
                    "gateway.url `{}` is not a URL: {e}",
                    config.gateway.url.as_str()
                ))
            })?;
            let host = url.host().unwrap_or("127.0.0.1");
            let host = if host == "localhost" {
                "127.0.0.1"
            } else {
                host.trim_start_matches('[').trim_end_matches(']')
            };
            let port = url.port_u16().unwrap_or(match url.scheme_str() {
                Some("https") => 443,
                Some("http") => 80,
                _ => 8082,
            });
            match host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port).to_string(),
                Err(_) => {
                    return Err(Error::Usage(format!(
                        "gateway.url host `{host}` must be an IP address or localhost"
                    )));
                }
            }
        }
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen `{text}` is not an address like 127.0.0.1:8082"
        ))
    })?;
    if !addr.ip().is_loopback()
        && (config.gateway.token.is_none() || config.gateway.allow.is_empty())
    {
        return Err(Error::Usage(format!(
            "refusing to listen on {addr}: a non-loopback address needs gateway.token and gateway.allow in the config"
        )));
    }
    Ok(addr)
}

/// `xx gateway`: serve in the foreground until Ctrl-C or SIGTERM.
pub fn run_foreground(paths: &Paths, listen: Option<&str>) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    let addr = listen_address(&config, listen)?;
    let gateway = Arc::new(Gateway::new(&config, paths)?);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLUTCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    raise_open_file_limit();
    // Only a serving gateway prunes: `proxies config check` builds one too.
    prune_recall_hourly(gateway.compressor.store().clone());
    let threads = std::env::var("CLUTCH_GATEWAY_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| Error::io("cannot start the async runtime", e))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::io(
                format!("cannot listen on {addr} (is another gateway running? `proxies status`)"),
                e,
            )
        })?;
        tracing::info!(%addr, "clutch gateway listening");
        tokio::spawn(watch_for_reload(gateway.clone()));
        serve(gateway, listener, shutdown_signal())
            .await
            .map_err(|e| Error::io("the gateway stopped", e))
    })?;
    Ok(0)
}

/// Reload on SIGHUP and when the config file or a profile changes (checked every second).
async fn watch_for_reload(gateway: Arc<Gateway>) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut stamp = gateway.config_stamp();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let reason = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = gateway.config_stamp();
                if now == stamp {
                    continue;
                }
                stamp = now;
                "a config file changed"
            }
        };
        match gateway.reload() {
            Ok(()) => tracing::info!(reason, "config reloaded"),
            Err(err) => {
                tracing::warn!(reason, error = %err, "config reload rejected; the previous config stays in force")
            }
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
