//! Prometheus `/metrics` (the text exposition format, from the `prometheus` crate): model calls by protocol,
//! provider, model and outcome; first-byte and total latency; tokens by bucket; cost; cascade
//! fallbacks and each attempt's outcome; breaker states; calls in flight; and what became of
//! the ledger's records. Per-request series move when a request's record is finished, the
//! same moment it goes to the ledger, so the two always agree.

use prometheus::{
    CounterVec, Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder, exponential_buckets,
};

use crate::gateway::Gateway;
use crate::gateway::usage::record::Record;

pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    total_seconds: HistogramVec,
    first_byte_seconds: HistogramVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    fallbacks: IntCounter,
    attempts: IntCounterVec,
    breakers: IntGaugeVec,
    in_flight: IntGauge,
    ledger: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Register `metric` and hand it back; the names are fixed here, so a clash is a bug.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("clutch".into()), None).expect("a valid metric prefix");
        // 1 ms to about 9 minutes.
        let latency = exponential_buckets(0.001, 2.0, 20).expect("valid buckets");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let calls = counter(
            "model_calls_total",
            "Model calls answered, by client protocol, serving provider and model, and outcome",
            &["protocol", "provider", "model", "outcome"],
        );
        let total_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "model_call_duration_seconds",
                    "Time from a model call's arrival to the end of its answer",
                )
                .buckets(latency.clone()),
                &["protocol"],
            )
            .expect("valid metric"),
        );
        let first_byte_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "model_call_first_byte_seconds",
                    "Time from a model call's arrival to its first answer byte",
                )
                .buckets(latency),
                &["protocol"],
            )
            .expect("valid metric"),
        );
        let tokens = counter(
            "tokens_total",
            "Tokens by provider, model and bucket (input excludes cache reads and writes)",
            &["provider", "model", "kind"],
        );
        let cost = registered(
            &registry,
            CounterVec::new(
                Opts::new(
                    "cost_usd_total",
                    "US dollars spent, by provider and model (calls with a known price)",
                ),
                &["provider", "model"],
            )
            .expect("valid metric"),
        );
        let fallbacks = registered(
            &registry,
            IntCounter::new(
                "cascade_fallbacks_total",
                "Model calls answered by a candidate after the first failed or was skipped",
            )
            .expect("valid metric"),
        );
        let attempts = counter(
            "attempts_total",
            "Candidate attempts by provider, model and outcome",
            &["provider", "model", "outcome"],
        );
        let breakers = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "breaker_state",
                    "1 for each circuit breaker's current state",
                ),
                &["breaker", "state"],
            )
            .expect("valid metric"),
        );
        let in_flight = registered(
            &registry,
            IntGauge::new("in_flight", "Model calls in progress").expect("valid metric"),
        );
        let ledger = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "ledger_records",
                    "Usage ledger records by what became of them (written, dropped on a full queue, failed, pending)",
                ),
                &["state"],
            )
            .expect("valid metric"),
        );
        Metrics {
            registry,
            calls,
            total_seconds,
            first_byte_seconds,
            tokens,
            cost,
            fallbacks,
            attempts,
            breakers,
            in_flight,
            ledger,
        }
    }

    /// One finished request.
    pub fn observe(&self, record: &Record) {
        let provider = record.provider.as_deref().unwrap_or("none");
        let model = record.model.as_deref().unwrap_or("none");
        self.calls
            .with_label_values(&[
                record.protocol.as_str(),
                provider,
                model,
                record.outcome.as_str(),
            ])
            .inc();
        self.total_seconds
            .with_label_values(&[record.protocol.as_str()])
            .observe(record.total_ms as f64 / 1000.0);
        if let Some(ttfb) = record.ttfb_ms {
            self.first_byte_seconds
                .with_label_values(&[record.protocol.as_str()])
                .observe(ttfb as f64 / 1000.0);
        }
        if record.provider.is_some() {
            let usage = record.usage();
            for (kind, count) in [
                ("input", usage.anthropic_input()),
                ("output", usage.output_tokens),
                ("cache_read", usage.cache_read_tokens),
                ("cache_write", usage.cache_write_tokens),
            ] {
                if count > 0 {
                    self.tokens
                        .with_label_values(&[provider, model, kind])
                        .inc_by(count);
                }
            }
            if let Some(cost) = record.cost_usd
                && cost >= 0.0
            {
                self.cost.with_label_values(&[provider, model]).inc_by(cost);
            }
            if record.attempts.len() > 1 {
                self.fallbacks.inc();
            }
        }
        for attempt in &record.attempts {
            self.attempts
                .with_label_values(&[
                    attempt.provider.as_str(),
                    attempt.model.as_str(),
                    attempt.outcome.as_str(),
                ])
                .inc();
        }
    }

    /// The whole exposition (Prometheus text format), with the gauges read now.
    pub fn render(&self, gateway: &Gateway) -> String {
        self.in_flight.set(gateway.stats.in_flight());
        let breakers = gateway.breakers.to_json(crate::gateway::breaker::now_ms());
        self.breakers.reset();
        for breaker in breakers["breakers"].as_array().into_iter().flatten() {
            let (Some(id), Some(state)) = (breaker["id"].as_str(), breaker["state"].as_str())
            else {
                continue;
            };
            for each in ["closed", "open", "half_open"] {
                self.breakers
                    .with_label_values(&[id, each])
                    .set(i64::from(each == state));
            }
        }
        if let Some(usage) = &gateway.usage {
            let (started, written, dropped, failed) = usage.counters();
            for (state, value) in [
                ("written", written),
                ("dropped", dropped),
                ("failed", failed),
                (
                    "pending",
                    started.saturating_sub(written + dropped + failed),
                ),
            ] {
                self.ledger.with_label_values(&[state]).set(value as i64);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).unwrap_or_default()
    }
}
