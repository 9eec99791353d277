//! The gateway's own record of each model, for the ranking: attempts, failures and rate
//! limits over the last week from the usage ledger, and how often its circuit breaker opened
//! from the saved breaker state. Both are optional: without them every model's health is 1.

use std::collections::BTreeMap;

use super::score::LiveFacts;
use crate::paths::Paths;

/// How far back the ledger is read.
pub const WINDOW_MS: u64 = 7 * 86_400_000;

/// `provider|model` -> its record. Errors reading either source leave it out (and say so in
/// the returned notes) rather than failing the refresh.
pub fn read(paths: &Paths, now_ms: u64) -> (BTreeMap<String, LiveFacts>, Vec<String>) {
    let mut facts: BTreeMap<String, LiveFacts> = BTreeMap::new();
    let mut notes = Vec::new();
    match ledger(paths, now_ms.saturating_sub(WINDOW_MS)) {
        Ok(rows) => facts.extend(rows),
        Err(why) => notes.push(format!("usage ledger not read: {why}")),
    }
    let file = paths.state_dir.join("breakers.json");
    if let Ok(bytes) = std::fs::read(&file) {
        match serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&bytes) {
            Ok(breakers) => {
                for (id, breaker) in breakers {
                    let trips = breaker["trips"].as_u64().unwrap_or(0);
                    if trips > 0 {
                        facts.entry(id).or_default().breaker_trips = trips;
                    }
                }
            }
            Err(e) => notes.push(format!("{} not read: {e}", file.display())),
        }
    }
    (facts, notes)
}

fn ledger(paths: &Paths, from_ms: u64) -> Result<Vec<(String, LiveFacts)>, String> {
    let file = crate::gateway::usage::ledger_file(paths);
    let Some(connection) = crate::gateway::usage::store::open_reader(&file)? else {
        return Ok(Vec::new());
    };
    let sql = "SELECT json_extract(a.value, '$.provider') || '|' || json_extract(a.value, '$.model'),
            COUNT(*),
            SUM(json_extract(a.value, '$.outcome') = 'failed'),
            SUM(json_extract(a.value, '$.outcome') = 'rate_limited'),
            AVG(CASE WHEN json_extract(a.value, '$.outcome') = 'ok' THEN json_extract(a.value, '$.ms') END)
         FROM requests AS r, json_each(r.attempts) AS a
         WHERE r.ts_ms >= ?1 AND json_extract(a.value, '$.outcome') IN ('ok', 'failed', 'rate_limited')
         GROUP BY 1";
    let mut statement = connection.prepare(sql).map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([from_ms as i64], |row| {
            let count = |i: usize| -> rusqlite::Result<u64> {
                Ok(row.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
            };
            Ok((
                row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                LiveFacts {
                    attempts: count(1)?,
                    failures: count(2)?,
                    rate_limited: count(3)?,
                    mean_ms: row.get(4)?,
                    breaker_trips: 0,
                },
            ))
        })
        .map_err(|e| e.to_string())?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| e.to_string())
}
