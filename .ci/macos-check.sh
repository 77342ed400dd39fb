#!/usr/bin/env bash
# macOS: type-check the workspace for aarch64-apple-darwin (no Apple SDK or hardware here,
# so nothing is linked or run; build scripts use the stand-in compiler .ci/macos-cc).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-apple-darwin
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
export CC_aarch64_apple_darwin="$PWD/.ci/macos-cc"
export AR_aarch64_apple_darwin=ar
# Not checked: the load generator (examples/bench, sendmmsg/recvmmsg) and the black-box test
# harness (tests/: /proc, prlimit, ss), which are Linux tools.
cargo check --workspace --exclude sockhost-bench --exclude sockhost-tests --target "$target"
