#!/usr/bin/env bash
# Stops exactly the daemons a localnet-up.sh started in DIR, by their pid files.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR=$DEFAULT_NET_DIR
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    -h|--help) echo "usage: $0 [--dir DIR]"; exit 0 ;;
    *) echo "usage: $0 [--dir DIR]" >&2; exit 2 ;;
  esac
done
[[ -d $DIR ]] || { log "no network in $DIR"; exit 0; }
# Clients first, bootstrap last, so nobody logs a lost bootstrap node.
for d in "$DIR"/client "$DIR"/provider-* "$DIR"/bootstrap; do
  [[ -d $d ]] && stop_daemon "$d"
done
log "stopped the network in $DIR"
