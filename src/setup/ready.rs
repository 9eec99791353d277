//! What `xx` checks before it starts an agent on a gateway route: that the running gateway
//! uses the provider keys this shell has (handing over a `key_env` value that differs, by
//! fingerprint), and that the profile the agent will use reaches at least one provider that
//! can answer, so a new user is told to run `xx setup` instead of watching an agent fail.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;

/// One provider as the running gateway reports it (`GET /api/providers`).
struct Reported {
    name: String,
    base_url: String,
    keys: u64,
    missing_key: Option<String>,
}

/// Run both checks against the gateway at `config.gateway.url`. A gateway that does not
/// report its providers (another build, or a stand-in) is taken at its word.
pub fn check(paths: &Paths, config: &Config, profile: &str) -> Result<(), Error> {
    let base = config.gateway.url.as_str().trim_end_matches('/');
    let Some(reported) = providers(paths, base) else {
        return Ok(());
    };
    let reported = match hand_over_keys(paths, base, &reported) {
        Some(changed) => {
            eprintln!(
                "clutch: the running gateway had another value for {}; it uses this shell's now",
                changed.join(", ")
            );
            providers(paths, base).unwrap_or(reported)
        }
        None => reported,
    };
    let snapshot = crate::gateway::scan::snapshot::load(
        &crate::gateway::scan::snapshot::path(paths, &config.scan),
        config.scan.max_age_hours,
    )
    .ok();
    usable(paths, profile, &reported, snapshot.as_ref())
}

fn providers(paths: &Paths, base: &str) -> Option<Vec<(Value, Reported)>> {
    let body = crate::sidecar::admin_get(
        paths,
        &format!("{base}/api/providers"),
        Duration::from_secs(2),
    )
    .ok()?;
    let value: Value = serde_json::from_str(&body).ok()?;
    Some(
        value["providers"]
            .as_array()?
            .iter()
            .map(|p| {
                let reported = Reported {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    base_url: p["base_url"].as_str().unwrap_or_default().to_string(),
                    keys: p["keys"].as_u64().unwrap_or(0),
                    missing_key: p["missing_key"].as_str().map(str::to_string),
                };
                (p.clone(), reported)
            })
            .collect(),
    )
}

/// Key variables whose value here is set and differs from the gateway's: handed over.
/// Returns their names when any were.
fn hand_over_keys(
    paths: &Paths,
    base: &str,
    reported: &[(Value, Reported)],
) -> Option<Vec<String>> {
    let mut vars = BTreeMap::new();
    for (raw, _) in reported {
        let Some(var) = raw["key_env"].as_str() else {
            continue;
        };
        let Some(mine) = std::env::var(var).ok().filter(|v| !v.is_empty()) else {
            continue;
        };
        if raw["key_env_fingerprint"].as_str() != Some(&crate::keys::fingerprint(&mine)) {
            vars.insert(var.to_string(), mine);
        }
    }
    if vars.is_empty() {
        return None;
    }
    let names: Vec<String> = vars.keys().cloned().collect();
    match crate::sidecar::admin_post_json(
        paths,
        &format!("{base}/api/env"),
        &json!({ "vars": vars }),
        Duration::from_secs(5),
    ) {
        Ok(_) => Some(names),
        Err(error) => {
            eprintln!(
                "clutch: this shell's {} differs from the running gateway's and could not be handed over ({error}); run `proxies restart` from this shell",
                names.join(", ")
            );
            None
        }
    }
}

/// At least one provider `profile` routes to has a key, or needs none and answers. A
/// `scan:<kind>` entry stands for the providers of the snapshot's ranked models of that kind.
fn usable(
    paths: &Paths,
    profile: &str,
    reported: &[(Value, Reported)],
    snapshot: Option<&crate::gateway::scan::snapshot::Snapshot>,
) -> Result<(), Error> {
    let Ok(profiles) = crate::gateway::route::Profiles::load(&paths.user_profiles_dir()) else {
        return Ok(());
    };
    let base_profile = profile.strip_suffix("-bypass").unwrap_or(profile);
    let Ok((_, chosen)) = profiles.get(Some(base_profile)) else {
        return Ok(());
    };
    let mut named = Vec::new();
    for tier in chosen.tiers.values() {
        for target in std::iter::once(&tier.model).chain(&tier.cascade) {
            if let Some(scan) = crate::gateway::route::scan_reference(target) {
                if let (Ok((kind, count)), Some(snapshot)) = (scan, snapshot) {
                    named.extend(
                        snapshot
                            .ranked(kind)
                            .take(count)
                            .map(|c| c.provider.clone()),
                    );
                }
                continue;
            }
            match target.split_once('|') {
                Some((provider, _)) => named.push(provider.to_string()),
                // A bare model name: which provider serves it is the gateway's to decide.
                None => return Ok(()),
            }
        }
    }
    named.sort();
    named.dedup();
    let mut why = Vec::new();
    for name in &named {
        let Some((_, provider)) = reported.iter().find(|(_, p)| &p.name == name) else {
            continue;
        };
        if provider.keys > 0 {
            return Ok(());
        }
        if let Some(missing) = &provider.missing_key {
            why.push(missing.clone());
        } else if answers(&provider.base_url) {
            return Ok(());
        } else {
            why.push(format!(
                "provider `{name}` needs no key, but nothing answers at {}",
                provider.base_url
            ));
        }
    }
    if why.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "no provider the `{base_profile}` profile routes to can answer:\n  {}\nRun `xx setup` to add a provider (it tests the key before saving), then run this again.",
        why.join("\n  ")
    )))
}

/// Whether a TCP connection to the URL's host and port opens within a moment. Only a server
/// on this machine is tried (no name look-up, so no wait on DNS); a keyless provider elsewhere
/// is taken to answer, since only the gateway's own call can tell.
pub fn answers(base_url: &str) -> bool {
    let Ok(uri) = base_url.parse::<axum::http::Uri>() else {
        return true;
    };
    if !crate::gateway::connect::is_loopback(&uri) {
        return true;
    }
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = uri.host().unwrap_or("localhost");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![(ip, port).into()],
        // `localhost`: both loopback addresses, no resolver.
        Err(_) => vec![
            ([127, 0, 0, 1], port).into(),
            (std::net::Ipv6Addr::LOCALHOST, port).into(),
        ],
    };
    addrs
        .iter()
        .any(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_millis(300)).is_ok())
}
