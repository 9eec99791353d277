//! `xx usage`: the ledger's sums as tables in the style ccusage users know (input, output,
//! cache write, cache read, cost, premium cost, saved, with totals), or as JSON.

use serde_json::json;

use super::query::{self, Group, Totals};
use super::store;
use crate::error::Error;
use crate::paths::Paths;

/// What to report.
pub struct Ask {
    pub group: Group,
    pub since: Option<String>,
    pub until: Option<String>,
    pub json: bool,
}

pub fn run(paths: &Paths, ask: &Ask) -> Result<i32, Error> {
    let file = super::ledger_file(paths);
    let Some(connection) = store::open_reader(&file).map_err(Error::Usage)? else {
        if ask.json {
            println!(
                "{:#}",
                json!({"group": ask.group.name(), "rows": [], "total": query::total(&[])})
            );
        } else {
            println!(
                "no usage recorded yet: the gateway records every request in {} once an agent runs through it",
                file.display()
            );
        }
        return Ok(0);
    };
    let from_ms = match &ask.since {
        Some(date) => query::local_midnight_ms(&connection, date)
            .map_err(|e| Error::Usage(format!("--since: {e}")))?,
        None => 0,
    };
    let to_ms = match &ask.until {
        // Through the end of that day.
        Some(date) => {
            query::local_midnight_ms(&connection, date)
                .map_err(|e| Error::Usage(format!("--until: {e}")))?
                + 86_400_000
        }
        None => u64::MAX / 2,
    };
    let rows = query::grouped(&connection, ask.group, from_ms, to_ms)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
    let total = query::total(&rows);
    if ask.json {
        println!(
            "{:#}",
            json!({"group": ask.group.name(), "since": ask.since, "until": ask.until,
                "rows": rows, "total": total, "prices": super::prices::SOURCE})
        );
        return Ok(0);
    }
    print!("{}", table(ask.group, &rows, &total));
    Ok(0)
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars to the cent when large, with two significant digits when tiny (a cheap model's
/// call costs millionths), never rounded to a misleading zero.
fn dollars(amount: f64) -> String {
    let size = amount.abs();
    if size == 0.0 {
        "$0".into()
    } else if size >= 1.0 {
        format!("${amount:.2}")
    } else if size >= 0.01 {
        format!("${amount:.4}")
    } else {
        let decimals = (1.0 - size.log10().floor()) as usize;
        format!("${amount:.decimals$}")
    }
}

/// The report as text: one line per group, then the totals and what the numbers mean.
pub fn table(group: Group, rows: &[Totals], total: &Totals) -> String {
    let key_width = rows
        .iter()
        .map(|r| r.key.chars().count())
        .chain([group.name().len(), 5])
        .max()
        .unwrap_or(10)
        .min(48);
    let mut out = format!(
        "{:<key_width$} {:>6} {:>12} {:>10} {:>11} {:>12} {:>11} {:>11} {:>11}\n",
        group.name().to_uppercase(),
        "REQS",
        "INPUT",
        "OUTPUT",
        "CACHE WRITE",
        "CACHE READ",
        "COST",
        "PREMIUM",
        "SAVED"
    );
    let line = |r: &Totals, key: &str| {
        let key: String = key.chars().take(key_width).collect();
        format!(
            "{key:<key_width$} {:>6} {:>12} {:>10} {:>11} {:>12} {:>11} {:>11} {:>11}\n",
            thousands(r.requests),
            thousands(r.input_tokens),
            thousands(r.output_tokens),
            thousands(r.cache_write_tokens),
            thousands(r.cache_read_tokens),
            format!(
                "{}{}",
                dollars(r.cost_usd),
                if r.unpriced > 0 { "*" } else { "" }
            ),
            dollars(r.premium_cost_usd),
            dollars(r.saved_usd),
        )
    };
    for row in rows {
        out.push_str(&line(row, &row.key));
    }
    out.push_str(&line(total, "TOTAL"));
    if total.unpriced > 0 {
        out.push_str(&format!(
            "* {} request(s) used models with no known price; their cost is not in these sums (set providers.<name>.models.<model>.input_price to count them)\n",
            thousands(total.unpriced)
        ));
    }
    out.push_str(
        "INPUT excludes cache reads and writes; PREMIUM is what the same tokens would have cost on the model each request asked for (or usage.premium_model); SAVED = PREMIUM - COST where both are known.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_two_significant_digits_when_tiny() {
        assert_eq!(dollars(0.0), "$0");
        assert_eq!(dollars(1234.5), "$1234.50");
        assert_eq!(dollars(0.1234), "$0.1234");
        assert_eq!(dollars(0.000021), "$0.000021");
        assert_eq!(dollars(0.0036), "$0.0036");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
