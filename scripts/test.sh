#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it): installs bitcoind
# if needed (cached after the first build), builds the binaries the
# end-to-end tests start as processes, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

BITCOIND_EXE=$(scripts/install-bitcoind.sh | tail -1)
export BITCOIND_EXE
echo "using bitcoind: $BITCOIND_EXE" >&2

cargo build --workspace --bins
cargo test --workspace "$@"
