//! The `proxies` verbs: up, down, status, logs, restart, watch, config show|check, and
//! service install|uninstall (a systemd user unit).

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::state::{self, Phase};
use super::{gateway_health, start_supervisor, supervisor, supervisor_running, wait_for};
use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;

fn load(paths: &Paths) -> Result<Config, Error> {
    Ok(Config::load(&paths.config_file())?)
}

/// `proxies up`: start what is not running and wait until every service is up.
pub fn up(paths: &Paths) -> Result<i32, Error> {
    let config = load(paths)?;
    let started = Instant::now();
    let already = supervisor_running(paths);
    if !already {
        clean_stale(paths);
        start_supervisor(paths)?;
    } else {
        for name in revive_failed(paths)? {
            println!("starting {name} again (it had failed)");
        }
    }
    wait_for(paths, &config, Duration::from_secs(30), "starting services")?;
    let all_up = wait_services(paths, Duration::from_secs(30));
    if already {
        println!("already up");
    } else {
        println!("up in {} ms", started.elapsed().as_millis());
    }
    print_status(paths, &config, false)?;
    Ok(if all_up { 0 } else { 1 })
}

/// Wait until no service is still starting; true when all run.
fn wait_services(paths: &Paths, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(state) = state::read_state(paths) {
            if state.services.iter().all(|s| s.state == Phase::Running) {
                return true;
            }
            if !state
                .services
                .iter()
                .any(|s| matches!(s.state, Phase::Starting | Phase::Backoff))
            {
                return false;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pid files of ours whose process is gone, or a state file with no supervisor: removed.
fn clean_stale(paths: &Paths) {
    let Ok(entries) = std::fs::read_dir(&paths.runtime_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") {
            match state::read_pid(&path) {
                Some(record) if state::is_same_process(record.pid, record.pid_start) => {
                    // An orphaned service of ours: stop it so the new supervisor owns its port.
                    supervisor::stop_pid(record.pid);
                    let _ = std::fs::remove_file(&path);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    if !supervisor_running(paths) {
        let _ = std::fs::remove_file(state::state_file(paths));
    }
}

/// `proxies down`: stop the supervisor (which stops its services); only our processes.
pub fn down(paths: &Paths) -> Result<i32, Error> {
    if let Some(state) = state::read_state(paths)
        && supervisor_running(paths)
        && state::is_same_process(state.pid, state.pid_start)
    {
        supervisor::stop_pid(state.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while supervisor_running(paths) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    clean_stale(paths);
    println!("down");
    Ok(0)
}

/// Ask the supervisor (`pid`) to start `name` again: a marker file, then SIGUSR1. It takes
/// the marker away once it has acted on it.
fn ask_restart(paths: &Paths, pid: u32, name: &str) -> Result<std::path::PathBuf, Error> {
    let marker = paths.runtime_dir.join(format!("restart-{name}"));
    std::fs::write(&marker, b"").map_err(|e| Error::io("cannot ask for a restart", e))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| Error::io("cannot signal the supervisor", e.into()))?;
    Ok(marker)
}

/// `proxies up` on a running supervisor: services it gave up on are started again.
fn revive_failed(paths: &Paths) -> Result<Vec<String>, Error> {
    let Some(state) =
        state::read_state(paths).filter(|s| state::is_same_process(s.pid, s.pid_start))
    else {
        return Ok(Vec::new());
    };
    let mut revived = Vec::new();
    let mut markers = Vec::new();
    for service in state.services.iter().filter(|s| s.state == Phase::Failed) {
        markers.push(ask_restart(paths, state.pid, &service.name)?);
        revived.push(service.name.clone());
    }
    wait_taken(&markers);
    Ok(revived)
}

/// Wait (5 s at most) until the supervisor has taken the restart markers, by which time the
/// state file says the services are starting.
fn wait_taken(markers: &[std::path::PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while markers.iter().any(|m| m.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `proxies reload`: SIGHUP to the supervisor, then the status once services settle.
pub fn reload(paths: &Paths) -> Result<i32, Error> {
    let config = load(paths)?;
    let Some(state) = state::read_state(paths)
        .filter(|s| supervisor_running(paths) && state::is_same_process(s.pid, s.pid_start))
    else {
        return Err(Error::Usage(
            "nothing is running to reload; `proxies up` starts it with the config as it is".into(),
        ));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(state.pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| Error::io("cannot signal the supervisor", e.into()))?;
    // The supervisor rewrites its state when it has acted; wait for a change, then settle.
    let before = std::fs::metadata(state::state_file(paths))
        .and_then(|m| m.modified())
        .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && std::fs::metadata(state::state_file(paths))
            .and_then(|m| m.modified())
            .ok()
            == before
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let all_up = wait_services(paths, Duration::from_secs(30));
    print_status(paths, &config, false)?;
    Ok(if all_up { 0 } else { 1 })
}

/// `proxies restart [service]`.
pub fn restart(paths: &Paths, service: Option<&str>) -> Result<i32, Error> {
    let Some(name) = service else {
        down(paths)?;
        return up(paths);
    };
    let Some(state) =
        state::read_state(paths).filter(|s| state::is_same_process(s.pid, s.pid_start))
    else {
        return Err(Error::Usage(
            "nothing is running; start it with `proxies up`".into(),
        ));
    };
    if !state.services.iter().any(|s| s.name == name) {
        let names: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no service `{name}` (services: {})",
            names.join(", ")
        )));
    }
    let marker = ask_restart(paths, state.pid, name)?;
    let config = load(paths)?;
    wait_taken(&[marker]);
    if name == "gateway" {
        wait_for(
            paths,
            &config,
            Duration::from_secs(15),
            "restarting the gateway",
        )?;
    }
    wait_services(paths, Duration::from_secs(30));
    print_status(paths, &config, false)?;
    Ok(0)
}

fn uptime(started: Option<u64>) -> String {
    let Some(started) = started else {
        return "-".into();
    };
    let secs = state::now().saturating_sub(started);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// One status report: every service, its process facts and health, plus the gateway's
/// breakers when it reports them.
fn status_value(paths: &Paths, config: &Config) -> (Value, bool) {
    let state = state::read_state(paths)
        .filter(|s| supervisor_running(paths) && state::is_same_process(s.pid, s.pid_start));
    let mut healthy = state.is_some();
    let mut services = Vec::new();
    for service in state.iter().flat_map(|s| s.services.iter()) {
        let alive = service
            .pid
            .is_some_and(|pid| state::is_same_process(pid, service.pid_start));
        let (rss_kib, cpu_secs) = service
            .pid
            .filter(|_| alive)
            .and_then(state::usage)
            .unwrap_or((0, 0.0));
        let health_ms = service.port.and_then(|port| {
            let path = if service.name == "gateway" {
                "/health".to_string()
            } else {
                config
                    .services
                    .iter()
                    .find(|s| s.name == service.name)
                    .map_or("/health".into(), |s| s.health_path.clone())
            };
            let started = Instant::now();
            super::health(
                &format!("http://127.0.0.1:{port}{path}"),
                Duration::from_secs(1),
            )
            .ok()
            .map(|_| started.elapsed().as_secs_f64() * 1000.0)
        });
        let up = service.state == Phase::Running
            && alive
            && (service.port.is_none() || health_ms.is_some());
        healthy &= up;
        services.push(json!({
            "name": service.name, "state": if up { "running" } else if service.state == Phase::Running { "unhealthy" } else { phase_name(service.state) },
            "pid": service.pid.filter(|_| alive), "uptime": uptime(service.started_at), "rss_mb": rss_kib as f64 / 1024.0,
            "cpu_secs": cpu_secs, "port": service.port, "health_ms": health_ms, "restarts": service.restarts,
            "last_error": service.last_error, "log_tail": service.log_tail, "log": service.log,
        }));
    }
    let breakers = super::admin_get(
        paths,
        &format!(
            "{}/api/breakers",
            config.gateway.url.as_str().trim_end_matches('/')
        ),
        Duration::from_secs(1),
    )
    .ok()
    .and_then(|b| serde_json::from_str::<Value>(&b).ok());
    let usage = super::admin_get(
        paths,
        &format!(
            "{}/api/stats",
            config.gateway.url.as_str().trim_end_matches('/')
        ),
        Duration::from_secs(1),
    )
    .ok()
    .and_then(|b| serde_json::from_str::<Value>(&b).ok())
    .map(|stats| stats["period"].clone())
    .filter(|period| !period.is_null());
    let jobs: Vec<Value> = if state.is_some() {
        super::jobs::read_states(paths)
            .iter()
            .filter_map(|job| serde_json::to_value(job).ok())
            .collect()
    } else {
        Vec::new()
    };
    let value = json!({
        "supervisor": state.as_ref().map(|s| json!({"pid": s.pid, "uptime": uptime(Some(s.started_at))})),
        "services": services,
        "jobs": jobs,
        "breakers": breakers,
        "today": usage,
        "healthy": healthy,
    });
    (value, healthy)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Backoff => "restarting",
        Phase::Failed => "failed",
        Phase::Stopped => "stopped",
    }
}

fn print_status(paths: &Paths, config: &Config, json_out: bool) -> Result<bool, Error> {
    let (value, healthy) = status_value(paths, config);
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON value")
        );
        return Ok(healthy);
    }
    match &value["supervisor"] {
        Value::Null => println!("supervisor: not running (start with `proxies up`)"),
        s => println!(
            "supervisor: pid {} up {}",
            s["pid"],
            s["uptime"].as_str().unwrap_or("-")
        ),
    }
    println!(
        "{:<12} {:<11} {:>7} {:>7} {:>8} {:>8} {:>6} {:>9} {:>8}  LAST ERROR",
        "SERVICE", "STATE", "PID", "UPTIME", "RSS MB", "CPU s", "PORT", "HEALTH", "RESTARTS"
    );
    for s in value["services"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        println!(
            "{:<12} {:<11} {:>7} {:>7} {:>8.1} {:>8.2} {:>6} {:>9} {:>8}  {}",
            s["name"].as_str().unwrap_or("-"),
            s["state"].as_str().unwrap_or("-"),
            s["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
            s["uptime"].as_str().unwrap_or("-"),
            s["rss_mb"].as_f64().unwrap_or(0.0),
            s["cpu_secs"].as_f64().unwrap_or(0.0),
            s["port"].as_u64().map_or("-".into(), |p| p.to_string()),
            s["health_ms"]
                .as_f64()
                .map_or("down".into(), |ms| format!("{ms:.1} ms")),
            s["restarts"],
            s["last_error"].as_str().unwrap_or(""),
        );
        for line in s["log_tail"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            println!("    | {}", line.as_str().unwrap_or(""));
        }
    }
    for job in value["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        println!("{}", job_line(job, state::now()));
    }
    match &value["breakers"] {
        Value::Null => println!("breakers: the gateway reports none"),
        b => {
            let open = b["breakers"].as_array().map_or(0, |list| {
                list.iter().filter(|x| x["state"] == "open").count()
            });
            println!(
                "breakers: {open} open of {}",
                b["breakers"].as_array().map_or(0, Vec::len)
            );
        }
    }
    if let Some(line) = spend_line(&value["today"]) {
        println!("{line}");
    }
    Ok(healthy)
}

/// `job scan-refresh: every 6h; last run 12m ago: ok (…); next in 5h 48m`
fn job_line(job: &Value, now: u64) -> String {
    let ago = |secs: u64| humantime::format_duration(Duration::from_secs(secs)).to_string();
    let name = job["name"].as_str().unwrap_or("-");
    if job["enabled"] != Value::Bool(true) {
        return format!("job {name}: off (scan.jobs = false)");
    }
    let every = ago(job["interval_secs"].as_u64().unwrap_or(0));
    let last = if job["running"] == Value::Bool(true) {
        "running now".to_string()
    } else {
        match job["last_finished"].as_u64() {
            None => "not run yet".to_string(),
            Some(at) => format!(
                "last run {} ago: {} ({})",
                ago(now.saturating_sub(at)),
                job["last_result"].as_str().unwrap_or("-"),
                job["last_message"].as_str().unwrap_or("")
            ),
        }
    };
    let next = match job["next_run"].as_u64() {
        Some(at) if at > now => format!("next in {}", ago(at - now)),
        Some(_) => "next now".to_string(),
        None => "not scheduled".to_string(),
    };
    format!(
        "job {name}: every {every}; {last}; {next}; {} runs, {} failed",
        job["runs"], job["failures"]
    )
}

/// Today's spend and saving and the last minute's rates, from the gateway's usage ledger.
fn spend_line(period: &Value) -> Option<String> {
    if period.is_null() {
        return None;
    }
    let minute = &period["last_minute"];
    let compressed = match period["compressed_tokens"].as_u64() {
        Some(tokens) if tokens > 0 => format!(", {tokens} tokens compressed away"),
        _ => String::new(),
    };
    Some(format!(
        "today: {} requests, ${:.4} spent, ${:.4} saved ({:.0}%){compressed}; last minute: {} requests, {} errors, {} tokens",
        period["total_requests"],
        period["total_cost"].as_f64().unwrap_or(0.0),
        period["savings"].as_f64().unwrap_or(0.0),
        period["savings_percent"].as_f64().unwrap_or(0.0),
        minute["requests"],
        minute["errors"],
        minute["tokens"],
    ))
}

/// `proxies status [--json]`: exit 1 when anything is down.
pub fn status(paths: &Paths, json_out: bool) -> Result<i32, Error> {
    let config = load(paths)?;
    Ok(if print_status(paths, &config, json_out)? {
        0
    } else {
        1
    })
}

/// `proxies logs [-f] [service]`.
pub fn logs(paths: &Paths, follow: bool, service: Option<&str>) -> Result<i32, Error> {
    let names: Vec<String> = match service {
        Some(name) => vec![name.to_string()],
        None => {
            let mut names: Vec<String> = std::fs::read_dir(paths.log_dir())
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".log"))
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        }
    };
    let mut offsets = Vec::new();
    for name in &names {
        let path = paths.log_dir().join(format!("{name}.log"));
        if !path.exists() {
            return Err(Error::Usage(format!(
                "no log for `{name}` in {}",
                paths.log_dir().display()
            )));
        }
        for line in state::tail(&path, 100) {
            println!("{name} | {line}");
        }
        offsets.push((
            name.clone(),
            path.clone(),
            std::fs::metadata(&path).map_or(0, |m| m.len()),
        ));
    }
    if !follow {
        return Ok(0);
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for (name, path, offset) in &mut offsets {
            let Ok(text) = std::fs::read(&*path) else {
                continue;
            };
            if (text.len() as u64) < *offset {
                *offset = 0;
            }
            for line in String::from_utf8_lossy(&text[*offset as usize..]).lines() {
                println!("{name} | {line}");
            }
            *offset = text.len() as u64;
        }
        let _ = std::io::stdout().flush();
    }
}

/// `proxies watch`: requests per second, errors, models and breakers, redrawn every second.
pub fn watch(paths: &Paths, once: bool) -> Result<i32, Error> {
    let config = load(paths)?;
    let base = config
        .gateway
        .url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let mut previous: Option<(Instant, u64, u64)> = None;
    loop {
        let stats = super::admin_get(paths, &format!("{base}/api/stats"), Duration::from_secs(1))
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok());
        // Screen control only for a terminal: into a pipe or a file, plain text.
        let mut out = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            String::from("\x1b[H\x1b[2J")
        } else {
            String::new()
        };
        out.push_str(&format!("clutch gateway {base}   (Ctrl-C to quit)\n\n"));
        match &stats {
            None => out.push_str("gateway: down — `proxies up` starts it\n"),
            Some(s) => {
                let requests = s["requests"].as_u64().unwrap_or(0);
                let errors = s["errors"].as_u64().unwrap_or(0);
                let now = Instant::now();
                let rate = previous.map_or(0.0, |(t, r, _)| {
                    (requests - r.min(requests)) as f64
                        / now.duration_since(t).as_secs_f64().max(0.001)
                });
                let error_rate = previous.map_or(0.0, |(t, _, e)| {
                    (errors - e.min(errors)) as f64 / now.duration_since(t).as_secs_f64().max(0.001)
                });
                previous = Some((now, requests, errors));
                out.push_str(&format!("requests {requests}   errors {errors}   in flight {}   {rate:.1} req/s   {error_rate:.1} err/s\n\n", s["in_flight"]));
                out.push_str(&format!(
                    "{:<48} {:>9} {:>7} {:>9}\n",
                    "PROVIDER|MODEL", "REQUESTS", "ERRORS", "AVG MS"
                ));
                for m in s["models"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    out.push_str(&format!(
                        "{:<48} {:>9} {:>7} {:>9.1}\n",
                        m["model"].as_str().unwrap_or("-"),
                        m["requests"],
                        m["errors"],
                        m["avg_ms"].as_f64().unwrap_or(0.0)
                    ));
                }
            }
        }
        let (status, _) = status_value(paths, &config);
        if let Some(line) = spend_line(&status["today"]) {
            out.push_str(&format!("\n{line}\n"));
        }
        out.push_str("\nSERVICES\n");
        for s in status["services"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            out.push_str(&format!(
                "  {:<12} {:<11} restarts {}\n",
                s["name"].as_str().unwrap_or("-"),
                s["state"].as_str().unwrap_or("-"),
                s["restarts"]
            ));
        }
        match &status["breakers"] {
            Value::Null => out.push_str("\nBREAKERS: the gateway reports none\n"),
            b => out.push_str(&format!(
                "\nBREAKERS\n{}\n",
                serde_json::to_string_pretty(b).unwrap_or_default()
            )),
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
        if once {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `proxies config show`: the effective settings, keys named but never shown.
pub fn config_show(paths: &Paths) -> Result<i32, Error> {
    let config = load(paths)?;
    println!("config file: {}", paths.config_file().display());
    println!(
        "gateway: {} (auto_start {})",
        config.gateway.url.as_str(),
        config.gateway.auto_start
    );
    println!(
        "token: {}",
        if config.gateway.token.is_some() {
            "set"
        } else {
            "not set (loopback clients only)"
        }
    );
    println!("providers:");
    for (name, provider) in config.all_providers() {
        println!(
            "  {name}: {} ({}), keys {}",
            provider.base_url.as_str(),
            provider.format.name(),
            if provider.keys().is_empty() {
                "none".to_string()
            } else {
                format!("{} set", provider.keys().len())
            }
        );
    }
    println!(
        "profiles (tier: model → its cascade; an agent without a profile of its own uses `default`):"
    );
    let profiles = crate::gateway::route::Profiles::load(&paths.user_profiles_dir())?;
    for (name, profile) in profiles.iter() {
        println!("  {name}, from {}", profiles.origin(name));
        for (tier, spec) in &profile.tiers {
            let mut targets = vec![spec.model.as_str()];
            targets.extend(spec.cascade.iter().map(String::as_str));
            println!("    {tier}: {}", targets.join(" → "));
        }
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
    println!("services (start order):");
    for service in super::services(&config, &exe)? {
        println!(
            "  {}: port {} health {}",
            service.name,
            service.port.map_or("-".into(), |p| p.to_string()),
            service.health_path
        );
    }
    println!(
        "runtime dir: {}\nlogs: {}",
        paths.runtime_dir.display(),
        paths.log_dir().display()
    );
    Ok(0)
}

fn gateway_base(paths: &Paths) -> Result<String, Error> {
    Ok(load(paths)?
        .gateway
        .url
        .as_str()
        .trim_end_matches('/')
        .to_string())
}

/// `proxies breakers [--json]`: every breaker the gateway keeps, open ones first.
pub fn breakers(paths: &Paths, json_out: bool) -> Result<i32, Error> {
    let base = gateway_base(paths)?;
    let body = super::admin_get(
        paths,
        &format!("{base}/api/breakers"),
        Duration::from_secs(2),
    )
    .map_err(|why| {
        Error::Usage(format!(
            "cannot read the breakers from the gateway at {base} ({why}); is it up? `proxies up`"
        ))
    })?;
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if json_out {
        println!("{value:#}");
        return Ok(0);
    }
    let list = value["breakers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no breakers: every model the gateway called has answered");
        return Ok(0);
    }
    println!(
        "{:<48} {:<10} {:>8} {:>7}  LAST ERROR",
        "BREAKER", "STATE", "OPEN S", "FAULTS"
    );
    for b in &list {
        println!(
            "{:<48} {:<10} {:>8.0} {:>7}  {}",
            b["id"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["cooldown_remaining_s"].as_f64().unwrap_or(0.0),
            b["consecutive_failures"].as_u64().unwrap_or(0),
            b["last_error"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}

/// `proxies breakers reset [ID]`: close one breaker, or every one.
pub fn reset_breakers(paths: &Paths, id: Option<&str>) -> Result<i32, Error> {
    let base = gateway_base(paths)?;
    let url = match id {
        Some(id) => format!("{base}/api/breakers/{}/reset", id.replace('|', "%7C")),
        None => format!("{base}/api/breakers/reset"),
    };
    match super::admin_post(paths, &url, Duration::from_secs(2)) {
        Ok(_) => {
            println!("reset {}", id.unwrap_or("every breaker"));
            Ok(0)
        }
        Err(why) => Err(Error::Usage(format!("cannot reset: {why}"))),
    }
}

/// `proxies config check`: load everything the gateway would, report the first problem.
pub fn config_check(paths: &Paths) -> Result<i32, Error> {
    let config = load(paths)?;
    crate::gateway::Gateway::new(&config, paths)?;
    crate::agent::Registry::load(&paths.user_agents_dir())?;
    println!(
        "ok: {} and its profiles are valid",
        paths.config_file().display()
    );
    Ok(0)
}

/// `proxies service install|uninstall`: a systemd user unit that runs the supervisor, and
/// with `--scan-timer` a timer that runs the model-scan refresh on its own.
pub fn service(paths: &Paths, install: bool, scan_timer: bool) -> Result<i32, Error> {
    let dir = paths.systemd_user_dir();
    let unit = dir.join("clutch.service");
    let timer = dir.join("clutch-scan.timer");
    let timer_service = dir.join("clutch-scan.service");
    if install && scan_timer {
        let config = load(paths)?;
        let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let mut service = format!(
            "[Unit]\nDescription=clutch model-scan refresh\n\n[Service]\nType=oneshot\nExecStart={} __scan_refresh\n",
            exe.display()
        );
        if let Ok(home) = std::env::var("CLUTCH_HOME") {
            service.push_str(&format!("Environment=CLUTCH_HOME={home}\n"));
        }
        let seconds = ((config.scan.interval_hours * 3600.0) as u64).max(60);
        let text = format!(
            "[Unit]\nDescription=clutch model-scan refresh every {}\n\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec={seconds}s\nRandomizedDelaySec={}s\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n",
            humantime::format_duration(Duration::from_secs(seconds)),
            seconds / 10
        );
        for (file, text) in [(&timer_service, service), (&timer, text)] {
            std::fs::write(file, text)
                .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
            println!("wrote {}", file.display());
        }
    }
    if install {
        let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let mut text = format!(
            "[Unit]\nDescription=clutch gateway and sidecars\nAfter=network.target\n\n[Service]\nType=simple\nExecStart={} __supervise\nRestart=on-failure\nRestartSec=2\n",
            exe.display()
        );
        if let Ok(home) = std::env::var("CLUTCH_HOME") {
            text.push_str(&format!("Environment=CLUTCH_HOME={home}\n"));
        }
        text.push_str("\n[Install]\nWantedBy=default.target\n");
        std::fs::write(&unit, text)
            .map_err(|e| Error::io(format!("cannot write {}", unit.display()), e))?;
        println!("wrote {}", unit.display());
        systemctl(&["daemon-reload"]);
        systemctl(&["enable", "--now", "clutch.service"]);
        if scan_timer {
            systemctl(&["enable", "--now", "clutch-scan.timer"]);
        }
    } else {
        if timer.exists() {
            systemctl(&["disable", "--now", "clutch-scan.timer"]);
            for file in [&timer, &timer_service] {
                if std::fs::remove_file(file).is_ok() {
                    println!("removed {}", file.display());
                }
            }
        }
        systemctl(&["disable", "--now", "clutch.service"]);
        match std::fs::remove_file(&unit) {
            Ok(()) => println!("removed {}", unit.display()),
            Err(_) => println!("no unit at {}", unit.display()),
        }
        systemctl(&["daemon-reload"]);
    }
    Ok(0)
}

fn systemctl(args: &[&str]) {
    let shown = format!("systemctl --user {}", args.join(" "));
    match std::process::Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
    {
        Ok(status) if status.success() => println!("ran `{shown}`"),
        _ => println!("could not run `{shown}` (no systemd user session here); run it yourself"),
    }
}

/// Whether the gateway answers; used by tests and `xx doctor`.
pub fn gateway_up(config: &Config) -> bool {
    gateway_health(config, Duration::from_millis(500)).is_ok()
}
