//! What is on this machine: `xx agents` (each agent, installed or not, its version and whether
//! its spec was measured) and `xx doctor` (agents, config, gateway, providers and their keys).
//! Versions are remembered per binary (path, size, modification time), so only an agent that
//! was installed or updated since the last look is asked again: Gemini CLI alone takes 3 s.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::agent::registry::Origin;
use crate::agent::{AgentSpec, Registry};
use crate::error::Error;
use crate::paths::Paths;

/// One agent as found on this machine.
pub struct AgentStatus {
    pub path: Option<PathBuf>,
    pub version: Option<String>,
}

const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Look every agent up on PATH and ask the installed ones for their version, in parallel,
/// unless the binary is unchanged since its version was last read.
pub fn survey<'a>(
    paths: &Paths,
    registry: &'a Registry,
) -> Vec<(&'a AgentSpec, &'a Origin, AgentStatus)> {
    let cache_file = paths.state_dir.join("agent-versions.json");
    let cache: std::collections::BTreeMap<String, (String, String)> = std::fs::read(&cache_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel();
    let specs: Vec<_> = registry.iter().collect();
    for (index, (spec, _)) in specs.iter().enumerate() {
        let path = spec.binaries().find_map(|b| which::which(b).ok());
        let stamp = path.as_ref().map(|p| binary_stamp(p));
        let known = path.as_ref().zip(stamp.as_ref()).and_then(|(p, stamp)| {
            cache
                .get(&p.display().to_string())
                .filter(|(s, _)| s == stamp)
                .map(|(_, version)| version.clone())
        });
        let tx = tx.clone();
        let args = spec.version_args.clone();
        std::thread::spawn(move || {
            let version = known.or_else(|| path.as_ref().and_then(|p| version_of(p, &args)));
            let _ = tx.send((index, stamp, AgentStatus { path, version }));
        });
    }
    drop(tx);
    let mut found: Vec<Option<AgentStatus>> = specs.iter().map(|_| None).collect();
    let mut remembered = std::collections::BTreeMap::new();
    while let Ok((index, stamp, status)) = rx.recv_timeout(VERSION_TIMEOUT + Duration::from_secs(1))
    {
        if let (Some(path), Some(stamp), Some(version)) = (&status.path, stamp, &status.version) {
            remembered.insert(path.display().to_string(), (stamp, version.clone()));
        }
        found[index] = Some(status);
    }
    if remembered != cache && std::fs::create_dir_all(&paths.state_dir).is_ok() {
        let _ = crate::sidecar::state::write_json(&cache_file, &remembered);
    }
    specs
        .into_iter()
        .zip(found)
        .map(|((spec, origin), status)| {
            let status = status.unwrap_or(AgentStatus {
                path: None,
                version: None,
            });
            (spec, origin, status)
        })
        .collect()
}

/// What identifies one build of a binary: its resolved path, size and modification time.
fn binary_stamp(path: &std::path::Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match std::fs::metadata(&real) {
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt as _;
            format!(
                "{}:{}:{}",
                real.display(),
                meta.size(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000
            )
        }
        Err(_) => String::new(),
    }
}

/// The first line of `<program> --version` with digits in it, from stdout or else stderr
/// (Pi prints its version there), or None after a timeout.
fn version_of(program: &PathBuf, args: &[String]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let read_all = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ =
                std::io::Read::read_to_string(&mut std::io::Read::take(pipe, 64 * 1024), &mut text);
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read_all(Box::new(child.stdout.take()?));
    let stderr = read_all(Box::new(child.stderr.take()?));
    let deadline = std::time::Instant::now() + VERSION_TIMEOUT;
    let mut texts = Vec::new();
    for rx in [stdout, stderr] {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(text) => texts.push(text),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let _ = child.wait();
    texts.iter().find_map(|text| {
        text.lines()
            .map(str::trim)
            .find(|l| l.chars().any(|c| c.is_ascii_digit()))
            .map(str::to_string)
    })
}

/// `xx agents`.
pub fn print_agents(paths: &Paths, json: bool) -> Result<i32, Error> {
    let registry = Registry::load(&paths.user_agents_dir())?;
    if json {
        let list: Vec<Value> = survey(paths, &registry)
            .into_iter()
            .map(|(spec, origin, status)| {
                json!({"letter": spec.letter.to_string(), "name": spec.name,
                    "installed": status.path.is_some(), "path": status.path,
                    "version": status.version, "verified_on": spec.verified,
                    "user_override": matches!(origin, Origin::User(_))})
            })
            .collect();
        println!("{:#}", Value::Array(list));
        return Ok(0);
    }
    println!(
        "{:<3} {:<12} {:<14} {:<28} SPEC",
        "", "AGENT", "STATE", "VERSION"
    );
    for (spec, origin, status) in survey(paths, &registry) {
        let state = if status.path.is_some() {
            "installed"
        } else {
            "not installed"
        };
        let spec_state = match (&spec.verified, origin) {
            (_, Origin::User(path)) => format!("user override ({path})"),
            (Some(version), _) => format!("verified on {version}"),
            (None, _) => "unverified".to_string(),
        };
        println!(
            "{:<3} {:<12} {:<14} {:<28} {}",
            spec.letter,
            spec.name,
            state,
            status.version.as_deref().unwrap_or("-"),
            spec_state
        );
    }
    Ok(0)
}

/// `xx doctor`: exit 0 when the config is valid, an agent is installed and the default profile
/// reaches a usable provider. With
/// `json`, the same report as one JSON object.
pub fn doctor(paths: &Paths, json: bool) -> Result<i32, Error> {
    let mut healthy = true;
    let mut lines: Vec<String> = Vec::new();
    let config_path = paths.config_file();
    lines.push("config".into());
    // The same checks as the gateway's load: the config, every profile and their references.
    let (config, config_report) = match crate::gateway::Routing::load(paths) {
        Ok((config, _)) => {
            let state = if config_path.exists() {
                "valid"
            } else {
                "not present (defaults in use)"
            };
            lines.push(format!("  {}: {state}", config_path.display()));
            (Some(config), json!({"path": config_path, "state": state}))
        }
        Err(err) => {
            healthy = false;
            lines.push(format!("  error: {err}"));
            (
                None,
                json!({"path": config_path, "state": "invalid", "error": err.to_string()}),
            )
        }
    };

    lines.push("agents".into());
    let mut agents = Vec::new();
    match Registry::load(&paths.user_agents_dir()) {
        Ok(registry) => {
            let survey = survey(paths, &registry);
            let installed = survey.iter().filter(|(_, _, s)| s.path.is_some()).count();
            for (spec, _, status) in &survey {
                lines.push(match &status.path {
                    Some(path) => format!(
                        "  {} {:<12} {} ({})",
                        spec.letter,
                        spec.name,
                        status.version.as_deref().unwrap_or("version unknown"),
                        path.display()
                    ),
                    None => format!(
                        "  {} {:<12} not installed: {}",
                        spec.letter, spec.name, spec.install
                    ),
                });
                agents.push(json!({"letter": spec.letter.to_string(), "name": spec.name,
                    "path": status.path, "version": status.version,
                    "install": status.path.is_none().then_some(&spec.install)}));
            }
            if installed == 0 {
                healthy = false;
                lines.push("  no agent is installed".into());
            }
        }
        Err(err) => {
            healthy = false;
            lines.push(format!("  error: {err}"));
        }
    }

    lines.push("gateway".into());
    let mut gateway = Value::Null;
    if let Some(config) = &config {
        let url = format!(
            "{}/health",
            config.gateway.url.as_str().trim_end_matches('/')
        );
        let health = gateway_health(&url);
        lines.push(match &health {
            Ok(()) => format!("  {url}: up"),
            Err(why) => format!(
                "  {url}: down ({why}); {}",
                if config.gateway.auto_start {
                    "`xx` starts it when a launch needs it"
                } else {
                    "auto_start is off: start it with `proxies up`"
                }
            ),
        });
        gateway = json!({"url": url, "up": health.is_ok(), "error": health.err(),
            "auto_start": config.gateway.auto_start});
    }

    lines.push("providers".into());
    let mut providers = Vec::new();
    if let Some(config) = &config {
        let (provider_lines, report, default_usable) = providers_report(paths, config);
        lines.extend(provider_lines);
        providers = report;
        if !default_usable {
            healthy = false;
            lines.push(
                "  the default profile reaches no usable provider: run `xx setup` (it tests each key before saving it)"
                    .into(),
            );
        }
    }
    if json {
        let report = json!({"healthy": healthy, "config": config_report, "agents": agents,
            "gateway": gateway, "providers": providers});
        println!("{report:#}");
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(if healthy { 0 } else { 1 })
}

/// Each provider: where its key comes from, whether it has one (or, needing none, answers),
/// and whether the default profile routes to it. Also whether any provider the default
/// profile uses is usable.
fn providers_report(
    paths: &Paths,
    config: &crate::config::Config,
) -> (Vec<String>, Vec<Value>, bool) {
    let used: Vec<String> = crate::gateway::route::Profiles::load(&paths.user_profiles_dir())
        .ok()
        .and_then(|profiles| {
            let (_, profile) = profiles.get(Some("default")).ok()?;
            Some(
                profile
                    .tiers
                    .values()
                    .flat_map(|t| std::iter::once(&t.model).chain(&t.cascade))
                    .filter_map(|target| target.split_once('|').map(|(p, _)| p.to_string()))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut report = Vec::new();
    let mut default_usable = used.is_empty();
    for (name, provider) in config.all_providers() {
        let keys = provider.keys();
        let mut sources = Vec::new();
        if provider.api_key.is_some() || !provider.api_keys.is_empty() {
            sources.push("the config".to_string());
        }
        if provider.secret.is_some() {
            sources.push("the secrets file".to_string());
        }
        if let Some(var) = &provider.key_env {
            let set = crate::keys::env_key(var).is_some();
            sources.push(format!("{var} ({})", if set { "set" } else { "not set" }));
        }
        let (state, usable) = if !provider.declares_key() {
            let url = provider.base_url.as_str();
            let answers = crate::setup::ready::answers(url);
            (
                if !crate::gateway::connect::is_loopback_url(url) {
                    format!("needs no key; {url} is not on this machine, so not checked")
                } else if answers {
                    format!("needs no key; answers at {url}")
                } else {
                    format!(
                        "needs no key; nothing answers at {}",
                        provider.base_url.as_str()
                    )
                },
                answers,
            )
        } else if keys.is_empty() {
            (format!("no key: from {}", sources.join(" or ")), false)
        } else {
            (format!("key from {}", sources.join(" and ")), true)
        };
        let in_default = used.contains(&name);
        default_usable |= in_default && usable;
        lines.push(format!(
            "  {name:<12} {state}{}",
            if in_default {
                "  [default profile]"
            } else {
                ""
            }
        ));
        report.push(json!({"name": name, "usable": usable, "state": state,
            "in_default_profile": in_default}));
    }
    (lines, report, default_usable)
}

fn gateway_health(url: &str) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .new_agent();
    match agent.get(url).call() {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(err) => Err(err.to_string()),
    }
}
