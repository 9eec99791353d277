//! The ranking formula (documented in docs/model-scan.md; the tests below hold it to that).
//!
//! Each model gets component scores in 0..1 from what its listing said, what the probes
//! measured and what the gateway's ledger recorded; each kind weighs them differently, and
//! the gateway's live health multiplies the result:
//!
//! `fitness = 100 × health × Σ weight × component`
//!
//! A model is no candidate at all (fitness 0) when its provider is down, its probe got no
//! answer, it is blocklisted, or it lacks what the kind needs (free: a zero price; tool: tool
//! calls, a failed tool probe counts as none; reasoning: reasoning).

use crate::code::ScanKind;

use super::discover::Listed;
use super::probe::Verdict;

/// Everything known about one model.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub listed: Listed,
    /// Served from this machine (free, no key).
    pub local: bool,
    /// US dollars per million tokens, from the listing or the price table.
    pub input_price: Option<f64>,
    pub output_price: Option<f64>,
    pub probe: Option<ProbeFacts>,
    pub live: Option<LiveFacts>,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeFacts {
    pub answered: bool,
    pub ttft_ms: Option<u64>,
    pub tokens_per_s: Option<f64>,
    pub tool: Verdict,
    pub json: Verdict,
}

/// The gateway's own record of the model over the last week.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LiveFacts {
    pub attempts: u64,
    pub failures: u64,
    pub rate_limited: u64,
    /// Mean time of its successful calls.
    pub mean_ms: Option<f64>,
    /// Times its circuit breaker opened.
    pub breaker_trips: u64,
}

pub const MIN_HEALTH: f64 = 0.05;

/// Live records below this many attempts say too little to move a rank.
pub const MIN_LIVE_ATTEMPTS: u64 = 5;

impl Facts {
    /// (3 × input + output) / 4, the usual blend for a coding turn's mix.
    pub fn price_blended(&self) -> Option<f64> {
        if self.local {
            return Some(0.0);
        }
        let input = self.input_price?;
        let output = self.output_price.unwrap_or(input);
        Some((3.0 * input + output) / 4.0)
    }

    pub fn is_free(&self) -> bool {
        self.local || self.listed.id.ends_with(":free") || self.price_blended() == Some(0.0)
    }

    /// A probe's verdict when it ran, else what the listing says (None: unknown).
    fn capability(&self, verdict: Option<Verdict>, listed: Option<bool>) -> Option<bool> {
        match verdict {
            Some(Verdict::Pass) => Some(true),
            Some(Verdict::Fail) => Some(false),
            _ => listed,
        }
    }

    pub fn tools(&self) -> Option<bool> {
        self.capability(self.probe.map(|p| p.tool), self.listed.tools)
    }

    pub fn structured(&self) -> Option<bool> {
        self.capability(self.probe.map(|p| p.json), self.listed.structured)
    }

    pub fn reasoning(&self) -> Option<bool> {
        self.listed.reasoning
    }
}

/// 1 for yes, 0 for no, ½ when unknown.
fn credit(known: Option<bool>) -> f64 {
    match known {
        Some(true) => 1.0,
        Some(false) => 0.0,
        None => 0.5,
    }
}

/// The component scores, each 0..1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Components {
    /// log2(context / 4096) / 6: 4k → 0, 32k → 0.5, 256k and more → 1; unknown 0.4.
    pub context: f64,
    /// 1 − age/365 days, at least 0.1; unknown 0.4.
    pub recency: f64,
    /// The mean of tokens/s ÷ 150 (at most 1) and 1 / (1 + seconds to first token), from the
    /// probe, else the ledger's mean call time; unknown 0.3.
    pub speed: f64,
    /// 1 / (1 + blended $/Mtok): free 1, $1 0.5, $3 0.25; unknown 0.3.
    pub cheap: f64,
    /// What providers charge as a proxy for strength, log-scaled: log10(1 + price) /
    /// log10(21): free 0, $1 0.23, $3 0.46, $20 and more 1; unknown 0.3.
    pub strength: f64,
    pub tools: f64,
    pub reasoning: f64,
    pub structured: f64,
    /// The speed probe answered 1, not probed 0.5.
    pub verified: f64,
}

pub fn components(facts: &Facts, now_secs: u64) -> Components {
    let context = facts.listed.context.map_or(0.4, |c| {
        ((c.max(1) as f64 / 4096.0).log2() / 6.0).clamp(0.0, 1.0)
    });
    let recency = facts.listed.created.map_or(0.4, |created| {
        let age_days = now_secs.saturating_sub(created) as f64 / 86_400.0;
        (1.0 - age_days / 365.0).clamp(0.1, 1.0)
    });
    let probe = facts.probe.filter(|p| p.answered);
    let ttft_ms = probe
        .and_then(|p| p.ttft_ms.map(|t| t as f64))
        .or_else(|| facts.live.and_then(|l| l.mean_ms));
    let mut parts = Vec::new();
    if let Some(tps) = probe.and_then(|p| p.tokens_per_s) {
        parts.push((tps / 150.0).clamp(0.0, 1.0));
    }
    if let Some(ms) = ttft_ms {
        parts.push(1.0 / (1.0 + ms / 1000.0));
    }
    let speed = if parts.is_empty() {
        0.3
    } else {
        parts.iter().sum::<f64>() / parts.len() as f64
    };
    let blended = facts.price_blended();
    Components {
        context,
        recency,
        speed,
        cheap: blended.map_or(0.3, |p| 1.0 / (1.0 + p)),
        strength: blended.map_or(0.3, |p| ((1.0 + p).log10() / 21f64.log10()).clamp(0.0, 1.0)),
        tools: credit(facts.tools()),
        reasoning: credit(facts.reasoning()),
        structured: credit(facts.structured()),
        verified: if probe.is_some() { 1.0 } else { 0.5 },
    }
}

/// The weights per kind; each row sums to 1.
pub fn weights(kind: ScanKind) -> [(&'static str, f64); 9] {
    let row = |strength, reasoning, tools, structured, context, recency, speed, cheap, verified| {
        [
            ("strength", strength),
            ("reasoning", reasoning),
            ("tools", tools),
            ("structured", structured),
            ("context", context),
            ("recency", recency),
            ("speed", speed),
            ("cheap", cheap),
            ("verified", verified),
        ]
    };
    match kind {
        ScanKind::Best => row(0.40, 0.10, 0.10, 0.0, 0.15, 0.10, 0.05, 0.0, 0.10),
        ScanKind::Free => row(0.0, 0.10, 0.25, 0.05, 0.20, 0.15, 0.15, 0.0, 0.10),
        ScanKind::Tool => row(0.0, 0.0, 0.35, 0.15, 0.10, 0.0, 0.15, 0.15, 0.10),
        ScanKind::Reasoning => row(0.40, 0.25, 0.0, 0.0, 0.15, 0.0, 0.0, 0.10, 0.10),
        ScanKind::Verifier => row(0.15, 0.0, 0.0, 0.30, 0.0, 0.0, 0.20, 0.25, 0.10),
        ScanKind::Fast => row(0.0, 0.0, 0.0, 0.0, 0.10, 0.0, 0.55, 0.25, 0.10),
    }
}

/// The live health multiplier: (1 − failure rate)² × 0.85^breaker trips (at most 5 counted),
/// where a rate limit counts as half a failure; 1 with fewer than [`MIN_LIVE_ATTEMPTS`]. At
/// least 0.05: a model that fails everything sinks to the bottom of its kinds but stays
/// ranked, a last resort rather than gone.
pub fn health(live: Option<&LiveFacts>) -> f64 {
    let Some(live) = live else { return 1.0 };
    let trips = 0.85f64.powi(live.breaker_trips.min(5) as i32);
    if live.attempts < MIN_LIVE_ATTEMPTS {
        return trips;
    }
    let failing = (live.failures as f64 + live.rate_limited as f64 / 2.0) / live.attempts as f64;
    ((1.0 - failing.clamp(0.0, 1.0)).powi(2) * trips).max(MIN_HEALTH)
}

/// Whether the model can serve `kind` at all.
pub fn eligible(kind: ScanKind, facts: &Facts) -> bool {
    if facts.probe.is_some_and(|p| !p.answered) {
        return false;
    }
    match kind {
        ScanKind::Free => facts.is_free(),
        ScanKind::Tool => facts.tools() != Some(false),
        ScanKind::Reasoning => facts.reasoning() != Some(false),
        _ => true,
    }
}

/// 0..100, one decimal; 0 when not [`eligible`].
pub fn fitness(kind: ScanKind, facts: &Facts, now_secs: u64) -> f64 {
    if !eligible(kind, facts) {
        return 0.0;
    }
    let c = components(facts, now_secs);
    let value = |name: &str| match name {
        "strength" => c.strength,
        "reasoning" => c.reasoning,
        "tools" => c.tools,
        "structured" => c.structured,
        "context" => c.context,
        "recency" => c.recency,
        "speed" => c.speed,
        "cheap" => c.cheap,
        _ => c.verified,
    };
    let sum: f64 = weights(kind).iter().map(|(name, w)| w * value(name)).sum();
    (1000.0 * health(facts.live.as_ref()) * sum).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn model(id: &str) -> Facts {
        Facts {
            listed: Listed {
                id: id.into(),
                ..Listed::default()
            },
            ..Facts::default()
        }
    }

    fn probe(tool: Verdict, json: Verdict, ttft_ms: u64, tps: f64) -> Option<ProbeFacts> {
        Some(ProbeFacts {
            answered: true,
            ttft_ms: Some(ttft_ms),
            tokens_per_s: Some(tps),
            tool,
            json,
        })
    }

    #[test]
    fn every_kinds_weights_sum_to_one() {
        for kind in super::super::snapshot::KINDS {
            let sum: f64 = weights(kind).iter().map(|(_, w)| w).sum();
            assert!((sum - 1.0).abs() < 1e-9, "{kind:?}: {sum}");
        }
    }

    #[test]
    fn components_follow_the_documented_curves() {
        let mut facts = model("m");
        facts.listed.context = Some(32_768);
        facts.listed.created = Some(NOW - 73 * 86_400);
        facts.input_price = Some(1.0);
        facts.output_price = Some(1.0);
        facts.probe = probe(Verdict::Pass, Verdict::Fail, 1000, 150.0);
        let c = components(&facts, NOW);
        assert!((c.context - 0.5).abs() < 1e-9);
        assert!((c.recency - 0.8).abs() < 1e-9);
        assert!((c.speed - 0.75).abs() < 1e-9, "{}", c.speed);
        assert!((c.cheap - 0.5).abs() < 1e-9);
        assert!((c.strength - 2f64.log10() / 21f64.log10()).abs() < 1e-9);
        assert_eq!(
            (c.tools, c.structured, c.reasoning, c.verified),
            (1.0, 0.0, 0.5, 1.0)
        );
        let unknown = components(&model("u"), NOW);
        assert_eq!(
            (
                unknown.context,
                unknown.recency,
                unknown.speed,
                unknown.cheap,
                unknown.strength
            ),
            (0.4, 0.4, 0.3, 0.3, 0.3)
        );
    }

    #[test]
    fn fitness_is_the_weighted_sum_times_health() {
        let mut facts = model("m:free");
        facts.listed.context = Some(262_144);
        facts.listed.tools = Some(true);
        facts.listed.reasoning = Some(false);
        facts.listed.structured = Some(true);
        facts.listed.created = Some(NOW);
        facts.probe = probe(Verdict::Pass, Verdict::Pass, 0, 150.0);
        // free: 0.25 tools + 0.05 structured + 0.20 context + 0.15 recency + 0.15 speed + 0.10 verified
        assert_eq!(fitness(ScanKind::Free, &facts, NOW), 90.0);
        facts.live = Some(LiveFacts {
            attempts: 10,
            failures: 5,
            ..LiveFacts::default()
        });
        assert_eq!(fitness(ScanKind::Free, &facts, NOW), 22.5);
    }

    #[test]
    fn a_failed_tool_probe_removes_the_model_from_the_tool_kind_only() {
        let mut facts = model("m:free");
        facts.listed.tools = Some(true);
        facts.probe = probe(Verdict::Fail, Verdict::Pass, 500, 50.0);
        assert_eq!(fitness(ScanKind::Tool, &facts, NOW), 0.0);
        assert!(fitness(ScanKind::Free, &facts, NOW) > 0.0);
        facts.probe = Some(ProbeFacts {
            answered: false,
            ttft_ms: None,
            tokens_per_s: None,
            tool: Verdict::NotRun,
            json: Verdict::NotRun,
        });
        assert_eq!(fitness(ScanKind::Free, &facts, NOW), 0.0);
    }

    #[test]
    fn free_means_a_zero_price_a_free_id_or_this_machine() {
        let mut paid = model("vendor/model");
        paid.input_price = Some(0.5);
        assert!(!paid.is_free());
        assert_eq!(fitness(ScanKind::Free, &paid, NOW), 0.0);
        assert!(model("vendor/model:free").is_free());
        let mut zero = model("vendor/model");
        zero.input_price = Some(0.0);
        zero.output_price = Some(0.0);
        assert!(zero.is_free());
        let mut local = model("qwen3");
        local.local = true;
        assert!(local.is_free());
    }

    #[test]
    fn failures_in_the_ledger_sink_a_model_and_few_records_do_not() {
        let healthy = LiveFacts {
            attempts: 100,
            failures: 2,
            ..LiveFacts::default()
        };
        let failing = LiveFacts {
            attempts: 100,
            failures: 60,
            ..LiveFacts::default()
        };
        assert!(health(Some(&healthy)) > 0.95);
        assert!(health(Some(&failing)) < 0.2);
        let hopeless = LiveFacts {
            attempts: 50,
            failures: 50,
            ..LiveFacts::default()
        };
        assert_eq!(health(Some(&hopeless)), MIN_HEALTH);
        let few = LiveFacts {
            attempts: 3,
            failures: 3,
            ..LiveFacts::default()
        };
        assert_eq!(health(Some(&few)), 1.0);
        let tripped = LiveFacts {
            attempts: 0,
            breaker_trips: 2,
            ..LiveFacts::default()
        };
        assert!((health(Some(&tripped)) - 0.7225).abs() < 1e-9);
    }

    #[test]
    fn best_prefers_the_stronger_model_and_fast_the_quicker_one() {
        let mut strong = model("big");
        strong.input_price = Some(3.0);
        strong.output_price = Some(15.0);
        let mut cheap = model("small");
        cheap.input_price = Some(0.1);
        cheap.output_price = Some(0.4);
        assert!(fitness(ScanKind::Best, &strong, NOW) > fitness(ScanKind::Best, &cheap, NOW));
        strong.probe = probe(Verdict::Pass, Verdict::Pass, 2000, 30.0);
        cheap.probe = probe(Verdict::Pass, Verdict::Pass, 200, 140.0);
        assert!(fitness(ScanKind::Fast, &cheap, NOW) > fitness(ScanKind::Fast, &strong, NOW));
    }
}
