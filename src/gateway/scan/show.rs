//! `xx scan refresh` and `xx scan show`: a refresh by hand with a progress bar over providers
//! and probes, and the ranking as a table (or JSON).

use std::io::{IsTerminal as _, Write as _};

use super::snapshot::{self, Candidate, KINDS, Snapshot};
use super::{Ask, Progress};
use crate::config::Config;
use crate::error::Error;
use crate::paths::Paths;

/// `xx scan refresh [--provider P] [--json]`.
pub fn refresh(
    paths: &Paths,
    provider: Option<String>,
    json: bool,
    quiet: bool,
) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |step: Progress| {
        let Some(bar) = &bar else {
            if !quiet && let Progress::Listed { provider, outcome } = &step {
                eprintln!("{provider}: {outcome}");
            }
            return;
        };
        match step {
            Progress::Listing(n) | Progress::Probing(n) => bar.inc_length(n as u64),
            Progress::Listed { provider, outcome } => {
                bar.inc(1);
                bar.set_message(format!("{provider}: {outcome}"));
            }
            Progress::Probed { model, outcome } => {
                bar.inc(1);
                bar.set_message(format!("{model}: {outcome}"));
            }
        }
    };
    let snapshot = super::refresh(paths, &config, &Ask { provider }, &progress)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let file = snapshot::path(paths, &config.scan);
    let mut out = std::io::stdout().lock();
    let written = if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&snapshot).unwrap_or_default()
        )
    } else {
        (|| {
            writeln!(
                out,
                "model-scan: {} models listed, {} probed, {} requests, {:.1} s; wrote {}",
                snapshot.stats.models_listed,
                snapshot.stats.models_probed,
                snapshot.stats.requests_sent,
                snapshot.stats.seconds,
                file.display()
            )?;
            write_health(&mut out, &snapshot)?;
            for kind in KINDS {
                match snapshot.best(kind) {
                    Some(best) => writeln!(
                        out,
                        "  {:<10} {} ({:.1})",
                        kind.name(),
                        best.api_model,
                        best.fitness
                    )?,
                    None => writeln!(out, "  {:<10} (no candidate)", kind.name())?,
                }
            }
            Ok(())
        })()
    };
    finish(written)?;
    // Down providers are reported, but the refresh did its job.
    Ok(0)
}

/// A closed pipe (`xx scan show | head`) is not an error.
fn finish(written: std::io::Result<()>) -> Result<(), Error> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write the output", e))
        }
        _ => Ok(()),
    }
}

fn write_health(out: &mut impl std::io::Write, snapshot: &Snapshot) -> std::io::Result<()> {
    for (provider, health) in &snapshot.provider_health {
        match snapshot.provider_notes.get(provider) {
            Some(note) => writeln!(out, "  provider {provider}: {health} ({note})")?,
            None => writeln!(out, "  provider {provider}: {health}")?,
        }
    }
    Ok(())
}

/// `xx scan show [kind] [--json]`.
pub fn show(paths: &Paths, kind: Option<String>, json: bool) -> Result<i32, Error> {
    let config = Config::load(&paths.config_file())?;
    let kind = match kind {
        None => None,
        Some(name) => Some(snapshot::kind_named(&name).ok_or_else(|| {
            Error::Usage(format!(
                "`{name}` is not a model-scan kind (best, free, tool, reasoning, verifier, fast)"
            ))
        })?),
    };
    let file = snapshot::path(paths, &config.scan);
    let snapshot = match snapshot::load(&file, config.scan.max_age_hours) {
        Ok(snapshot) => snapshot,
        Err(refused) => {
            eprintln!("xx: {refused}");
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        let value = match kind {
            Some(kind) => serde_json::to_value(snapshot.ranked(kind).collect::<Vec<_>>()),
            None => serde_json::to_value(&snapshot),
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value.unwrap_or_default()).unwrap_or_default()
        )
    } else {
        (|| {
            let age = snapshot
                .age_secs(std::time::SystemTime::now())
                .unwrap_or(0.0);
            writeln!(
                out,
                "model-scan snapshot {} (#{}, {} ago, {} models listed, {} probed)",
                snapshot.generated_at,
                snapshot.scan_id,
                humantime::format_duration(std::time::Duration::from_secs(age as u64)),
                snapshot.stats.models_listed,
                snapshot.stats.models_probed
            )?;
            write_health(&mut out, &snapshot)?;
            if !snapshot.blocklist.is_empty() {
                writeln!(out, "  blocklist: {}", snapshot.blocklist.join(", "))?;
            }
            let (kinds, rows): (Vec<_>, usize) = match kind {
                Some(kind) => (vec![kind], 25),
                None => (KINDS.to_vec(), 5),
            };
            for kind in kinds {
                writeln!(out)?;
                write_table(&mut out, kind.name(), snapshot.ranked(kind).take(rows))?;
            }
            Ok(())
        })()
    };
    finish(written)?;
    Ok(0)
}

fn write_table<'a>(
    out: &mut impl std::io::Write,
    kind: &str,
    rows: impl Iterator<Item = &'a Candidate>,
) -> std::io::Result<()> {
    let rows: Vec<&Candidate> = rows.collect();
    let width = rows
        .iter()
        .map(|c| c.api_model.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{kind:<4}  {:<width$}  {:>7}  {:>8}  {:>7}  {:>5}  {:>7}  {:>6}  tool  json",
        "model", "fitness", "$/Mtok", "context", "tools", "ttft", "tok/s"
    )?;
    if rows.is_empty() {
        writeln!(out, "      (no candidate)")?;
    }
    for (rank, c) in rows.iter().enumerate() {
        let dash = || "-".to_string();
        writeln!(
            out,
            "{:>4}  {:<width$}  {:>7.1}  {:>8}  {:>7}  {:>5}  {:>7}  {:>6}  {:<4}  {}",
            rank + 1,
            c.api_model,
            c.fitness,
            c.price_blended.map_or_else(dash, |p| format!("{p:.3}")),
            c.context_length.map_or_else(dash, |n| if n >= 1000 {
                format!("{}k", n / 1000)
            } else {
                n.to_string()
            }),
            if c.has_tools { "yes" } else { "-" },
            c.ttft_ms.map_or_else(dash, |t| format!("{t}ms")),
            c.tokens_per_s.map_or_else(dash, |t| format!("{t:.0}")),
            short(&c.tool_probe),
            short(&c.json_probe),
        )?;
    }
    Ok(())
}

fn short(verdict: &str) -> &str {
    match verdict {
        "not_run" => "-",
        other => other,
    }
}
