//! Rate limits as providers mean them. A 429 limits what it names: by default the (key, model)
//! pair that got it, so the cascade's next model on the same key is tried at once (OpenRouter
//! limits its free models one by one). A whole key cools down only when the provider says the
//! key or account is spent (insufficient quota, no credits), or when several different models
//! of that key were limited within a short window. Which rule applied is kept with the state,
//! for `/api/keys` and for the error texts.
//!
//! Rate limits are not faults of a model: nothing here touches the circuit breakers. Time is
//! passed in (unix milliseconds), so the rules are tested without waiting. The pool is the one
//! seam a shared store (Redis) will replace.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::config::GatewayConfig;

/// The rules' numbers, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Different models of one key limited within `window_ms` that cool the whole key.
    pub key_wide_models: u32,
    pub window_ms: u64,
    /// The longest a request waits for a cooling candidate before it is answered with a 429.
    pub max_wait_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            key_wide_models: 3,
            window_ms: 60_000,
            max_wait_ms: 5_000,
        }
    }
}

impl Settings {
    pub fn from_config(config: &GatewayConfig) -> Settings {
        Settings {
            key_wide_models: config.rate_limit_key_models,
            window_ms: config.rate_limit_window_secs.saturating_mul(1000),
            max_wait_ms: config.rate_limit_wait_secs.saturating_mul(1000),
        }
    }
}

/// What a cool-down covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One model on one key.
    Model,
    /// Every model on one key.
    Key,
}

/// Why something is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The provider's `Retry-After`.
    RetryAfter,
    /// A 429 without `Retry-After`: a short pause that doubles with each one in a row.
    Backoff,
    /// The provider said the key or account is spent.
    QuotaExhausted,
    /// Several different models of the key were limited within the window.
    ManyModels,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::RetryAfter => "retry_after",
            Rule::Backoff => "backoff",
            Rule::QuotaExhausted => "quota_exhausted",
            Rule::ManyModels => "many_models",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Rule::RetryAfter => "as its Retry-After asked",
            Rule::Backoff => "after a 429 without Retry-After",
            Rule::QuotaExhausted => "the provider says its quota or credits are spent",
            Rule::ManyModels => "several of its models were limited within a minute",
        }
    }
}

/// What the provider said with its 429.
#[derive(Debug, Clone, Copy, Default)]
pub struct Said {
    /// Its `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// That the key or account is spent ([`says_exhausted`]).
    pub exhausted: bool,
}

impl Said {
    /// A plain 429 with `Retry-After: retry_after`.
    pub fn wait(retry_after: u64) -> Said {
        Said {
            retry_after: Some(retry_after),
            exhausted: false,
        }
    }
}

/// What one 429 did, for the error text.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub scope: Scope,
    pub rule: Rule,
    pub until_ms: u64,
}

impl Limit {
    /// `model m on key 2 cools 20 s, as its Retry-After asked`
    pub fn describe(&self, key: usize, model: &str, now: u64) -> String {
        let seconds = self.until_ms.saturating_sub(now).div_ceil(1000);
        match self.scope {
            Scope::Model => format!(
                "model {model} on key {} cools {seconds} s, {}",
                key + 1,
                self.rule.says()
            ),
            Scope::Key => format!(
                "key {} cools {seconds} s for every model, {}",
                key + 1,
                self.rule.says()
            ),
        }
    }
}

/// A 429 without `Retry-After` cools the pair this long, doubling per 429 in a row.
const BACKOFF_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 60_000;
/// A key that is spent, with no `Retry-After` to say for how long.
const EXHAUSTED_MS: u64 = 10 * 60_000;

#[derive(Debug, Clone, Default)]
struct Cooling {
    consecutive: u32,
    until_ms: u64,
    rule: Option<Rule>,
}

#[derive(Debug, Clone, Default)]
struct KeyState {
    /// The key as a whole; `consecutive` counts 429s on any of its models.
    key: Cooling,
    models: BTreeMap<String, Cooling>,
    /// (model, when) of recent 429s, for the many-models rule.
    recent: VecDeque<(String, u64)>,
}

impl KeyState {
    fn free_at(&self, model: &str) -> u64 {
        let pair = self.models.get(model).map_or(0, |c| c.until_ms);
        pair.max(self.key.until_ms)
    }
}

/// Per-provider key and (key, model) cool-downs.
#[derive(Default)]
pub struct KeyPool {
    /// provider -> its keys, by position.
    keys: Mutex<BTreeMap<String, Vec<KeyState>>>,
}

impl KeyPool {
    /// The keys to try for `model`, in order (each at most once); `None` stands for a provider
    /// with no key at all, whose limits are kept as if it had one.
    pub fn usable(
        &self,
        provider: &str,
        model: &str,
        count: usize,
        now: u64,
    ) -> Vec<Option<usize>> {
        let keyed = |i: usize| (count > 0).then_some(i);
        let Ok(all) = self.keys.lock() else {
            return (0..count.max(1)).map(keyed).collect();
        };
        let keys = all.get(provider);
        (0..count.max(1))
            .filter(|i| {
                keys.and_then(|k| k.get(*i))
                    .is_none_or(|state| state.free_at(model) <= now)
            })
            .map(keyed)
            .collect()
    }

    /// When the first of the provider's keys is free again for `model`.
    pub fn free_at(&self, provider: &str, model: &str, count: usize, now: u64) -> u64 {
        let Ok(all) = self.keys.lock() else {
            return now;
        };
        let Some(keys) = all.get(provider) else {
            return now;
        };
        (0..count.max(1))
            .map(|i| keys.get(i).map_or(now, |state| state.free_at(model)))
            .min()
            .unwrap_or(now)
    }

    /// A 429 (or a spent quota) for `model` on key `key`; returns what cools.
    pub fn rate_limited(
        &self,
        provider: &str,
        key: usize,
        model: &str,
        said: Said,
        settings: &Settings,
        now: u64,
    ) -> Limit {
        let Said {
            retry_after,
            exhausted,
        } = said;
        let asked = retry_after.map(|s| now.saturating_add(s.saturating_mul(1000)));
        let Ok(mut all) = self.keys.lock() else {
            return Limit {
                scope: Scope::Model,
                rule: Rule::Backoff,
                until_ms: now,
            };
        };
        let keys = all.entry(provider.to_string()).or_default();
        if keys.len() <= key {
            keys.resize(key + 1, KeyState::default());
        }
        let state = &mut keys[key];
        state.key.consecutive = state.key.consecutive.saturating_add(1);
        if exhausted {
            let until = asked.unwrap_or(now + EXHAUSTED_MS);
            state.key.until_ms = state.key.until_ms.max(until);
            state.key.rule = Some(Rule::QuotaExhausted);
            return Limit {
                scope: Scope::Key,
                rule: Rule::QuotaExhausted,
                until_ms: state.key.until_ms,
            };
        }
        let pair = state.models.entry(model.to_string()).or_default();
        pair.consecutive = pair.consecutive.saturating_add(1);
        let (rule, until) = match asked {
            Some(until) => (Rule::RetryAfter, until),
            None => {
                let doubling = 1u64 << pair.consecutive.saturating_sub(1).min(16);
                let pause = BACKOFF_MS.saturating_mul(doubling).min(BACKOFF_MAX_MS);
                (Rule::Backoff, now + pause)
            }
        };
        pair.until_ms = until;
        pair.rule = Some(rule);
        state.recent.push_back((model.to_string(), now));
        while state
            .recent
            .front()
            .is_some_and(|(_, at)| now.saturating_sub(*at) > settings.window_ms)
        {
            state.recent.pop_front();
        }
        let mut distinct: Vec<&str> = state.recent.iter().map(|(m, _)| m.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if settings.key_wide_models > 0 && distinct.len() >= settings.key_wide_models as usize {
            // The key as a whole is limited: it waits as long as the longest of its models.
            let longest = state
                .models
                .values()
                .map(|c| c.until_ms)
                .max()
                .unwrap_or(until);
            state.key.until_ms = state.key.until_ms.max(longest);
            state.key.rule = Some(Rule::ManyModels);
            state.recent.clear();
            return Limit {
                scope: Scope::Key,
                rule: Rule::ManyModels,
                until_ms: state.key.until_ms,
            };
        }
        Limit {
            scope: Scope::Model,
            rule,
            until_ms: until,
        }
    }

    /// A good answer from `model` on `key`: its pair and the key's run of 429s are over.
    pub fn succeeded(&self, provider: &str, key: usize, model: &str) {
        let Ok(mut all) = self.keys.lock() else {
            return;
        };
        if let Some(state) = all.get_mut(provider).and_then(|k| k.get_mut(key)) {
            state.key.consecutive = 0;
            state.models.remove(model);
        }
    }

    /// Forget every cool-down of `provider` (all providers when `None`): the user topped up
    /// the account or changed the key. Returns whether anything was cooling.
    pub fn reset(&self, provider: Option<&str>) -> bool {
        let Ok(mut all) = self.keys.lock() else {
            return false;
        };
        match provider {
            Some(name) => all.remove(name).is_some(),
            None => {
                let any = !all.is_empty();
                all.clear();
                any
            }
        }
    }

    /// Why `model` cannot be tried on any key now, for the error text.
    pub fn why_cooling(&self, provider: &str, model: &str, count: usize, now: u64) -> String {
        let Ok(all) = self.keys.lock() else {
            return "every key is cooling down after rate limits".into();
        };
        let Some(keys) = all.get(provider) else {
            return "every key is cooling down after rate limits".into();
        };
        let reasons: Vec<String> = (0..count.max(1))
            .filter_map(|i| {
                let state = keys.get(i)?;
                let (scope, cooling) = match state.models.get(model) {
                    Some(pair) if pair.until_ms > state.key.until_ms => (Scope::Model, pair),
                    _ => (Scope::Key, &state.key),
                };
                let limit = Limit {
                    scope,
                    rule: cooling.rule?,
                    until_ms: cooling.until_ms,
                };
                Some(limit.describe(i, model, now))
            })
            .collect();
        format!("rate-limited: {}", reasons.join(", "))
    }

    /// `GET /api/keys`: key positions and their state, never the keys.
    pub fn to_json(&self, now: u64) -> Value {
        let all = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
        let remaining = |until: u64| until.saturating_sub(now) as f64 / 1000.0;
        let providers: serde_json::Map<String, Value> = all
            .into_iter()
            .map(|(provider, keys)| {
                let list: Vec<Value> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, state)| {
                        let models: serde_json::Map<String, Value> = state
                            .models
                            .iter()
                            .map(|(model, c)| {
                                (
                                    model.clone(),
                                    json!({"consecutive_429": c.consecutive,
                                        "cooling_remaining_s": remaining(c.until_ms),
                                        "rule": c.rule.map(Rule::name)}),
                                )
                            })
                            .collect();
                        json!({"key": i, "consecutive_429": state.key.consecutive,
                            "cooling_remaining_s": remaining(state.key.until_ms),
                            "rule": state.key.rule.filter(|_| state.key.until_ms > now).map(Rule::name),
                            "models": models})
                    })
                    .collect();
                (provider, Value::Array(list))
            })
            .collect();
        Value::Object(providers)
    }
}

/// Whether an upstream's 429 (or 402) body says the key or account itself is spent, not
/// that a model is busy: OpenAI's `insufficient_quota`, credit and billing errors.
pub fn says_exhausted(status: u16, body: &[u8]) -> bool {
    if status == 402 {
        return true;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_lowercase();
    [
        "insufficient_quota",
        "insufficient quota",
        "exceeded your current quota",
        "insufficient credits",
        "insufficient_credits",
        "credit balance",
        "out of credits",
        "billing",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    #[test]
    fn a_429_cools_only_its_model_and_the_next_model_of_the_key_stays_usable() {
        let pool = KeyPool::default();
        let s = Settings::default();
        let limit = pool.rate_limited("or", 0, "busy", Said::wait(20), &s, T0);
        assert_eq!((limit.scope, limit.rule), (Scope::Model, Rule::RetryAfter));
        assert!(pool.usable("or", "busy", 1, T0 + 19_999).is_empty());
        assert_eq!(pool.usable("or", "other", 1, T0 + 1), vec![Some(0)]);
        assert_eq!(pool.usable("or", "busy", 1, T0 + 20_000), vec![Some(0)]);
        assert_eq!(pool.free_at("or", "busy", 1, T0), T0 + 20_000);
        assert!(
            pool.why_cooling("or", "busy", 1, T0)
                .contains("model busy on key 1 cools 20 s")
        );
    }

    #[test]
    fn a_spent_quota_cools_the_whole_key_and_not_the_next_one() {
        let pool = KeyPool::default();
        let s = Settings::default();
        let limit = pool.rate_limited(
            "oa",
            0,
            "m",
            Said {
                retry_after: None,
                exhausted: true,
            },
            &s,
            T0,
        );
        assert_eq!(
            (limit.scope, limit.rule),
            (Scope::Key, Rule::QuotaExhausted)
        );
        assert_eq!(pool.usable("oa", "other", 2, T0 + 1), vec![Some(1)]);
        assert_eq!(pool.to_json(T0)["oa"][0]["rule"], json!("quota_exhausted"));
    }

    #[test]
    fn several_models_limited_within_the_window_cool_the_key() {
        let pool = KeyPool::default();
        let s = Settings {
            key_wide_models: 3,
            window_ms: 10_000,
            max_wait_ms: 0,
        };
        pool.rate_limited("p", 0, "a", Said::wait(5), &s, T0);
        // Outside the window: forgotten.
        pool.rate_limited("p", 0, "b", Said::wait(5), &s, T0 + 20_000);
        let limit = pool.rate_limited("p", 0, "c", Said::wait(5), &s, T0 + 21_000);
        assert_eq!(limit.scope, Scope::Model);
        let limit = pool.rate_limited("p", 0, "d", Said::wait(7), &s, T0 + 22_000);
        assert_eq!((limit.scope, limit.rule), (Scope::Key, Rule::ManyModels));
        assert!(pool.usable("p", "fresh", 1, T0 + 22_001).is_empty());
        assert_eq!(limit.until_ms, T0 + 29_000);
    }

    #[test]
    fn a_429_without_retry_after_backs_off_doubling_and_success_clears_it() {
        let pool = KeyPool::default();
        let s = Settings::default();
        let first = pool.rate_limited("p", 0, "m", Said::default(), &s, T0);
        assert_eq!(first.until_ms, T0 + 1_000);
        let second = pool.rate_limited("p", 0, "m", Said::default(), &s, T0);
        assert_eq!(second.until_ms, T0 + 2_000);
        pool.succeeded("p", 0, "m");
        assert_eq!(pool.usable("p", "m", 1, T0), vec![Some(0)]);
        assert_eq!(pool.to_json(T0)["p"][0]["consecutive_429"], 0);
    }

    #[test]
    fn quota_and_credit_errors_are_recognised() {
        assert!(says_exhausted(
            429,
            br#"{"error":{"type":"insufficient_quota","message":"You exceeded your current quota"}}"#
        ));
        assert!(says_exhausted(402, b"{}"));
        assert!(!says_exhausted(
            429,
            br#"{"error":{"message":"Rate limit exceeded: free-models-per-min"}}"#
        ));
    }
}
