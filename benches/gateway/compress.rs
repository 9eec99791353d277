//! `cargo bench --bench gateway -- compress`: tool-output compression over the corpus in
//! tests/compress/corpus (real commands on real public projects, each with the strings a
//! model needs from it). Reports per kind and overall: token reduction (bytes / 4),
//! must-keep recall, and the compressor's CPU time per 100 KB (median of 7 passes).
//!
//! Peers on the same corpus, in the same run, where they are installed:
//! `CLUTCH_BENCH_HEADROOM_PYTHON=<python with headroom-ai>` and `CLUTCH_BENCH_RTK=<rtk>`
//! run benches/compress_peers.py, which hands each output to headroom's `compress()` as a
//! Bash tool result, and replays each command through `rtk` with the program replaced by a
//! shim that prints the recorded output and exits with the recorded status.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clutch::gateway::compress::{Input, Settings, compress};

struct Entry {
    id: String,
    kind: String,
    command: String,
    output: String,
    keep: Vec<String>,
}

fn corpus() -> Vec<Entry> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compress/corpus");
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("the corpus index");
    index
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(5, '\t').collect();
            let id = fields[0].to_string();
            let output =
                String::from_utf8_lossy(&std::fs::read(dir.join(format!("{id}.out"))).unwrap())
                    .into_owned();
            let keep = std::fs::read_to_string(dir.join(format!("{id}.keep")))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            Entry {
                id,
                kind: fields[1].to_string(),
                command: fields[4].to_string(),
                output,
                keep,
            }
        })
        .collect()
}

/// What one tool did to the corpus: output bytes and must-keep strings found, per entry.
#[derive(Default, Clone)]
struct Tally {
    before: usize,
    after: usize,
    keep: usize,
    kept: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.before += other.before;
        self.after += other.after;
        self.keep += other.keep;
        self.kept += other.kept;
    }
    fn reduction(&self) -> f64 {
        100.0 * (1.0 - self.after as f64 / self.before.max(1) as f64)
    }
    fn recall(&self) -> f64 {
        if self.keep == 0 {
            100.0
        } else {
            100.0 * self.kept as f64 / self.keep as f64
        }
    }
}

fn tally(entry: &Entry, text: &str) -> (Tally, Vec<String>) {
    let cleaned = strip_ansi(text);
    let missing: Vec<String> = entry
        .keep
        .iter()
        .filter(|k| !cleaned.contains(k.as_str()))
        .cloned()
        .collect();
    (
        Tally {
            before: entry.output.len(),
            after: text.len(),
            keep: entry.keep.len(),
            kept: entry.keep.len() - missing.len(),
        },
        missing,
    )
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ours(entry: &Entry, settings: &Settings) -> String {
    let input = Input {
        output: &entry.output,
        command: Some(&entry.command),
        tool: Some("Bash"),
        is_error: false,
    };
    compress(&input, settings).map_or_else(|| entry.output.clone(), |c| c.text)
}

pub fn run() {
    let entries = corpus();
    let settings = Settings::default();
    // CPU time: the whole corpus, seven passes, the median.
    let total_bytes: usize = entries.iter().map(|e| e.output.len()).sum();
    let mut passes: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            for entry in &entries {
                std::hint::black_box(ours(entry, &settings));
            }
            started.elapsed().as_secs_f64()
        })
        .collect();
    passes.sort_by(f64::total_cmp);
    let per_100k_ms = passes[3] * 1000.0 / (total_bytes as f64 / 102_400.0);
    let mut tools: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    tools.insert(
        "clutch".into(),
        entries
            .iter()
            .map(|e| (e.id.clone(), ours(e, &settings)))
            .collect(),
    );
    tools.extend(peers(&entries));
    println!(
        "compression corpus: {} outputs, {} KB, {} must-keep strings",
        entries.len(),
        total_bytes / 1024,
        entries.iter().map(|e| e.keep.len()).sum::<usize>()
    );
    println!(
        "clutch CPU time: {:.3} ms per 100 KB (median of 7 passes over the corpus: {:.1} ms)",
        per_100k_ms,
        passes[3] * 1000.0
    );
    for (tool, texts) in &tools {
        let mut kinds: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut overall = Tally::default();
        let mut misses: Vec<String> = Vec::new();
        for entry in &entries {
            let Some(text) = texts.get(&entry.id) else {
                continue;
            };
            let (t, missing) = tally(entry, text);
            kinds.entry(entry.kind.as_str()).or_default().add(&t);
            overall.add(&t);
            for m in missing.iter().take(3) {
                misses.push(format!("{}: {m}", entry.id));
            }
        }
        println!("\n{tool}: {} outputs", texts.len());
        println!(
            "  {:<8} {:>10} {:>10} {:>10} {:>9}",
            "kind", "tokens in", "tokens out", "reduction", "recall"
        );
        for (kind, t) in kinds
            .iter()
            .map(|(k, t)| (*k, t))
            .chain([("overall", &overall)])
        {
            println!(
                "  {:<8} {:>10} {:>10} {:>9.1}% {:>8.2}%",
                kind,
                t.before / 4,
                t.after / 4,
                t.reduction(),
                t.recall()
            );
        }
        if !misses.is_empty() {
            println!(
                "  first missing strings ({} in all):",
                overall.keep - overall.kept
            );
            for m in misses.iter().take(12) {
                println!("    {m}");
            }
        }
    }
}

/// Headroom's and RTK's outputs for the corpus, from benches/compress_peers.py.
fn peers(entries: &[Entry]) -> BTreeMap<String, BTreeMap<String, String>> {
    let python = std::env::var("CLUTCH_BENCH_HEADROOM_PYTHON").ok();
    let rtk = std::env::var("CLUTCH_BENCH_RTK").ok();
    if python.is_none() && rtk.is_none() {
        println!("(peers: set CLUTCH_BENCH_HEADROOM_PYTHON and/or CLUTCH_BENCH_RTK to compare)");
        return BTreeMap::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/compress_peers.py");
    let corpus: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compress/corpus");
    let interpreter = python.clone().unwrap_or_else(|| "python3".into());
    let mut command = std::process::Command::new(interpreter);
    command.arg(script).arg(&corpus);
    if python.is_some() {
        command.arg("--headroom");
    }
    if let Some(rtk) = &rtk {
        command.arg("--rtk").arg(rtk);
    }
    let output = command.output().expect("run benches/compress_peers.py");
    if !output.status.success() {
        println!(
            "(peers failed: {})",
            String::from_utf8_lossy(&output.stderr)
        );
        return BTreeMap::new();
    }
    let _ = entries;
    serde_json::from_slice(&output.stdout).expect("compress_peers.py prints JSON")
}
