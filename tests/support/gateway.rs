//! The gateway running in-process on 127.0.0.1:0 for a test, configured from a
//! [`Clutch`](super::Clutch) sandbox's config dir. Stops when dropped.

use std::sync::Arc;

use clutch::gateway::{Gateway, serve};
use clutch::paths::Paths;

pub struct TestGateway {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestGateway {
    /// Start with the config and profiles under `clutch_home`.
    pub fn start(clutch_home: &std::path::Path) -> TestGateway {
        let paths = Paths::under(clutch_home);
        let config =
            clutch::config::Config::load(&paths.config_file()).expect("test config is valid");
        let gateway = Arc::new(Gateway::new(&config, &paths).expect("gateway builds"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serve(gateway, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        TestGateway {
            url,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback port that was free a moment ago, for a server the test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `xx gateway` as its own process on a free loopback port, for tests that read its memory
/// or its log. Killed when dropped.
pub struct ProcessGateway {
    pub url: String,
    pub log: std::path::PathBuf,
    child: std::process::Child,
}

impl ProcessGateway {
    pub fn start(clutch_home: &std::path::Path) -> ProcessGateway {
        ProcessGateway::start_at(clutch_home, free_port())
    }

    /// On `port` (the one the config's `gateway.url` names, for tests that run `proxies`).
    pub fn start_at(clutch_home: &std::path::Path, port: u16) -> ProcessGateway {
        ProcessGateway::start_with_env(clutch_home, port, &[])
    }

    /// With `env` added to (or, for an empty value, removed from) the test's environment.
    pub fn start_with_env(
        clutch_home: &std::path::Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> ProcessGateway {
        let log = clutch_home.join("gateway.log");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_xx"));
        for (name, value) in env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let child = command
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
            .env("CLUTCH_HOME", clutch_home)
            .env("CLUTCH_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        while ureq::get(&format!("{url}/health")).call().is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the gateway did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ProcessGateway { url, log, child }
    }

    /// Resident memory in MB, from /proc.
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for ProcessGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config and a default profile that send every model call to the fake upstream at `url`,
/// which speaks `format`.
pub fn route_everything_to(
    clutch_home: &std::path::Path,
    gateway_url: &str,
    fake_url: &str,
    format: &str,
) {
    let base = match format {
        "chat" | "responses" => format!("{fake_url}/v1"),
        _ => fake_url.to_string(),
    };
    let config = format!(
        "[gateway]\nurl = \"{gateway_url}\"\nauto_start = false\n\n[providers.fake]\nbase_url = \"{base}\"\nformat = \"{format}\"\napi_key = \"upstream-secret-key\"\n"
    );
    let profile = "default_tier = \"middle\"\n[tiers.big]\nmodel = \"fake|fake-big\"\n[tiers.middle]\nmodel = \"fake|fake-middle\"\n[tiers.small]\nmodel = \"fake|fake-small\"\n[families]\n\"*opus*\" = \"big\"\n\"*sonnet*\" = \"middle\"\n\"*haiku*\" = \"small\"\n";
    configure(clutch_home, &config, &[("default", profile)]);
}

/// Write `config` and each `(profile name, profile TOML)` under `clutch_home`.
pub fn configure(clutch_home: &std::path::Path, config: &str, profiles: &[(&str, &str)]) {
    let dir = clutch_home.join("config/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(clutch_home.join("config/config.toml"), config).unwrap();
    for (name, profile) in profiles {
        std::fs::write(dir.join(format!("{name}.toml")), profile).unwrap();
    }
}

/// An HTTP client that returns error statuses as responses, since the tests assert on them.
/// Bodies go out as JSON unless a test says otherwise, as agents send them.
pub fn http_agent() -> ureq::Agent {
    agent(None)
}

/// [`http_agent`] that also presents the admin token of the gateway under `clutch_home`
/// (read at each request, so the gateway may make it after this agent exists).
pub fn admin_agent(clutch_home: &std::path::Path) -> ureq::Agent {
    agent(Some(clutch::paths::Paths::under(clutch_home)))
}

fn agent(admin: Option<clutch::paths::Paths>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .middleware(
            move |mut request: ureq::http::Request<ureq::SendBody>,
                  next: ureq::middleware::MiddlewareNext| {
                let headers = request.headers_mut();
                if !headers.contains_key("content-type") {
                    headers.insert("content-type", "application/json".parse().unwrap());
                }
                if let Some(token) = admin.as_ref().and_then(clutch::gateway::admin::token::read) {
                    headers.insert(
                        clutch::gateway::admin::token::HEADER,
                        token.parse().unwrap(),
                    );
                }
                next.handle(request)
            },
        )
        .build()
        .new_agent()
}
