#!/usr/bin/env bash
# Fuzzes p2pstored's decoders with cargo-fuzz (libFuzzer, nightly Rust):
# control, shard and audit messages, the manifest, contract and
# payment-intent records, and JSON-RPC requests (daemon/fuzz, entry points
# in daemon/src/fuzz.rs). Each target starts from its corpus in
# daemon/fuzz/corpus/<target> (seeded by the fuzz-seeds example when
# missing) and adds the new paths it finds there. A crash, or one
# allocation over MALLOC_LIMIT_MB, fails the run and leaves its input in
# daemon/fuzz/artifacts/<target>/. Prints each target's execution count.
#
#   scripts/fuzz.sh [--secs N | --runs N] [target...]
#
# Default: 60 s per target, every target. CI runs --secs 30.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=60
RUNS=0
TARGETS=()
while (($#)); do
  case $1 in
    --secs) SECS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
ALL=(control shard audit manifest contract payment_intent rpc_request)
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
# No single allocation may exceed this: the largest message is 1 MiB plus
# a shard, and decoding must not multiply it.
MALLOC_LIMIT_MB=64
RSS_LIMIT_MB=2048

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
# cargo-fuzz, installed once into the project's cache (as bitcoind is).
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/p2pstore
CARGO_FUZZ_VERSION=0.13.2
if ! "$CACHE/cargo-fuzz/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CACHE/cargo-fuzz"
fi
export PATH="$CACHE/cargo-fuzz/bin:$PATH"

for t in "${TARGETS[@]}"; do
  if [[ ! -d daemon/fuzz/corpus/$t ]]; then
    cargo run -q -p p2pstored --features fuzz --example fuzz-seeds -- daemon/fuzz/corpus
    break
  fi
done

cd daemon/fuzz
# The instrumented release build of every dependency takes about 16
# minutes on two cores; kept in the cache, a run after a change to the
# daemon rebuilds only the daemon.
export CARGO_TARGET_DIR="$CACHE/fuzz-target"
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
total=0
printf '%-16s %14s %8s\n' target executions corpus
for t in "${TARGETS[@]}"; do
  limit=(-max_total_time="$SECS")
  ((RUNS > 0)) && limit=(-runs="$RUNS")
  if ! cargo +nightly fuzz run "$t" -- "${limit[@]}" \
      -malloc_limit_mb=$MALLOC_LIMIT_MB -rss_limit_mb=$RSS_LIMIT_MB \
      -print_final_stats=1 >"$LOGS/$t" 2>&1; then
    tail -40 "$LOGS/$t" >&2
    echo "fuzz.sh: $t failed; its input is in daemon/fuzz/artifacts/$t/" >&2
    exit 1
  fi
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$LOGS/$t" | grep -o '[0-9]*$' | tail -1)
  printf '%-16s %14s %8s\n' "$t" "${n:-?}" "$(ls corpus/$t | wc -l)"
  total=$((total + ${n:-0}))
done
printf '%-16s %14s\n' total "$total"
