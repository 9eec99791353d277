#!/usr/bin/env bash
# Benchmarks for the sidecar lifecycle, with hyperfine (installed from Debian if missing):
#  1. cold `proxies up` to a healthy gateway (target <= 150 ms);
#  2. `xx` launch overhead with a warm gateway: `xx cIp -p hi` exec'ing a stand-in agent
#     (/bin/true) against running /bin/true directly (target <= 10 ms added).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet
home="$(mktemp -d)"
export CLUTCH_HOME="$home"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$home/config/agents"
printf '[gateway]\nurl = "http://127.0.0.1:%s"\n' "$port" > "$home/config/config.toml"
sed 's/^binary = "claude"/binary = "true"/' agents/claude.toml > "$home/config/agents/claude.toml"
bin="$PWD/target/release"
trap '"$bin/proxies" down >/dev/null 2>&1; rm -rf "$home"' EXIT
out="$home/up.json"
hyperfine -N --warmup 2 --runs 20 --prepare "$bin/proxies down" --export-json "$out" "$bin/proxies up" >/dev/null 2>&1
"$bin/proxies" up >/dev/null
hyperfine -N --warmup 20 --runs 300 --export-json "$home/launch.json" \
  "env IS_SANDBOX=1 $bin/xx cIp -p hi" "env IS_SANDBOX=1 /bin/true" >/dev/null 2>&1
python3 - "$out" "$home/launch.json" <<'PY'
import json, sys
up = json.load(open(sys.argv[1]))["results"][0]
print(f"cold `proxies up` to healthy: median {up['median']*1e3:.1f} ms, max {up['max']*1e3:.1f} ms (target <= 150)")
xx, base = json.load(open(sys.argv[2]))["results"]
print(f"`xx cIp` to agent exec (warm gateway): median {xx['median']*1e3:.2f} ms; the agent alone {base['median']*1e3:.2f} ms; "
      f"added {(xx['median']-base['median'])*1e3:.2f} ms (target <= 10)")
PY
