#!/usr/bin/env bash
# Stops everything scripts/regtest-up.sh started in DIR: the p2pstore daemons
# (scripts/localnet-down.sh) and then bitcoind, each by its pid file. The data
# (chain, accounts, shards, logs) stays in DIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR=$DEFAULT_NET_DIR
usage() { echo "usage: $0 [--dir DIR]   (default DIR: $DEFAULT_NET_DIR)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ -d $DIR ]] || { log "no network in $DIR"; exit 0; }
"$ROOT/scripts/localnet-down.sh" --dir "$DIR"
stop_bitcoind "$DIR"
