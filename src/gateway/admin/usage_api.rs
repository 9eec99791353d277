//! The admin endpoints that read the usage ledger: `/api/stats?from=&to=` (the gateway's
//! counters plus the period's totals and saving), `/api/history?limit=` (recent requests),
//! `/api/requests/{id}` (one request with its attempts) and `/api/report?group=&since=&until=`
//! (totals per day, month, session, model or agent). Queries run off the event loop.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::gateway::ir::{ApiError, ErrorKind};
use crate::gateway::proto::Protocol;
use crate::gateway::server::{error_response, json_response};
use crate::gateway::usage::{query, store};

/// The value of `name` in a query string.
fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// A time bound: Unix ms, or a local date (`YYYY-MM-DD`, `YYYYMMDD`) meaning its midnight.
fn bound(connection: &rusqlite::Connection, text: &str) -> Result<u64, String> {
    if text.len() > 8 && text.chars().all(|c| c.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("`{text}` is not a time"));
    }
    query::local_midnight_ms(connection, text)
}

pub async fn handle(
    gateway: &Arc<Gateway>,
    method: &Method,
    path: &str,
    query_string: Option<&str>,
) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let wanted = match path {
        "/api/stats" | "/api/history" | "/api/report" => path.to_string(),
        _ if path.starts_with("/api/requests/") => path.to_string(),
        _ => return None,
    };
    let query_string = query_string.map(str::to_string);
    let gateway = gateway.clone();
    let answer =
        tokio::task::spawn_blocking(move || answer(&gateway, &wanted, query_string.as_deref()))
            .await
            .unwrap_or_else(|_| Err((500, "the ledger query failed".into())));
    Some(match answer {
        Ok(value) => json_response(200, &value),
        Err((status, message)) => {
            let kind = if status == 404 {
                ErrorKind::NotFound
            } else if status == 400 {
                ErrorKind::InvalidRequest
            } else {
                ErrorKind::Api
            };
            error_response(Protocol::Chat, &ApiError::new(kind, message))
        }
    })
}

fn answer(
    gateway: &Gateway,
    path: &str,
    query_string: Option<&str>,
) -> Result<Value, (u16, String)> {
    let ledger = gateway.usage.as_ref();
    let connection = match ledger {
        Some(ledger) => store::open_reader(&ledger.file).map_err(|e| (500, e))?,
        None => None,
    };
    let bad = |e: String| (400, e);
    let failed = |e: rusqlite::Error| (500, format!("cannot read the usage ledger: {e}"));
    if path == "/api/stats" {
        let mut stats = gateway.stats.to_json();
        stats["uptime_secs"] = gateway.health()["uptime_secs"].clone();
        stats["ledger"] = ledger.map_or(json!({"enabled": false}), |l| l.counters_json());
        if let Some(connection) = &connection {
            let now = crate::gateway::usage::now_ms();
            let from = match param(query_string, "from") {
                Some(text) => bound(connection, text).map_err(bad)?,
                None => {
                    let today = query::local_today(connection).map_err(bad)?;
                    query::local_midnight_ms(connection, &today).map_err(bad)?
                }
            };
            let to = match param(query_string, "to") {
                Some(text) => bound(connection, text).map_err(bad)?,
                None => now + 1,
            };
            let rows = query::grouped(connection, query::Group::Agent, from, to).map_err(failed)?;
            let total = query::total(&rows);
            let percent = if total.premium_cost_usd > 0.0 {
                total.saved_usd / total.premium_cost_usd * 100.0
            } else {
                0.0
            };
            stats["period"] = json!({"from": from, "to": to, "total_requests": total.requests,
                "errors": total.errors, "input_tokens": total.input_tokens,
                "output_tokens": total.output_tokens, "cache_read_tokens": total.cache_read_tokens,
                "cache_write_tokens": total.cache_write_tokens, "total_cost": total.cost_usd,
                "premium_cost": total.premium_cost_usd, "savings": total.saved_usd,
                "savings_percent": percent, "unpriced_requests": total.unpriced,
                "compressed_tokens": total.compressed_tokens,
                "last_minute": query::last_minute(connection, now).map_err(failed)?});
        }
        return Ok(stats);
    }
    let Some(connection) = connection else {
        return Err((
            404,
            "no usage recorded yet (the ledger is empty or usage.enabled is false)".into(),
        ));
    };
    if path == "/api/history" {
        let limit = param(query_string, "limit")
            .map(|l| {
                l.parse::<u64>()
                    .map_err(|_| bad(format!("limit `{l}` is not a number")))
            })
            .transpose()?
            .unwrap_or(50)
            .min(1000);
        let requests = query::recent(&connection, limit).map_err(failed)?;
        return Ok(json!({"requests": requests}));
    }
    if path == "/api/report" {
        let group = param(query_string, "group").unwrap_or("daily");
        let group = query::Group::parse(group).ok_or_else(|| {
            bad(format!(
                "group `{group}` is not one of daily, monthly, session, model, agent"
            ))
        })?;
        let from = match param(query_string, "since") {
            Some(text) => bound(&connection, text).map_err(bad)?,
            None => 0,
        };
        let to = match param(query_string, "until") {
            Some(text) => bound(&connection, text).map_err(bad)? + 86_400_000,
            None => u64::MAX / 2,
        };
        let rows = query::grouped(&connection, group, from, to).map_err(failed)?;
        let total = query::total(&rows);
        return Ok(json!({"group": group.name(), "rows": rows, "total": total}));
    }
    let id = &path["/api/requests/".len()..];
    match query::by_id(&connection, id).map_err(failed)? {
        Some(record) => Ok(serde_json::to_value(record).unwrap_or(Value::Null)),
        None => Err((404, format!("no request `{id}` in the ledger"))),
    }
}
