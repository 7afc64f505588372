#!/usr/bin/env bash
# Installs the third-party tools the tests run against (into .venv, which git ignores), then
# runs every test. Safe to run again: the install is a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${MCP_TEST_VENV:-$PWD/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
export MCP_TEST_VENV="$venv"

# Lua 5.1 from Debian: Argo CD's health-check dialect (tests run charts/mcp-operator/files/argocd).
if ! command -v lua5.1 >/dev/null 2>&1; then
  sudo_if_needed=""
  if [ "$(id -u)" != 0 ]; then sudo_if_needed="sudo"; fi
  $sudo_if_needed apt-get install -y -qq lua5.1 >/dev/null \
    || { $sudo_if_needed apt-get update -qq && $sudo_if_needed apt-get install -y -qq lua5.1 >/dev/null; }
fi

# The npm MCP peers (reference server), pinned by tests/peers/node/package-lock.json.
if [ ! -d tests/peers/node/node_modules ] || [ tests/peers/node/package-lock.json -nt tests/peers/node/node_modules ]; then
  (cd tests/peers/node && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ -z "${MCP_TEST_KUBECONFIG:-}" ]; then
  echo "note: MCP_TEST_KUBECONFIG is not set: the real-cluster controller scenarios (tests/controller.rs, portable_scenarios_on_a_real_cluster) will skip; every other test runs"
fi

# The statically linked release binary the image ships (tests/image.rs checks it).
echo "building the static release binary (scripts/build-static.sh)..."
MCP_STATIC_BINARY="$PWD/$(scripts/build-static.sh)"
export MCP_STATIC_BINARY

cargo test --locked
