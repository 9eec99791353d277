//! Model-scan: refresh jobs that find every model the user can reach, probe a bounded few,
//! rank them per kind (best, free, tool, reasoning, verifier, fast) and write the routing
//! snapshot that the tier letters (`xx cipf`) and profiles' `scan:<kind>` entries read.
//!
//! A refresh lists each configured provider's models in its own protocol and looks for model
//! servers on this machine's usual ports ([`discover`]); probes up to `scan.max_probes`
//! models, free ones only by default, `scan.concurrency` at a time ([`probe`]); folds in the
//! gateway's own record of each model ([`live`]); scores ([`score`]) and writes the snapshot
//! atomically ([`snapshot`]). One refresh at a time per state dir (a lock file).

pub mod discover;
pub mod live;
pub mod probe;
pub mod score;
pub mod show;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::code::ScanKind;
use crate::config::{Config, ProviderConfig};
use crate::error::Error;
use crate::paths::Paths;
use discover::Listed;
use probe::{Probed, Trouble};
use score::{Facts, ProbeFacts};
use snapshot::{Candidate, KINDS, Slot, Snapshot};

/// Candidates kept per kind in the snapshot.
pub const KEEP_PER_KIND: usize = 50;

/// What a refresh was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Only this provider (its listing and probes).
    pub provider: Option<String>,
}

/// What a refresh reports as it goes, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    /// This many providers are being listed.
    Listing(usize),
    /// One provider's list came back (or did not).
    Listed { provider: String, outcome: String },
    /// This many models will be probed.
    Probing(usize),
    /// One model's probes are done.
    Probed { model: String, outcome: String },
}

/// One provider as the refresh sees it.
struct Source {
    name: String,
    config: ProviderConfig,
    /// A model server on this machine: not finding it is no fault.
    local: bool,
}

/// Run one refresh and write the snapshot. Fails only when nothing could be written (the
/// lock is held, the state dir cannot be written); a provider that is down is recorded.
pub fn refresh(
    paths: &Paths,
    config: &Config,
    ask: &Ask,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Snapshot, Error> {
    let file = snapshot::path(paths, &config.scan);
    let dir = file
        .parent()
        .unwrap_or(paths.state_dir.as_path())
        .to_path_buf();
    crate::paths::ensure_private_dir(&dir).map_err(|why| {
        Error::Usage(format!(
            "cannot use {} for the model-scan snapshot: {why}",
            dir.display()
        ))
    })?;
    let lock = std::fs::File::create(dir.join("refresh.lock"))
        .map_err(|e| Error::io("cannot create the model-scan lock", e))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            Error::Usage(
                "another model-scan refresh is running (the supervisor's job, or another `xx scan refresh`); wait for it and run `xx scan show`".into(),
            )
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let previous = snapshot::load(&file, f64::MAX).ok();
    let snapshot = runtime.block_on(run(paths, config, ask, progress, previous.as_ref()))?;
    snapshot::write(&file, &snapshot).map_err(Error::Usage)?;
    Ok(snapshot)
}

async fn run(
    paths: &Paths,
    config: &Config,
    ask: &Ask,
    progress: &(dyn Fn(Progress) + Sync),
    previous: Option<&Snapshot>,
) -> Result<Snapshot, Error> {
    let started = Instant::now();
    let settings = &config.scan;
    let timeout = Duration::from_secs(settings.timeout_secs);
    let client = crate::gateway::upstream::client(&config.gateway);
    let all = config.all_providers();
    if let Some(wanted) = &ask.provider
        && !all.contains_key(wanted)
        && !discover::LOCAL_SERVERS.iter().any(|(n, _, _)| n == wanted)
        && !settings.local.contains_key(wanted)
    {
        return Err(Error::Usage(format!(
            "--provider {wanted}: no such provider (configured: {})",
            all.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let wanted = |name: &str| ask.provider.as_deref().is_none_or(|w| w == name);
    let mut sources: Vec<Source> = all
        .iter()
        .filter(|(name, _)| wanted(name))
        .map(|(name, provider)| Source {
            name: name.clone(),
            config: provider.clone(),
            local: crate::gateway::connect::is_loopback_url(provider.base_url.as_str())
                && !provider.declares_key(),
        })
        .collect();
    // Servers on their usual ports are looked for unless the user configured that name.
    let mut local_servers = BTreeMap::new();
    if settings.local_servers {
        let moved: Vec<(String, String)> = settings
            .local
            .iter()
            .map(|(name, url)| (name.clone(), url.as_str().to_string()))
            .collect();
        let probe_time = timeout.min(Duration::from_secs(2));
        for server in discover::local_servers(&client, &moved, probe_time).await {
            if !wanted(&server.name) || config.providers.contains_key(&server.name) {
                continue;
            }
            local_servers.insert(server.name.clone(), server.base_url.clone());
            sources.retain(|s| s.name != server.name);
            sources.push(Source {
                name: server.name.clone(),
                config: ProviderConfig::local_server(&server.base_url),
                local: true,
            });
        }
    }
    progress(Progress::Listing(sources.len()));

    let mut health: BTreeMap<String, String> = BTreeMap::new();
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    let mut requests = 0usize;
    let listings = futures_util::future::join_all(sources.iter().map(|source| async {
        let provider = crate::gateway::upstream::Provider::new(&source.name, &source.config);
        let sent = provider.as_ref().is_ok_and(|p| p.missing_key.is_none());
        let result = match &provider {
            Err(why) => Err(discover::Down {
                refused: false,
                message: why.clone(),
            }),
            Ok(p) if p.missing_key.is_some() => Err(discover::Down {
                refused: true,
                message: p.missing_key.clone().unwrap_or_default(),
            }),
            Ok(p) => {
                let key = p.keys.first().map(String::as_str);
                discover::list(&client, &p.base_url, p.format, key, timeout).await
            }
        };
        let outcome = match &result {
            Ok(models) => format!("{} models", models.len()),
            Err(down) => down.message.clone(),
        };
        progress(Progress::Listed {
            provider: source.name.clone(),
            outcome,
        });
        (provider.ok(), result, sent)
    }))
    .await;

    let now_ms = crate::gateway::usage::now_ms();
    let now_secs = now_ms / 1000;
    let (live, live_notes) = live::read(paths, now_ms);
    let mut facts: Vec<(String, Facts)> = Vec::new();
    let mut providers: BTreeMap<String, Arc<crate::gateway::upstream::Provider>> = BTreeMap::new();
    for (source, (provider, result, sent)) in sources.iter().zip(listings) {
        // A local server that is not running got a refused connection, not a request.
        requests += usize::from(sent && !(source.local && result.is_err()));
        let Some(provider) = provider else {
            if let Err(down) = result {
                health.insert(source.name.clone(), "down".into());
                notes.insert(source.name.clone(), down.message);
            }
            continue;
        };
        match result {
            Err(down) if source.local => {
                // A local server that is not running is simply not there.
                tracing::debug!(provider = %source.name, why = %down.message, "no local server");
            }
            Err(down) => {
                health.insert(source.name.clone(), "down".into());
                notes.insert(source.name.clone(), down.message);
            }
            Ok(models) => {
                health.insert(source.name.clone(), "ok".into());
                for listed in models {
                    let mut fact =
                        facts_for(&source.name, &source.config, listed, source.local, now_ms);
                    fact.live = live
                        .get(&format!("{}|{}", source.name, fact.listed.id))
                        .copied();
                    facts.push((source.name.clone(), fact));
                }
                providers.insert(source.name.clone(), Arc::new(provider));
            }
        }
    }

    // Probe the models most likely to be picked, taking turns among the kinds.
    let chosen = choose_probes(&facts, settings.max_probes, settings.free_only, now_secs);
    progress(Progress::Probing(chosen.len()));
    let troubled: Mutex<BTreeMap<String, (u32, String)>> = Mutex::new(BTreeMap::new());
    let semaphore = tokio::sync::Semaphore::new(settings.concurrency.max(1));
    let results = futures_util::future::join_all(chosen.iter().map(|&index| {
        let (provider_name, fact) = &facts[index];
        let provider = providers[provider_name].clone();
        let (semaphore, troubled, client) = (&semaphore, &troubled, &client);
        let model = fact.listed.id.clone();
        async move {
            let _permit = semaphore.acquire().await.ok()?;
            // A provider that refused the key or timed out twice is not probed again.
            let skip = troubled
                .lock()
                .ok()
                .and_then(|t| t.get(provider_name.as_str()).cloned())
                .filter(|(count, _)| *count >= 2);
            if let Some((_, why)) = skip {
                progress(Progress::Probed {
                    model: format!("{provider_name}|{model}"),
                    outcome: format!("skipped: {why}"),
                });
                return None;
            }
            let probed = probe::probe(client, &provider, &model, timeout).await;
            if let Some(trouble) = &probed.trouble
                && let Ok(mut troubled) = troubled.lock()
            {
                let entry = troubled
                    .entry(provider_name.clone())
                    .or_insert((0, String::new()));
                match trouble {
                    Trouble::Refused(why) => *entry = (2, why.clone()),
                    Trouble::TimedOut(why) => *entry = (entry.0 + 1, why.clone()),
                    _ => {}
                }
            }
            let outcome = match &probed.trouble {
                Some(
                    Trouble::Refused(why)
                    | Trouble::TimedOut(why)
                    | Trouble::Failed(why)
                    | Trouble::RateLimited(why),
                ) if !probed.answered => why.clone(),
                _ => format!("tool {}, json {}", probed.tool.name(), probed.json.name()),
            };
            progress(Progress::Probed {
                model: format!("{provider_name}|{model}"),
                outcome,
            });
            Some((index, probed))
        }
    }))
    .await;
    let mut probed_count = 0;
    for (index, probed) in results.into_iter().flatten() {
        requests += probed.requests;
        probed_count += 1;
        record_probe(&mut facts[index].1, &probed);
    }
    for (provider, (count, why)) in troubled.into_inner().unwrap_or_default() {
        if count >= 2 {
            health.insert(provider.clone(), "down".into());
            notes.insert(provider, why);
        } else if health.get(&provider).is_some_and(|h| h == "ok") {
            health.insert(provider.clone(), "degraded".into());
            notes.insert(provider, why);
        }
    }
    degrade_from_live(&facts, &mut health, &mut notes);
    for note in live_notes {
        notes.insert("ledger".into(), note);
    }

    let usable = |provider: &str| health.get(provider).is_none_or(|h| h != "down");
    let mut slots = BTreeMap::new();
    for kind in KINDS {
        let mut ranked: Vec<Candidate> = facts
            .iter()
            .filter(|(provider, fact)| {
                usable(provider)
                    && !snapshot::blocked(&settings.blocklist, provider, &fact.listed.id)
            })
            .filter_map(|(provider, fact)| {
                let fitness = score::fitness(kind, fact, now_secs);
                (fitness > 0.0).then(|| candidate(provider, fact, fitness, &sources))
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.fitness
                .total_cmp(&a.fitness)
                .then(b.context_length.cmp(&a.context_length))
                .then(a.api_model.cmp(&b.api_model))
        });
        ranked.truncate(KEEP_PER_KIND);
        slots.insert(
            kind.name().to_string(),
            Slot {
                label: label(kind).into(),
                eval_mode: if kind == ScanKind::Free {
                    "free"
                } else {
                    "cost_basis"
                }
                .into(),
                best: ranked.first().cloned(),
                candidates: ranked,
            },
        );
    }
    Ok(Snapshot {
        schema_version: snapshot::SCHEMA_VERSION.into(),
        generated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        scan_id: previous.map_or(1, |p| p.scan_id + 1),
        generator: format!("clutch {}", env!("CARGO_PKG_VERSION")),
        provider_health: health,
        provider_notes: notes,
        blocklist: settings.blocklist.clone(),
        local_servers,
        slots,
        stats: snapshot::Stats {
            models_listed: facts.len(),
            models_probed: probed_count,
            requests_sent: requests,
            seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        },
    })
}

fn label(kind: ScanKind) -> &'static str {
    match kind {
        ScanKind::Best => "Best available",
        ScanKind::Free => "Best free",
        ScanKind::Tool => "Reliable tool calls",
        ScanKind::Reasoning => "Reasoning",
        ScanKind::Verifier => "Verifier (cheap, structured)",
        ScanKind::Fast => "Fastest",
    }
}

fn facts_for(
    provider_name: &str,
    provider: &ProviderConfig,
    listed: Listed,
    local: bool,
    now_ms: u64,
) -> Facts {
    let (mut input_price, mut output_price) = (listed.input_price, listed.output_price);
    if input_price.is_none()
        && let Some(rates) =
            crate::gateway::usage::prices::rates(provider_name, provider, &listed.id, 0, now_ms)
    {
        input_price = Some(rates.input);
        output_price = Some(rates.output);
    }
    Facts {
        listed,
        local,
        input_price,
        output_price,
        probe: None,
        live: None,
    }
}

/// Which models to probe: among those that may be (free ones only in free-only mode), the
/// best-ranked of each kind in turn, by the ranking without probes, up to `max`.
fn choose_probes(
    facts: &[(String, Facts)],
    max: usize,
    free_only: bool,
    now_secs: u64,
) -> Vec<usize> {
    let allowed: Vec<usize> = (0..facts.len())
        .filter(|&i| !free_only || facts[i].1.is_free())
        .collect();
    let mut orders: Vec<Vec<usize>> = KINDS
        .iter()
        .map(|&kind| {
            let mut order: Vec<(usize, f64)> = allowed
                .iter()
                .map(|&i| (i, score::fitness(kind, &facts[i].1, now_secs)))
                .filter(|(_, f)| *f > 0.0)
                .collect();
            order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            order.into_iter().map(|(i, _)| i).rev().collect()
        })
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < max && orders.iter().any(|o| !o.is_empty()) {
        for order in orders.iter_mut() {
            while let Some(next) = order.pop() {
                if !chosen.contains(&next) {
                    chosen.push(next);
                    break;
                }
            }
            if chosen.len() >= max {
                break;
            }
        }
    }
    chosen
}

fn record_probe(fact: &mut Facts, probed: &Probed) {
    // A rate limit says nothing about the model: it stays unprobed.
    if matches!(probed.trouble, Some(Trouble::RateLimited(_))) && !probed.answered {
        return;
    }
    // Refusals and time-outs count against the provider, not the model.
    if matches!(
        probed.trouble,
        Some(Trouble::Refused(_) | Trouble::TimedOut(_))
    ) && !probed.answered
    {
        return;
    }
    fact.probe = Some(ProbeFacts {
        answered: probed.answered,
        ttft_ms: probed.ttft_ms,
        tokens_per_s: probed.tokens_per_s,
        tool: probed.tool,
        json: probed.json,
    });
}

/// A provider whose models fail most real traffic is down, one failing a quarter degraded
/// (the snapshot contract's rule).
fn degrade_from_live(
    facts: &[(String, Facts)],
    health: &mut BTreeMap<String, String>,
    notes: &mut BTreeMap<String, String>,
) {
    let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (provider, fact) in facts {
        if let Some(live) = &fact.live {
            let entry = totals.entry(provider).or_default();
            entry.0 += live.attempts;
            entry.1 += live.failures;
        }
    }
    for (provider, (attempts, failures)) in totals {
        if attempts < 20 || health.get(provider).is_some_and(|h| h == "down") {
            continue;
        }
        let rate = failures as f64 / attempts as f64;
        let verdict = if rate >= 0.8 {
            "down"
        } else if rate >= 0.25 {
            "degraded"
        } else {
            continue;
        };
        health.insert(provider.to_string(), verdict.into());
        notes.insert(
            provider.to_string(),
            format!("{failures} of {attempts} calls through the gateway failed in the last week"),
        );
    }
}

fn candidate(provider: &str, fact: &Facts, fitness: f64, sources: &[Source]) -> Candidate {
    let verdict =
        |v: Option<probe::Verdict>| v.unwrap_or(probe::Verdict::NotRun).name().to_string();
    Candidate {
        model_id: fact.listed.id.clone(),
        provider: provider.to_string(),
        api_model: format!("{provider}|{}", fact.listed.id),
        base_url: sources
            .iter()
            .find(|s| s.name == provider)
            .map(|s| s.config.base_url.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default(),
        fitness,
        price_blended: fact
            .price_blended()
            .map(|p| (p * 10_000.0).round() / 10_000.0),
        tier: "unknown".into(),
        has_tools: fact.tools() == Some(true),
        has_vision: fact.listed.vision == Some(true),
        context_length: fact.listed.context,
        ttft_ms: fact.probe.and_then(|p| p.ttft_ms),
        tokens_per_s: fact
            .probe
            .and_then(|p| p.tokens_per_s)
            .map(|t| (t * 10.0).round() / 10.0),
        tool_probe: verdict(fact.probe.map(|p| p.tool)),
        json_probe: verdict(fact.probe.map(|p| p.json)),
        live_requests: fact.live.map_or(0, |l| l.attempts),
        live_error_rate: fact
            .live
            .filter(|l| l.attempts > 0)
            .map(|l| (l.failures as f64 / l.attempts as f64 * 1000.0).round() / 1000.0),
    }
}
