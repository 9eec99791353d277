//! Circuit breakers per (provider, model): open after N consecutive faults, half-open after a
//! cooldown that grows with each trip (up to a cap) and let one probe through, close on its
//! success. Request errors caused by the client never count; soft failures (an empty answer)
//! do. State is saved to a JSON file so it survives a gateway restart. Time is passed in
//! (unix milliseconds), so the whole timeline can be tested without waiting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Breaker {
    pub state: State,
    pub consecutive_failures: u32,
    /// Times it has opened since it last closed; each trip doubles the cooldown.
    pub trips: u32,
    pub open_until_ms: u64,
    /// A half-open probe is in flight.
    #[serde(default)]
    pub probing: bool,
    pub total_failures: u64,
    pub total_successes: u64,
    pub soft_failures: u64,
    pub last_error: Option<String>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            trips: 0,
            open_until_ms: 0,
            probing: false,
            total_failures: 0,
            total_successes: 0,
            soft_failures: 0,
            last_error: None,
        }
    }
}

/// Thresholds, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub threshold: u32,
    pub cooldown_ms: u64,
    pub max_cooldown_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: 3,
            cooldown_ms: 60_000,
            max_cooldown_ms: 15 * 60_000,
        }
    }
}

pub struct Breakers {
    /// Swapped on a config reload.
    settings: arc_swap::ArcSwap<Settings>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    file: Option<PathBuf>,
}

/// Breakers saved by an earlier run; a corrupt file is moved aside with a warning that names
/// it, and the gateway starts with every breaker closed.
fn restore(file: &std::path::Path) -> BTreeMap<String, Breaker> {
    let Ok(bytes) = std::fs::read(file) else {
        return BTreeMap::new();
    };
    match serde_json::from_slice(&bytes) {
        Ok(saved) => saved,
        Err(err) => {
            tracing::warn!(file = %file.display(), error = %err, "breaker state is corrupt; moving it aside");
            crate::sidecar::state::set_aside(file, &err.to_string());
            BTreeMap::new()
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Breakers {
    /// Breakers saved in `file` (if any) are restored.
    pub fn new(settings: Settings, file: Option<PathBuf>) -> Breakers {
        let saved = file.as_ref().map(|f| restore(f)).unwrap_or_default();
        Breakers {
            settings: arc_swap::ArcSwap::from_pointee(settings),
            breakers: Mutex::new(saved),
            file,
        }
    }

    /// New thresholds and cool-downs from a reloaded config, for trips from now on.
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(std::sync::Arc::new(settings));
    }

    fn cooldown(&self, trips: u32) -> u64 {
        let factor = 1u64 << trips.saturating_sub(1).min(20);
        let settings = self.settings.load();
        (settings.cooldown_ms.saturating_mul(factor)).min(settings.max_cooldown_ms)
    }

    fn save(&self, breakers: &BTreeMap<String, Breaker>) {
        if let Some(file) = &self.file {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let bytes = serde_json::to_vec(breakers).unwrap_or_default();
            if let Err(err) = crate::sidecar::state::write_private(file, &bytes) {
                tracing::warn!(file = %file.display(), error = %err, "cannot save the breakers");
            }
        }
    }

    /// Whether a request may go to `id` now. An open breaker past its cooldown becomes
    /// half-open and lets exactly one probe through.
    pub fn allow(&self, id: &str, now: u64) -> bool {
        let Ok(mut breakers) = self.breakers.lock() else {
            return true;
        };
        let Some(breaker) = breakers.get_mut(id) else {
            return true;
        };
        match breaker.state {
            State::Closed => true,
            State::Open if now < breaker.open_until_ms => false,
            State::Open => {
                breaker.state = State::HalfOpen;
                breaker.probing = true;
                let snapshot = breakers.clone();
                self.save(&snapshot);
                true
            }
            State::HalfOpen if breaker.probing => false,
            State::HalfOpen => {
                breaker.probing = true;
                true
            }
        }
    }

    pub fn success(&self, id: &str) {
        let Ok(mut breakers) = self.breakers.lock() else {
            return;
        };
        let breaker = breakers.entry(id.to_string()).or_default();
        let changed = breaker.state != State::Closed || breaker.consecutive_failures > 0;
        breaker.total_successes += 1;
        breaker.state = State::Closed;
        breaker.consecutive_failures = 0;
        breaker.trips = 0;
        breaker.probing = false;
        breaker.open_until_ms = 0;
        if changed {
            let snapshot = breakers.clone();
            self.save(&snapshot);
        }
    }

    /// A fault of `id`; `soft` for answers that were well-formed but useless.
    pub fn failure(&self, id: &str, now: u64, soft: bool, why: &str) {
        let Ok(mut breakers) = self.breakers.lock() else {
            return;
        };
        let breaker = breakers.entry(id.to_string()).or_default();
        breaker.total_failures += 1;
        breaker.soft_failures += u64::from(soft);
        breaker.consecutive_failures += 1;
        breaker.last_error = Some(why.chars().take(300).collect());
        let trip = match breaker.state {
            State::HalfOpen => true,
            State::Closed => breaker.consecutive_failures >= self.settings.load().threshold,
            State::Open => false,
        };
        if trip {
            breaker.trips += 1;
            breaker.state = State::Open;
            breaker.probing = false;
            breaker.open_until_ms = now + self.cooldown(breaker.trips);
        }
        let snapshot = breakers.clone();
        self.save(&snapshot);
    }

    pub fn reset(&self, id: &str) -> bool {
        let Ok(mut breakers) = self.breakers.lock() else {
            return false;
        };
        let found = breakers.remove(id).is_some();
        let snapshot = breakers.clone();
        self.save(&snapshot);
        found
    }

    /// Forget every breaker; returns how many there were.
    pub fn reset_all(&self) -> usize {
        let Ok(mut breakers) = self.breakers.lock() else {
            return 0;
        };
        let count = breakers.len();
        breakers.clear();
        self.save(&BTreeMap::new());
        count
    }

    /// Forget every breaker of `provider` (its key or config changed); returns how many.
    pub fn reset_provider(&self, provider: &str) -> usize {
        let Ok(mut breakers) = self.breakers.lock() else {
            return 0;
        };
        let prefix = format!("{provider}|");
        let before = breakers.len();
        breakers.retain(|id, _| !id.starts_with(&prefix));
        let removed = before - breakers.len();
        if removed > 0 {
            let snapshot = breakers.clone();
            self.save(&snapshot);
        }
        removed
    }

    /// When an open breaker lets a probe through again (0 when it is not open).
    pub fn open_until(&self, id: &str) -> u64 {
        self.get(id)
            .filter(|b| b.state == State::Open)
            .map_or(0, |b| b.open_until_ms)
    }

    /// Let one probe through now, whatever the cooldown says: used when every candidate's
    /// breaker is open, so a recovered provider is found at once instead of after minutes.
    pub fn force_probe(&self, id: &str) {
        if let Ok(mut breakers) = self.breakers.lock()
            && let Some(breaker) = breakers.get_mut(id)
        {
            breaker.state = State::HalfOpen;
            breaker.probing = true;
        }
    }

    /// Why `id` is skipped, for the error text: how long it stays open, its last fault and
    /// how to clear it.
    pub fn describe_open(&self, id: &str, now: u64) -> String {
        let Some(breaker) = self.get(id) else {
            return "its circuit breaker is open".into();
        };
        let seconds = breaker.open_until_ms.saturating_sub(now).div_ceil(1000);
        format!(
            "its circuit breaker is open for another {seconds} s after {} faults in a row (last: {}); `proxies breakers reset {id}` clears it",
            breaker.consecutive_failures,
            breaker.last_error.as_deref().unwrap_or("unknown")
        )
    }

    pub fn get(&self, id: &str) -> Option<Breaker> {
        self.breakers.lock().ok()?.get(id).cloned()
    }

    /// `GET /api/breakers`: open ones first.
    pub fn to_json(&self, now: u64) -> Value {
        let breakers = self.breakers.lock().map(|b| b.clone()).unwrap_or_default();
        let mut list: Vec<Value> = breakers
            .iter()
            .map(|(id, b)| {
                json!({"id": id, "state": b.state, "consecutive_failures": b.consecutive_failures, "trips": b.trips,
                    "cooldown_remaining_s": if b.state == State::Open { b.open_until_ms.saturating_sub(now) as f64 / 1000.0 } else { 0.0 },
                    "total_failures": b.total_failures, "total_successes": b.total_successes,
                    "soft_failures": b.soft_failures, "last_error": b.last_error})
            })
            .collect();
        list.sort_by_key(|b| if b["state"] == "open" { 0 } else { 1 });
        let settings = self.settings.load();
        json!({"threshold": settings.threshold, "cooldown_s": settings.cooldown_ms / 1000, "breakers": list})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens after 3, half-opens after the cooldown with one probe, closes on success,
    /// reopens with a longer cooldown on failure, and is restored after a restart.
    #[test]
    fn breaker_timeline_with_controlled_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("breakers.json");
        let settings = Settings {
            threshold: 3,
            cooldown_ms: 60_000,
            max_cooldown_ms: 200_000,
        };
        let b = Breakers::new(settings, Some(file.clone()));
        let id = "p|m";
        let t0 = 1_000_000;
        for i in 0..2 {
            b.failure(id, t0 + i, false, "500");
            assert!(b.allow(id, t0 + i), "still closed after {} faults", i + 1);
        }
        b.failure(id, t0 + 2, false, "500");
        assert_eq!(b.get(id).unwrap().state, State::Open);
        assert!(!b.allow(id, t0 + 59_000), "open during the cooldown");
        assert!(
            b.allow(id, t0 + 60_002),
            "half-open after the cooldown: one probe"
        );
        assert_eq!(b.get(id).unwrap().state, State::HalfOpen);
        assert!(!b.allow(id, t0 + 60_003), "only one probe at a time");
        b.success(id);
        assert_eq!(b.get(id).unwrap().state, State::Closed);
        assert!(b.allow(id, t0 + 60_004));

        // Trip again, then fail the probe: the cooldown doubles.
        let t1 = t0 + 100_000;
        for i in 0..3 {
            b.failure(id, t1 + i, false, "timeout");
        }
        assert_eq!(b.get(id).unwrap().open_until_ms, t1 + 2 + 60_000);
        assert!(b.allow(id, t1 + 2 + 60_000));
        b.failure(id, t1 + 60_010, false, "probe failed");
        let reopened = b.get(id).unwrap();
        assert_eq!(reopened.state, State::Open);
        assert_eq!(
            reopened.open_until_ms,
            t1 + 60_010 + 120_000,
            "second trip: twice the cooldown"
        );
        b.failure(id, t1 + 60_010, true, "empty answer");
        assert_eq!(b.get(id).unwrap().soft_failures, 1);

        // A restart restores it.
        let restored = Breakers::new(settings, Some(file));
        let again = restored.get(id).unwrap();
        assert_eq!(again.state, State::Open);
        assert_eq!(again.open_until_ms, t1 + 60_010 + 120_000);
        assert!(!restored.allow(id, t1 + 100_000));
        assert!(restored.reset(id));
        assert!(restored.allow(id, t1 + 100_000));
    }

    #[test]
    fn the_cooldown_is_capped() {
        let b = Breakers::new(
            Settings {
                threshold: 1,
                cooldown_ms: 1000,
                max_cooldown_ms: 5000,
            },
            None,
        );
        for trip in 0..10u64 {
            let now = trip * 100_000;
            assert!(b.allow("x", now + 99_000) || trip == 0);
            b.failure("x", now, false, "e");
        }
        let breaker = b.get("x").unwrap();
        assert!(breaker.open_until_ms - 900_000 <= 5000, "{breaker:?}");
    }
}
