#!/usr/bin/env bash
# Benchmark: `xx <code> --dry-run` start-to-exit time (parse, config, nine agent specs, plan,
# render). Target: median <= 5 ms. Uses hyperfine (installed from Debian if missing) with no
# intermediate shell, so the numbers are the process's own.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
cargo build --release --quiet
home="$(mktemp -d)"; trap 'rm -rf "$home"' EXIT
mkdir -p "$home/config"
cat > "$home/config/config.toml" <<'TOML'
[gateway]
url = "http://127.0.0.1:8082"
[tiers]
d = "deepseek/deepseek-v4-flash"
TOML
export CLUTCH_HOME="$home"
xx="$PWD/target/release/xx"
out="$home/result.json"
hyperfine -N --warmup 50 --runs 500 --export-json "$out" \
  "$xx cip --dry-run" "$xx xcpd --dry-run" "$xx oIp --dry-run -p hello" "/bin/true" >/dev/null 2>&1
python3 - "$out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
print(f"{'command':<40} {'median ms':>10} {'mean ms':>9} {'min ms':>8} {'max ms':>8}")
for r in rows:
    cmd = r["command"].replace(sys.argv[1].rsplit('/', 2)[0], "")
    name = cmd.split("/")[-1]
    print(f"{name:<40} {r['median']*1e3:>10.3f} {r['mean']*1e3:>9.3f} {r['min']*1e3:>8.3f} {r['max']*1e3:>8.3f}")
PY
