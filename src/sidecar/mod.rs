//! Service lifecycle: the built-in gateway and any external services from the config, kept
//! running by a detached supervisor ([`supervisor`]), driven by the `proxies` verbs
//! ([`commands`]) and started on demand by `xx` ([`ensure_gateway`]). Only processes clutch
//! started (pid and start time recorded) are ever signalled.

pub mod commands;
pub mod jobs;
pub mod state;
pub mod supervisor;

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;

/// A service the supervisor runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub port: Option<u16>,
    pub health_path: String,
    pub start_timeout: Duration,
}

/// The gateway first, then the configured services by their `order`.
pub fn services(config: &Config, exe: &Path) -> Result<Vec<Service>, Error> {
    let port = crate::gateway::listen_address(config, None)?.port();
    let mut services = vec![Service {
        name: "gateway".into(),
        command: vec![exe.display().to_string(), "__gateway".into()],
        env: Vec::new(),
        port: Some(port),
        health_path: "/health".into(),
        start_timeout: Duration::from_secs(10),
    }];
    let mut extra: Vec<_> = config.services.iter().collect();
    extra.sort_by_key(|s| s.order);
    for service in extra {
        services.push(Service {
            name: service.name.clone(),
            command: service
                .command
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            env: service
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().to_string()))
                .collect(),
            port: service.port,
            health_path: service.health_path.clone(),
            start_timeout: Duration::from_secs(service.start_timeout_secs),
        });
    }
    Ok(services)
}

/// GET `url` within `timeout`: Ok with the body on a 2xx answer.
pub fn health(url: &str, timeout: Duration) -> Result<String, String> {
    call(url, timeout, None, None)
}

/// GET one of the gateway's admin endpoints (`/api/…`), presenting the admin token that the
/// gateway keeps in `paths`' config dir.
pub fn admin_get(paths: &Paths, url: &str, timeout: Duration) -> Result<String, String> {
    call(url, timeout, Some(&admin_token(paths)?), None)
}

/// POST to one of the gateway's admin endpoints; Ok with the body on a 2xx answer, Err with
/// the gateway's own message otherwise.
pub fn admin_post(paths: &Paths, url: &str, timeout: Duration) -> Result<String, String> {
    call(url, timeout, Some(&admin_token(paths)?), Some(""))
}

/// POST `body` (JSON) to one of the gateway's admin endpoints.
pub fn admin_post_json(
    paths: &Paths,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<String, String> {
    call(
        url,
        timeout,
        Some(&admin_token(paths)?),
        Some(&body.to_string()),
    )
}

fn admin_token(paths: &Paths) -> Result<String, String> {
    crate::gateway::admin::token::read(paths).ok_or_else(|| {
        format!(
            "no usable admin token in {} (the gateway makes it when it starts: `proxies up`)",
            paths.admin_token_file().display()
        )
    })
}

/// One GET (or, with a body, a JSON POST) within `timeout`; a non-2xx answer is an error that
/// carries the gateway's own message when it sent one.
fn call(
    url: &str,
    timeout: Duration,
    token: Option<&str>,
    post: Option<&str>,
) -> Result<String, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let header = crate::gateway::admin::token::HEADER;
    let answer = match (post, token) {
        (Some(body), Some(token)) => agent
            .post(url)
            .header(header, token)
            .header("content-type", "application/json")
            .send(body),
        (Some(body), None) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body),
        (None, Some(token)) => agent.get(url).header(header, token).call(),
        (None, None) => agent.get(url).call(),
    };
    let mut response = answer.map_err(|err| err.to_string())?;
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if response.status().is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
    Err(match message {
        Some(message) => format!("HTTP {}: {message}", response.status()),
        None => format!("HTTP {}", response.status()),
    })
}

pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    crate::paths::ensure_private_dir(dir).map_err(Error::Usage)
}

/// The hidden entry points both binaries re-execute themselves with: `__supervise` (the
/// supervisor), `__gateway` (the gateway as a service) and `__scan_refresh` (a model-scan job). None for any other argv.
pub fn hidden_entry() -> Option<Result<i32, Error>> {
    let arg = std::env::args().nth(1)?;
    let paths = Paths::from_env();
    match arg.as_str() {
        "__supervise" => Some((|| {
            let config = Config::load(&paths.config_file())?;
            let exe =
                std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
            supervisor::run(&paths, services(&config, &exe)?)
        })()),
        "__gateway" => Some(crate::gateway::run_foreground(&paths, None)),
        // The supervisor's model-scan job.
        "__scan_refresh" => Some(crate::gateway::scan::show::refresh(
            &paths, None, false, true,
        )),
        "__hold" => Some(match std::env::args().nth(2) {
            Some(name) => crate::session::holder::run(&paths, &name),
            None => Err(Error::Usage("__hold needs a session name".into())),
        }),
        _ => None,
    }
}

/// Whether a supervisor holds the lock right now.
pub fn supervisor_running(paths: &Paths) -> bool {
    let Ok(file) = File::open(state::lock_file(paths)) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
}

/// Start the supervisor detached: a new session, no terminal, our own binary re-executed.
pub fn start_supervisor(paths: &Paths) -> Result<(), Error> {
    create_private_dir(&paths.runtime_dir)?;
    create_private_dir(&paths.log_dir())?;
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log_dir().join("supervisor.log"))
        .map_err(|e| Error::io("cannot open the supervisor log", e))?;
    let mut command = Command::new(exe);
    command
        .arg("__supervise")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::io("cannot start the supervisor", e))?;
    // It is in its own session now; reap it in the background so it never lingers as a zombie.
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(())
}

/// What the gateway's health endpoint says, if it is a clutch gateway.
pub fn gateway_health(config: &Config, timeout: Duration) -> Result<(), String> {
    let url = format!(
        "{}/health",
        config.gateway.url.as_str().trim_end_matches('/')
    );
    let body = health(&url, timeout)?;
    if body.contains("clutch-gateway") {
        Ok(())
    } else {
        Err(format!("{url} answers, but not as a clutch gateway"))
    }
}

/// `xx`'s auto-start: make sure the gateway answers, starting it under a lock when it does not
/// (so concurrent launches start exactly one), with a spinner on a terminal.
pub fn ensure_gateway(paths: &Paths, config: &Config) -> Result<(), Error> {
    if gateway_health(config, Duration::from_millis(500)).is_ok() {
        return Ok(());
    }
    if !config.gateway.auto_start {
        return Err(Error::Usage(format!(
            "the gateway at {} is not running and gateway.auto_start is off: start it with `proxies up`, or use the direct route (d)",
            config.gateway.url.as_str()
        )));
    }
    let is_local = crate::gateway::connect::is_loopback_url(config.gateway.url.as_str());
    if !is_local {
        return Err(Error::Usage(format!(
            "the gateway at {} does not answer; clutch only starts a gateway on this machine, so start that one,              or point gateway.url at a local address",
            config.gateway.url.as_str()
        )));
    }
    let port = crate::gateway::listen_address(config, None)?.port();
    if let Some(holder) = state::listener_pid(port)
        && state::read_pid(&state::pid_file(paths, "gateway")).is_none_or(|r| r.pid != holder)
        && gateway_health(config, Duration::from_millis(500)).is_err()
    {
        return Err(Error::Usage(format!(
            "port {port} is held by pid {holder} ({}), which is not a clutch gateway; stop it or set gateway.url to another port",
            state::cmdline(holder)
        )));
    }
    create_private_dir(&paths.runtime_dir)?;
    let lock = File::create(paths.runtime_dir.join("autostart.lock"))
        .map_err(|e| Error::io("cannot create the auto-start lock", e))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("cannot take the auto-start lock", e.into()))?;
    if gateway_health(config, Duration::from_millis(500)).is_ok() {
        return Ok(());
    }
    if !supervisor_running(paths) {
        start_supervisor(paths)?;
    }
    wait_for(
        paths,
        config,
        Duration::from_secs(15),
        "starting the clutch gateway",
    )
}

/// Wait for the gateway to answer, showing a spinner on a terminal; on timeout the error
/// carries the log tail and what to do.
pub fn wait_for(
    paths: &Paths,
    config: &Config,
    timeout: Duration,
    what: &str,
) -> Result<(), Error> {
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(80));
        bar
    });
    let deadline = Instant::now() + timeout;
    let result = loop {
        if gateway_health(config, Duration::from_millis(200)).is_ok() {
            break Ok(());
        }
        if let Some(state) = state::read_state(paths)
            && let Some(gateway) = state.services.iter().find(|s| s.name == "gateway")
            && gateway.state == state::Phase::Failed
        {
            break Err(gateway
                .last_error
                .clone()
                .unwrap_or_else(|| "the gateway failed".into()));
        }
        if Instant::now() > deadline {
            break Err(format!("not healthy after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    result.map_err(|why| {
        let tail = state::tail(&paths.log_dir().join("gateway.log"), 15);
        let supervisor = state::tail(&paths.log_dir().join("supervisor.log"), 5);
        Error::Usage(format!(
            "the clutch gateway did not come up: {why}\nlast gateway log lines:\n  {}\n{}see `proxies status` and `proxies logs gateway`",
            if tail.is_empty() { "(none)".into() } else { tail.join("\n  ") },
            if supervisor.is_empty() { String::new() } else { format!("supervisor:\n  {}\n", supervisor.join("\n  ")) }
        ))
    })
}
