#!/usr/bin/env bash
# Chaos run: a regtest network of six providers and a client, where the
# client or a provider is killed (SIGKILL) at random moments during puts,
# repairs, period payments and deletes, and restarted; then every
# acknowledged file is read back and every payment checked against
# bitcoind's chain (tests/src/chaos.rs). CI runs a short version
# (tests/tests/chaos.rs).
#
#   scripts/chaos.sh [--rounds N] [--seed S]     (default: 200 kill points)
set -euo pipefail
cd "$(dirname "$0")/.."

BITCOIND_EXE=$(scripts/install-bitcoind.sh | tail -1)
export BITCOIND_EXE
cargo build --workspace --bins
# Cargo builds into $CARGO_TARGET_DIR when it is set (relative: to here).
exec "${CARGO_TARGET_DIR:-target}/debug/p2pstore-chaos" "$@"
