//! Quotas: requests per minute per model (with a cooldown once hit), daily token and cost
//! budgets (over everything and per provider), and a per-request token budget. Usage is
//! counted when answers complete; a spent budget or limit is refused with a structured 429.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};

use super::ir::{ApiError, ErrorKind, Usage};
use crate::config::{ProviderConfig, Quotas};

/// The limits in force (rebuilt on reload) and today's usage (kept across reloads, and read
/// back from the usage ledger when the gateway starts).
pub struct Limits {
    quotas: Quotas,
    limiters: BTreeMap<String, DefaultDirectRateLimiter>,
    /// `provider|model` -> unix ms until which it is left alone after hitting its limit.
    cooling: Mutex<BTreeMap<String, u64>>,
}

#[derive(Default)]
pub struct Ledger {
    day: Mutex<(u64, Totals, BTreeMap<String, Totals>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub tokens: u64,
    pub cost_usd: f64,
}

fn today() -> u64 {
    super::breaker::now_ms() / 86_400_000
}

impl Ledger {
    /// Count a completed answer against today's budgets.
    pub fn record(
        &self,
        provider: &str,
        model: &str,
        usage: &Usage,
        providers: &BTreeMap<String, ProviderConfig>,
    ) {
        // An unknown price adds nothing here; the ledger shows it as unknown.
        let cost = providers
            .get(provider)
            .and_then(|config| {
                super::usage::prices::rates(
                    provider,
                    config,
                    model,
                    usage.input_tokens,
                    super::breaker::now_ms(),
                )
            })
            .map_or(0.0, |rates| rates.cost(usage));
        // Counts come from the upstream: a nonsense value must not overflow the day's totals.
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        self.add(provider, tokens, cost);
    }

    /// Spend already recorded today (read back from the usage ledger at start).
    pub fn add(&self, provider: &str, tokens: u64, cost: f64) {
        if let Ok(mut day) = self.day.lock() {
            if day.0 != today() {
                *day = (today(), Totals::default(), BTreeMap::new());
            }
            day.1.tokens = day.1.tokens.saturating_add(tokens);
            day.1.cost_usd += cost;
            let per = day.2.entry(provider.to_string()).or_default();
            per.tokens = per.tokens.saturating_add(tokens);
            per.cost_usd += cost;
        }
    }

    pub fn totals(&self) -> (Totals, BTreeMap<String, Totals>) {
        match self.day.lock() {
            Ok(day) if day.0 == today() => (day.1, day.2.clone()),
            _ => (Totals::default(), BTreeMap::new()),
        }
    }

    pub fn to_json(&self) -> Value {
        let (all, per) = self.totals();
        json!({"today": {"tokens": all.tokens, "cost_usd": all.cost_usd},
            "providers": per.iter().map(|(k, t)| (k.clone(), json!({"tokens": t.tokens, "cost_usd": t.cost_usd}))).collect::<serde_json::Map<_, _>>()})
    }
}

fn quota_error(message: String, retry_after: Option<u64>) -> ApiError {
    ApiError {
        status: 429,
        kind: ErrorKind::RateLimit,
        message,
        retry_after,
    }
}

impl Limits {
    pub fn new(quotas: &Quotas) -> Limits {
        let limiters = quotas
            .models
            .iter()
            .filter_map(|(id, q)| {
                NonZeroU32::new(q.requests_per_minute)
                    .map(|n| (id.clone(), RateLimiter::direct(Quota::per_minute(n))))
            })
            .collect();
        Limits {
            quotas: quotas.clone(),
            limiters,
            cooling: Mutex::new(BTreeMap::new()),
        }
    }

    /// Checks made once per request: its size and the global daily budgets.
    pub fn admit(&self, estimated_tokens: u64, ledger: &Ledger) -> Result<(), ApiError> {
        let q = &self.quotas;
        if q.request_tokens > 0 && estimated_tokens > q.request_tokens {
            return Err(quota_error(
                format!(
                    "quota: this request is about {estimated_tokens} tokens, over the per-request budget of {} (quotas.request_tokens)",
                    q.request_tokens
                ),
                None,
            ));
        }
        let (all, _) = ledger.totals();
        let until_midnight = Some((86_400_000 - super::breaker::now_ms() % 86_400_000) / 1000);
        if q.daily_tokens > 0 && all.tokens >= q.daily_tokens {
            return Err(quota_error(
                format!(
                    "quota: today's token budget of {} is spent (quotas.daily_tokens)",
                    q.daily_tokens
                ),
                until_midnight,
            ));
        }
        if q.daily_cost_usd > 0.0 && all.cost_usd >= q.daily_cost_usd {
            return Err(quota_error(
                format!(
                    "quota: today's cost budget of ${:.2} is spent (quotas.daily_cost_usd)",
                    q.daily_cost_usd
                ),
                until_midnight,
            ));
        }
        Ok(())
    }

    /// Whether `id` (`provider|model`) may take one more request now; the reason if not.
    pub fn take(
        &self,
        provider: &str,
        id: &str,
        now_ms: u64,
        ledger: &Ledger,
    ) -> Result<(), String> {
        if let Some(quota) = self.quotas.providers.get(provider) {
            let (_, per) = ledger.totals();
            let spent = per.get(provider).copied().unwrap_or_default();
            if quota.daily_tokens > 0 && spent.tokens >= quota.daily_tokens {
                return Err(format!(
                    "provider `{provider}` spent today's {} tokens (quotas.providers.{provider}.daily_tokens)",
                    quota.daily_tokens
                ));
            }
            if quota.daily_cost_usd > 0.0 && spent.cost_usd >= quota.daily_cost_usd {
                return Err(format!(
                    "provider `{provider}` spent today's ${:.2} (quotas.providers.{provider}.daily_cost_usd)",
                    quota.daily_cost_usd
                ));
            }
        }
        let Some(limiter) = self.limiters.get(id) else {
            return Ok(());
        };
        let mut cooling = self
            .cooling
            .lock()
            .map_err(|_| "quota state unavailable".to_string())?;
        if let Some(until) = cooling.get(id)
            && now_ms < *until
        {
            return Err(format!(
                "{id} is cooling down for {} s after reaching its requests-per-minute limit",
                (until - now_ms).div_ceil(1000)
            ));
        }
        if limiter.check().is_err() {
            let quota = &self.quotas.models[id];
            cooling.insert(id.to_string(), now_ms + quota.cooldown_secs * 1000);
            return Err(format!(
                "{id} reached {} requests per minute (quotas.models); cooling down for {} s",
                quota.requests_per_minute, quota.cooldown_secs
            ));
        }
        Ok(())
    }

    /// The structured 429 when every candidate was skipped for quotas.
    pub fn exhausted(reasons: &[String]) -> ApiError {
        quota_error(
            format!(
                "quota: no candidate may take this request: {}",
                reasons.join("; ")
            ),
            Some(60),
        )
    }
}
