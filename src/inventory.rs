//! What is on this machine: `xx agents` (each agent, installed or not, its version and whether
//! its spec was measured) and `xx doctor` (agents, config, gateway, which keys are set).

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
pub fn print_agents(paths: &Paths) -> Result<i32, Error> {
    let registry = Registry::load(&paths.user_agents_dir())?;
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

/// `xx doctor`: exit 0 when the config is valid and at least one agent is installed.
pub fn doctor(paths: &Paths) -> Result<i32, Error> {
    let mut healthy = true;
    let config_path = paths.config_file();
    println!("config");
    // The same checks as the gateway's load: the config, every profile and their references.
    let config = match crate::gateway::Routing::load(paths) {
        Ok((config, _)) => {
            let state = if config_path.exists() {
                "valid"
            } else {
                "not present (defaults in use)"
            };
            println!("  {}: {state}", config_path.display());
            Some(config)
        }
        Err(err) => {
            healthy = false;
            println!("  error: {err}");
            None
        }
    };

    println!("agents");
    match Registry::load(&paths.user_agents_dir()) {
        Ok(registry) => {
            let survey = survey(&registry);
            let installed = survey.iter().filter(|(_, _, s)| s.path.is_some()).count();
            for (spec, _, status) in &survey {
                match &status.path {
                    Some(path) => println!(
                        "  {} {:<12} {} ({})",
                        spec.letter,
                        spec.name,
                        status.version.as_deref().unwrap_or("version unknown"),
                        path.display()
                    ),
                    None => println!(
                        "  {} {:<12} not installed: {}",
                        spec.letter, spec.name, spec.install
                    ),
                }
            }
            if installed == 0 {
                healthy = false;
                println!("  no agent is installed");
            }
        }
        Err(err) => {
            healthy = false;
            println!("  error: {err}");
        }
    }

    println!("gateway");
    if let Some(config) = &config {
        let url = format!(
            "{}/health",
            config.gateway.url.as_str().trim_end_matches('/')
        );
        match gateway_health(&url) {
            Ok(()) => println!("  {url}: up"),
            Err(why) => println!(
                "  {url}: down ({why}); {}",
                if config.gateway.auto_start {
                    "`xx` starts it when a launch needs it"
                } else {
                    "auto_start is off: start it with `proxies up`"
                }
            ),
        }
    }

    println!("keys (names only)");
    for name in KNOWN_KEYS {
        let state = match std::env::var(name) {
            Ok(value) if !value.is_empty() => "set",
            _ => "not set",
        };
        println!("  {name}: {state}");
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
