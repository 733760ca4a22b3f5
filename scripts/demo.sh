#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine and runs the local demo: etcd on loopback, 3 agents on the file
# backend, a sample spec, and the live status view. Ctrl-C stops everything and removes its temporary files.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
}

# etcd (the demo runs the binary on 127.0.0.1; a Docker engine is not needed).
if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ] && [ -z "${CLUSTERIP_HA_ETCD_BIN:-}" ]; then
  apt_install etcd-server
  # Debian starts a system etcd on 127.0.0.1:2379; the demo uses its own ports and leaves it alone.
fi

# Node.js 20 or newer.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 20 ]; then
  apt_install nodejs npm || true
fi
if [ "$(node_major)" -lt 20 ]; then
  echo "demo.sh: Node.js >= 20 is needed (found $(node --version 2>/dev/null || echo none));" \
    "install it from your distribution or nodejs.org, then re-run ./scripts/demo.sh" >&2
  exit 1
fi
command -v npm >/dev/null 2>&1 || apt_install npm

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
exec node dist/cli/main.js demo "$@"
