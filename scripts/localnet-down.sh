#!/usr/bin/env bash
# Stops exactly the daemons a localnet-up.sh started in DIR, by their pid
# files, and the regtest bitcoind in DIR/bitcoind if regtest-up.sh started one.
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
# Clients first, bootstrap last, so nobody logs a lost bootstrap node.
for d in "$DIR"/client "$DIR"/provider-* "$DIR"/bootstrap; do
  if [[ -d $d ]]; then stop_daemon "$d"; fi
done
# bitcoind last: the wallets talk to it until they stop.
if [[ -d $DIR/bitcoind ]]; then stop_bitcoind "$DIR"; fi
log "stopped the network in $DIR"
