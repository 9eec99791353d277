//! What a request cost: token counts times prices. The prices are data, not code: pydantic's
//! open price database ([`SOURCE`], MIT, `prices.LICENSE`) embedded as `prices.json`, with
//! per-model overrides from the config (`providers.<name>.models.<model>`). A model with no
//! known price costs "unknown", never 0; a model that is free (OpenRouter's `:free` ids, a
//! server on this machine) costs 0.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::config::ProviderConfig;
use crate::gateway::ir::Usage;

/// Where the embedded prices come from, and as of when.
pub const SOURCE: &str = "pydantic/genai-prices prices/data_slim.json, commit 47df840 (2026-08-21)";

const DATA: &str = include_str!("prices.json");

/// US dollars per million tokens, per bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl Rates {
    /// The cost of `usage` at these rates. Input tokens here are the whole prompt, cache
    /// buckets included (the IR's convention); each bucket is charged at its own rate.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let uncached = usage.anthropic_input() as f64;
        (uncached * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_tokens as f64 * self.cache_read
            + usage.cache_write_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

#[derive(Deserialize)]
struct PriceProvider {
    id: String,
    #[serde(default)]
    api_pattern: Option<String>,
    models: Vec<PriceModel>,
}

#[derive(Deserialize)]
struct PriceModel {
    id: String,
    #[serde(rename = "match")]
    matches: Clause,
    prices: Prices,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Clause {
    Equals(String),
    StartsWith(String),
    EndsWith(String),
    Contains(String),
    /// Never matched here: every regex in the data is one alternative among plain ones.
    Regex(#[allow(dead_code)] String),
    Or(Vec<Clause>),
    And(Vec<Clause>),
}

impl Clause {
    fn matches(&self, model: &str) -> bool {
        match self {
            Clause::Equals(s) => model == s,
            Clause::StartsWith(s) => model.starts_with(s.as_str()),
            Clause::EndsWith(s) => model.ends_with(s.as_str()),
            Clause::Contains(s) => model.contains(s.as_str()),
            Clause::Regex(_) => false,
            Clause::Or(all) => all.iter().any(|c| c.matches(model)),
            Clause::And(all) => all.iter().all(|c| c.matches(model)),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prices {
    One(PriceSet),
    /// Prices that changed over time or apply at some hours: the last that applies wins.
    Conditional(Vec<Conditional>),
}

#[derive(Deserialize)]
struct Conditional {
    #[serde(default)]
    constraint: Option<Constraint>,
    prices: PriceSet,
}

#[derive(Deserialize)]
struct Constraint {
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
}

#[derive(Deserialize, Default)]
struct PriceSet {
    #[serde(default)]
    input_mtok: Option<Price>,
    #[serde(default)]
    output_mtok: Option<Price>,
    #[serde(default)]
    cache_read_mtok: Option<Price>,
    #[serde(default)]
    cache_write_mtok: Option<Price>,
}

/// A flat price, or one that rises once the prompt passes a size.
#[derive(Deserialize)]
#[serde(untagged)]
enum Price {
    Flat(f64),
    Tiered { base: f64, tiers: Vec<Tier> },
}

#[derive(Deserialize)]
struct Tier {
    start: u64,
    price: f64,
}

impl Price {
    fn at(&self, prompt_tokens: u64) -> f64 {
        match self {
            Price::Flat(price) => *price,
            Price::Tiered { base, tiers } => tiers
                .iter()
                .filter(|t| prompt_tokens > t.start)
                .map(|t| t.price)
                .next_back()
                .unwrap_or(*base),
        }
    }
}

fn table() -> &'static [PriceProvider] {
    static TABLE: OnceLock<Vec<PriceProvider>> = OnceLock::new();
    TABLE.get_or_init(|| serde_json::from_str(DATA).expect("the embedded price table parses"))
}

/// Today as `YYYY-MM-DD` and the time of day in seconds, both UTC, from unix ms.
fn date_and_time(unix_ms: u64) -> (String, u64) {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), secs % 86_400)
}

fn seconds_of(time: &str) -> Option<u64> {
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: u64 = parts.next().unwrap_or("0").parse().ok()?;
    Some(h * 3600 + m * 60 + s)
}

impl Constraint {
    fn applies(&self, date: &str, time: u64) -> bool {
        if let Some(start) = &self.start_date
            && date < start.as_str()
        {
            return false;
        }
        match (
            self.start_time.as_deref().and_then(seconds_of),
            self.end_time.as_deref().and_then(seconds_of),
        ) {
            (Some(start), Some(end)) if start <= end => (start..end).contains(&time),
            (Some(start), Some(end)) => time >= start || time < end,
            _ => true,
        }
    }
}

impl Prices {
    fn current(&self, unix_ms: u64) -> &PriceSet {
        match self {
            Prices::One(set) => set,
            Prices::Conditional(list) => {
                let (date, time) = date_and_time(unix_ms);
                list.iter()
                    .rev()
                    .find(|c| c.constraint.as_ref().is_none_or(|k| k.applies(&date, time)))
                    .or(list.first())
                    .map(|c| &c.prices)
                    .expect("a conditional price list is never empty")
            }
        }
    }
}

fn rates_of(set: &PriceSet, prompt_tokens: u64) -> Option<Rates> {
    let at = |p: &Option<Price>| p.as_ref().map(|p| p.at(prompt_tokens));
    let input = at(&set.input_mtok)?;
    Some(Rates {
        input,
        output: at(&set.output_mtok).unwrap_or(0.0),
        cache_read: at(&set.cache_read_mtok).unwrap_or(input),
        cache_write: at(&set.cache_write_mtok).unwrap_or(input),
    })
}

/// Which price provider a configured provider is: the one whose API address its base URL
/// starts with, else the one of the same name.
fn price_provider(name: &str, base_url: &str) -> Option<&'static PriceProvider> {
    let table = table();
    table
        .iter()
        .find(|p| {
            p.api_pattern.as_deref().is_some_and(|pattern| {
                // The patterns are escaped literals with at most an optional subdomain group.
                let literal = pattern
                    .replace("(.*\\.)?", "")
                    .replace("(api\\.)?", "")
                    .replace('\\', "");
                let bare = base_url
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                let host = literal
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                !host.is_empty() && (bare.starts_with(host) || bare.contains(&format!(".{host}")))
            })
        })
        .or_else(|| table.iter().find(|p| p.id == name))
}

/// What one call costs per million tokens on `provider`'s `model`, if that is known.
pub fn rates(
    provider_name: &str,
    provider: &ProviderConfig,
    model: &str,
    prompt_tokens: u64,
    unix_ms: u64,
) -> Option<Rates> {
    if let Some(info) = provider.models.get(model)
        && let Some(input) = info.input_price
    {
        let output = info.output_price.unwrap_or(input);
        return Some(Rates {
            input,
            output,
            cache_read: info.cache_read_price.unwrap_or(input),
            cache_write: info.cache_write_price.unwrap_or(input),
        });
    }
    if model.ends_with(":free")
        || crate::gateway::connect::is_loopback_url(provider.base_url.as_str())
    {
        return Some(Rates::default());
    }
    let key = format!(
        "{provider_name}\u{0}{}\u{0}{model}",
        provider.base_url.as_str()
    );
    let (p, m) = located(key, || {
        let priced = price_provider(provider_name, provider.base_url.as_str())?;
        let p = table().iter().position(|x| std::ptr::eq(x, priced))?;
        let m = priced
            .models
            .iter()
            .position(|m| m.id == model)
            .or_else(|| priced.models.iter().position(|m| m.matches.matches(model)))?;
        Some((p, m))
    })?;
    rates_of(table()[p].models[m].prices.current(unix_ms), prompt_tokens)
}

/// Where in the table a lookup landed, remembered: a miss scans about 1,300 models, and the
/// same few models come back on every request.
fn located(key: String, find: impl FnOnce() -> Option<(usize, usize)>) -> Option<(usize, usize)> {
    type Seen = std::sync::Mutex<std::collections::HashMap<String, Option<(usize, usize)>>>;
    static SEEN: OnceLock<Seen> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(found) = seen.lock().ok().and_then(|s| s.get(&key).copied()) {
        return found;
    }
    let found = find();
    if let Ok(mut seen) = seen.lock() {
        // Model names come from clients: bound what is remembered.
        if seen.len() >= 10_000 {
            seen.clear();
        }
        seen.insert(key, found);
    }
    found
}

/// The premium a request is measured against: the model the client asked for, looked up
/// first with the provider its protocol implies (Anthropic for Claude's names, OpenAI's,
/// Google's), then anywhere.
pub fn premium_rates(requested: &str, prompt_tokens: u64, unix_ms: u64) -> Option<Rates> {
    let (p, m) = located(format!("\u{0}premium\u{0}{requested}"), || {
        let table = table();
        let preferred = ["anthropic", "openai", "google", "deepseek"];
        let ordered = preferred
            .iter()
            .filter_map(|id| table.iter().position(|p| p.id == *id))
            .chain((0..table.len()).filter(|&i| !preferred.contains(&table[i].id.as_str())));
        for p in ordered {
            let models = &table[p].models;
            let found = models
                .iter()
                .position(|m| m.id == requested)
                .or_else(|| models.iter().position(|m| m.matches.matches(requested)));
            if let Some(m) = found {
                return Some((p, m));
            }
        }
        None
    })?;
    rates_of(table()[p].models[m].prices.current(unix_ms), prompt_tokens)
}

/// Every model the table prices, by price provider: for `xx usage --prices` style listings
/// and for tests.
pub fn known_models() -> BTreeMap<&'static str, Vec<&'static str>> {
    table()
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.models.iter().map(|m| m.id.as_str()).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(base_url: &str) -> ProviderConfig {
        toml::from_str(&format!("base_url = \"{base_url}\"\nformat = \"chat\"\n")).unwrap()
    }

    #[test]
    fn the_embedded_table_prices_the_models_agents_ask_for() {
        let now = 1_790_000_000_000; // 2026-09
        let sonnet = premium_rates("claude-sonnet-4-5-20250929", 1000, now).unwrap();
        assert_eq!((sonnet.input, sonnet.output), (3.0, 15.0));
        let deepseek = rates(
            "deepseek",
            &provider("https://api.deepseek.com/v1"),
            "deepseek-chat",
            10,
            now,
        );
        assert!(deepseek.is_some_and(|r| r.input > 0.0));
        let free = rates(
            "openrouter",
            &provider("https://openrouter.ai/api/v1"),
            "qwen/qwen3-coder:free",
            10,
            now,
        );
        assert_eq!(free, Some(Rates::default()));
        let local = rates(
            "local",
            &provider("http://127.0.0.1:11434/v1"),
            "qwen3-coder",
            10,
            now,
        );
        assert_eq!(local, Some(Rates::default()));
        let unknown = rates(
            "corp",
            &provider("https://llm.corp.example/v1"),
            "house-model",
            10,
            now,
        );
        assert_eq!(unknown, None, "an unknown price is unknown, not zero");
    }

    #[test]
    fn tiered_and_dated_prices_apply_by_prompt_size_and_date() {
        let big = premium_rates("claude-sonnet-4-5", 300_000, 1_790_000_000_000).unwrap();
        assert_eq!(big.input, 6.0);
        assert_eq!(date_and_time(0), ("1970-01-01".to_string(), 0));
        assert_eq!(date_and_time(1_790_000_000_000).0, "2026-09-21");
    }

    #[test]
    fn cost_charges_each_bucket_at_its_rate() {
        let rates = Rates {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        };
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cache_read_tokens: 500_000,
            cache_write_tokens: 100_000,
            reasoning_tokens: 0,
        };
        let cost = rates.cost(&usage);
        assert!(
            (cost - (0.4 * 3.0 + 0.1 * 15.0 + 0.5 * 0.3 + 0.1 * 3.75)).abs() < 1e-9,
            "{cost}"
        );
    }
}
