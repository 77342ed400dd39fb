#!/usr/bin/env bash
# Windows: cross-build sockhost.exe and echo.dll with mingw-w64, run the plugin crates' unit
# tests under wine (cargo's runner), clippy on the Windows build, then the black-box subset
# (tests/tests/platform.rs): a Linux test binary driving sockhost.exe under wine over
# 127.0.0.1. A fresh Debian machine (root, Rust toolchain) runs this by itself; .ci/run
# calls it after the Linux part (whose release build of the tests it reuses).
#
# Build time: only what the subset needs is cross-built, in the `wine` profile (opt-level 1,
# no debug info; Cargo.toml), and the unit tests share its dependencies. The wine prefix is
# made in the background meanwhile. Measured cold (no target/x86_64-pc-windows-gnu,
# target/wine or wine prefix; packages already installed) on a shared 2-core machine: this
# whole script 2 min 50 s (3.1 CPU-minutes), of which the build 2 min 9 s; a release
# cross-build of sockhost.exe and echo.dll alone took 4.4 CPU-minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
profile=wine

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(mingw-w64)
command -v wine >/dev/null || missing+=(wine wine64)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# A private wine prefix, quiet, without the Mono/Gecko installers' prompts; the stand-in
# bcryptprimitives.dll (ProcessPrng, which wine 8.0 lacks) is preferred to wine's own.
mkdir -p target
export WINEPREFIX="${WINEPREFIX:-$PWD/target/wine-prefix}"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree=;mshtml="
prefix_pid=
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  (wineboot --init >/dev/null 2>&1 && wineserver -w) &
  prefix_pid=$!
fi

# One profile for the build and the unit tests: every dependency is built once.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
cargo build --profile "$profile" --target "$target" -p sockhost -p echo

# The prefix must be ready before anything runs under wine.
if [ -n "$prefix_pid" ]; then
  wait "$prefix_pid" || { echo "error: wineboot --init failed ($WINEPREFIX)" >&2; exit 1; }
fi
x86_64-w64-mingw32-gcc -O2 -shared -o target/bcryptprimitives.dll .ci/wine/processprng.c -ladvapi32
cp target/bcryptprimitives.dll "$WINEPREFIX/drive_c/windows/system32/"

# Unit tests under wine. statsd's tests drive it with Linux's python3, and the host's use
# Unix sockets, so they stay on Linux.
cargo test --profile "$profile" --target "$target" --lib -p echo -p hello -p kv -p chat

# Lints of the Windows build (cfg(windows) code is invisible to the Linux clippy run);
# the test harness and the benchmarks are Linux programs.
cargo clippy --target "$target" --workspace --exclude sockhost-tests --exclude sockhost-bench \
  --all-targets -- -D warnings

# The black-box subset: a Linux test binary driving sockhost.exe. `--workspace` selects
# the features the Linux part's `cargo test --release --workspace` built it with, so that
# binary is reused as it is (`-p sockhost-tests` alone would build another).
SOCKHOST_TARGET="$target" SOCKHOST_TARGET_PROFILE="$profile" SOCKHOST_RUNNER=wine \
  cargo test --release --workspace --test platform -- --test-threads 2
