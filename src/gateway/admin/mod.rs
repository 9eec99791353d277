//! The gateway's own surface besides model calls: the browser boundary every request passes,
//! the admin token, and the admin endpoints under `/api/` (breakers, keys, usage, stats,
//! reload), which want the token even on loopback.

pub mod boundary;
pub mod dashboard;
pub mod metrics;
pub mod token;
pub mod usage_api;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Value, json};

use super::Gateway;
use super::breaker;
use super::ir::{ApiError, ErrorKind};
use super::proto::Protocol;
use super::server::{error_response, json_response};

/// Paths under `/api/` that agents call as part of their own protocol, answered without the
/// admin token: Claude Code's reachability probe and Hermes' model listings.
const AGENT_PATHS: &[&str] = &["/api/hello", "/api/v1/models", "/api/tags"];

/// Whether `path` (after any `/p/<profile>`) is an admin endpoint.
pub fn is_admin(path: &str) -> bool {
    path.starts_with("/api/") && !AGENT_PATHS.contains(&path)
}

/// Whether the request presents the admin token.
pub fn presents_token(gateway: &Gateway, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(token::HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    presented
        .or_else(|| dashboard::token_in_cookie(headers))
        .is_some_and(|p| token::matches(&gateway.admin_token, p.trim()))
}

/// An admin endpoint; `None` when `path` is not one this gateway has.
pub fn handle(
    gateway: &Gateway,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    if !presents_token(gateway, headers) {
        return Some(error_response(
            Protocol::Chat,
            &ApiError::new(
                ErrorKind::Authentication,
                format!(
                    "{path} needs the admin token: send it as `{}` (it is in {}, which `xx` and `proxies` read)",
                    token::HEADER,
                    gateway.paths.admin_token_file().display()
                ),
            ),
        ));
    }
    let response = match (method, path) {
        (&Method::POST, "/api/reload") => match gateway.reload() {
            Ok(()) => json_response(200, &json!({"reloaded": true})),
            Err(err) => error_response(
                Protocol::Chat,
                &ApiError::invalid(format!("reload rejected, the previous config stays: {err}")),
            ),
        },
        (&Method::GET, "/api/breakers") => {
            json_response(200, &gateway.breakers.to_json(breaker::now_ms()))
        }
        (&Method::GET, "/api/usage") => json_response(200, &gateway.ledger.to_json()),
        (&Method::GET, "/api/keys") => json_response(200, &gateway.keys.to_json(breaker::now_ms())),
        (&Method::POST, "/api/breakers/reset") => {
            json_response(200, &json!({"reset": gateway.breakers.reset_all()}))
        }
        (&Method::POST, "/api/keys/reset") => {
            json_response(200, &json!({"reset": gateway.keys.reset(None)}))
        }
        (&Method::POST, path) if path.starts_with("/api/keys/") && path.ends_with("/reset") => {
            let provider = percent_decode(&path["/api/keys/".len()..path.len() - "/reset".len()]);
            json_response(200, &json!({"reset": gateway.keys.reset(Some(&provider))}))
        }
        (&Method::POST, path) if path.starts_with("/api/breakers/") && path.ends_with("/reset") => {
            let id = &path["/api/breakers/".len()..path.len() - "/reset".len()];
            let id = percent_decode(id);
            if gateway.breakers.reset(&id) {
                json_response(200, &json!({"reset": id}))
            } else {
                error_response(
                    Protocol::Chat,
                    &ApiError::new(ErrorKind::NotFound, format!("no breaker `{id}`")),
                )
            }
        }
        (&Method::GET, "/api/providers") => json_response(200, &providers_json(gateway)),
        (&Method::GET, "/api/scan") => json_response(200, &scan_json(gateway)),
        (&Method::POST, "/api/env") => match hand_over_keys(gateway, body) {
            Ok(taken) => json_response(200, &json!({"taken": taken})),
            Err(message) => error_response(Protocol::Chat, &ApiError::invalid(message)),
        },
        _ => return None,
    };
    Some(response)
}

/// Each provider: where its keys come from and, for a `key_env` variable, the fingerprint of
/// the value the gateway uses, so `xx` can tell when its own environment has another one.
fn providers_json(gateway: &Gateway) -> serde_json::Value {
    let routing = gateway.routing.load();
    let providers: Vec<_> = routing
        .provider_configs
        .iter()
        .map(|(name, config)| {
            let provider = routing.providers.get(name);
            json!({
                "name": name,
                "format": config.format.name(),
                "base_url": config.base_url.as_str(),
                "keys": provider.map_or(0, |p| p.keys.len()),
                "missing_key": provider.and_then(|p| p.missing_key.clone()),
                "key_env": config.key_env,
                "key_env_fingerprint": config
                    .key_env
                    .as_deref()
                    .and_then(crate::keys::env_key)
                    .map(|k| crate::keys::fingerprint(&k)),
            })
        })
        .collect();
    json!({"providers": providers})
}

/// `POST /api/env {"vars": {"NAME": "value"}}`: newer values for the key variables providers
/// name in `key_env` (others are refused), then a reload so they take effect.
fn hand_over_keys(gateway: &Gateway, body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HandOver {
        vars: std::collections::BTreeMap<String, String>,
    }
    let request: HandOver = serde_json::from_slice(body)
        .map_err(|e| format!("body must be {{\"vars\": {{\"NAME\": \"value\"}}}}: {e}"))?;
    let known: std::collections::BTreeSet<String> = gateway
        .routing
        .load()
        .provider_configs
        .values()
        .filter_map(|c| c.key_env.clone())
        .collect();
    for name in request.vars.keys() {
        if !known.contains(name) {
            return Err(format!("{name} is not the key_env of any provider"));
        }
    }
    for (name, value) in &request.vars {
        crate::keys::hand_over(name, value);
    }
    gateway
        .reload()
        .map_err(|e| format!("keys taken, but the reload was rejected: {e}"))?;
    Ok(request.vars.into_keys().collect())
}

/// `%7C` and friends in a breaker id taken from a path.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The model-scan snapshot in force (when it was made, its best model per kind) and why a
/// newer file was refused, if it was.
fn scan_json(gateway: &Gateway) -> Value {
    let snapshot = gateway.scan.get();
    let best: serde_json::Map<String, Value> = crate::gateway::scan::snapshot::KINDS
        .iter()
        .map(|&kind| {
            let model = snapshot
                .as_deref()
                .and_then(|s| s.best(kind))
                .map(|c| Value::String(c.api_model.clone()));
            (kind.name().to_string(), model.unwrap_or(Value::Null))
        })
        .collect();
    json!({
        "in_force": snapshot.as_deref().map(|s| json!({
            "generated_at": s.generated_at, "scan_id": s.scan_id,
            "provider_health": s.provider_health, "blocklist": s.blocklist,
            "local_servers": s.local_servers,
        })),
        "best": best,
        "refused": gateway.scan.refused().as_deref(),
        "file": gateway.routing.load().scan_file.display().to_string(),
    })
}
