#!/usr/bin/env bash
# Gateway benchmark: direct vs one nginx hop vs the clutch gateway (Anthropic in, Chat out),
# all on loopback in one run. Installs Debian's nginx if it is missing. See benches/gateway.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light >/dev/null
fi
PATH="$PATH:/usr/sbin" cargo bench --bench gateway
