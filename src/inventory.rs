//! What is on this machine: `xx agents` (each agent, installed or not, its version and whether
//! its spec was measured) and `xx doctor` (agents, config, gateway, which keys are set).

use serde_json::{Value, json};
use std::io::Read as _;
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

/// Look every agent up on PATH and ask the installed ones for their version, in parallel.
pub fn survey(registry: &Registry) -> Vec<(&AgentSpec, &Origin, AgentStatus)> {
    let (tx, rx) = mpsc::channel();
    let specs: Vec<_> = registry.iter().collect();
    for (index, (spec, _)) in specs.iter().enumerate() {
        let path = spec.binaries().find_map(|b| which::which(b).ok());
        let tx = tx.clone();
        let args = spec.version_args.clone();
        std::thread::spawn(move || {
            let version = path.as_ref().and_then(|p| version_of(p, &args));
            let _ = tx.send((index, AgentStatus { path, version }));
        });
    }
    drop(tx);
    let mut found: Vec<Option<AgentStatus>> = specs.iter().map(|_| None).collect();
    while let Ok((index, status)) = rx.recv_timeout(VERSION_TIMEOUT + Duration::from_secs(1)) {
        found[index] = Some(status);
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

/// The first line of `<program> --version` with digits in it, or None after a timeout.
fn version_of(program: &PathBuf, args: &[String]) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
    };
    let _ = child.wait();
    text.lines()
        .map(str::trim)
        .find(|l| l.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `xx agents`.
pub fn print_agents(paths: &Paths, json: bool) -> Result<i32, Error> {
    let registry = Registry::load(&paths.user_agents_dir())?;
    if json {
        let list: Vec<Value> = survey(&registry)
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
    for (spec, origin, status) in survey(&registry) {
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

/// Provider keys people commonly hold; doctor says which are set, never their values.
const KNOWN_KEYS: &[&str] = &[
    "OPENROUTER_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "DEEPSEEK_API_KEY",
    "MOONSHOT_API_KEY",
    "DASHSCOPE_API_KEY",
    "NVIDIA_API_KEY",
    "GROQ_API_KEY",
];

/// `xx doctor`: exit 0 when the config is valid and at least one agent is installed. With
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
            let survey = survey(&registry);
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

    lines.push("keys (names only)".into());
    let mut keys = serde_json::Map::new();
    for name in KNOWN_KEYS {
        let set = std::env::var(name).is_ok_and(|value| !value.is_empty());
        lines.push(format!("  {name}: {}", if set { "set" } else { "not set" }));
        keys.insert(name.to_string(), Value::Bool(set));
    }
    if json {
        let report = json!({"healthy": healthy, "config": config_report, "agents": agents,
            "gateway": gateway, "keys": keys});
        println!("{report:#}");
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(if healthy { 0 } else { 1 })
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
