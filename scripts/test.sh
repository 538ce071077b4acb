#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it): installs bitcoind
# if needed (cached after the first build), builds the binaries the
# end-to-end tests start as processes, runs every test (the short chaos
# run among them), a 60-node scale run (SCALE_NODES), then fuzzes each
# decoder for FUZZ_SECS (default 30)
# seconds (scripts/fuzz.sh; FUZZ_SECS=0 leaves it out, for a quick local
# run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's start, in seconds since the script began, so a slow CI
# run shows where its time went.
phase() { echo "test.sh: [${SECONDS}s] $*" >&2; }

phase "bitcoind"
BITCOIND_EXE=$(scripts/install-bitcoind.sh | tail -1)
export BITCOIND_EXE
echo "using bitcoind: $BITCOIND_EXE" >&2

phase "tools"
# systemd-analyze for the unit test, Chromium for the dashboard test,
# and Python's prometheus_client and selenium for the metrics and
# dashboard tests (made here so the tests find them cached).
scripts/install-test-tools.sh
scripts/install-python-tools.sh >/dev/null

phase "build"
cargo build --workspace --bins
phase "test"
cargo test --workspace "$@"

# Discovery at scale, short: 60 daemons on loopback found through the DHT
# alone (scripts/scale.sh; README has the 200-node figures). It uses the
# debug binaries just built, not a second, release build.
phase "scale"
BIN_DIR=${CARGO_TARGET_DIR:-target}/debug
P2PSTORED=$BIN_DIR/p2pstored P2PSTORE_CLI=$BIN_DIR/p2pstore-cli \
  scripts/scale.sh --nodes "${SCALE_NODES:-60}"

FUZZ_SECS=${FUZZ_SECS:-30}
if ((FUZZ_SECS > 0)); then
  phase "fuzz"
  scripts/fuzz.sh --secs "$FUZZ_SECS"
fi
phase "done"
