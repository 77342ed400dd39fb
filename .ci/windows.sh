#!/usr/bin/env bash
# Windows: cross-build sockhost.exe and the plugin .dlls with mingw-w64, run the plugin
# crates' unit tests under wine (cargo's runner), then a smoke test: sockhost.exe serving
# echo.dll under wine, reached from Linux over 127.0.0.1. A fresh Debian machine (root,
# Rust toolchain) runs this by itself; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(mingw-w64)
command -v wine >/dev/null || missing+=(wine wine64)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# A private wine prefix, quiet, without the Mono/Gecko installers' prompts; the stand-in
# bcryptprimitives.dll (ProcessPrng, which wine 8.0 lacks) is preferred to wine's own.
export WINEPREFIX="${WINEPREFIX:-$PWD/target/wine-prefix}"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree=;mshtml="
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  wineboot --init >/dev/null 2>&1
  wineserver -w
fi
x86_64-w64-mingw32-gcc -O2 -shared -o target/bcryptprimitives.dll .ci/wine/processprng.c -ladvapi32
cp target/bcryptprimitives.dll "$WINEPREFIX/drive_c/windows/system32/"

plugins=(-p echo -p hello -p kv -p chat)
cargo build --release --target "$target" -p sockhost "${plugins[@]}"
# Unit tests under wine. statsd's tests drive it with Linux's python3, so they stay on Linux.
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine \
  cargo test --release --target "$target" "${plugins[@]}"

out="target/$target/release"
python3 .ci/wine/smoke.py "$out/sockhost.exe" "$out/echo.dll"

# The black-box subset (tests/tests/platform.rs), a Linux test binary driving sockhost.exe
# under wine over 127.0.0.1.
SOCKHOST_TARGET="$target" SOCKHOST_RUNNER=wine \
  cargo test --release -p sockhost-tests --test platform -- --test-threads 2
