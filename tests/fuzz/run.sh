#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 300), one after the other; not part of CI.
#
#   tests/fuzz/run.sh [SECONDS]            every target
#   FUZZ_TARGETS="kv_lines" tests/fuzz/run.sh 60
#
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). New inputs that
# reach new code go to corpus/TARGET (kept between runs, not committed; seeds/TARGET is
# the committed starting point); a failing input goes to artifacts/TARGET/, and
# `cargo +nightly fuzz run --fuzz-dir tests/fuzz TARGET artifacts/TARGET/crash-…` replays it.
# Prints one line per target: how long it ran, how many inputs, and its verdict.
set -uo pipefail
cd "$(dirname "$0")"

seconds=${1:-300}
read -r -a targets <<<"${FUZZ_TARGETS:-proxy_protocol hello_request hello_stream kv_lines plugin_boundary}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked || exit 1
# plugin_boundary loads this plugin like sockhost loads one (built without the sanitizer,
# as a third-party plugin would be).
cargo +nightly build --release -p fuzz-boundary-plugin || exit 1
export SOCKHOST_FUZZ_PLUGIN="$PWD/target/release/libfuzz_boundary_plugin.so"
export LSAN_OPTIONS="suppressions=$PWD/lsan.supp"
cargo +nightly fuzz build --fuzz-dir . || exit 1

mkdir -p logs
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  start=$(date +%s)
  cargo +nightly fuzz run --fuzz-dir . "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"logs/$t.log" 2>&1
  status=$?
  took=$(($(date +%s) - start))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1)
  if [ $status -eq 0 ]; then
    verdict="no failure"
  else
    verdict="FAILED (exit $status): see logs/$t.log and artifacts/$t/"
    failed=1
  fi
  summary+=("$t: ${took}s, ${runs:-?} inputs, ${cov:-cov: ?}, corpus $(ls "corpus/$t" | wc -l) — $verdict")
done
printf '%s\n' "${summary[@]}"
exit $failed
