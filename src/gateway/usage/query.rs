//! Reading the ledger: totals grouped by day, month, session, model or agent (for `xx usage`
//! and `/api/stats`), recent requests (`/api/history`, the dashboard) and one request with its
//! attempts (`/api/requests/{id}`). Dates are the user's local dates, as ccusage shows them.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::record::Record;
use super::store::{COLUMNS, row_to_record};

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Daily,
    Monthly,
    Session,
    Model,
    Agent,
}

impl Group {
    pub fn parse(text: &str) -> Option<Group> {
        Some(match text {
            "daily" | "day" => Group::Daily,
            "monthly" | "month" => Group::Monthly,
            "session" => Group::Session,
            "model" => Group::Model,
            "agent" => Group::Agent,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Group::Daily => "date",
            Group::Monthly => "month",
            Group::Session => "session",
            Group::Model => "model",
            Group::Agent => "agent",
        }
    }

    fn key_sql(self) -> &'static str {
        match self {
            Group::Daily => "date(ts_ms / 1000, 'unixepoch', 'localtime')",
            Group::Monthly => "strftime('%Y-%m', ts_ms / 1000, 'unixepoch', 'localtime')",
            Group::Session => "COALESCE(session, '(none)')",
            Group::Model => "COALESCE(provider || '|' || model, '(not served)')",
            Group::Agent => "COALESCE(agent, '(none)')",
        }
    }
}

/// One group's sums. `cost_usd` and the premium and saving sum only the rows whose price is
/// known; `unpriced` counts the others.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: f64,
    pub premium_cost_usd: f64,
    pub saved_usd: f64,
    pub unpriced: u64,
    pub errors: u64,
    /// Tokens tool-output compression took out of the requests.
    pub compressed_tokens: u64,
}

/// The Unix ms of local midnight starting `date` (`YYYY-MM-DD` or `YYYYMMDD`).
pub fn local_midnight_ms(connection: &Connection, date: &str) -> Result<u64, String> {
    let normal = if date.len() == 8 && date.chars().all(|c| c.is_ascii_digit()) {
        format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
    } else {
        date.to_string()
    };
    let seconds: Option<i64> = connection
        .query_row("SELECT strftime('%s', ?1, 'utc')", params![normal], |row| {
            row.get::<_, Option<String>>(0)
        })
        .map_err(|e| e.to_string())?
        .and_then(|s| s.parse().ok());
    match seconds {
        Some(s) if s >= 0 => Ok(s as u64 * 1000),
        _ => Err(format!(
            "`{date}` is not a date; write YYYY-MM-DD or YYYYMMDD"
        )),
    }
}

/// Sums per group for requests in `[from_ms, to_ms)`, oldest group first (largest cost first
/// for models and agents).
pub fn grouped(
    connection: &Connection,
    group: Group,
    from_ms: u64,
    to_ms: u64,
) -> rusqlite::Result<Vec<Totals>> {
    let order = match group {
        Group::Daily | Group::Monthly => "key",
        Group::Session | Group::Model | Group::Agent => "cost DESC, requests DESC",
    };
    let sql = format!(
        "SELECT {key} AS key, COUNT(*) AS requests,
            SUM(MAX(input_tokens - cache_read_tokens - cache_write_tokens, 0)), SUM(output_tokens),
            SUM(cache_write_tokens), SUM(cache_read_tokens), SUM(reasoning_tokens),
            COALESCE(SUM(cost_usd), 0.0) AS cost, COALESCE(SUM(premium_cost_usd), 0.0),
            COALESCE(SUM(saved_usd), 0.0), COUNT(*) - COUNT(cost_usd),
            SUM(status >= 400), SUM(compressed_tokens)
         FROM requests WHERE ts_ms >= ?1 AND ts_ms < ?2
         GROUP BY key ORDER BY {order}",
        key = group.key_sql()
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map(params![from_ms as i64, to_ms as i64], |row| {
        let u = |i: usize| -> rusqlite::Result<u64> {
            Ok(row.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
        };
        Ok(Totals {
            key: row.get(0)?,
            requests: u(1)?,
            input_tokens: u(2)?,
            output_tokens: u(3)?,
            cache_write_tokens: u(4)?,
            cache_read_tokens: u(5)?,
            reasoning_tokens: u(6)?,
            cost_usd: row.get(7)?,
            premium_cost_usd: row.get(8)?,
            saved_usd: row.get(9)?,
            unpriced: u(10)?,
            errors: u(11)?,
            compressed_tokens: u(12)?,
        })
    })?;
    rows.collect()
}

/// The sum of `rows`, keyed `total`.
pub fn total(rows: &[Totals]) -> Totals {
    rows.iter().fold(
        Totals {
            key: "total".into(),
            ..Totals::default()
        },
        |mut sum, row| {
            sum.requests += row.requests;
            sum.input_tokens += row.input_tokens;
            sum.output_tokens += row.output_tokens;
            sum.cache_write_tokens += row.cache_write_tokens;
            sum.cache_read_tokens += row.cache_read_tokens;
            sum.reasoning_tokens += row.reasoning_tokens;
            sum.cost_usd += row.cost_usd;
            sum.premium_cost_usd += row.premium_cost_usd;
            sum.saved_usd += row.saved_usd;
            sum.unpriced += row.unpriced;
            sum.errors += row.errors;
            sum.compressed_tokens += row.compressed_tokens;
            sum
        },
    )
}

/// The newest `limit` requests, newest first.
pub fn recent(connection: &Connection, limit: u64) -> rusqlite::Result<Vec<Record>> {
    let mut statement = connection.prepare(&format!(
        "SELECT {COLUMNS} FROM requests ORDER BY ts_ms DESC, rowid DESC LIMIT ?1"
    ))?;
    let rows = statement.query_map(params![limit as i64], row_to_record)?;
    rows.collect()
}

/// One request, with its captured bodies when there are any.
pub fn by_id(connection: &Connection, id: &str) -> rusqlite::Result<Option<Record>> {
    let mut statement =
        connection.prepare(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?;
    let mut rows = statement.query_map(params![id], row_to_record)?;
    let Some(mut record) = rows.next().transpose()? else {
        return Ok(None);
    };
    let bodies = connection.query_row(
        "SELECT request, response FROM bodies WHERE id = ?1",
        params![id],
        |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, Option<String>>(1)?,
            ))
        },
    );
    if let Ok((request, response)) = bodies {
        record.request_body = request;
        record.response_body = response;
    }
    Ok(Some(record))
}

/// Tokens and cost since `from_ms`, per provider: what today's budgets start from.
pub fn spend_since(
    connection: &Connection,
    from_ms: u64,
) -> rusqlite::Result<Vec<(String, u64, f64)>> {
    let mut statement = connection.prepare(
        "SELECT provider, SUM(input_tokens + output_tokens), COALESCE(SUM(cost_usd), 0.0)
         FROM requests WHERE ts_ms >= ?1 AND provider IS NOT NULL GROUP BY provider",
    )?;
    let rows = statement.query_map(params![from_ms as i64], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<i64>>(1)?.unwrap_or(0).max(0) as u64,
            row.get::<_, f64>(2)?,
        ))
    })?;
    rows.collect()
}

/// Today's local date, as SQLite's clock and time zone see it.
pub fn local_today(connection: &Connection) -> Result<String, String> {
    connection
        .query_row("SELECT date('now', 'localtime')", [], |row| row.get(0))
        .map_err(|e| e.to_string())
}

/// The last minute's rates: requests, errors, tokens and cost.
pub fn last_minute(connection: &Connection, now_ms: u64) -> rusqlite::Result<serde_json::Value> {
    connection.query_row(
        "SELECT COUNT(*), COALESCE(SUM(status >= 400), 0),
            COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(SUM(cost_usd), 0.0)
         FROM requests WHERE ts_ms >= ?1",
        params![now_ms.saturating_sub(60_000) as i64],
        |row| {
            Ok(serde_json::json!({"requests": row.get::<_, i64>(0)?, "errors": row.get::<_, i64>(1)?,
                "tokens": row.get::<_, i64>(2)?, "cost_usd": row.get::<_, f64>(3)?}))
        },
    )
}
