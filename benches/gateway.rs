//! Gateway benchmark, run with `cargo bench --bench gateway` (or `benches/gateway.sh`).
//!
//! Side by side, in one run, on loopback: a direct call to a fast fake upstream, one plain
//! nginx reverse-proxy hop to it (the cost of a hop with no translation), and the clutch
//! gateway translating Anthropic in -> Chat Completions out. Reports requests/s and latency
//! p50/p99 at concurrency 1 and 32 (small non-streaming bodies), time to first byte and total
//! time for 20-chunk streams with a ~48 KB agent-shaped request at concurrency 16, gateway
//! cold start to first answer, and gateway RSS idle and after 100k requests. Targets take
//! turns over three rounds and each figure is the median of its rounds.
//!
//! Streams run twice. A *burst* sends all 20 chunks at once: with 16 in flight on a small
//! machine that is a CPU-bound test, where what a hop adds is mostly its CPU time per request
//! times the requests queued ahead. A *paced* stream sends its chunks [`PACE`] apart, as a
//! fast model does: time to first byte then shows a hop that holds the stream back. Its total
//! is mostly the fake's timer sleeps, which jitter by more than a hop adds, so its last token
//! carries the time it was sent, and what a hop adds to the total is what it adds between
//! that send and the client seeing the stream end (the `end` columns).
//!
//! Last, concurrency 1 runs again with every process pinned to one CPU. Spread over two
//! vCPUs, most of what a hop adds at concurrency 1 is the wake-up of a process on the other,
//! idle vCPU, which depends on where the scheduler puts each process; on one CPU only the
//! hop's own work is left, so this row compares the hops' own costs.
//!
//! The fake upstream runs as a separate process (this binary re-executed with `fake`).
//! Other modes (after `--`): `micro` times each stage of a small and of an agent-shaped
//! translation in-process, and each protocol's request decoder; `soak` and `failover` are the
//! resilience runs (see `gateway/soak.rs`); `scan` times a model-scan refresh over 300 listed
//! models (see `gateway/scan.rs`); `load URL small|chat|agent|agent-chat CONCURRENCY
//! SECONDS` drives one target, for profiling; `floor PORT UPSTREAM_URL` serves the least a
//! proxy on the gateway's own crates can do (axum in, hyper-util's pooled client out, no
//! routing or translation), to tell the stack's cost from the gateway's.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

/// The machine is shared: each target is measured in turn, round after round, and the median
/// of each figure over the rounds is reported, so a burst of load from elsewhere falls on all
/// targets alike instead of on whichever one was running.
const ROUNDS: usize = 3;
const SMALL_SECONDS: u64 = 2;
const STREAM_REQUESTS: usize = 1000;
/// The gap between a paced stream's chunks, for paths under `/paced/` on the fake upstream.
const PACE: Duration = Duration::from_millis(5);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fake") {
        fake_upstream(
            args[2].parse().expect("port"),
            args.get(3).map_or("ok", String::as_str),
        );
        return;
    }
    if args.iter().any(|a| a == "probes" || a == "abuse") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if args.iter().any(|a| a == "probes") {
            runtime.block_on(probes::probes());
        } else {
            runtime.block_on(probes::abuse());
        }
        return;
    }
    if args.iter().any(|a| a == "compress") {
        compress::run();
        return;
    }
    if args.iter().any(|a| a == "scan") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scan::run());
        return;
    }
    if args.iter().any(|a| a == "soak" || a == "failover") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if let Some(at) = args.iter().position(|a| a == "soak") {
            let total = args
                .get(at + 1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(soak::TOTAL);
            runtime.block_on(soak::run(total));
        } else {
            runtime.block_on(soak::failover());
        }
        return;
    }
    // `floor PORT UPSTREAM_URL`: the bare axum + hyper-util proxy, for comparison.
    if args.get(1).map(String::as_str) == Some("floor") {
        floor(args[2].parse().unwrap(), args[3].clone());
        return;
    }
    // `micro`: where one agent-shaped translation spends its time, stage by stage, in-process.
    if args.get(1).map(String::as_str) == Some("micro") {
        micro();
        return;
    }
    // `load URL small|chat|agent|agent-chat CONCURRENCY SECONDS`: drive one target (for profiling).
    if args.get(1).map(String::as_str) == Some("load") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let body = match args[3].as_str() {
                "agent" => agent_request_anthropic(),
                "agent-chat" => agent_request_chat(&agent_request_anthropic()),
                "chat" => small_chat(),
                _ => small_anthropic(),
            };
            let stats = load(
                &args[2],
                Bytes::from(body),
                args[4].parse().unwrap(),
                Duration::from_secs(args[5].parse().unwrap()),
            )
            .await;
            println!(
                "{:.0} req/s p50 {:.3} ms p99 {:.3} ms",
                stats.rps, stats.p50_ms, stats.p99_ms
            );
        });
        return;
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..2000 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{url} never came up");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn run() {
    let xx = env!("CARGO_BIN_EXE_xx");
    let me = std::env::current_exe().unwrap();
    let work = tempfile::tempdir().unwrap();

    let fake_port = free_port();
    let fake_child = Killed(
        Command::new(&me)
            .args(["fake", &fake_port.to_string()])
            .spawn()
            .unwrap(),
    );
    let fake = format!("http://127.0.0.1:{fake_port}");
    wait_ready(&format!("{fake}/health")).await;

    let nginx = start_nginx(work.path(), fake_port);
    if let Some((_, url)) = &nginx {
        wait_ready(&format!("{url}/health")).await;
    }

    let home = work.path().join("clutch");
    std::fs::create_dir_all(home.join("config/profiles")).unwrap();
    std::fs::write(
        home.join("config/config.toml"),
        format!("[gateway]\nauto_start = false\n[providers.fake]\nbase_url = \"{fake}/v1\"\nformat = \"chat\"\napi_key = \"k\"\n\
                 [providers.paced]\nbase_url = \"{fake}/paced/v1\"\nformat = \"chat\"\napi_key = \"k\"\n"),
    )
    .unwrap();
    std::fs::write(
        home.join("config/profiles/default.toml"),
        "[tiers.middle]\nmodel = \"fake|fast\"\n",
    )
    .unwrap();
    std::fs::write(
        home.join("config/profiles/paced.toml"),
        "[tiers.middle]\nmodel = \"paced|fast\"\n",
    )
    .unwrap();

    // Cold start: spawn to first translated answer, ten times.
    let mut cold = Vec::new();
    for _ in 0..10 {
        let port = free_port();
        let started = Instant::now();
        let child = Killed(spawn_gateway(xx, &home, port));
        let url = format!("http://127.0.0.1:{port}/v1/messages");
        let client = client();
        loop {
            if let Ok(r) = client.post(&url).body(small_anthropic()).send().await
                && r.status().is_success()
                && r.bytes().await.is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "gateway did not start"
            );
        }
        cold.push(started.elapsed());
        drop(child);
    }
    cold.sort();

    let port = free_port();
    let gateway_child = Killed(spawn_gateway(xx, &home, port));
    let gateway = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{gateway}/health")).await;
    let pid = gateway_child.0.id();
    // Idle: after start-up and one request, before any load.
    let client = client();
    let _ = client
        .post(format!("{gateway}/v1/messages"))
        .body(small_anthropic())
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = rss_kib(pid);

    // `CLUTCH_BENCH_BASELINE=<an older xx>`: that build runs beside this one, as one more
    // target in the same rounds, so a change's cost is measured in the same run.
    let baseline = std::env::var("CLUTCH_BENCH_BASELINE").ok().map(|old| {
        let home = work.path().join("baseline");
        std::fs::create_dir_all(home.join("config/profiles")).unwrap();
        for file in [
            "config/config.toml",
            "config/profiles/paced.toml",
            "config/profiles/default.toml",
        ] {
            let _ = std::fs::copy(work.path().join("clutch").join(file), home.join(file));
        }
        let port = free_port();
        let child = Killed(spawn_gateway(&old, &home, port));
        (child, format!("http://127.0.0.1:{port}"))
    });
    if let Some((_, url)) = &baseline {
        wait_ready(&format!("{url}/health")).await;
    }
    // This build with the usage ledger off, as one more target: what recording every request
    // costs, measured in the same rounds.
    let unrecorded = {
        let home = work.path().join("unrecorded");
        std::fs::create_dir_all(home.join("config/profiles")).unwrap();
        for file in ["config/profiles/paced.toml", "config/profiles/default.toml"] {
            let _ = std::fs::copy(work.path().join("clutch").join(file), home.join(file));
        }
        let config =
            std::fs::read_to_string(work.path().join("clutch/config/config.toml")).unwrap();
        std::fs::write(
            home.join("config/config.toml"),
            format!("{config}\n[usage]\nenabled = false\n"),
        )
        .unwrap();
        let port = free_port();
        let child = Killed(spawn_gateway(xx, &home, port));
        (child, format!("http://127.0.0.1:{port}"))
    };
    wait_ready(&format!("{}/health", unrecorded.1)).await;

    let targets: Vec<(&str, String, Bytes)> = {
        let mut t = vec![(
            "direct",
            format!("{fake}/v1/chat/completions"),
            Bytes::from(small_chat()),
        )];
        if let Some((_, url)) = &nginx {
            t.push((
                "nginx hop",
                format!("{url}/v1/chat/completions"),
                Bytes::from(small_chat()),
            ));
        }
        t.push((
            "gateway anthropic->chat",
            format!("{gateway}/v1/messages"),
            Bytes::from(small_anthropic()),
        ));
        if let Some((_, url)) = &baseline {
            t.push((
                "baseline gateway",
                format!("{url}/v1/messages"),
                Bytes::from(small_anthropic()),
            ));
        }
        t.push((
            "ledger off gateway",
            format!("{}/v1/messages", unrecorded.1),
            Bytes::from(small_anthropic()),
        ));
        t
    };
    let mut gateway_requests = 0usize;
    println!(
        "\nsmall non-streaming requests ({ROUNDS} interleaved rounds of {SMALL_SECONDS} s each; medians)"
    );
    let mut small = Vec::new();
    for concurrency in [1usize, 32] {
        for (name, stats) in small_rounds(&targets, concurrency).await {
            if name.starts_with("gateway") {
                gateway_requests += stats.count;
            }
            small.push((name, concurrency, stats));
        }
    }

    let agent_anthropic = agent_request_anthropic();
    let agent_chat = agent_request_chat(&agent_anthropic);
    let nginx_url = nginx.as_ref().map(|(_, url)| url.as_str());
    let mut stream_runs = Vec::new();
    for (kind, prefix, profile) in [
        ("burst: all 20 chunks at once", "", ""),
        ("paced: 20 chunks 5 ms apart", "/paced", "/p/paced"),
    ] {
        println!(
            "\nstreams, {kind}: agent-shaped request ({} KB anthropic / {} KB chat), concurrency 16, {ROUNDS} interleaved rounds of {STREAM_REQUESTS} requests; medians",
            agent_anthropic.len() / 1024,
            agent_chat.len() / 1024
        );
        let mut targets = vec![(
            "direct",
            format!("{fake}{prefix}/v1/chat/completions"),
            Bytes::from(agent_chat.clone()),
        )];
        if let Some(url) = nginx_url {
            targets.push((
                "nginx hop",
                format!("{url}{prefix}/v1/chat/completions"),
                Bytes::from(agent_chat.clone()),
            ));
        }
        targets.push((
            "gateway anthropic->chat",
            format!("{gateway}{profile}/v1/messages"),
            Bytes::from(agent_anthropic.clone()),
        ));
        if let Some((_, url)) = &baseline {
            targets.push((
                "baseline gateway",
                format!("{url}{profile}/v1/messages"),
                Bytes::from(agent_anthropic.clone()),
            ));
        }
        targets.push((
            "ledger off gateway",
            format!("{}{profile}/v1/messages", unrecorded.1),
            Bytes::from(agent_anthropic.clone()),
        ));
        stream_runs.push(stream_rounds(&targets).await);
        gateway_requests += ROUNDS * STREAM_REQUESTS;
    }

    // Top up to 100k requests through the gateway before reading its RSS again.
    if gateway_requests < 100_000 {
        let remaining = 100_000 - gateway_requests;
        let stats = load_count(
            &format!("{gateway}/v1/messages"),
            Bytes::from(small_anthropic()),
            32,
            remaining,
        )
        .await;
        gateway_requests += stats;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib(pid);

    // Concurrency 1 once more with every process (load, fake, nginx, gateway) on one CPU. On a
    // small VM most of a hop's latency is waking a process on the other, idle vCPU; here only
    // the hop's own work is left.
    let everywhere = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let first_cpu = (0..nix::sched::CpuSet::count())
        .find(|&cpu| everywhere.is_set(cpu).unwrap_or(false))
        .unwrap();
    let mut one_cpu = nix::sched::CpuSet::new();
    one_cpu.set(first_cpu).unwrap();
    let mut pids = vec![std::process::id(), fake_child.0.id(), pid];
    pids.extend(nginx.as_ref().map(|(child, _)| child.0.id()));
    pids.extend(baseline.as_ref().map(|(child, _)| child.0.id()));
    pids.push(unrecorded.0.0.id());
    let pinned = pin(&pids, &one_cpu);
    println!(
        "\nsmall non-streaming requests, every process on CPU {first_cpu} ({ROUNDS} interleaved rounds of {SMALL_SECONDS} s each; medians)"
    );
    let one_cpu_small = small_rounds(&targets, 1).await;
    pin(&pids, &everywhere);
    if !pinned {
        println!("(some threads could not be pinned: this table is not all on one CPU)");
    }

    let find = |name: &str, c: usize| {
        small
            .iter()
            .find(|(n, cc, _)| n.starts_with(name) && *cc == c)
            .map(|(_, _, s)| s)
    };
    println!("\nsummary");
    if let (Some(direct), Some(gw)) = (find("direct", 1), find("gateway", 1)) {
        println!(
            "  gateway added p50 at concurrency 1: {:.3} ms (target <= 0.1)",
            gw.p50_ms - direct.p50_ms
        );
    }
    for hop in ["nginx", "baseline", "ledger off"] {
        if let (Some(via), Some(direct)) = (find(hop, 1), find("direct", 1)) {
            println!(
                "  {hop} added p50 at concurrency 1: {:.3} ms",
                via.p50_ms - direct.p50_ms
            );
        }
    }
    let on_one_cpu = |name: &str| {
        one_cpu_small
            .iter()
            .find(|(n, _)| n.starts_with(name))
            .map(|(_, s)| s.p50_ms)
    };
    if pinned && let Some(direct) = on_one_cpu("direct") {
        for hop in ["gateway", "nginx", "baseline", "ledger off"] {
            if let Some(via) = on_one_cpu(hop) {
                println!(
                    "  {hop} added p50 at concurrency 1, all on one CPU: {:.3} ms",
                    via - direct
                );
            }
        }
    }
    if let (Some(direct), Some(gw)) = (find("direct", 32), find("gateway", 32)) {
        println!(
            "  gateway added p99 at concurrency 32: {:.3} ms (target <= 2)",
            gw.p99_ms - direct.p99_ms
        );
        println!(
            "  gateway throughput at 32: {:.0}% of direct",
            100.0 * gw.rps / direct.rps
        );
        if let Some(old) = find("baseline", 32) {
            println!(
                "  baseline gateway added p99 at concurrency 32: {:.3} ms; throughput {:.0}% of direct; this build / baseline: {:.2}x",
                old.p99_ms - direct.p99_ms,
                100.0 * old.rps / direct.rps,
                gw.rps / old.rps
            );
        }
        if let Some(off) = find("ledger off", 32) {
            println!(
                "  ledger on / ledger off throughput at 32: {:.2}x (target >= 0.95); added p99 with the ledger off: {:.3} ms",
                gw.rps / off.rps,
                off.p99_ms - direct.p99_ms
            );
        }
        if let Some(nginx) = find("nginx", 32) {
            println!(
                "  nginx throughput at 32: {:.0}% of direct",
                100.0 * nginx.rps / direct.rps
            );
            println!(
                "  gateway / nginx throughput at 32: {:.2}x (target >= 0.8)",
                gw.rps / nginx.rps
            );
        }
    }
    for (kind, streams) in ["burst", "paced"].iter().zip(&stream_runs) {
        let stream_of = |name: &str| {
            streams
                .iter()
                .find(|(n, _)| n.starts_with(name))
                .map(|(_, s)| *s)
        };
        for hop in ["gateway", "nginx", "baseline", "ledger off"] {
            if let (Some(direct), Some(via)) = (stream_of("direct"), stream_of(hop)) {
                // Paced, the total is mostly the fake's timer sleeps, which jitter by more than
                // a hop adds; what the hop adds to the total is what it adds to the stream's end.
                let added_total = match (direct.end_p50, via.end_p50) {
                    (Some(direct), Some(via)) => via - direct,
                    _ => via.total_p50 - direct.total_p50,
                };
                println!(
                    "  {hop} added {kind} stream total p50: {added_total:.3} ms{}; added ttfb p50: {:.3} ms",
                    if hop == "gateway" {
                        " (target <= 1)"
                    } else {
                        ""
                    },
                    via.ttfb_p50 - direct.ttfb_p50
                );
            }
        }
    }
    println!(
        "  gateway cold start to first answer: median {:.1} ms, max {:.1} ms (target <= 50)",
        ms(cold[cold.len() / 2]),
        ms(cold[cold.len() - 1])
    );
    println!(
        "  gateway RSS idle {:.1} MB (target <= 15), after {gateway_requests} requests {:.1} MB (target <= 40)",
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    if nginx.is_none() {
        println!("  (nginx not found: install Debian's nginx for the one-hop baseline)");
    }
    if let Some((child, _)) = nginx {
        drop(child);
    }
}

/// Each target's stream figures, medians over the rounds, printed as a table and returned by
/// name.
async fn stream_rounds(targets: &[(&str, String, Bytes)]) -> Vec<(String, StreamStats)> {
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "target", "ttfb p50 ms", "ttfb p99 ms", "total p50", "total p99", "end p50", "end p99"
    );
    let mut rounds: Vec<Vec<StreamStats>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for ((_, url, body), rounds) in targets.iter().zip(&mut rounds) {
            rounds.push(stream_load(url, body.clone(), 16, STREAM_REQUESTS).await);
        }
    }
    let mut out = Vec::new();
    for ((name, _, _), rounds) in targets.iter().zip(&rounds) {
        let of = |figure: fn(&StreamStats) -> Option<f64>| {
            let values: Option<Vec<f64>> = rounds.iter().map(figure).collect();
            values.map(|values| median(values.into_iter()))
        };
        let stats = StreamStats {
            ttfb_p50: median(rounds.iter().map(|s| s.ttfb_p50)),
            ttfb_p99: median(rounds.iter().map(|s| s.ttfb_p99)),
            total_p50: median(rounds.iter().map(|s| s.total_p50)),
            total_p99: median(rounds.iter().map(|s| s.total_p99)),
            end_p50: of(|s| s.end_p50),
            end_p99: of(|s| s.end_p99),
        };
        let end = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:<26} {:>12.3} {:>12.3} {:>12.3} {:>12.3} {:>12} {:>12}",
            name,
            stats.ttfb_p50,
            stats.ttfb_p99,
            stats.total_p50,
            stats.total_p99,
            end(stats.end_p50),
            end(stats.end_p99)
        );
        out.push((name.to_string(), stats));
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spawn_gateway(xx: &str, home: &std::path::Path, port: u16) -> Child {
    Command::new(xx)
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("CLUTCH_HOME", home)
        .env("CLUTCH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn start_nginx(dir: &std::path::Path, fake_port: u16) -> Option<(Killed, String)> {
    let nginx = which::which("nginx")
        .or_else(|_| which::which("/usr/sbin/nginx"))
        .ok()?;
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("nginx-tmp")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/nginx-tmp;\n  proxy_temp_path {dir}/nginx-tmp;\n\
             upstream fake {{ server 127.0.0.1:{fake_port}; keepalive 64; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 64m;\n    client_body_buffer_size 1m;\n\
             location / {{ proxy_pass http://fake; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}\n  }}\n}}\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new(nginx)
        .args(["-c", &conf.to_string_lossy(), "-p", &dir.to_string_lossy()])
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Killed(child), format!("http://127.0.0.1:{port}")))
}

struct Stats {
    count: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Small requests at one concurrency: every target in turn, [`ROUNDS`] times over, printed as
/// a table of medians and returned by target name.
async fn small_rounds(
    targets: &[(&str, String, Bytes)],
    concurrency: usize,
) -> Vec<(String, Stats)> {
    println!(
        "{:<26} {:>4} {:>10} {:>9} {:>9}",
        "target", "conc", "req/s", "p50 ms", "p99 ms"
    );
    let mut rounds: Vec<Vec<Stats>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for ((_, url, body), rounds) in targets.iter().zip(&mut rounds) {
            let duration = Duration::from_secs(SMALL_SECONDS);
            rounds.push(load(url, body.clone(), concurrency, duration).await);
        }
    }
    let mut out = Vec::new();
    for ((name, _, _), rounds) in targets.iter().zip(&rounds) {
        let stats = Stats {
            count: rounds.iter().map(|s| s.count).sum(),
            rps: median(rounds.iter().map(|s| s.rps)),
            p50_ms: median(rounds.iter().map(|s| s.p50_ms)),
            p99_ms: median(rounds.iter().map(|s| s.p99_ms)),
        };
        println!(
            "{:<26} {:>4} {:>10.0} {:>9.3} {:>9.3}",
            name, concurrency, stats.rps, stats.p50_ms, stats.p99_ms
        );
        out.push((name.to_string(), stats));
    }
    out
}

/// Moves every thread of each process onto `cpus`; false if any of them could not be moved.
fn pin(pids: &[u32], cpus: &nix::sched::CpuSet) -> bool {
    let mut all = true;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            all = false;
            continue;
        };
        for task in tasks.flatten() {
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
            all &= tid.is_some_and(|tid| {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), cpus).is_ok()
            });
        }
    }
    all
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[at])
}

/// Bodies go out declared as JSON, as agents send them (the gateway refuses model calls that
/// are not).
fn json_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    headers
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .default_headers(json_headers())
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .unwrap()
}

async fn load(url: &str, body: Bytes, concurrency: usize, duration: Duration) -> Stats {
    let client = client();
    // Warm the connections.
    for _ in 0..concurrency.max(50) {
        let _ = client
            .post(url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
                let _ = response.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    Stats {
        count: all.len(),
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    }
}

async fn load_count(url: &str, body: Bytes, concurrency: usize, total: usize) -> usize {
    let client = client();
    let per = total.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let response = client.post(&url).body(body.clone()).send().await.unwrap();
                let _ = response.bytes().await.unwrap();
            }
            per
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    done
}

/// One target's stream figures, in ms.
#[derive(Clone, Copy)]
struct StreamStats {
    ttfb_p50: f64,
    ttfb_p99: f64,
    total_p50: f64,
    total_p99: f64,
    /// From the upstream sending its last token to the client seeing the stream end: what a
    /// hop adds to the total, free of the pacing's timer jitter (paced streams only).
    end_p50: Option<f64>,
    end_p99: Option<f64>,
}

async fn stream_load(url: &str, body: Bytes, concurrency: usize, total: usize) -> StreamStats {
    let client = client();
    let per = total / concurrency;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..per {
                let t = Instant::now();
                let mut response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
                let mut first = None;
                let mut received = Vec::new();
                while let Some(chunk) = response.chunk().await.unwrap() {
                    first.get_or_insert_with(|| t.elapsed());
                    received.extend_from_slice(&chunk);
                }
                let end = since_epoch();
                assert!(!received.is_empty());
                let end_delay = last_token_sent(&received).map(|sent| end.saturating_sub(sent));
                out.push((first.unwrap(), t.elapsed(), end_delay));
            }
            out
        }));
    }
    let (mut ttfb, mut totals, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        for (first, total, end) in task.await.unwrap() {
            ttfb.push(first);
            totals.push(total);
            ends.extend(end);
        }
    }
    ttfb.sort();
    totals.sort();
    ends.sort();
    let stamped = ends.len() == ttfb.len();
    StreamStats {
        ttfb_p50: percentile(&ttfb, 0.5),
        ttfb_p99: percentile(&ttfb, 0.99),
        total_p50: percentile(&totals, 0.5),
        total_p99: percentile(&totals, 0.99),
        end_p50: stamped.then(|| percentile(&ends, 0.5)),
        end_p99: stamped.then(|| percentile(&ends, 0.99)),
    }
}

/// The wall clock: the one clock the fake upstream and the client both read.
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

/// A paced stream's last token is `stamp:<ns>`, when the fake sent it; it reaches the client
/// as text in whichever protocol the hop speaks.
fn last_token_sent(stream: &[u8]) -> Option<Duration> {
    let at = memchr::memmem::find(stream, b"stamp:")? + "stamp:".len();
    let digits = stream[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let nanos: u64 = std::str::from_utf8(&stream[at..at + digits])
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_nanos(nanos))
}

fn small_chat() -> Vec<u8> {
    json!({"model": "fast", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hi."}]})
        .to_string()
        .into_bytes()
}

fn small_anthropic() -> Vec<u8> {
    json!({"model": "claude-sonnet-test", "max_tokens": 16, "messages": [{"role": "user", "content": "Say hi."}]}).to_string().into_bytes()
}

/// About 48 KB shaped like a Claude Code turn: system blocks, 16 tools, tool history.
fn agent_request_anthropic() -> Vec<u8> {
    let filler =
        |n: usize, seed: &str| -> String { seed.repeat(n / seed.len() + 1)[..n].to_string() };
    let tools: Vec<Value> = (0..16)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": filler(900, "Runs a careful operation on the workspace. "),
                "input_schema": {"type": "object", "properties": {
                    "path": {"type": "string", "description": filler(120, "A path in the repository. ")},
                    "pattern": {"type": "string", "description": filler(120, "A pattern to match. ")},
                    "limit": {"type": "integer", "description": "How many"}}, "required": ["path"]}})
        })
        .collect();
    let mut messages = vec![
        json!({"role": "user", "content": [{"type": "text", "text": filler(1500, "Please refactor the module. ")}]}),
    ];
    for i in 0..8 {
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": format!("tool_{}", i % 16), "input": {"path": format!("src/file_{i}.rs")}}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i}"),
            "content": filler(1400, "fn example() { let x = compute(); } ")}]}));
    }
    messages.push(json!({"role": "user", "content": "Now summarise."}));
    json!({"model": "claude-sonnet-test", "max_tokens": 4096, "stream": true,
        "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2"},
                   {"type": "text", "text": filler(6000, "You are a coding agent. Follow the rules. ")},
                   {"type": "text", "text": filler(4000, "Environment details and conventions. ")}],
        "tools": tools, "messages": messages})
    .to_string()
    .into_bytes()
}

fn agent_request_chat(anthropic: &[u8]) -> Vec<u8> {
    let request = clutch::gateway::proto::decode_request(
        clutch::gateway::proto::Protocol::Anthropic,
        anthropic,
        None,
    )
    .unwrap();
    let mut chat = clutch::gateway::proto::encode_request(
        clutch::gateway::proto::Protocol::Chat,
        &request,
        "fast",
    );
    chat["stream"] = json!(true);
    chat.to_string().into_bytes()
}

/// The fast fake upstream: a small chat completion, or 20 chunks when asked to stream.
/// `mode`: `ok`; `fail` (every answer is a 500); `faults:<rate>` (that share of answers is a
/// random fault of every kind: 429, 500, 502, 503, 529, empty 200, malformed body, a stream
/// cut after one event, slow headers).
fn fake_upstream(port: u16, mode: &str) {
    let fault_rate: f64 = mode
        .strip_prefix("faults:")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0.0);
    let always_fail = mode == "fail";
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let small = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "fast",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
        .to_string();
        let mut stream = String::new();
        for i in 0..20 {
            stream.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
                    "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}, "finish_reason": null}]})
            ));
        }
        let cut = stream[..stream.find("\n\n").unwrap() + 2].to_string();
        stream.push_str(&format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9000, "completion_tokens": 40, "total_tokens": 9040}})));
        stream.push_str("data: [DONE]\n\n");
        let small = Arc::new(small);
        let stream = Arc::new(stream);
        let cut = Arc::new(cut);
        let seed = Arc::new(std::sync::atomic::AtomicU64::new(0x9E37_79B9_7F4A_7C15 ^ u64::from(port)));
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route("/count", axum::routing::get(move || {
                let counted = counted.clone();
                async move { counted.load(std::sync::atomic::Ordering::Relaxed).to_string() }
            }))
            .fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (small, stream, cut, seed) = (small.clone(), stream.clone(), cut.clone(), seed.clone());
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move {
                    if let Some(response) = probes::hostile_answer(uri.path(), &headers) {
                        return response;
                    }
                    let wants_stream = memchr_stream(&body);
                    let respond = |status: u16, content_type: &str, text: String| {
                        axum::response::Response::builder().status(status).header("content-type", content_type).body(axum::body::Body::from(text)).unwrap()
                    };
                    let roll = next_random(&seed);
                    if always_fail || roll < fault_rate {
                        let kind = if always_fail { 1 } else { (next_random(&seed) * 9.0) as u32 };
                        let error = |code: u16| respond(code, "application/json", json!({"error": {"message": format!("injected {code}")}}).to_string());
                        return match kind {
                            0 => {
                                let mut r = error(429);
                                r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
                                r
                            }
                            1 => error(500),
                            2 => error(502),
                            3 => error(503),
                            4 => error(529),
                            5 => respond(200, if wants_stream { "text/event-stream" } else { "application/json" }, String::new()),
                            6 => respond(200, if wants_stream { "text/event-stream" } else { "application/json" }, if wants_stream { "data: {broken\n\n".into() } else { "{\"choices\": [".into() }),
                            7 if wants_stream => respond(200, "text/event-stream", (*cut).clone()),
                            _ => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                respond(200, "application/json", (*small).clone())
                            }
                        };
                    }
                    if wants_stream && uri.path().starts_with("/paced/") {
                        return axum::response::Response::builder().header("content-type", "text/event-stream").body(paced(&stream)).unwrap();
                    }
                    if wants_stream { respond(200, "text/event-stream", (*stream).clone()) } else { respond(200, "application/json", (*small).clone()) }
                }
            });
        // The abuse run sends 30 MB requests through.
        let app = app.layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// A paced stream: its first 19 tokens one by one, [`PACE`] apart, then [`paced_ending`].
fn paced(stream: &str) -> axum::body::Body {
    let mut events: Vec<Option<Bytes>> = stream
        .split_inclusive("\n\n")
        .take(19)
        .map(|event| Some(Bytes::copy_from_slice(event.as_bytes())))
        .collect();
    // The ending, made when it is sent.
    events.push(None);
    axum::body::Body::from_stream(futures_util::stream::unfold(
        (events.into_iter(), true),
        |(mut events, first)| async move {
            // The body ends as soon as the last event is out, not a pause later.
            let event = events.next()?;
            if !first {
                tokio::time::sleep(PACE).await;
            }
            let event = event.unwrap_or_else(|| paced_ending(since_epoch()));
            Some((Ok::<_, std::convert::Infallible>(event), (events, false)))
        },
    ))
}

/// A paced stream ends with its last token, the finish and [DONE] at once, as models send
/// them. The last token is the time it is sent (see [`last_token_sent`]).
fn paced_ending(sent: Duration) -> Bytes {
    let token = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
        "choices": [{"index": 0, "delta": {"content": format!("stamp:{}", sent.as_nanos())}, "finish_reason": null}]});
    let finish = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9000, "completion_tokens": 40, "total_tokens": 9040}});
    Bytes::from(format!(
        "data: {token}\n\ndata: {finish}\n\ndata: [DONE]\n\n"
    ))
}

/// xorshift: enough randomness to choose faults, shared by all requests.
fn next_random(state: &std::sync::atomic::AtomicU64) -> f64 {
    let mut x = state.load(std::sync::atomic::Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, std::sync::atomic::Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a request asks to stream. A SIMD substring search: a byte-by-byte scan of the
/// 48 KB agent request cost the fake more than the gateway's whole decode when the flag came
/// last, as the gateway writes it, and so charged the gateway for the fake's work.
fn memchr_stream(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"stream\":true").is_some()
}

#[path = "gateway/soak.rs"]
mod soak;

#[path = "gateway/probes.rs"]
mod probes;

/// Median microseconds of each stage of an Anthropic -> chat translation of the ~48 KB agent
/// request, and of translating its 20-chunk answer stream back.
fn micro() {
    use clutch::gateway::proto::{self, Protocol};
    let body = agent_request_anthropic();
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut samples = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            f();
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "{name:<40} {:>8.1} us",
            samples[samples.len() / 2].as_secs_f64() * 1e6
        );
    };
    let small = small_anthropic();
    time("small: decode anthropic request", &mut || {
        std::hint::black_box(proto::decode_request(Protocol::Anthropic, &small, None).unwrap());
    });
    let small_request = proto::decode_request(Protocol::Anthropic, &small, None).unwrap();
    time("small: encode chat request (to bytes)", &mut || {
        std::hint::black_box(proto::encode_request_bytes(
            Protocol::Chat,
            &small_request,
            "fast",
        ));
    });
    let answer = br#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hi.","role":"assistant"}}],"created":1,"id":"c","model":"fast","object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7}}"#;
    time("small: decode chat answer", &mut || {
        std::hint::black_box(proto::decode_response(Protocol::Chat, answer).unwrap());
    });
    let response = proto::decode_response(Protocol::Chat, answer).unwrap();
    time("small: encode anthropic answer (to bytes)", &mut || {
        std::hint::black_box(proto::encode_response_bytes(
            Protocol::Anthropic,
            &response,
            &small_request,
        ));
    });
    let ir_request = proto::decode_request(Protocol::Anthropic, &body, None).unwrap();
    for protocol in [Protocol::Chat, Protocol::Responses, Protocol::Gemini] {
        let encoded = proto::encode_request_bytes(protocol, &ir_request, "fast");
        time(
            &format!(
                "agent: decode {} request ({} KB)",
                protocol.name(),
                encoded.len() / 1024
            ),
            &mut || {
                std::hint::black_box(
                    proto::decode_request(protocol, &encoded, Some("fast")).unwrap(),
                );
            },
        );
    }
    let codex = include_bytes!("../tests/fixtures/codex_exec_request.json");
    time(
        &format!(
            "codex exec's first request: decode responses ({} KB)",
            codex.len() / 1024
        ),
        &mut || {
            std::hint::black_box(proto::decode_request(Protocol::Responses, codex, None).unwrap());
        },
    );
    time("decode anthropic request", &mut || {
        std::hint::black_box(proto::decode_request(Protocol::Anthropic, &body, None).unwrap());
    });
    let request = proto::decode_request(Protocol::Anthropic, &body, None).unwrap();
    time("estimate tokens", &mut || {
        std::hint::black_box(request.estimate_tokens());
    });
    time("encode chat request (to bytes)", &mut || {
        std::hint::black_box(proto::encode_request_bytes(
            Protocol::Chat,
            &request,
            "fast",
        ));
    });
    let mut chunks = Vec::new();
    for i in 0..20 {
        chunks.push(format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
                "choices": [{"index": 0, "delta": {"content": format!("word{i} ")}, "finish_reason": null}]})
        ));
    }
    chunks.push(format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "fast",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 9000, "completion_tokens": 40, "total_tokens": 9040}})));
    chunks.push("data: [DONE]\n\n".into());
    let stream = chunks.concat();
    time("translate 20-chunk stream chat -> anthropic", &mut || {
        let mut parser = clutch::gateway::sse::Parser::new();
        let mut decoder = proto::stream_decoder(Protocol::Chat);
        let mut encoder = proto::stream_encoder(Protocol::Anthropic, &request);
        let mut out = Vec::new();
        for event in parser.push(stream.as_bytes()).unwrap() {
            for e in decoder.event(&event).unwrap() {
                encoder.event(&e, &mut out);
            }
        }
        for e in decoder.finish() {
            encoder.event(&e, &mut out);
        }
        std::hint::black_box(out);
    });
}

/// Every request is sent on to `upstream` as it came and its answer returned whole: what a
/// hop through axum and hyper-util's pooled client costs before the gateway does anything.
fn floor(port: u16, upstream: String) {
    use http_body_util::BodyExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let upstream: axum::http::Uri = upstream.parse().unwrap();
        let app = axum::Router::new().fallback(move |body: axum::body::Body| {
            let client = client.clone();
            let upstream = upstream.clone();
            async move {
                let bytes = body.collect().await.unwrap().to_bytes();
                let req = axum::http::Request::post(upstream)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let (parts, body) = resp.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                axum::http::Response::from_parts(parts, axum::body::Body::from(bytes))
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

#[path = "gateway/scan.rs"]
mod scan;

#[path = "gateway/compress.rs"]
mod compress;
