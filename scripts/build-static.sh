#!/usr/bin/env bash
# Builds the release binary statically linked (glibc with crt-static), so the same file runs in
# the distroless image and, copied by `install-gateway`, inside any MCP server's image.
# Prints the binary's path. `--target` keeps build scripts and proc macros dynamic.
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(uname -m)-unknown-linux-gnu"
# getrandom: call glibc's getrandom() directly. Its default finds it with dlsym, which a static
# binary cannot, and then reads /dev/urandom, which an empty root or a stripped image lacks.
RUSTFLAGS="-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" cargo build --release --locked --quiet --target "$target"
echo "target/$target/release/mcp-operator"
